"""Fusion and top-K: known answers for the formula, properties for any input."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.behavior import ItemCooccurrence
from pipeline.profiles import InteractionMatrix, user_profiles
from pipeline.recommend import RecommendationSettings, fuse_scores, recommend, scale_behavior, scale_content
from pipeline.vector_index import build_index


def test_fuse_is_the_documented_formula():
    content, behavior = np.array([1.0, 0.0, 0.5]), np.array([0.0, 1.0, 0.5])
    assert fuse_scores(content, behavior, 0.2).tolist() == pytest.approx([0.8, 0.2, 0.5])
    assert fuse_scores(content, behavior, 0.0).tolist() == pytest.approx(content.tolist())
    assert fuse_scores(content, behavior, 1.0).tolist() == pytest.approx(behavior.tolist())


def test_scaling_puts_both_scores_on_zero_to_one():
    pool = np.array([[True, True, True, False]])
    content = scale_content(np.array([[0.2, 0.6, 0.4, 0.9]]), pool)
    # Constants come from the pool; 0.9 lies outside it and is clipped.
    assert content[0].tolist() == pytest.approx([0.0, 1.0, 0.5, 1.0])
    behavior = scale_behavior(np.array([[0.0, 2.0, 1.0, 8.0]]), pool)
    assert behavior[0].tolist() == pytest.approx([0.0, 1.0, 0.5, 1.0])  # zero keeps meaning "no evidence"


def random_shop(seed: int, n_users: int, n_items: int, density: float, out_of_stock: float):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_items, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    weights = sp.random(n_users, n_items, density=density, random_state=seed, format="lil", dtype=np.float32)
    for u in range(n_users):  # every user has at least one event
        if not weights.rows[u]:
            weights[u, rng.integers(n_items)] = 1.0
    weights = weights.tocsr()
    weights.data = np.abs(weights.data) + 0.1
    purchased = weights.copy()
    purchased.data = (rng.random(purchased.nnz) < 0.5).astype(np.float32)
    purchased.eliminate_zeros()
    engagement = (weights > 0).astype(np.float32)
    matrix = InteractionMatrix([f"u{u}" for u in range(n_users)], [f"p{i}" for i in range(n_items)],
                               weights, engagement, purchased)
    in_stock = rng.random(n_items) >= out_of_stock
    return matrix, vectors, in_stock


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_users=st.integers(1, 30), n_items=st.integers(2, 60),
       density=st.floats(0.01, 0.5), out_of_stock=st.floats(0.0, 0.5), k=st.integers(1, 12),
       alpha=st.floats(0.0, 1.0), candidates=st.integers(1, 40))
@example(seed=0, n_users=2, n_items=2, density=0.5, out_of_stock=0.5, k=1, alpha=0.0, candidates=1)  # none in stock
def test_lists_are_well_formed_for_any_shop(seed, n_users, n_items, density, out_of_stock, k, alpha, candidates):
    matrix, vectors, in_stock = random_shop(seed, n_users, n_items, density, out_of_stock)
    behavior = ItemCooccurrence(neighbors_per_item=10).fit(matrix.weights, matrix.product_ids)
    profiles = user_profiles(matrix, vectors)
    recs = recommend(matrix, profiles, vectors, build_index(vectors), behavior, in_stock,
                     RecommendationSettings(alpha=alpha, top_k=k, candidates=max(candidates, k)), progress=False)

    purchased = {(matrix.user_ids[u], matrix.product_ids[i]) for u, i in zip(*matrix.excluded.nonzero())}
    stock = dict(zip(matrix.product_ids, in_stock))
    for user, rows in recs.group_by("user_id"):
        rows = rows.sort("rank")
        u = matrix.user_ids.index(user[0])
        eligible = int(in_stock.sum()) - sum(1 for (uu, p) in purchased if uu == user[0] and stock[p])
        assert rows.height == min(k, eligible)
        assert rows["rank"].to_list() == list(range(1, rows.height + 1))
        assert rows["score"].is_sorted(descending=True)
        assert rows["product_id"].n_unique() == rows.height
        assert all(stock[p] for p in rows["product_id"])
        assert not any((user[0], p) in purchased for p in rows["product_id"])
        assert rows["score"].is_between(0, 1).all()
        expected = alpha * rows["behavior_score"] + (1 - alpha) * rows["content_score"]
        assert np.allclose(rows["score"], expected)
        history = set(matrix.product_ids[i] for i in matrix.weights[u].indices)
        assert set(rows["evidence_product_ids"].explode().drop_nulls()) <= history
        for product, evidence in rows.select("product_id", "evidence_product_ids").iter_rows():
            assert product not in (evidence or [])  # a viewed product is never its own evidence


def test_every_user_with_enough_products_gets_a_list():
    matrix, vectors, in_stock = random_shop(1, 40, 50, 0.2, 0.1)
    behavior = ItemCooccurrence().fit(matrix.weights, matrix.product_ids)
    recs = recommend(matrix, user_profiles(matrix, vectors), vectors, build_index(vectors), behavior, in_stock,
                     RecommendationSettings(top_k=5, candidates=5), progress=False)
    assert sorted(recs["user_id"].unique()) == sorted(matrix.user_ids)
    assert (recs.group_by("user_id").len()["len"] == 5).all()
    assert recs.schema["evidence_product_ids"] == pl.List(pl.String)


def test_the_lists_check_made_bucket_by_bucket_counts_every_break_as_the_whole_check_does():
    from pipeline.quality import check_recommendations

    products = pl.DataFrame({"product_id": ["p1", "p2", "p3", "p4", "p5"],
                             "in_stock": [True, True, True, True, False]})
    events = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u3"], "product_id": ["p1", "p2", "p3", "p4"],
                           "event_type": ["purchase", "view", "view", "view"]})

    def lists(rows):
        return pl.DataFrame(rows, schema={"user_id": pl.String, "rank": pl.Int32, "product_id": pl.String,
                                          "score": pl.Float64}, orient="row")

    first = lists([("u1", 1, "p2", 0.9), ("u1", 2, "p3", 0.5)])  # as it should be
    # u2 is shown an out-of-stock product; u3 gets one product where two were due.
    second = lists([("u2", 1, "p5", 0.8), ("u2", 2, "p4", 0.7), ("u3", 1, "p2", 0.6)])
    in_buckets = check_recommendations(
        [(first, events.filter(pl.col("user_id") == "u1")), (second, events.filter(pl.col("user_id") != "u1"))],
        products, k=2, excluded_events=("purchase",))
    whole = check_recommendations([(pl.concat([first, second]), events)], products, k=2,
                                  excluded_events=("purchase",))

    assert not in_buckets.passed
    broken = {o.rule: o.observed for o in in_buckets.outcomes if not o.passed}
    assert any("in_catalog_and_stock" in rule and observed == "1 of 5 rows" for rule, observed in broken.items())
    assert any("list_length" in rule and observed == "1 of 3 rows" for rule, observed in broken.items())
    assert [(o.rule, o.passed, o.observed) for o in in_buckets.outcomes] == \
        [(o.rule, o.passed, o.observed) for o in whole.outcomes]
    assert check_recommendations([(first, events.filter(pl.col("user_id") == "u1"))], products, k=2, excluded_events=("purchase",)).passed
