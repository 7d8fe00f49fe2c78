"""What must hold for any published set of recommendations, checked against the warehouse itself."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.warehouse import read_table


def assert_valid_lists(warehouse: Path, k: int) -> pl.DataFrame:
    """Every eligible user has exactly K rows ranked 1..K with non-increasing scores in [0, 1], and no list
    holds a purchased, out-of-stock, unknown or repeated product. Returns the recommendations."""
    recs = read_table(warehouse, "recommendations")
    products = read_table(warehouse, "products")
    events = read_table(warehouse, "interactions")
    purchased = events.filter(pl.col("event_type") == "purchase").select("user_id", "product_id").unique()
    in_stock = products.filter("in_stock").height
    bought = purchased.group_by("user_id").len("bought")
    users = events.select("user_id").unique().join(bought, on="user_id", how="left").fill_null(0)
    eligible = users.filter(in_stock - pl.col("bought") >= k)["user_id"]

    per_user = recs.group_by("user_id").agg(
        n=pl.len(), ranks=pl.col("rank").sort(), scores=pl.col("score").sort_by("rank"),
        distinct=pl.col("product_id").n_unique(),
    )
    assert set(eligible) <= set(per_user["user_id"]), "an eligible user has no list"
    for row in per_user.iter_rows(named=True):
        if row["user_id"] in set(eligible):
            assert row["n"] == k, f"{row['user_id']} has {row['n']} rows, expected {k}"
        assert row["ranks"] == list(range(1, row["n"] + 1)), f"{row['user_id']}: ranks {row['ranks']}"
        scores = row["scores"]
        assert all(a >= b for a, b in zip(scores, scores[1:])), f"{row['user_id']}: scores increase"
        assert row["distinct"] == row["n"], f"{row['user_id']}: a product repeats"
    assert recs["score"].is_between(0.0, 1.0).all()
    assert recs.join(purchased, on=["user_id", "product_id"], how="semi").is_empty(), "a purchase is recommended"
    known = recs.join(products, on="product_id", how="left")
    assert known["title"].is_not_null().all(), "an unknown product is recommended"
    assert known["in_stock"].all(), "an out-of-stock product is recommended"
    return recs
