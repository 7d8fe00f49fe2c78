"""Nights started as an operator starts them, through a real `dagster-daemon` and the project's instance
config (`.dagster/dagster.yaml`: the queue, one run at a time, and run monitoring): runs launched from the
command line (`dagster job launch`) killed with SIGKILL mid-run are failed, and the next launched run leaves
the queue and publishes, with no hand work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from assets.launcher import worker_pid
from conftest import PROJECT_ROOT, write_tiny_shop

pytestmark = pytest.mark.faults

DAGSTER = [sys.executable, "-m", "dagster"]


def instance_home(root: Path) -> Path:
    """A Dagster home holding the project's instance config, with monitoring polled every second (the
    project's polls every 30 s) so the test need not wait."""
    home = root / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((PROJECT_ROOT / ".dagster" / "dagster.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 1
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def launch(instance: dg.DagsterInstance, env: dict) -> str:
    """`dagster job launch -j nightly`, as an operator types it; the queued run's id."""
    before = set(instance.get_run_ids())
    done = subprocess.run([*DAGSTER, "job", "launch", "-m", "assets.definitions", "-j", "nightly"], env=env,
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_id,) = set(instance.get_run_ids()) - before
    return run_id


def wait_for(what, timeout: float, every: float = 0.5, why=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s: {why()}")


def started_worker(instance: dg.DagsterInstance, run_id: str, step: str) -> int | None:
    """The run worker's process id, once it has started `step`."""
    started = any(entry.dagster_event and entry.dagster_event.event_type == dg.DagsterEventType.STEP_START
                  and entry.dagster_event.step_key == step for entry in instance.all_logs(run_id))
    return worker_pid(instance, run_id) if started else None


def start_daemon(env: dict, log: Path) -> subprocess.Popen:
    """`dagster-daemon run` in a process group of its own (its code server and run workers with it)."""
    return subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", "assets.definitions"],
                            env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=log.open("a"),
                            start_new_session=True)


def stop(daemon: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(daemon.pid, sig)
        daemon.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(daemon.pid, signal.SIGKILL)


def finished(instance: dg.DagsterInstance, run_id: str):
    run = instance.get_run_by_id(run_id)
    return run.status if run and run.is_finished else None


def test_a_run_killed_with_everything_around_it_is_failed_and_the_next_night_publishes(tmp_path, fault_report):
    """The worst case: the run worker, its code server and the daemon all die at once (SIGKILL to the lot, as
    a reboot or a deploy does), so nothing is left to report the run's end and it stays STARTED. The daemon,
    started again, must fail it (run monitoring, the launcher's process check) and let the next night out of
    the one-at-a-time queue."""
    shop = write_tiny_shop(tmp_path)
    home = instance_home(tmp_path)
    env = {**os.environ, "SHOPREC_CONFIG": str(shop.config_path), "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "SHOPREC_FAULT": "recommendations:sleep=20"}  # every run pauses there: the kill lands mid-run
    log = tmp_path / "daemon.log"
    instance = dg.DagsterInstance.from_config(str(home))  # its storage made before a daemon opens it
    daemon = start_daemon(env, log)
    try:
        killed = launch(instance, env)
        wait_for(lambda: started_worker(instance, killed, "recommendations"), timeout=240,
                 why=lambda: f"{instance.get_run_by_id(killed).status}; daemon: {log.read_text()[-1500:]}")
        stop(daemon, signal.SIGKILL)
        time.sleep(2)
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED  # nobody left to say otherwise

        daemon = start_daemon(env, log)
        nextnight = launch(instance, env)  # as the schedule would queue it: the daemon must let it out
        assert wait_for(lambda: finished(instance, killed), timeout=120) == dg.DagsterRunStatus.FAILURE
        why = next(e.dagster_event.message for e in instance.all_logs(killed)
                   if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE)
        assert "is gone" in why, why
        status = wait_for(lambda: finished(instance, nextnight), timeout=300, every=1)
        assert status == dg.DagsterRunStatus.SUCCESS, [e.user_message for e in instance.all_logs(nextnight)][-5:]
        with duckdb.connect(str(shop.warehouse), read_only=True) as con:
            published = {row[0] for row in con.execute("SELECT DISTINCT run_id FROM recommendations").fetchall()}
            users = con.execute("SELECT count(DISTINCT user_id) FROM recommendations").fetchone()[0]
        assert published == {nextnight} and users > 0
        fault_report("a daemon-launched run, its code server and the daemon killed by SIGKILL mid-run",
                     "the restarted daemon fails the run; the next queued night is launched and publishes",
                     f"{why.splitlines()[0][:120]}; the next night published {users} users' lists", 0)
    finally:
        stop(daemon)


def test_a_run_worker_killed_alone_is_failed_by_its_code_server(tmp_path, fault_report):
    """SIGKILL to the run worker only (the OOM killer's choice): Dagster's code server sees its child die and
    fails the run at once; the next night runs."""
    shop = write_tiny_shop(tmp_path)
    home = instance_home(tmp_path)
    env = {**os.environ, "SHOPREC_CONFIG": str(shop.config_path), "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "SHOPREC_FAULT": "recommendations:sleep=20"}
    log = tmp_path / "daemon.log"
    instance = dg.DagsterInstance.from_config(str(home))
    daemon = start_daemon(env, log)
    try:
        killed = launch(instance, env)
        pid = wait_for(lambda: started_worker(instance, killed, "recommendations"), timeout=240,
                       why=lambda: f"{instance.get_run_by_id(killed).status}; daemon: {log.read_text()[-1500:]}")
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: finished(instance, killed), timeout=120) == dg.DagsterRunStatus.FAILURE
        nextnight = launch(instance, env)
        assert wait_for(lambda: finished(instance, nextnight), timeout=300, every=1) == dg.DagsterRunStatus.SUCCESS
        fault_report("a daemon-launched run worker killed by SIGKILL mid-run",
                     "the run is failed; the next queued night is launched and publishes",
                     "failed by the code server (signal 9); the next night succeeded", 0)
    finally:
        stop(daemon)
