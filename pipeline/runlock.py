"""One run at a time per warehouse: a lock on `<warehouse>.lock`, held for the whole run.

`fcntl.flock` locks belong to the open file, so the kernel releases them when the holder exits, however it
exits (a SIGKILL included): a lock is never left behind by a dead run. A second run refuses at once,
naming the holder, instead of interleaving its writes with the first one's.

A run may have several processes (one per step with the multiprocess, Dask, Celery or Kubernetes
executors): they share the lock. The first takes it exclusively, writes its run id into the file and turns
it into a shared lock; a later process of the same run joins with a shared lock of its own, any other run
is refused. A short-lived second lock, `<warehouse>.lock.gate`, makes that check-then-take one step.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import IO


class RunLockedError(RuntimeError):
    """Another run holds the warehouse."""


class RunLock:
    def __init__(self, warehouse: Path):
        self.path = warehouse.with_name(warehouse.name + ".lock")
        self._gate = warehouse.with_name(warehouse.name + ".lock.gate")
        self._file: IO[str] | None = None

    def acquire(self, run_id: str) -> None:
        """Hold the warehouse for `run_id`, alongside any other process of the same run."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._gate, "a", encoding="utf-8") as gate:
            fcntl.flock(gate, fcntl.LOCK_EX)  # held for microseconds, released when the file closes
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._join(handle, run_id)
            else:
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps({"run_id": run_id, "pid": os.getpid(),
                                         "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
                handle.flush()
                fcntl.flock(handle, fcntl.LOCK_SH)  # so this run's other processes can join (under the gate)
        self._file = handle

    def _join(self, handle: IO[str], run_id: str) -> None:
        handle.seek(0)
        holder = handle.read().strip()
        try:
            same_run = json.loads(holder).get("run_id") == run_id
        except ValueError:
            same_run = False
        if same_run:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # the holders share it, so this succeeds
                return
            except BlockingIOError:
                pass
        handle.close()
        raise RunLockedError(f"another run is writing {self.path.with_suffix('')} ({holder or 'unknown'}); this "
                             "run refuses to start so the two never interleave: wait for it to finish "
                             "(the Dagster UI and schedule queue runs instead)") from None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
