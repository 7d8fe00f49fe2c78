"""The run lock: the processes of one run share it (one per step with a multi-process executor), any other
run is refused while one of them holds it, and the kernel frees it when they are gone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import PROJECT_ROOT
from pipeline.runlock import RunLock, RunLockedError

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pipeline.runlock import RunLock
    lock = RunLock(Path(sys.argv[1]))
    lock.acquire(sys.argv[2])
    print("held", flush=True)
    time.sleep(60)
""")


def holder(warehouse, run_id: str) -> subprocess.Popen:
    """Another process (another step, or another run) holding the lock until it is killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(warehouse), run_id], cwd=PROJECT_ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_processes_of_one_run_share_the_lock_and_other_runs_are_refused(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    steps = []
    try:
        steps.append(holder(warehouse, "run-a"))
        steps.append(holder(warehouse, "run-a"))  # a second step of the same run joins
        steps[0].kill()
        steps[0].wait()
        with pytest.raises(RunLockedError, match="another run is writing .*run-a.*refuses to start"):
            RunLock(warehouse).acquire("run-b")  # still held by run-a's second step
        steps[1].kill()
        steps[1].wait()
        lock = RunLock(warehouse)
        lock.acquire("run-b")  # every process of run-a is gone (killed): free again
        lock.release()
    finally:
        for process in steps:
            process.kill()
            process.wait()
