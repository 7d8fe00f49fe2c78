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


def assert_same_lists(got: pl.DataFrame, want: pl.DataFrame, atol: float = 1e-5) -> None:
    """The same lists, computed another way (other buckets, other processes): the same users and ranks, scores
    within `atol`, and the same product at every rank except where two products' scores are within `atol` of
    each other. The same score computed in another block of users may round apart in its last bits on some
    BLAS kernels, and then the tie rule (the lower product first) is decided by the rounding, which is all
    float32 can promise; everything else must be identical."""
    keys = ["user_id", "rank"]
    got, want = got.sort(keys), want.sort(keys)
    assert got.select(keys).equals(want.select(keys))
    close = (got["score"] - want["score"]).abs() <= atol
    assert close.all(), got.filter(~close).head()
    differ = got["product_id"] != want["product_id"]
    if differ.any():
        # A product in another place is one whose score ties (within atol) with the product it swapped with.
        swapped = got.filter(differ).select("user_id", "product_id", got_score="score").join(
            want.select("user_id", "product_id", want_score="score"), on=["user_id", "product_id"], how="left")
        near = (swapped["got_score"] - swapped["want_score"].fill_null(-1.0)).abs() <= atol
        cut = want.group_by("user_id").agg(last=pl.col("score").min())
        at_cut = swapped.join(cut, on="user_id").select((pl.col("got_score") - pl.col("last")).abs() <= atol)
        assert (near | at_cut.to_series()).all(), swapped.filter(~near)
    same = ~differ
    exact = [c for c, t in want.schema.items() if not t.is_float() and c not in ("run_id", "computed_at")]
    assert got.filter(same).select(exact).equals(want.filter(same).select(exact))
