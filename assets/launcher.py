"""The run launcher of the project's Dagster instance: Dagster's default (a process per run on this machine),
plus the health check that lets the daemon's run monitoring see a run whose process died.

A run killed by SIGKILL (the OOM killer, a reboot, a deploy) never reports its end, so it would stay
STARTED forever and, with a queue that lets one run at a time out, hold back every later night. Dagster's
run monitoring (`run_monitoring` in dagster.yaml) asks the launcher whether a started run's worker is still
alive and marks it failed when it is not; the default launcher cannot say, this one can: the run worker
records its process id in the run's event log when it starts (the engine event "Started process for run
(pid: …)"), and a process that no longer exists, or is a zombie, is a dead run.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun


class HealthCheckedRunLauncher(DefaultRunLauncher):
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = worker_pid(self._instance, run.run_id)
        if pid is None:  # (the worker records it before it marks the run started: not expected to happen)
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run worker has not recorded its process yet")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"the run worker (pid {pid}) is gone: killed or crashed "
                                                         "without reporting its end")


def worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The process id a run's worker reported first (its "Started process for run" engine event)."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        pid = (getattr(data, "metadata", None) or {}).get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists and is not a zombie (exited, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        state = stat.read_text().rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X")
    return True
