"""One run at a time per warehouse: an exclusive lock on `<warehouse>.lock`, held for the whole run.

`fcntl.flock` locks belong to the open file, so the kernel releases them when the holder exits, however it
exits (a SIGKILL included): a lock is never left behind by a dead run. A second run refuses at once,
naming the holder, instead of interleaving its writes with the first one's.
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
        self._file: IO[str] | None = None

    def acquire(self, run_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLockedError(f"another run is writing {self.path.with_suffix('')} ({holder}); this run "
                                 "refuses to start so the two never interleave: wait for it to finish "
                                 "(the Dagster UI and schedule queue runs instead)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"run_id": run_id, "pid": os.getpid(),
                                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
