"""The embedded sample: reproducible from its generator, big and structured enough, and the whole
pipeline run on it with the real model."""

from __future__ import annotations

import json

import polars as pl

from checks import assert_valid_lists
from conftest import SAMPLE, materialize_all, metadata_value
from pipeline.ingest import read_catalog, read_event_log
from pipeline.synthetic import write_shop
from pipeline.warehouse import read_table

def test_committed_sample_is_what_the_generator_writes(tmp_path):
    write_shop(tmp_path)
    for name in ("products.csv", "interactions.csv"):
        assert (tmp_path / name).read_bytes() == (SAMPLE / name).read_bytes(), f"{name} differs; run `make sample`"


def test_sample_is_big_enough_and_small_enough():
    catalog = read_catalog(SAMPLE)
    events = read_event_log(SAMPLE, catalog.products["product_id"]).interactions
    assert catalog.products.height >= 2000
    assert catalog.products["category"].n_unique() >= 8
    assert events["user_id"].n_unique() >= 1000
    assert events.height >= 30_000
    assert (events["timestamp"].max() - events["timestamp"].min()).days >= 90
    assert set(events["event_type"]) == {"view", "cart", "purchase", "rating"}
    assert sum(p.stat().st_size for p in SAMPLE.iterdir()) < 10 * 1024 * 1024
    assert catalog.products["title"].n_unique() > 0.8 * catalog.products.height


def test_users_have_tastes_not_uniform_noise():
    """Most of a user's purchases fall in their favourite category; uniform choice over 10 would give ~10-30%."""
    catalog = read_catalog(SAMPLE)
    events = read_event_log(SAMPLE, catalog.products["product_id"]).interactions
    bought = (
        events.filter(pl.col("event_type") == "purchase")
        .join(catalog.products.select("product_id", "category"), on="product_id")
    )
    shares = (
        bought.group_by("user_id", "category").len()
        .group_by("user_id").agg(top=pl.col("len").max() / pl.col("len").sum(), n=pl.col("len").sum())
        .filter(pl.col("n") >= 5)
    )
    assert shares["top"].mean() > 0.45
    # Popularity is long-tailed: the top 10% of products draw far more than 10% of events.
    counts = events.group_by("product_id").len().sort("len", descending=True)["len"]
    assert counts.head(len(counts) // 10).sum() / counts.sum() > 0.25


def test_sample_materializes_with_k_recommendations_per_user(sample_run):
    warehouse, result, _ = sample_run
    assert result.success
    recs = assert_valid_lists(warehouse, k=10)
    users = read_table(warehouse, "interactions")["user_id"].n_unique()
    assert recs["user_id"].n_unique() == users
    assert metadata_value(result, "product_embeddings", "encoded") == 2400
    assert read_table(warehouse, "product_embeddings")["embedding"].list.len().unique().to_list() == [384]
    # Recommendations spread over the catalog rather than repeating a few bestsellers.
    assert recs["product_id"].n_unique() > 0.2 * read_table(warehouse, "products").height


def test_sample_lists_follow_each_users_favourite_category(sample_run):
    warehouse, _, _ = sample_run
    recs = read_table(warehouse, "recommendations")
    products = read_table(warehouse, "products").select("product_id", "category")
    events = read_table(warehouse, "interactions").join(products, on="product_id")
    favourite = (
        events.group_by("user_id", "category").len().sort(["len", "category"], descending=[True, False])
        .group_by("user_id", maintain_order=True).first().select("user_id", favourite="category")
    )
    in_favourite = recs.join(products, on="product_id").join(favourite, on="user_id").select(
        (pl.col("category") == pl.col("favourite")).mean()).item()
    assert in_favourite > 0.4  # ten categories: chance alone would be about 0.1


def test_sample_evaluation_lands_in_the_warehouse(sample_run):
    warehouse, result, _ = sample_run
    metrics = read_table(warehouse, "eval_metrics")
    assert set(metrics["protocol"]) == {"temporal", "leave_last_out"}
    assert {"popularity", "ease", "hybrid"} <= set(metrics["model"])
    assert set(metrics["k"]) == {5, 10, 20}
    assert {"hit", "ndcg", "recall", "mrr", "sampled_ndcg", "coverage", "popularity"} <= set(metrics["metric"])
    assert {"all", "cold_users", "warm_users", "popular_targets", "long_tail_targets"} <= set(metrics["segment"])
    with_ci = metrics.filter(pl.col("ci_low").is_not_null())
    tolerance = 1e-9
    assert (with_ci["ci_low"] <= with_ci["value"] + tolerance).all()
    assert (with_ci["value"] <= with_ci["ci_high"] + tolerance).all()
    info = read_table(warehouse, "model_info").row(0, named=True)
    sweep = read_table(warehouse, "alpha_sweep")
    best = sweep.filter((pl.col("split") == "validation") & (pl.col("metric") == "ndcg")).sort(
        ["value", "alpha"], descending=[True, False])["alpha"][0]
    assert info["alpha_source"] == "auto" and info["hybrid_alpha"] == best
    assert read_table(warehouse, "runs")["hybrid_alpha"][0] == best
    # The hybrid beats popularity on the sample's held-out future (the sample is learnable).
    test = metrics.filter((pl.col("split") == "test") & (pl.col("protocol") == "temporal") & (pl.col("k") == 10)
                          & (pl.col("metric") == "ndcg") & (pl.col("segment") == "all"))
    popularity = test.filter(pl.col("model") == "popularity")["value"][0]
    assert info["ndcg_at_10"] > popularity
    assert metadata_value(result, "alpha_sweep", "alpha") == best


def test_gate_keeps_the_old_lists_when_quality_regresses(sample_run, tmp_path):
    warehouse, _, _ = sample_run
    before = read_table(warehouse, "recommendations")
    previous = read_table(warehouse, "model_info")
    # Pin content-only scoring, far worse on this data than the alpha chosen on validation.
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"hybrid_alpha": 0.0}, "data": {
        "input_dir": str(SAMPLE), "warehouse": str(warehouse), "cache_dir": str(warehouse.parent / "cache")}}))
    blocked = materialize_all(config, raise_on_error=False)
    assert not blocked.success
    check, = [c for c in blocked.get_asset_check_evaluations() if c.check_name == "quality_gate_check"]
    assert not check.passed and "NDCG@10 fell" in check.description
    assert read_table(warehouse, "recommendations").equals(before)
    assert read_table(warehouse, "model_info").equals(previous)
    runs = read_table(warehouse, "runs")
    assert runs.filter(pl.col("status") == "success").height == 1
