"""Offline evaluation: leak-free splits, full-ranking and sampled metrics, and bootstrap intervals.

Protocols:
- `temporal` (primary): two global cut-offs split all interactions into train / validation / test windows.
  Nobody's future reaches training, unlike a per-user split.
- `leave_last_out`: each user's last target event is the test target, the one before it the validation
  target; training is everything earlier (other users' later events included, as in most papers).
Targets are the purchases, carts and ratings (config) in the window, minus products the user already had an
excluded event with before the cut-off (purchased or rated, by default: `model.exclude_events`), which are
never recommended, so they could never be hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

METRICS = ("hit", "ndcg", "recall", "mrr")
"""Ranking metrics reported at every K, in full-ranking and sampled form."""


@dataclass(frozen=True)
class Split:
    """What a model may learn from (`train`) and what it must find (`targets`: user_id, product_id)."""

    protocol: str
    name: str
    train: pl.DataFrame
    targets: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    """Users and targets set aside, by reason, so nobody is dropped silently."""


def temporal_splits(interactions: pl.DataFrame, valid_fraction: float, test_fraction: float,
                    target_events: tuple[str, ...], excluded_events: tuple[str, ...]) -> tuple[Split, Split]:
    """Validation: train before the first cut-off, targets between the cut-offs. Test: train before the
    second cut-off, targets after it. Cut-offs are the time quantiles 1 - valid - test and 1 - test."""
    times = interactions["timestamp"].sort()
    valid_cut = times[int((1.0 - valid_fraction - test_fraction) * (len(times) - 1))]
    test_cut = times[int((1.0 - test_fraction) * (len(times) - 1))]
    before_valid = interactions.filter(pl.col("timestamp") < valid_cut)
    before_test = interactions.filter(pl.col("timestamp") < test_cut)
    valid_window = interactions.filter((pl.col("timestamp") >= valid_cut) & (pl.col("timestamp") < test_cut))
    test_window = interactions.filter(pl.col("timestamp") >= test_cut)
    return (_split("temporal", "validation", before_valid, valid_window, target_events, excluded_events),
            _split("temporal", "test", before_test, test_window, target_events, excluded_events))


def leave_last_out_splits(interactions: pl.DataFrame, target_events: tuple[str, ...],
                          excluded_events: tuple[str, ...]) -> tuple[Split, Split]:
    """Per user: the last target event is the test target, the second-to-last the validation target.
    Events are ordered by timestamp, ties by product id; training for each is everything before it."""
    ordered = interactions.sort(["user_id", "timestamp", "product_id"]).with_columns(
        position=pl.int_range(pl.len()).over("user_id"))
    is_target = pl.col("event_type").is_in(list(target_events))
    last_targets = (
        ordered.filter(is_target).group_by("user_id", maintain_order=True)
        .agg(test_at=pl.col("position").last(), valid_at=pl.col("position").reverse().get(1, null_on_oob=True))
    )
    located = ordered.join(last_targets, on="user_id", how="left")
    test_train = located.filter(pl.col("test_at").is_null() | (pl.col("position") < pl.col("test_at")))
    test_rows = located.filter(pl.col("position") == pl.col("test_at"))
    valid_train = located.filter(pl.col("valid_at").is_null() | (pl.col("position") < pl.col("valid_at")))
    valid_rows = located.filter(pl.col("position") == pl.col("valid_at"))
    drop = ["position", "test_at", "valid_at"]
    return (
        _split("leave_last_out", "validation", valid_train.drop(drop), valid_rows.drop(drop), target_events,
               excluded_events),
        _split("leave_last_out", "test", test_train.drop(drop), test_rows.drop(drop), target_events,
               excluded_events),
    )


def _split(protocol: str, name: str, train: pl.DataFrame, window: pl.DataFrame,
           target_events: tuple[str, ...], excluded_events: tuple[str, ...]) -> Split:
    candidates = (
        window.filter(pl.col("event_type").is_in(list(target_events)))
        .select("user_id", "product_id").unique()
    )
    # What the user already had an excluded event with is never recommended to them: not a target either.
    bought_before = (train.filter(pl.col("event_type").is_in(list(excluded_events)))
                     .select("user_id", "product_id").unique())
    fresh = candidates.join(bought_before, on=["user_id", "product_id"], how="anti")
    known_users = train.select("user_id").unique()
    targets = fresh.join(known_users, on="user_id", how="semi").sort("user_id", "product_id")
    window_users = window["user_id"].n_unique()
    target_users = candidates["user_id"].n_unique()
    counts = {
        "users_in_window": window_users,
        "users_without_target": window_users - target_users,
        "users_without_history": fresh.join(known_users, on="user_id", how="anti")["user_id"].n_unique(),
        "users_only_repurchases": target_users - fresh["user_id"].n_unique(),
        "repurchase_targets_removed": candidates.height - fresh.height,
        "users_evaluated": targets["user_id"].n_unique(),
        "targets": targets.height,
    }
    return Split(protocol=protocol, name=name, train=train, targets=targets, counts=counts)


def sample_users(split: Split, max_users: int, seed: int) -> Split:
    """Keep the targets of at most `max_users` users, a fixed random sample (training data stays whole), and
    count the users left out. 0 keeps everyone."""
    users = split.targets["user_id"].unique().sort()
    if not max_users or len(users) <= max_users:
        return split
    chosen = users.sample(max_users, seed=seed)
    targets = split.targets.filter(pl.col("user_id").is_in(chosen.implode()))
    counts = {**split.counts, "users_sampled_out": len(users) - max_users, "users_evaluated": max_users,
              "targets": targets.height}
    return Split(protocol=split.protocol, name=split.name, train=split.train, targets=targets, counts=counts)


# ---- metrics ---------------------------------------------------------------------------------------

def full_ranking_metrics(top: np.ndarray, targets: sp.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """Per-user Hit, NDCG, Recall and MRR at `k` from ranked lists.

    Args:
        top: users x n ranked product columns (n >= k), -1 where a list is shorter.
        targets: users x products, non-zero where a product is a target of that user.
        k: the cut-off.
    """
    top = top[:, :k]
    rows = np.arange(top.shape[0])[:, None]
    relevant = np.asarray(targets[rows, np.maximum(top, 0)].todense()) > 0
    relevant &= top >= 0
    n_targets = np.asarray(targets.getnnz(axis=1)).ravel()
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n_targets, k) - 1]
    first = np.where(relevant.any(axis=1), relevant.argmax(axis=1) + 1, 0)
    return {
        "hit": relevant.any(axis=1).astype(np.float64),
        "ndcg": (relevant * discounts).sum(axis=1) / ideal,
        "recall": relevant.sum(axis=1) / n_targets,
        "mrr": np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0),
    }


def sampled_rank(target_scores: np.ndarray, negative_scores: np.ndarray) -> np.ndarray:
    """The rank of each target among its sampled negatives (1 = above all of them).

    Args:
        target_scores: (n,) score of each (user, target) pair.
        negative_scores: (n, m) scores of that pair's m negatives.
    Ties count half, so a model that scores everything equally sits in the middle.
    """
    above = (negative_scores > target_scores[:, None]).sum(axis=1)
    tied = (negative_scores == target_scores[:, None]).sum(axis=1)
    return 1.0 + above + 0.5 * tied


def sampled_metrics(rank: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Hit, NDCG, Recall and MRR at `k` of single targets with the given sampled ranks."""
    hit = rank <= k
    return {
        "hit": hit.astype(np.float64),
        "ndcg": np.where(hit, 1.0 / np.log2(rank + 1.0), 0.0),
        "recall": hit.astype(np.float64),
        "mrr": np.where(hit, 1.0 / rank, 0.0),
    }


def bootstrap_interval(values: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval over users.

    Args:
        values: one value per user.
        weights: resamples x users multinomial counts (each row sums to the number of users), shared
            across metrics so every metric is resampled the same way.
    """
    mean, low, high = bootstrap_intervals(values[:, None], weights)
    return float(mean[0]), float(low[0]), float(high[0])


def bootstrap_intervals(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`bootstrap_interval` for every column of `values` (users x metrics) at once: the resampling weights
    are read once for all metrics, which is what makes intervals cheap for many models and metrics."""
    if len(values) == 0:
        nan = np.full(values.shape[1], np.nan)
        return nan, nan, nan
    means = weights @ values / len(values)  # resamples x metrics
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return values.mean(axis=0), low, high


def bootstrap_weights(n_users: int, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=resamples).astype(np.float64)
