"""Peak resident memory of this process, measurable per step: the kernel's high-water mark (VmHWM) can be
reset, so each asset and each benchmark step reports its own peak rather than the process's lifetime peak.
"""

from __future__ import annotations

import ctypes
import gc
import resource
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


COLLECT_ABOVE_BYTES = 4 * 2**30
"""A full garbage collection costs ~0.5 s with Dagster's objects loaded: worth it only when the process holds
more than this between assets (a million-user shop's run holds 4.5 GB or more; a test's or a small shop's run
stays under 2 GB, and collecting at each of their assets doubled the pipeline tests' time)."""


def release_free_memory() -> None:
    """Hand back to the kernel the memory this process has freed: reference cycles collected (when the process
    holds more than COLLECT_ABOVE_BYTES), then glibc's free pages returned (`malloc_trim`), which it otherwise
    does only from the top of a heap, so freed blocks in the middle of the heaps, and in the arenas of the
    threads that scored blocks of users, stay resident: a nightly run's publishing step started gigabytes above
    what it used. No-op without glibc."""
    if rss_bytes() > COLLECT_ABOVE_BYTES:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Start a new high-water mark at the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
    False where the kernel does not allow it; `peak_rss_bytes` is then the process's lifetime peak."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def rss_bytes() -> int:
    """The resident set size now (0 where the kernel does not say)."""
    return _status_bytes("VmRSS") or 0


def peak_rss_bytes() -> int:
    """The peak resident set size since the last reset (or since the process started)."""
    peak = _status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(field: str) -> int | None:
    """A memory figure of /proc/self/status (given there in kB), or None where it is not there."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
