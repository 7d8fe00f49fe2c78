"""Evaluation: metrics against hand-computed cases, splits that leak nothing, known baseline numbers,
the sweep finding a planted best alpha, and the gate keeping old lists when quality regresses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from pipeline.evaluation import (
    bootstrap_interval, bootstrap_weights, full_ranking_metrics, leave_last_out_splits, sampled_metrics,
    sampled_rank, temporal_splits,
)
from pipeline.experiment import CHOICE_MARGIN, EvaluationSettings, ScoringSettings, _best_alpha, evaluate
from pipeline.behavior import BehaviorSpec
from pipeline.model_choice import choose_model, quality_gate
from pipeline.profiles import InterestWeighting

WEIGHTS = {"view": 1.0, "cart": 3.0, "purchase": 5.0, "rating": 1.0}


def test_full_ranking_metrics_by_hand():
    # Three users, one target each: at rank 1, at rank 3, and not in the list.
    top = np.array([[7, 1, 2, 3], [4, 5, 9, 6], [1, 2, 3, 4]])
    targets = sp.csr_matrix(([1, 1, 1], ([0, 1, 2], [7, 9, 8])), shape=(3, 10))
    m = full_ranking_metrics(top, targets, k=4)
    assert m["hit"].tolist() == [1, 1, 0]
    assert m["ndcg"].tolist() == pytest.approx([1.0, 1 / np.log2(4), 0.0])
    assert m["mrr"].tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert m["recall"].tolist() == [1, 1, 0]
    # At k = 2 the rank-3 target is missed.
    assert full_ranking_metrics(top, targets, k=2)["hit"].tolist() == [1, 0, 0]


def test_full_ranking_with_two_targets():
    top = np.array([[3, 0, 5, 1]])
    targets = sp.csr_matrix(([1, 1], ([0, 0], [5, 8])), shape=(1, 10))  # one found at rank 3, one missed
    m = full_ranking_metrics(top, targets, k=4)
    ideal = 1 + 1 / np.log2(3)
    assert m["ndcg"][0] == pytest.approx((1 / np.log2(4)) / ideal)
    assert m["recall"][0] == pytest.approx(0.5)
    assert m["mrr"][0] == pytest.approx(1 / 3)


def test_sampled_rank_and_metrics():
    rank = sampled_rank(np.array([0.9, 0.5, 0.1]), np.array([[0.1, 0.2], [0.6, 0.5], [0.3, 0.2]]))
    assert rank.tolist() == [1.0, 2.5, 3.0]  # a tie counts half
    m = sampled_metrics(rank, k=2)
    assert m["hit"].tolist() == [1, 0, 0]
    assert m["ndcg"][0] == pytest.approx(1.0)


def test_bootstrap_interval_brackets_the_mean():
    values = np.random.default_rng(0).random(400)
    mean, low, high = bootstrap_interval(values, bootstrap_weights(400, 300, seed=1))
    assert low < mean < high
    assert high - low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(400), rel=0.25)


def events(rows):
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return pl.DataFrame(
        [(u, p, e, 1.0, start + timedelta(days=d)) for u, p, e, d in rows],
        schema={"user_id": pl.String, "product_id": pl.String, "event_type": pl.String, "value": pl.Float64,
                "timestamp": pl.Datetime("us", "UTC")}, orient="row")


def test_temporal_split_leaks_nothing_from_the_future():
    rows = [(f"U{u}", f"P{(u + d) % 7}", "purchase", d) for u in range(5) for d in range(0, 100, 5)]
    log = events(rows + [("U0", "P_FUTURE", "purchase", 99.5)])  # planted after the test cut-off
    valid, test = temporal_splits(log, 0.1, 0.1, ("purchase", "cart"), ("purchase",))
    assert "P_FUTURE" not in valid.train["product_id"].to_list()
    assert "P_FUTURE" not in test.train["product_id"].to_list()
    assert "P_FUTURE" in test.targets["product_id"].to_list()
    assert valid.train["timestamp"].max() < test.train["timestamp"].max() <= log["timestamp"].max()
    assert test.train["timestamp"].max() < test.targets.join(log, on=["user_id", "product_id"])["timestamp"].min()


def test_leave_last_out_holds_back_each_users_last_two_targets():
    log = events([("U1", "A", "purchase", 1), ("U1", "B", "view", 2), ("U1", "C", "purchase", 3),
                  ("U1", "D", "purchase", 4), ("U2", "A", "purchase", 1), ("U2", "E", "cart", 2)])
    valid, test = leave_last_out_splits(log, ("purchase", "cart"), ("purchase",))
    assert sorted(test.targets.rows()) == [("U1", "D"), ("U2", "E")]
    assert sorted(valid.targets.rows()) == [("U1", "C")]  # U2's validation target A has no history before it
    assert "D" not in test.train.filter(pl.col("user_id") == "U1")["product_id"].to_list()
    assert set(valid.train.filter(pl.col("user_id") == "U1")["product_id"]) == {"A", "B"}
    assert valid.counts["users_without_history"] == 1


def test_what_is_never_recommended_is_never_a_target_either():
    # A ratings log (films): every event is a consumption, so a film rated before the cut-off can be neither
    # recommended nor hit; a shop that excludes only purchases keeps a re-rated film as a target.
    log = events([("U1", "A", "rating", 1), ("U1", "B", "rating", 2), ("U1", "A", "rating", 95),
                  ("U1", "C", "rating", 96), ("U2", "B", "rating", 1), ("U2", "C", "rating", 2)])
    films = ("view", "cart", "purchase", "rating")
    _, test = temporal_splits(log, 0.1, 0.1, ("rating",), films)
    assert sorted(test.targets.rows()) == [("U1", "C")]
    assert test.counts["repurchase_targets_removed"] == 1
    _, test = temporal_splits(log, 0.1, 0.1, ("rating",), ("purchase",))
    assert sorted(test.targets.rows()) == [("U1", "A"), ("U1", "C")]


def toy_shop():
    """Ten users; P1 bought by everyone in training, P2 by half. Test targets: P2 for the five who lack it."""
    rows = []
    for u in range(10):
        rows.append((f"U{u}", "P1", "purchase", 1))
        if u < 5:
            rows.append((f"U{u}", "P2", "purchase", 2))
        rows.append((f"U{u}", f"Q{u}", "view", 3))
    for u in range(5, 10):
        rows.append((f"U{u}", "P2", "purchase", 10))
    return events(rows)


def test_popularity_on_a_toy_shop_gives_its_known_numbers():
    log = toy_shop()
    products = ["P1", "P2"] + [f"Q{u}" for u in range(10)]
    vectors = np.eye(len(products), 16, dtype=np.float32)
    result = evaluate(log, products, vectors, ScoringSettings(InterestWeighting(WEIGHTS), 10, 10),
                      EvaluationSettings(protocols=("temporal",), valid_fraction=0.2, test_fraction=0.2,
                                         bootstrap_resamples=50, sampled_negatives=5), progress=False)
    popular = result.metrics.filter((pl.col("model") == "popularity") & (pl.col("split") == "test")
                                    & (pl.col("segment") == "all") & (pl.col("k") == 5))
    values = dict(zip(popular["metric"], popular["value"]))
    # P1 is purchased (excluded); P2 is the most engaged remaining product, so it is first for everyone.
    assert values["hit"] == pytest.approx(1.0)
    assert values["ndcg"] == pytest.approx(1.0)
    assert values["mrr"] == pytest.approx(1.0)
    assert popular["users"][0] == 5


def planted_shop(seed=0, users=160, products=60):
    """Behaviour decides: each user's test purchase is the hidden partner of a product they bought, and
    embeddings are noise. A sweep must prefer the behavioural side (a high alpha)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        first = int(rng.integers(products // 2))
        partner = first + products // 2
        day = int(rng.integers(0, 60))
        rows.append((f"U{u}", f"P{first}", "purchase", day))
        rows.append((f"U{u}", f"P{int(rng.integers(products))}", "view", day))
        rows.append((f"U{u}", f"P{partner}", "purchase", day + 1 + (u % 3) * 30))
    return events(rows), [f"P{i}" for i in range(products)], rng.normal(size=(products, 8)).astype(np.float32)


def test_sweep_picks_the_alpha_the_planted_data_rewards():
    log, products, vectors = planted_shop()
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    result = evaluate(log, products, vectors, ScoringSettings(InterestWeighting(WEIGHTS), 20, 20),
                      EvaluationSettings(protocols=("leave_last_out",), bootstrap_resamples=50,
                                         sampled_negatives=20), progress=False)
    assert result.chosen_alpha >= 0.7
    sweep = result.sweep.filter((pl.col("split") == "validation") & (pl.col("metric") == "ndcg")).sort("alpha")
    assert sweep["value"][-1] > sweep["value"][0]  # behaviour-only beats content-only on this data


def test_gate_blocks_a_regression_and_passes_the_first_run():
    previous = {"ndcg_at_10": 0.10, "coverage_at_10": 0.5}
    assert quality_gate({"ndcg_at_10": 0.01, "coverage_at_10": 0.5}, None, 0.2, 0.5).passed
    assert quality_gate({"ndcg_at_10": 0.09, "coverage_at_10": 0.45}, previous, 0.2, 0.5).passed
    dropped = quality_gate({"ndcg_at_10": 0.05, "coverage_at_10": 0.5}, previous, 0.2, 0.5)
    assert not dropped.passed and "NDCG@10 fell from 0.1000 to 0.0500" in dropped.reasons[0]
    collapsed = quality_gate({"ndcg_at_10": 0.10, "coverage_at_10": 0.1}, previous, 0.2, 0.5)
    assert not collapsed.passed and "coverage" in collapsed.reasons[0]


def test_a_validation_window_too_small_to_choose_on_hands_the_choice_to_the_other_protocol():
    # Ten years, each user active for two months of them: the temporal windows at the end hold a handful of
    # users, while every user has a last purchase for leave-last-out.
    from pipeline.synthetic import ShopSize, generate_shop

    products, log = generate_shop(ShopSize(products=150, users=400, days=3650, active_days=60, seed=3))
    log = log.with_columns(timestamp=pl.col("timestamp").str.to_datetime(time_zone="UTC"))
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(products.height, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scoring = ScoringSettings(weighting=InterestWeighting({"view": 1.0, "cart": 3.0, "purchase": 5.0, "rating": 1.0}),
                              candidates=50, neighbors_per_item=20,
                              behavior_options=(BehaviorSpec("rp3beta", 0.2), BehaviorSpec("ease")))
    settings = EvaluationSettings(bootstrap_resamples=50, ease_l2=(10.0, 100.0))
    result = evaluate(log, products["product_id"].to_list(), vectors, scoring, settings, progress=False)
    temporal_users = result.tuning.filter(pl.col("protocol") == "temporal")["users"].max()
    assert temporal_users < 60
    assert result.choice_protocol == "leave_last_out"
    assert "too few to choose on" in result.choice_reason and f"{temporal_users} users" in result.choice_reason
    info = choose_model(result, "auto").info
    assert info["protocol"] == "leave_last_out" and info["chosen_on"] == result.choice_reason
    assert info["behavior_model"] == result.chosen_behavior.label
    # model_info reports the test split of the protocol that chose
    test = result.metrics.filter((pl.col("protocol") == "leave_last_out") & (pl.col("split") == "test")
                                 & (pl.col("model") == "hybrid") & (pl.col("alpha") == result.chosen_alpha)
                                 & (pl.col("metric") == "ndcg") & (pl.col("k") == 10) & (pl.col("segment") == "all"))
    assert info["ndcg_at_10"] == pytest.approx(test["value"][0])


def _validation_sweep(values: dict[float, float], width: float) -> pl.DataFrame:
    """A validation split's hybrid NDCG@10 rows: `values` by alpha, each with an interval `width` wide."""
    return pl.DataFrame([{"model": "hybrid", "metric": "ndcg", "k": 10, "segment": "all", "alpha": alpha,
                          "value": value, "ci_low": value - width / 2, "ci_high": value + width / 2, "users": 80}
                         for alpha, value in values.items()])


def test_an_alpha_below_one_must_beat_the_behavioural_model_alone_by_more_than_noise():
    width = 0.04
    # 0.9 beats alpha 1 by less than the margin: the split cannot tell them apart, the model alone stays.
    noise = CHOICE_MARGIN * width
    alpha, row = _best_alpha(_validation_sweep({0.0: 0.02, 0.5: 0.08, 0.9: 0.100 + noise / 2, 1.0: 0.100}, width))
    assert alpha == 1.0 and row["value"] == 0.100
    # 0.4 beats it clearly: the fusion is chosen.
    alpha, row = _best_alpha(_validation_sweep({0.0: 0.02, 0.4: 0.100 + 2 * noise, 1.0: 0.100}, width))
    assert alpha == 0.4 and row["value"] == pytest.approx(0.100 + 2 * noise)
