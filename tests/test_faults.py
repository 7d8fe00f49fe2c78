"""Faults, tried on purpose: the nightly job killed (SIGKILL) at every stage and started again, the disk full
while publishing, and two runs at once. What is published is always one whole run, the old or the new,
never a mix; the caches keep what finished; nothing published is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from unittest import mock

import duckdb
import polars as pl
import pytest

from conftest import PROJECT_ROOT, materialize_all, metadata_value, published_state, rows_lost, write_tiny_shop
from pipeline.runlock import RunLock, RunLockedError
from pipeline.warehouse import TABLES, current_snapshot

pytestmark = pytest.mark.faults

# Every stage of a run, in the order the in-process executor runs them.
STAGES = ["products", "interactions", "product_embeddings/chunk", "product_embeddings", "evaluation",
          "faiss_index", "alpha_sweep", "behavior_model", "user_profiles", "recommendations", "explanations",
          "warehouse/written", "warehouse/committed"]


def run_cli(shop, dagster_home, fault: str | None = None, wait: bool = True):
    """The nightly job as a person runs it (`dagster job execute`), in its own process."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SHOPREC_CONFIG": str(shop.config_path), "DAGSTER_HOME": str(dagster_home),
           "HF_HUB_OFFLINE": "1"}
    env.pop("SHOPREC_FAULT", None)
    if fault:
        env["SHOPREC_FAULT"] = fault
    process = subprocess.Popen([sys.executable, "-m", "dagster", "job", "execute", "-m", "assets.definitions",
                                "-j", "nightly"], env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    if not wait:
        return process
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def served_run(shop) -> str | None:
    snapshot = current_snapshot(shop.warehouse)
    return snapshot.name.removeprefix("warehouse-").removesuffix(".duckdb") if snapshot else None


def published_runs(shop) -> set[str]:
    """The run ids found across every published table: one id means one whole run."""
    with duckdb.connect(str(shop.warehouse), read_only=True) as con:
        return {row[0] for table in TABLES for row in con.execute(f'SELECT DISTINCT run_id FROM "{table}"').fetchall()
                if con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]}


def cached_embeddings(shop) -> int:
    with duckdb.connect(str(shop.root / "cache" / "embeddings.duckdb"), read_only=True) as con:
        return con.execute("SELECT count(*) FROM embeddings").fetchone()[0]


@pytest.fixture
def shop(tmp_path):
    """The tiny shop published once; then ten products change, so the next run has real work to do."""
    shop = write_tiny_shop(tmp_path)
    assert materialize_all(shop.config_path).success
    products = pl.read_csv(shop.input_dir / "products.csv", infer_schema=False)
    products.with_columns(pl.when(pl.int_range(pl.len()) < 10).then(pl.col("description") + " Now in new colours.")
                          .otherwise(pl.col("description")).alias("description")).write_csv(
        shop.input_dir / "products.csv")
    shop.write_config(encode_batch_size=1)  # chunks of 8 products: a kill can land between two of them
    return shop


def test_killed_at_every_stage_then_rerun_publishes_one_whole_run_and_only_redoes_missing_work(
        shop, tmp_path, fault_report):
    baseline = published_state(shop.warehouse)
    baseline_run, = published_runs(shop)
    cached = cached_embeddings(shop)
    for stage in STAGES:
        code, stderr = run_cli(shop, tmp_path / "dagster", fault=f"{stage}:kill")
        assert code == -signal.SIGKILL, f"{stage}: exit {code}\n{stderr[-2000:]}"
        now = published_state(shop.warehouse)
        runs = published_runs(shop)
        assert len(runs) == 1, f"killed at {stage}: tables from several runs {runs}"
        assert served_run(shop) == baseline_run  # the API still serves the whole old run
        if stage == "warehouse/committed":
            # The new run is committed whole in the warehouse; the served snapshot is still the old run.
            assert runs != {baseline_run}
            observed = "warehouse: the new run, whole; API: still the old run, whole"
            lost = 0
        else:
            assert runs == {baseline_run}
            lost = rows_lost(baseline, now)
            assert lost == 0 and now == baseline, f"killed at {stage}: the published results changed"
            observed = "published results and served snapshot exactly as before"
        if stage == "product_embeddings/chunk":
            assert cached_embeddings(shop) == cached + 8  # the first chunk's work is kept
            observed += "; embedding cache kept the finished chunk (+8 of 10)"
        if stage == "product_embeddings":
            assert cached_embeddings(shop) == cached + 10
        fault_report(f"SIGKILL at {stage}", "old or new results, never a mix; caches keep finished work",
                     observed, lost)

    committed, = published_runs(shop)
    with mock.patch.dict(os.environ, {"SHOPREC_FAULT": "products"}):  # the next night fails at once, yet ...
        assert not materialize_all(shop.config_path, raise_on_error=False).success
    assert served_run(shop) == committed  # ... the API has caught up with the run committed before the kill
    fault_report("next run after a kill between commit and snapshot", "the API catches up with the committed run",
                 "snapshot moved to the committed run at the next run's start", 0)

    result = materialize_all(shop.config_path)  # the run after the crashes
    assert result.success
    assert metadata_value(result, "product_embeddings", "encoded") == 0  # killed runs already did it
    assert published_runs(shop) == {result.run_id} and served_run(shop) == result.run_id
    assert not lock_is_held(shop)
    fault_report("rerun after the kills", "completes, redoes only missing work",
                 "published whole; 0 products re-encoded (all 10 cached by the killed runs)", 0)


