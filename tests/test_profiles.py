"""Interest weights and content profiles: recency ranks a user's own events and never erases a user."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from pipeline.behavior import ItemCooccurrence
from pipeline.profiles import DECAY_FLOOR, InterestWeighting, build_user_profiles, interaction_matrix
from pipeline.recommend import RecommendationSettings, recommend
from pipeline.vector_index import build_index

WEIGHTING = InterestWeighting({"view": 1.0, "cart": 3.0, "purchase": 5.0, "rating": 1.0}, half_life_days=30.0)


def long_span_shop(years: int = 25, users_per_year: int = 8, n_items: int = 60, seed: int = 5):
    """Users active in one year each, from `years` years before the log's end to its last year; each user
    views a handful of products from one of three taste groups."""
    rng = np.random.default_rng(seed)
    end = datetime(2026, 11, 30)
    rows = []
    for year in range(years + 1):
        for u in range(users_per_year):
            user = f"y{year:02d}u{u}"
            start = end - timedelta(days=365 * (years - year))
            group = rng.integers(3)
            for i in range(6):
                item = int(group * 20 + rng.integers(20))
                rows.append((user, f"p{item:02d}", "view" if i % 3 else "purchase",
                             start + timedelta(days=float(rng.random() * 200))))
    events = pl.DataFrame(rows, schema={"user_id": pl.String, "product_id": pl.String, "event_type": pl.String,
                                        "timestamp": pl.Datetime("us")}, orient="row").with_columns(value=1.0)
    vectors = rng.normal(size=(n_items, 16)).astype(np.float32)
    vectors[:20] += 2.0  # three taste groups in the text as well
    vectors[40:] -= 2.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return events, [f"p{i:02d}" for i in range(n_items)], vectors


def test_a_user_last_seen_25_years_before_the_log_ends_still_gets_a_real_list():
    events, product_ids, vectors = long_span_shop()
    profiles = build_user_profiles(events, product_ids, vectors, WEIGHTING)
    oldest = profiles.matrix.user_ids.index("y00u0")
    assert profiles.matrix.weights[oldest].nnz > 0  # the history is there
    assert np.linalg.norm(profiles.vectors[oldest]) == pytest.approx(1.0, abs=1e-5)  # and a content profile
    behavior = ItemCooccurrence(neighbors_per_item=20).fit(profiles.matrix.weights, product_ids)
    lists = recommend(profiles.matrix, profiles.vectors, vectors, build_index(vectors), behavior,
                      np.ones(len(product_ids), dtype=bool), RecommendationSettings(alpha=0.5, top_k=10),
                      progress=False)
    theirs = lists.filter(pl.col("user_id") == "y00u0")
    assert theirs.height == 10
    assert theirs["score"].n_unique() > 1  # ranked by something, not all tied
    assert theirs["behavior_score"].max() > 0
    # Users of every year get lists that differ from one another (nobody falls back to the same lowest ids).
    tops = lists.filter(pl.col("rank") == 1).group_by("user_id").agg(pl.col("product_id").first())
    assert tops["product_id"].n_unique() > 3


def test_weights_count_ages_from_the_users_own_latest_event():
    events, product_ids, _ = long_span_shop(years=3)
    # The same user's events moved 20 years back: their weights are the same, as nobody else changes them.
    moved = events.with_columns(timestamp=pl.when(pl.col("user_id") == "y03u1")
                                .then(pl.col("timestamp") - timedelta(days=365 * 20)).otherwise(pl.col("timestamp")))
    before, after = (interaction_matrix(log, product_ids, WEIGHTING) for log in (events, moved))
    row = before.user_ids.index("y03u1")
    assert np.allclose(before.weights[row].toarray(), after.weights[row].toarray(), rtol=1e-5)


def test_an_event_decades_older_than_the_users_latest_keeps_its_product_engaged():
    log = pl.DataFrame({"user_id": ["u", "u"], "product_id": ["old", "new"], "event_type": ["view", "view"],
                        "timestamp": [datetime(1996, 1, 1), datetime(2026, 1, 1)], "value": [1.0, 1.0]})
    matrix = interaction_matrix(log, ["old", "new"], WEIGHTING)
    weights = matrix.weights.toarray()[0]
    assert weights[1] == pytest.approx(1.0)
    assert weights[0] == pytest.approx(DECAY_FLOOR)  # 30 years is far past 20 half-lives: floored, not zero


def test_products_with_an_excluded_event_are_never_recommended_again():
    events, product_ids, vectors = long_span_shop(years=2)
    events = events.with_columns(event_type=pl.when(pl.col("event_type") == "view").then(pl.lit("rating"))
                                 .otherwise(pl.col("event_type")), value=4.0)
    for excluded, seen_types in [(("purchase", "rating"), ("purchase", "rating")), (("purchase",), ("purchase",))]:
        weighting = InterestWeighting(WEIGHTING.event_weights, excluded_events=excluded)
        profiles = build_user_profiles(events, product_ids, vectors, weighting)
        behavior = ItemCooccurrence(neighbors_per_item=20).fit(profiles.matrix.weights, product_ids)
        lists = recommend(profiles.matrix, profiles.vectors, vectors, build_index(vectors), behavior,
                          np.ones(len(product_ids), dtype=bool), RecommendationSettings(alpha=0.5, top_k=10),
                          progress=False)
        seen = events.filter(pl.col("event_type").is_in(list(seen_types))).select("user_id", "product_id")
        assert lists.join(seen, on=["user_id", "product_id"], how="semi").is_empty()
        rated_only = (events.filter(pl.col("event_type") == "rating").select("user_id", "product_id")
                      .join(events.filter(pl.col("event_type") == "purchase"), on=["user_id", "product_id"],
                            how="anti"))
        again = lists.join(rated_only, on=["user_id", "product_id"], how="semi").height
        assert (again == 0) if "rating" in excluded else (again > 0)


def test_a_bad_rating_pulls_the_profile_away_but_still_counts_as_engagement():
    log = pl.DataFrame({"user_id": ["u", "u"], "product_id": ["liked", "disliked"], "event_type": ["rating"] * 2,
                        "timestamp": [datetime(2026, 1, 1), datetime(2026, 1, 2)], "value": [5.0, 1.0]})
    matrix = interaction_matrix(log, ["liked", "disliked"], WEIGHTING)
    assert matrix.weights.toarray()[0].tolist() == pytest.approx([2.5 * 0.5 ** (1 / 30), 0.0])
    assert matrix.engagement.toarray()[0].tolist() == [1.0, 1.0]  # both were watched, for the behavioural model
    assert matrix.excluded.toarray()[0].tolist() == [1.0, 1.0]  # and neither is recommended again
