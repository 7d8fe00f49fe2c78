"""The whole nightly pipeline, in process, with the real model and a real DuckDB file."""

from __future__ import annotations

import polars as pl
import pytest

from checks import assert_valid_lists
from conftest import materialize_all, metadata_value
from pipeline.warehouse import TABLES, read_table


def test_definitions_load_with_a_nightly_schedule():
    from assets.definitions import defs

    dg_defs = defs.get_repository_def()
    assert defs.resolve_job_def("nightly").hook_defs
    schedule = dg_defs.get_schedule_def("nightly_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    keys = {key.to_user_string() for key in dg_defs.asset_graph.get_all_asset_keys()}
    assert {"products", "interactions", "product_embeddings", "faiss_index", "user_profiles",
            "behavior_model", "recommendations", "warehouse"} <= keys


def test_tiny_shop_publishes_valid_lists_and_every_table(tiny_shop):
    result = materialize_all(tiny_shop.config_path)
    assert result.success

    recs = assert_valid_lists(tiny_shop.warehouse, k=5)
    for table in [*TABLES, "runs"]:
        assert read_table(tiny_shop.warehouse, table).height > 0, f"{table} is empty"
    runs = read_table(tiny_shop.warehouse, "runs")
    assert runs["status"].to_list() == ["success"]
    assert runs["run_id"][0] == result.run_id
    assert set(recs["run_id"]) == {result.run_id}
    assert runs["started_at"][0] <= runs["finished_at"][0]

    # Content: a buyer of trail shoes is shown more trail running gear first.
    trail = recs.filter(pl.col("user_id") == "U_TRAIL").sort("rank")
    assert set(trail["product_id"][:3]) <= {"T03", "T04", "T05"}
    # Out of stock (T07) and already purchased (T01, T02) never appear.
    assert recs.filter(pl.col("product_id") == "T07").is_empty()
    # Evidence names the user's own history.
    assert set(trail["evidence_product_ids"].explode()) <= {"T01", "T02", "T04"}
    # A user with a single event still gets a full list.
    assert recs.filter(pl.col("user_id") == "U_ONE").height == 5


def test_behavioral_signal_wins_at_alpha_one(tiny_shop):
    """Six tent buyers also bought the headlamp: with alpha = 1 it is the first thing a new tent buyer sees."""
    tiny_shop.write_config(hybrid_alpha=1.0)
    assert materialize_all(tiny_shop.config_path).success
    recs = read_table(tiny_shop.warehouse, "recommendations")
    first = recs.filter((pl.col("user_id") == "U_TENT") & (pl.col("rank") == 1))
    assert first["product_id"].to_list() == ["C02"]
    assert first["behavior_score"][0] == pytest.approx(1.0)
    assert first["evidence_product_ids"][0].to_list() == ["C01"]


def test_second_run_encodes_nothing_and_a_changed_product_alone(tiny_shop):
    first = materialize_all(tiny_shop.config_path)
    assert metadata_value(first, "product_embeddings", "encoded") == len(read_table(tiny_shop.warehouse, "products"))
    # The Dagster UI's user count of the event log is the published log's.
    published_users = read_table(tiny_shop.warehouse, "interactions")["user_id"].n_unique()
    assert metadata_value(first, "interactions", "users") == published_users

    second = materialize_all(tiny_shop.config_path)
    assert metadata_value(second, "product_embeddings", "encoded") == 0
    assert metadata_value(second, "product_embeddings", "from_cache") == 24

    products = pl.read_csv(tiny_shop.input_dir / "products.csv")
    products = products.with_columns(
        pl.when(pl.col("product_id") == "K08").then(pl.lit("A spinner for salad, now with a brake."))
        .otherwise(pl.col("description")).alias("description"))
    products.write_csv(tiny_shop.input_dir / "products.csv")
    third = materialize_all(tiny_shop.config_path)
    assert metadata_value(third, "product_embeddings", "encoded") == 1
    assert read_table(tiny_shop.warehouse, "runs").height == 3


def test_run_failing_midway_leaves_published_results_unchanged(tiny_shop, monkeypatch):
    assert materialize_all(tiny_shop.config_path).success
    before = {t: read_table(tiny_shop.warehouse, t) for t in [*TABLES, "runs"]}

    # New input that would change the lists, then a failure in the recommendations step.
    events = pl.read_csv(tiny_shop.input_dir / "interactions.csv")
    extra = pl.DataFrame({"user_id": ["U_TRAIL"], "product_id": ["T03"], "event_type": ["purchase"],
                          "value": [1.0], "timestamp": ["2026-09-30T10:00:00Z"]})
    pl.concat([events, extra]).write_csv(tiny_shop.input_dir / "interactions.csv")
    monkeypatch.setenv("SHOPREC_FAULT", "recommendations")
    failed = materialize_all(tiny_shop.config_path, raise_on_error=False)
    assert not failed.success

    for table in TABLES:
        assert read_table(tiny_shop.warehouse, table).equals(before[table]), f"{table} changed after a failed run"
    runs = read_table(tiny_shop.warehouse, "runs").sort("started_at")
    assert runs.head(1).equals(before["runs"]), "the successful run's record changed"
    failure = runs.row(1, named=True)
    assert failure["run_id"] == failed.run_id and failure["status"] == "failed"
    assert "recommendations" in failure["error"]


def test_bad_input_stops_the_run_before_publishing(tiny_shop):
    assert materialize_all(tiny_shop.config_path).success
    before = read_table(tiny_shop.warehouse, "recommendations")

    events = pl.read_csv(tiny_shop.input_dir / "interactions.csv", infer_schema=False)
    events.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("yesterday-ish")).otherwise(pl.col("timestamp"))
        .alias("timestamp")
    ).write_csv(tiny_shop.input_dir / "interactions.csv")
    failed = materialize_all(tiny_shop.config_path, raise_on_error=False)
    assert not failed.success
    check = failed.get_asset_check_evaluations()[-1]
    assert check.asset_key.to_user_string() == "interactions" and not check.passed
    message = check.description
    assert "interactions.csv" in message and "'timestamp'" in message and "row 4" in message
    assert read_table(tiny_shop.warehouse, "recommendations").equals(before)
    runs = read_table(tiny_shop.warehouse, "runs").sort("started_at")
    assert runs["status"].to_list() == ["success", "failed"]
    assert "row 4" in runs["error"][1]  # the failed run's record says why
    quarantined = read_table(tiny_shop.warehouse, "quarantine").filter(pl.col("run_id") == failed.run_id)
    assert quarantined.select("row", "column", "value").rows() == [(4, "timestamp", "yesterday-ish")]
