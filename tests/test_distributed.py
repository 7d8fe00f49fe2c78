"""The same definitions on an existing distributed engine: the night fanned out by user bucket (the shared
run, one run per bucket, the publishing run) through dagster-dask's executor on a local Dask cluster of two
worker processes, and the published result checked against a single-process run, row for row.

The bucket runs go one after another: dagster-dask names a Dask task `<job>.<step>`, so two runs of one job
at once on one Dask cluster would share their tasks (dagster-io/dagster#21418)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from unittest import mock

import dagster as dg
import numpy as np
import polars as pl
import pytest
from dask.distributed import Client, LocalCluster, wait

from assets.buckets import BUCKET_NAMES, bucket_name
from checks import assert_same_lists
from conftest import PROJECT_ROOT, materialize_all, write_tiny_shop
from pipeline.warehouse import read_table

# Per-user tables (computed bucket by bucket) and their keys; every other column must match exactly.
PER_USER_TABLES = {"recommendations": ["user_id", "rank"], "explanations": ["user_id", "rank"],
                   "user_profiles": ["user_id"]}
BUCKETS = 2  # not the reference run's number: a user's results must not depend on it


def dagster_cli(job: str, env: dict, run_config, tags: dict | None = None) -> subprocess.Popen:
    """`dagster job execute`, as a person (or a run launcher) starts a run, in its own process."""
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "assets.definitions", "-j", job,
               "-c", str(run_config)]
    if tags:
        command += ["--tags", json.dumps(tags)]
    return subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def finished(process: subprocess.Popen, what: str) -> None:
    # A guard against a hung run, not a speed limit: on a loaded 2-core machine one run took over 5 minutes.
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, f"{what} failed:\n{stderr[-4000:]}"


@contextmanager
def default_sigterm():
    """Start the workers with SIGTERM's default action. An ignored SIGTERM (left by whatever started this
    process) passes to the workers and on to Dagster's compute-log `tail` processes, which then outlive
    each step: Dagster waits 30 s for each of the two, a minute per step."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_night_fanned_out_on_dask_publishes_what_one_process_does(tmp_path, monkeypatch):
    reference = write_tiny_shop(tmp_path / "reference")
    shop = write_tiny_shop(tmp_path / "dask")
    config = json.loads(shop.config_path.read_text())
    config["scale"] = {"executor": "dask", "user_buckets": BUCKETS}
    shop.config_path.write_text(json.dumps(config))
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The workers start from this environment, so they load the same definitions as the runs' processes.
    monkeypatch.setenv("SHOPREC_CONFIG", str(shop.config_path))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("SHOPREC_FAULT", raising=False)
    env = dict(os.environ)

    with default_sigterm(), LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                         dashboard_address=None) as cluster, Client(cluster) as client:
        workers = client.run(os.getpid)
        warming = [client.submit(exec, "import assets.definitions", key=f"warm-up-{address}", workers=[address])
                   for address in workers]  # the workers load the definitions while the reference runs
        assert materialize_all(reference.config_path).success  # in this process, every bucket in one run
        wait(warming)
        del warming

        run_config = tmp_path / "dask.yaml"
        run_config.write_text(json.dumps(
            {"execution": {"config": {"cluster": {"existing": {"address": cluster.scheduler_address}}}}}))

        finished(dagster_cli("nightly_shared", env, run_config), "nightly_shared")
        for bucket in (bucket_name(b, BUCKETS) for b in range(BUCKETS)):
            finished(dagster_cli("nightly_buckets", env, run_config, tags={"dagster/partition": bucket}),
                     f"nightly_buckets {bucket}")
        finished(dagster_cli("nightly_publish", env, run_config), "nightly_publish")

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert sorted(run.job_name for run in runs) == sorted(
            ["nightly_shared", "nightly_publish"] + ["nightly_buckets"] * BUCKETS)
        assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
        steps = {run.run_id: [entry.dagster_event for entry in
                              instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)] for run in runs}
        buckets_done = sorted(run.tags["dagster/partition"] for run in runs if run.job_name == "nightly_buckets")
    assert buckets_done == [bucket_name(b, BUCKETS) for b in range(BUCKETS)]
    assert all(len(started) == 3 for run in runs if run.job_name == "nightly_buckets"
               for started in [steps[run.run_id]]), "a bucket run skipped one of its three steps"
    step_pids = {event.pid for started in steps.values() for event in started}
    assert step_pids <= set(workers.values()), f"steps ran in {step_pids}, not only on the Dask workers {workers}"
    assert len(step_pids) == 2, "the steps did not spread over both workers"

    # Lists equal up to ties within float rounding (another block of users may round a score apart on another
    # BLAS kernel); each (user, product)'s explanation whatever its rank; profiles row for row.
    assert_same_lists(read_table(shop.warehouse, "recommendations"), read_table(reference.warehouse, "recommendations"))
    for table, keys in PER_USER_TABLES.items():
        got, want = (read_table(warehouse, table) for warehouse in (shop.warehouse, reference.warehouse))
        if "rank" in keys:
            got, want, keys = got.drop("rank"), want.drop("rank"), ["user_id", "product_id"]
        assert_same_rows(got, want, keys)


def assert_same_rows(got: pl.DataFrame, want: pl.DataFrame, keys: list[str]) -> None:
    """Row for row after sorting by `keys`: the same ids, ranks and texts; floats within 1e-6."""
    got, want = (frame.drop("run_id", "computed_at").sort(keys) for frame in (got, want))
    assert got.height == want.height > 0
    nested = {name for name, dtype in want.schema.items() if isinstance(dtype, (pl.List, pl.Array))}
    floats = [name for name, dtype in want.schema.items()
              if (dtype.inner if name in nested else dtype).is_float()]
    assert got.drop(floats).equals(want.drop(floats))
    for name in floats:
        column = pl.col(name).cast(pl.List(pl.Float64)).explode() if name in nested else pl.col(name)
        assert np.allclose(got.select(column).to_numpy(), want.select(column).to_numpy(), rtol=1e-6, atol=1e-6), name


def test_publishing_refuses_buckets_made_from_other_shared_results(tiny_shop):
    """The fanned-out night in process: buckets made before the latest shared run are not published with it;
    once every bucket is made again, they are."""
    from assets.definitions import defs

    instance = dg.DagsterInstance.ephemeral()

    def run(job: str, **kwargs) -> dg.ExecuteInProcessResult:
        with mock.patch.dict(os.environ, {"SHOPREC_CONFIG": str(tiny_shop.config_path)}):
            return defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False, **kwargs)

    assert run("nightly").success
    published = read_table(tiny_shop.warehouse, "recommendations")
    assert run("nightly_shared").success  # the shared results of a new night; the buckets are last night's

    refused = run("nightly_publish")
    assert not refused.success
    errors = " ".join(str(event.event_specific_data) for event in refused.all_events if event.is_failure)
    assert "recommendations bucket-0 was computed from earlier alpha_sweep, behavior_model, faiss_index" in errors
    assert read_table(tiny_shop.warehouse, "recommendations").equals(published)

    for bucket in BUCKET_NAMES:
        assert run("nightly_buckets", partition_key=bucket).success
    republished = run("nightly_publish")
    assert republished.success
    recommendations = read_table(tiny_shop.warehouse, "recommendations")
    assert set(recommendations["run_id"]) == {republished.run_id}
    assert recommendations.drop("run_id", "computed_at").equals(published.drop("run_id", "computed_at"))