def lock_is_held(shop) -> bool:
    lock = RunLock(shop.warehouse)
    try:
        lock.acquire("probe")
    except RunLockedError:
        return True
    lock.release()
    return False


DISK_FULL = textwrap.dedent("""
    import resource, sys
    from dataclasses import replace
    from pathlib import Path
    import polars as pl
    from pipeline.warehouse import TABLES, PublishError, latest_run, publish, read_table, RunRecord

    warehouse = Path(sys.argv[1])
    tables = {name: read_table(warehouse, name).drop("run_id", "computed_at") for name in TABLES}
    tables["interactions"] = pl.concat([tables["interactions"]] * 2000)  # a night with far more data
    run = latest_run(warehouse)
    record = RunRecord(run_id="the-full-disk-run", started_at=run["started_at"], finished_at=run["finished_at"],
                       status="success", hybrid_alpha=0.2, top_k=5, faiss_index=None, row_counts={}, config={})
    room = warehouse.stat().st_size + 256 * 1024  # no file may grow past this: the disk is full
    resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))
    try:
        publish(warehouse, tables, record)
    except PublishError as error:
        print(error)
        sys.exit(3)
""")


def test_a_full_disk_while_publishing_keeps_the_old_results_served(tmp_path, fault_report):
    shop = write_tiny_shop(tmp_path)
    assert materialize_all(shop.config_path).success
    before = published_state(shop.warehouse)
    served = served_run(shop)
    done = subprocess.run([sys.executable, "-c", DISK_FULL, str(shop.warehouse)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr[-3000:]
    message = done.stdout.strip()
    assert "disk may be full" in message and "previous run's results are unchanged" in message
    after = published_state(shop.warehouse)
    assert after == before and served_run(shop) == served
    assert materialize_all(shop.config_path).success  # with room again, the next night publishes
    fault_report("disk full while publishing", "old results stay served, the error says what happened",
                 message, rows_lost(before, after))


def test_two_runs_at_once_never_interleave(shop, tmp_path, fault_report):
    first = run_cli(shop, tmp_path / "dagster", fault="recommendations:sleep=12", wait=False)
    try:
        deadline = time.time() + 120
        while not lock_is_held(shop):
            assert first.poll() is None and time.time() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        second = materialize_all(shop.config_path, raise_on_error=False)
        assert not second.success
        refused = " ".join(str(e.event_specific_data) for e in second.all_events)  # the error rides in the data
        assert "another run is writing" in refused and "refuses to start" in refused
        assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    runs = published_runs(shop)
    assert len(runs) == 1 and served_run(shop) in runs  # the first run's results, whole
    fault_report("two runs started at once", "the second refuses clearly (lock); never interleave",
                 "second run refused: 'another run is writing … refuses to start'; first published whole", 0)


def test_killed_while_the_llm_writes_keeps_every_finished_text(tmp_path, fault_report):
    from bench.openai_server import FakeOpenAI

    shop = write_tiny_shop(tmp_path)
    with FakeOpenAI(latency=0.3) as server:
        config = json.loads(shop.config_path.read_text())
        config["explanations"] = {"base_url": server.base_url, "model": "test-model", "llm_top_ranks": 5,
                                  "concurrency": 1}
        shop.config_path.write_text(json.dumps(config))
        writing = run_cli(shop, tmp_path / "dagster", wait=False)
        deadline = time.time() + 240
        while server.count < 5:
            assert writing.poll() is None and time.time() < deadline, "the run never reached the LLM"
            time.sleep(0.05)
        writing.send_signal(signal.SIGKILL)
        writing.wait(timeout=30)
        cached = server.count - 1  # the call in flight when the process died may not have been stored
        result = materialize_all(shop.config_path)
        assert result.success
        from_cache = metadata_value(result, "explanations", "cache_hits")
        wanted = metadata_value(result, "explanations", "written_by_llm") + from_cache
        made_again = metadata_value(result, "explanations", "llm_calls")
        assert from_cache >= cached > 0
        assert made_again <= wanted - cached  # only the texts the killed run had not finished
    fault_report("SIGKILL while the LLM writes explanations", "finished texts kept; rerun calls only for the rest",
                 f"killed after {server.count - made_again} replies; the rerun took {from_cache} of {wanted} LLM "
                 f"cards from the cache (cards with equal facts share a reply) and called for {made_again}", 0)
