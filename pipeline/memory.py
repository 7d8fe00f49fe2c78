"""Peak resident memory of this process, measurable per step: the kernel's high-water mark (VmHWM) can be
reset, so each asset and each benchmark step reports its own peak rather than the process's lifetime peak.
"""

from __future__ import annotations

import ctypes
import resource
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def release_free_memory() -> None:
    """Hand back to the kernel the memory this process has freed: glibc returns free pages to the kernel
    (`malloc_trim`) otherwise only from the top of a heap, so freed blocks in the middle of the heaps, and in
    the arenas of the threads that scored blocks of users, stay resident: a nightly run's publishing step
    started gigabytes above what it used. (No full garbage collection here: with Dagster's objects loaded
    it took 0.5 s an asset.) No-op without glibc."""
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


def peak_rss_bytes() -> int:
    """The peak resident set size since the last reset (or since the process started)."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
