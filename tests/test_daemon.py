"""Nights started as an operator starts them, through a real `dagster-daemon` and the project's instance
config (`.dagster/dagster.yaml`: the queue, one run at a time, and run monitoring): every way of starting a
night (the UI's launchpad and "Materialize all" in Chromium against a real `dagster-webserver`, the
command line's `dagster job launch` and `dagster job execute`, the schedule) publishes; runs killed with
SIGKILL mid-run are failed, and the next night leaves the queue and publishes, with no hand work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
import yaml
from dagster._core.execution.backfill import BulkActionStatus  # not exported: what a backfill's status is

from assets.launcher import worker_pid
from conftest import PROJECT_ROOT, chromium, free_port, write_tiny_shop

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


def warehouse_runs(warehouse: Path) -> dict[str, tuple[str, str | None]]:
    """The warehouse's `runs` table: run id -> (status, error)."""
    if not warehouse.exists():
        return {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {run: (status, error) for run, status, error in con.execute("SELECT run_id, status, error FROM runs").fetchall()}


def recorded(warehouse: Path, run_id: str):
    try:
        return warehouse_runs(warehouse).get(run_id)
    except duckdb.IOException:  # a run is writing it this moment
        return None


def finished(instance: dg.DagsterInstance, run_id: str):
    run = instance.get_run_by_id(run_id)
    return run.status if run and run.is_finished else None


def test_a_run_killed_with_everything_around_it_is_failed_and_the_next_scheduled_night_publishes(tmp_path,
                                                                                              fault_report):
    """The worst case: the run worker, its code server and the daemon all die at once (SIGKILL to the lot, as
    a reboot or a deploy does), so nothing is left to report the run's end and it stays STARTED. The daemon,
    started again, must fail it (run monitoring, the launcher's process check) and let the schedule's next
    night out of the one-at-a-time queue, with nobody touching anything (the schedule ticks every minute here)."""
    shop = write_tiny_shop(tmp_path)
    shop.write_config({"schedule": {"cron": "* * * * *"}})
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
        killed_at = time.time()
        time.sleep(2)
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED  # nobody left to say otherwise

        daemon = start_daemon(env, log)
        assert wait_for(lambda: finished(instance, killed), timeout=120) == dg.DagsterRunStatus.FAILURE
        why = next(e.dagster_event.message for e in instance.all_logs(killed)
                   if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE)
        assert "is gone" in why, why

        def scheduled_success_after_the_kill():
            return next((run for run in instance.get_runs(dg.RunsFilter(
                tags={"dagster/schedule_name": "nightly_schedule"}, statuses=[dg.DagsterRunStatus.SUCCESS]))
                if instance.get_run_record_by_id(run.run_id).start_time > killed_at), None)
        nextnight = wait_for(scheduled_success_after_the_kill, timeout=300, every=1,
                             why=lambda: log.read_text()[-1500:]).run_id
        with duckdb.connect(str(shop.warehouse), read_only=True) as con:
            published = {row[0] for row in con.execute("SELECT DISTINCT run_id FROM recommendations").fetchall()}
            users = con.execute("SELECT count(DISTINCT user_id) FROM recommendations").fetchone()[0]
        assert published == {nextnight} and users > 0
        # The warehouse's own record agrees with Dagster's: the killed night is a failed row, saying why.
        status, error = wait_for(lambda: recorded(shop.warehouse, killed), timeout=90, every=1)
        assert status == "failed" and "is gone" in error, error
        fault_report("a daemon-launched run, its code server and the daemon killed by SIGKILL mid-run",
                     "the restarted daemon fails the run; the schedule's next night is launched and publishes",
                     f"{why.splitlines()[0][:120]}; the next scheduled night published {users} users' lists; "
                     "the warehouse's runs table says failed", 0)
    finally:
        stop(daemon)


def test_a_run_worker_killed_alone_is_failed_by_its_code_server(tmp_path, fault_report):
    """SIGKILL to the run worker only (the OOM killer's choice): Dagster's code server sees its child die and
    fails the run, or run monitoring does, whichever comes first; the next night runs."""
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
        status, error = wait_for(lambda: recorded(shop.warehouse, killed), timeout=90, every=1)
        assert status == "failed" and error, error
        fault_report("a daemon-launched run worker killed by SIGKILL mid-run",
                     "the run is failed; the next queued night is launched and publishes",
                     f"failed (by the code server or run monitoring, whichever sees it first); the next night "
                     f"succeeded; runs table: failed, {error.splitlines()[0][:100]!r}", 0)
    finally:
        stop(daemon)


def start_webserver(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """`dagster-webserver` on a free loopback port, in a process group of its own; its URL once it answers."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("dagster-webserver")), "-m", "assets.definitions",
                               "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=PROJECT_ROOT,
                              stdout=subprocess.DEVNULL, stderr=log.open("a"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answers():
        try:
            return httpx.get(f"{url}/server_info", timeout=1).status_code == 200
        except httpx.TransportError:
            assert server.poll() is None, log.read_text()[-1500:]
            return False
    wait_for(answers, timeout=120, why=lambda: log.read_text()[-1500:])
    return server, url




def test_every_way_a_person_starts_a_night_publishes(tmp_path):
    """The UI's launchpad for `nightly` and "Materialize all" on the asset graph, clicked in Chromium as a
    person does, then `dagster job execute` from a shell: each run succeeds and publishes (two buckets, so
    the backfill that "Materialize all" starts is four runs, not six)."""
    shop = write_tiny_shop(tmp_path)
    shop.write_config({"scale": {"user_buckets": 2}})
    home = instance_home(tmp_path)
    env = {**os.environ, "SHOPREC_CONFIG": str(shop.config_path), "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "dagster.log"
    instance = dg.DagsterInstance.from_config(str(home))
    daemon = start_daemon(env, log)
    webserver, ui = start_webserver(env, log)
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())  # a welcome

            page.goto(f"{ui}/locations/assets.definitions/jobs/nightly/playground")
            page.get_by_role("button", name="Launch Run").click()
            # "This job is partitioned. Are you sure …": the job's own tags carry every bucket.
            page.get_by_role("button", name="Confirm").click()
            page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
            from_launchpad = page.url.rsplit("/", 1)[1]
            assert wait_for(lambda: finished(instance, from_launchpad), timeout=240) == dg.DagsterRunStatus.SUCCESS

            page.goto(f"{ui}/asset-groups")
            page.get_by_role("button", name="Materialize all").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("button", name="All", exact=True).click()  # every bucket
            dialog.get_by_role("button", name="Launch backfill").click()
            backfill = wait_for(lambda: instance.get_backfills(), timeout=60)[0]
        done = {BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.FAILED}
        status = wait_for(lambda: (b := instance.get_backfill(backfill.backfill_id)).status in done and b.status,
                          timeout=360, every=1)
        assert status == BulkActionStatus.COMPLETED_SUCCESS
        backfill_runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        assert len(backfill_runs) == 4 and {run.status for run in backfill_runs} == {dg.DagsterRunStatus.SUCCESS}
        publishing, = [run.run_id for run in backfill_runs if dg.AssetKey("warehouse") in (run.asset_selection or ())]

        executed = subprocess.run([*DAGSTER, "job", "execute", "-m", "assets.definitions", "-j", "nightly"], env=env,
                                  cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
        assert executed.returncode == 0, executed.stderr[-2000:]
        from_shell = instance.get_runs(limit=1)[0]
        assert from_shell.job_name == "nightly" and from_shell.status == dg.DagsterRunStatus.SUCCESS

        runs = warehouse_runs(shop.warehouse)
        assert {run: runs.get(run, ("missing",))[0] for run in (from_launchpad, publishing, from_shell.run_id)} == {
            from_launchpad: "success", publishing: "success", from_shell.run_id: "success"}
    finally:
        stop(webserver)
        stop(daemon)
