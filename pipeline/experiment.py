"""One offline evaluation: every model on every split of every protocol, metrics with intervals, the alpha
sweep on validation, and the chosen alpha's numbers on test.

No test information reaches any choice: the behavioural model, the sequence-recency half-life, alpha (and
EASE's lambda) are picked on a validation split, with models fitted on data before the validation cut-off;
test numbers come from models refitted on everything before the test cut-off. The choice is made on the
primary protocol's validation split unless that split is too small to tell configurations apart
(`Tuning.too_small`), and then on the next protocol's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm.auto import tqdm

from pipeline.config import Settings
from pipeline.behavior import BehaviorSpec, ItemCooccurrence, fit_behaviors
from pipeline.evaluation import (
    Split, bootstrap_intervals, bootstrap_weights, full_ranking_metrics, leave_last_out_splits, sample_users,
    sampled_metrics, sampled_rank, temporal_splits,
)
from pipeline.parallel import in_parallel
from pipeline.profiles import InteractionMatrix, InterestWeighting, interaction_matrix
from pipeline.rankers import EaseRanker, HybridRanker, HybridScores, PopularityRanker
from pipeline.recommend import fuse_scores
from pipeline.sparse import SparseLookup

log = logging.getLogger(__name__)

USER_BLOCK = 1024
FALLBACK_ALPHA = 0.2
"""Used by "auto" when validation has no user to evaluate (a tiny or brand-new shop)."""
CHOICE_MARGIN = 0.25
"""On validation a configuration (behavioural model, half-life) must beat the incumbent's NDCG@10 by more than
this share of the incumbent's 95% interval width (about half a standard error) to replace it, and an alpha
below 1 must beat the behavioural model alone by as much (`_best_alpha`): configurations
are compared on the same users, but a dozen of them and eleven alphas each leave room for a winner by noise
(on the sample a half-life of 10 "won" by 0.001 and lost 12% on test)."""
MIN_CHOICE_USERS = 30
"""Fewer validation users than this are too few to choose on whatever their interval says (a bootstrap over
eight users who all hit has an interval of zero width)."""
CHOICE_MAX_RELATIVE_WIDTH = 1.0
"""A validation split is too small to choose on when the 95% interval of its best configuration's NDCG@10 is
wider than the estimate itself (worse than about +-50%): with a few dozen users a choice there is mostly noise
(MovieLens-100K's temporal validation window holds 81 users, +-30%; the sample's 476, +-20%). Not tighter:
leave-last-out on a log where a purchase follows the cart and the view of the same product rewards showing
the product just viewed, which the next days' lists cannot do (on the long-span shop it chose content only)."""


@dataclass(frozen=True)
class EvaluationSettings:
    protocols: tuple[str, ...] = ("temporal", "leave_last_out")
    """The first is primary: alpha is chosen on its validation split, and `model_info` reports it."""
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    target_events: tuple[str, ...] = ("purchase", "cart", "rating")
    ks: tuple[int, ...] = (5, 10, 20)
    alphas: tuple[float, ...] = tuple(round(a * 0.1, 1) for a in range(11))
    ease_l2: tuple[float, ...] = (10.0, 50.0, 100.0, 250.0, 500.0)
    sampled_negatives: int = 100
    bootstrap_resamples: int = 500
    cold_user_events: int = 5
    """Users with fewer training events than this are `cold_users`."""
    popular_item_share: float = 0.2
    """Targets among this share of most-engaged products are `popular_targets`, the rest `long_tail_targets`."""
    max_users: int = 10_000
    """Users scored per split at most (a fixed random sample beyond); 0: everyone."""
    ease_max_products: int = 5_000
    """EASE is left out of catalogs larger than this (its inverse is dense, products x products)."""
    seed: int = 20261126


def evaluation_settings(config: Settings) -> EvaluationSettings:
    evaluation = config.evaluation
    return EvaluationSettings(
        protocols=tuple(evaluation.protocols), valid_fraction=evaluation.valid_fraction,
        test_fraction=evaluation.test_fraction, target_events=tuple(evaluation.target_events),
        sampled_negatives=evaluation.sampled_negatives, bootstrap_resamples=evaluation.bootstrap_resamples,
        cold_user_events=evaluation.cold_user_events, popular_item_share=evaluation.popular_item_share,
        max_users=evaluation.max_users, ease_max_products=evaluation.ease_max_products,
    )


def scoring_settings(config: Settings) -> "ScoringSettings":
    model = config.model
    auto = model.recency_half_life_events == "auto"
    choose_behavior = model.behavior_model == "auto"
    return ScoringSettings(
        weighting=config.interest_weighting(), candidates=model.candidates,
        neighbors_per_item=model.neighbors_per_item,
        half_life_events_grid=tuple(config.evaluation.half_life_events_grid) if auto else None,
        behavior=BehaviorSpec() if choose_behavior else BehaviorSpec.parse(model.behavior_model),
        behavior_options=(tuple(BehaviorSpec.parse(label) for label in config.evaluation.behavior_models)
                          if choose_behavior else None))


@dataclass(frozen=True)
class ScoringSettings:
    """The production model's knobs that evaluation must reproduce."""

    weighting: InterestWeighting
    candidates: int
    neighbors_per_item: int
    half_life_events_grid: tuple[float, ...] | None = None
    """Sequence-recency half-lives to choose from on validation (0 = off); None when config pins one."""
    behavior: BehaviorSpec = field(default_factory=BehaviorSpec)
    """The behavioural model the hybrid uses (the chosen one, once chosen)."""
    behavior_options: tuple[BehaviorSpec, ...] | None = None
    """Behavioural models to choose from on validation (an "ease" option takes the lambda the EASE reference
    chose there, and is tried where the catalog allows EASE); None when config pins one."""


@dataclass
class Ranked:
    """One model's output on one split: top lists and the sampled rank of every (user, target) pair."""

    top: np.ndarray
    pair_rank: np.ndarray


@dataclass
class EvaluationResult:
    metrics: pl.DataFrame
    """protocol, split, model, alpha, k, metric, value, ci_low, ci_high, segment, users."""
    sweep: pl.DataFrame
    """The primary protocol's validation and test NDCG@10 / Hit@10 per alpha, with intervals."""
    population: pl.DataFrame
    """protocol, split, reason, count: who was evaluated and who was set aside, and why."""
    chosen_alpha: float
    chosen_ease_l2: float
    elapsed_seconds: float = 0.0
    primary_protocol: str = "temporal"
    chosen_half_life_events: float | None = None
    """Sequence recency chosen (or pinned) for the hybrid; None: off."""
    tuning: pl.DataFrame = field(default_factory=pl.DataFrame)
    """Each configuration tried on validation (protocol, behavioural model, half-life), its best alpha and that
    NDCG@10 with its 95% interval."""
    chosen_behavior: BehaviorSpec = field(default_factory=BehaviorSpec)
    choice_protocol: str = "temporal"
    """The protocol whose validation split made the choice (and whose test split `model_info` reports): the
    primary one unless its validation split was too small to choose on."""
    choice_reason: str = ""
    """Why the choice was made where it was, in a sentence (shown on the model page)."""

    def model_metric(self, alpha: float, metric: str = "ndcg", k: int = 10, split: str = "test",
                     segment: str = "all") -> dict:
        row = self.metrics.filter(
            (pl.col("protocol") == self.choice_protocol) & (pl.col("split") == split)
            & (pl.col("model") == "hybrid") & (pl.col("alpha") == alpha) & (pl.col("k") == k)
            & (pl.col("metric") == metric) & (pl.col("segment") == segment))
        return row.row(0, named=True) if row.height else {}


def evaluate(interactions: pl.DataFrame, product_ids: list[str], item_vectors: np.ndarray,
             scoring: ScoringSettings, settings: EvaluationSettings = EvaluationSettings(),
             progress: bool = True) -> EvaluationResult:
    started = time.perf_counter()
    splits = {protocol: tuple(sample_users(split, settings.max_users, settings.seed)
                              for split in _splits(interactions, protocol, settings, scoring))
              for protocol in settings.protocols}
    primary = settings.protocols[0]
    choice = _tune(splits[primary][0], product_ids, item_vectors, scoring, settings, progress)
    tunings, reason = [choice], f"chosen on {primary} validation ({choice.users} users)"
    if choice.too_small and len(settings.protocols) > 1:
        fallback = _tune(splits[settings.protocols[1]][0], product_ids, item_vectors, scoring, settings, progress)
        tunings.append(fallback)
        if not fallback.too_small and fallback.relative_width < choice.relative_width:
            reason = (f"chosen on {fallback.protocol} validation ({fallback.users} users): {primary} validation's "
                      f"{choice.users} users were too few to choose on (NDCG@10 {choice.interval_text})")
            choice = fallback
    reason += _alpha_note(choice)
    chosen = replace(choice.scoring, behavior_options=None)  # nothing left to choose on the test splits
    metrics, population = [], []
    for protocol, (valid, test) in splits.items():
        tuned = next((t for t in tunings if t.protocol == protocol), None)
        valid_rows = None if tuned is None else tuned.rows_for(choice)
        if valid_rows is None:
            valid_rows, _, _ = _run_split(valid, product_ids, item_vectors, chosen, settings, (choice.ease_l2,),
                                          segments=False, progress=progress)
        test_rows, _, _ = _run_split(test, product_ids, item_vectors, chosen, settings, (choice.ease_l2,),
                                     segments=True, progress=progress)
        metrics += [valid_rows, test_rows]
        for split in (valid, test):
            population += [{"protocol": protocol, "split": split.name, "reason": why, "count": count}
                           for why, count in split.counts.items()]
    table = pl.concat(metrics)
    result = EvaluationResult(metrics=table, sweep=pl.DataFrame(), population=pl.DataFrame(population),
                              chosen_alpha=choice.alpha, chosen_ease_l2=choice.ease_l2, primary_protocol=primary,
                              chosen_half_life_events=chosen.weighting.half_life_events,
                              tuning=pl.DataFrame([row for t in tunings for row in t.tried], schema=TUNING_SCHEMA,
                                                  orient="row"),
                              chosen_behavior=chosen.behavior, choice_protocol=choice.protocol,
                              choice_reason=reason)
    result.sweep = alpha_sweep_table(table, choice.protocol)
    result.elapsed_seconds = round(time.perf_counter() - started, 2)
    log.info("evaluation done in %.1fs; %s, alpha %.1f, half-life %s events (%s)", result.elapsed_seconds,
             chosen.behavior.label, choice.alpha, result.chosen_half_life_events, reason)
    return result


def _splits(interactions: pl.DataFrame, protocol: str, settings: EvaluationSettings,
            scoring: ScoringSettings) -> tuple[Split, Split]:
    """(validation, test) of a protocol; what is excluded for a user is never a target (`_split`)."""
    excluded = scoring.weighting.excluded_events
    if protocol == "temporal":
        return temporal_splits(interactions, settings.valid_fraction, settings.test_fraction,
                               settings.target_events, excluded)
    if protocol == "leave_last_out":
        return leave_last_out_splits(interactions, settings.target_events, excluded)
    raise ValueError(f"unknown protocol {protocol!r} (temporal, leave_last_out)")


TUNING_SCHEMA = {"protocol": pl.String, "behavior_model": pl.String, "half_life_events": pl.Float64,
                 "best_alpha": pl.Float64, "validation_ndcg_at_10": pl.Float64, "ci_low": pl.Float64,
                 "ci_high": pl.Float64, "users": pl.Int64}


@dataclass
class Tuning:
    """What one validation split chose: the configuration (behavioural model, half-life, alpha), each one
    tried, and how precisely the split measured the winner."""

    protocol: str
    scoring: ScoringSettings
    alpha: float
    ease_l2: float
    rows: pl.DataFrame
    """The split's metric rows: the baselines and the chosen configuration's hybrid at every alpha."""
    tried: list[tuple]
    """TUNING_SCHEMA rows, one per configuration tried."""
    best: dict = field(default_factory=dict)
    """The chosen configuration's validation NDCG@10 row (value, ci_low, ci_high, users)."""
    hybrid_rows: dict = field(default_factory=dict, repr=False)
    """Each configuration's hybrid rows, by (behavioural model label, half-life)."""

    @property
    def users(self) -> int:
        return int(self.best.get("users") or 0)

    @property
    def relative_width(self) -> float:
        value = self.best.get("value") or 0.0
        if not value:
            return np.inf
        return (self.best["ci_high"] - self.best["ci_low"]) / value

    @property
    def too_small(self) -> bool:
        """Too few users to tell configurations apart (`MIN_CHOICE_USERS`, `CHOICE_MAX_RELATIVE_WIDTH`)."""
        return self.users < MIN_CHOICE_USERS or self.relative_width > CHOICE_MAX_RELATIVE_WIDTH

    @property
    def interval_text(self) -> str:
        if not self.best:
            return "(no users)"
        return f"{self.best['value']:.3f} [{self.best['ci_low']:.3f}, {self.best['ci_high']:.3f}]"

    def rows_for(self, chosen: "Tuning") -> pl.DataFrame | None:
        """This split's rows for the configuration `chosen` (this tuning or another split's) made, or None when
        it was not tried here."""
        key = (chosen.scoring.behavior.label, float(chosen.scoring.weighting.half_life_events or 0.0))
        hybrid = self.hybrid_rows.get(key)
        if hybrid is None:
            return None
        return pl.concat([self.rows.filter(pl.col("model") != "hybrid"), hybrid])


def _tune(valid: Split, product_ids, item_vectors, scoring: ScoringSettings, settings: EvaluationSettings,
          progress: bool) -> Tuning:
    """Pick the behavioural model and the sequence-recency half-life (each when not pinned), alpha and EASE's
    lambda on a validation split, by coordinate ascent: the behavioural models compared at the grid's first
    half-life, the winner's half-life chosen, then the other models tried again at that half-life when it
    moved (at most 2 |models| + |half-lives| - 2 passes rather than their product; a model is fitted once a
    split, whatever the half-life)."""
    half_lives = scoring.half_life_events_grid or (scoring.weighting.half_life_events,)
    behaviors = list(scoring.behavior_options or (scoring.behavior,))
    if behaviors == [b for b in behaviors if b.kind == "ease"] and len(product_ids) > settings.ease_max_products:
        raise ValueError(f"model.behavior_model {behaviors[0].label!r} needs a dense products x products inverse: "
                         f"{len(product_ids):,} products is more than evaluation.ease_max_products "
                         f"({settings.ease_max_products:,}); choose rp3beta or cosine, or \"auto\"")
    with_ease_option = any(b.kind == "ease" for b in behaviors) and len(behaviors) > 1
    behaviors = [b for b in behaviors if b.kind != "ease" or not with_ease_option]
    tried, by_key, baselines, l2, fitted = [], {}, None, settings.ease_l2[0], None

    def trial(behavior: BehaviorSpec, half_life: float | None) -> tuple:
        nonlocal baselines, l2, fitted
        candidate = replace(scoring, behavior=behavior,
                            weighting=replace(scoring.weighting, half_life_events=half_life or None))
        first = baselines is None
        rows, found_l2, fitted = _run_split(valid, product_ids, item_vectors, candidate, settings,
                                            settings.ease_l2, segments=False, progress=progress,
                                            baselines=first, fitted=fitted)
        if first:
            baselines, l2 = rows.filter(pl.col("model") != "hybrid"), found_l2
        alpha, best = _best_alpha(rows)
        hybrid = rows.filter(pl.col("model") == "hybrid")
        by_key[(behavior.label, float(half_life or 0))] = hybrid
        tried.append((valid.protocol, behavior.label, float(half_life or 0), alpha, best.get("value"),
                      best.get("ci_low"), best.get("ci_high"), best.get("users")))
        return candidate, alpha, best, hybrid

    results = [trial(behavior, half_lives[0]) for behavior in behaviors]
    if with_ease_option and len(product_ids) <= settings.ease_max_products:
        # The lambda EASE's reference chose on this split; the strongest reference is the first incumbent.
        results.insert(0, trial(BehaviorSpec("ease", l2), half_lives[0]))

    def better(challenger, incumbent) -> bool:
        """A configuration replaces the incumbent only when it wins by more than CHOICE_MARGIN of the incumbent's
        95% interval: among configurations the split cannot tell apart, the earlier (simpler) one stays."""
        now, then = challenger[2].get("value") or 0.0, incumbent[2].get("value") or 0.0
        width = (incumbent[2].get("ci_high") or then) - (incumbent[2].get("ci_low") or then)
        return now > then + CHOICE_MARGIN * width

    best = results[0]
    for result in results[1:]:
        best = result if better(result, best) else best
    for half_life in half_lives[1:]:
        result = trial(best[0].behavior, half_life)
        best = result if better(result, best) else best
    chosen_half_life = best[0].weighting.half_life_events
    if chosen_half_life != (half_lives[0] or None):
        for behavior in [r[0].behavior for r in results if r[0].behavior != best[0].behavior]:
            result = trial(behavior, chosen_half_life)
            best = result if better(result, best) else best
    candidate, alpha, best_row, hybrid = best
    return Tuning(protocol=valid.protocol, scoring=candidate, alpha=alpha, ease_l2=l2,
                  rows=pl.concat([baselines, hybrid]), tried=tried, best=best_row, hybrid_rows=by_key)


def _best_alpha(validation: pl.DataFrame) -> tuple[float, dict]:
    """The alpha with the highest validation NDCG@10 (ties to the smaller alpha), and that NDCG's row; but the
    behavioural model alone (alpha 1) unless that best beats it by more than CHOICE_MARGIN of its 95%
    interval. The content side earns its weight on validation: on the splits where the two cannot be told
    apart, the fusion's choice between eleven alphas picks its winner by noise (MovieLens-100K's temporal
    window of 81 users "chose" 0.9 over EASE alone), and the behavioural model alone is EASE itself where
    the catalog allows it."""
    sweep = _hybrid_ndcg(validation)
    if sweep.is_empty():
        log.warning("no validation users to choose alpha with; using %.1f", FALLBACK_ALPHA)
        return FALLBACK_ALPHA, {}
    best = sweep.row(0, named=True)
    alone = sweep.filter(pl.col("alpha") == 1.0)
    if not alone.is_empty():
        alone = alone.row(0, named=True)
        low, high = alone["ci_low"], alone["ci_high"]
        width = high - low if low is not None and high is not None else 0.0
        if best["value"] <= alone["value"] + CHOICE_MARGIN * width:
            return 1.0, alone
    return float(best["alpha"]), best


def _hybrid_ndcg(rows: pl.DataFrame) -> pl.DataFrame:
    """The hybrid's NDCG@10 rows over all users, one per alpha, best first (ties to the smaller alpha)."""
    return (rows.filter((pl.col("model") == "hybrid") & (pl.col("metric") == "ndcg") & (pl.col("k") == 10)
                        & (pl.col("segment") == "all"))
            .sort(["value", "alpha"], descending=[True, False]))


def _alpha_note(tuning: Tuning) -> str:
    """Why alpha 1 was chosen when another alpha had the best validation NDCG@10 ("" otherwise)."""
    sweep = _hybrid_ndcg(tuning.rows)
    if tuning.alpha != 1.0 or sweep.is_empty() or sweep["alpha"][0] == 1.0:
        return ""
    top = sweep.row(0, named=True)
    return (f"; alpha 1 (the behavioural model alone), since alpha {top['alpha']:g}'s validation NDCG@10 "
            f"({top['value']:.4f}) beat it by less than the noise margin")


def alpha_sweep_table(metrics: pl.DataFrame, protocol: str) -> pl.DataFrame:
    """alpha, split, metric (ndcg, hit), value, ci_low, ci_high at K = 10 for the hybrid."""
    return (
        metrics.filter((pl.col("protocol") == protocol) & (pl.col("model") == "hybrid") & (pl.col("k") == 10)
                       & pl.col("metric").is_in(["ndcg", "hit"]) & (pl.col("segment") == "all"))
        .select("alpha", "split", "metric", "value", "ci_low", "ci_high", "users")
        .sort("split", "metric", "alpha")
    )


@dataclass(frozen=True)
class SplitFit:
    """What a split's first run learns from all its training users and later runs on the split reuse: the
    behavioural models fitted so far (by label), how many users engaged with each product, and how many users
    there are."""

    behaviors: dict[str, ItemCooccurrence]
    engaged: np.ndarray
    users: int


def _run_split(split: Split, product_ids: list[str], item_vectors: np.ndarray, scoring: ScoringSettings,
               settings: EvaluationSettings, ease_l2: tuple[float, ...], segments: bool,
               progress: bool, baselines: bool = True,
               fitted: SplitFit | None = None) -> tuple[pl.DataFrame, float, SplitFit | None]:
    """Every model's metrics on one split; also the chosen EASE lambda and what was learned from all the
    split's training users (pass it back in, without baselines, to score the same split with another
    weighting or behavioural model: with a behavioural model already fitted there, only the evaluated users'
    events are read)."""
    if split.targets.is_empty() or split.train.is_empty():
        log.warning("%s/%s: no user to evaluate", split.protocol, split.name)
        return _empty_metrics(), ease_l2[len(ease_l2) // 2], fitted
    train = split.train
    reused = fitted.behaviors.get(scoring.behavior.label) if fitted is not None else None
    if reused is not None and not baselines:
        # The behavioural model and the products' popularity come from an earlier run on this split: only
        # the evaluated users' rows are read (ages count from each user's own latest event).
        train = train.filter(pl.col("user_id").is_in(split.targets["user_id"].unique()))
    matrix = interaction_matrix(train, product_ids, scoring.weighting)
    position = {u: i for i, u in enumerate(matrix.user_ids)}
    item_position = {p: i for i, p in enumerate(product_ids)}
    users = split.targets["user_id"].unique(maintain_order=True).to_list()
    rows = np.array([position[u] for u in users], dtype=np.int64)
    n_items = len(product_ids)
    user_index = {u: i for i, u in enumerate(users)}
    pair_users = np.array([user_index[u] for u in split.targets["user_id"]], dtype=np.int64)
    pair_items = np.array([item_position[p] for p in split.targets["product_id"]], dtype=np.int64)
    targets = sp.csr_matrix((np.ones(len(pair_users), dtype=np.float32), (pair_users, pair_items)),
                            shape=(len(users), n_items))
    negatives = _sample_negatives(matrix, rows, targets, settings.sampled_negatives, settings.seed)

    if reused is None:
        # The sparse options still to try on this split share one pass over its co-engagement counts.
        family = [scoring.behavior, *(option for option in scoring.behavior_options or ()
                                      if option.kind != "ease" and option != scoring.behavior
                                      and (fitted is None or option.label not in fitted.behaviors))]
        models = fit_behaviors(matrix.engagement, product_ids, family, scoring.neighbors_per_item)
        reused = models.pop(scoring.behavior.label)
    else:
        models = {}
    hybrid = HybridRanker(scoring.candidates, scoring.neighbors_per_item, scoring.behavior).fit(
        matrix, item_vectors, reused)
    popularity = PopularityRanker().fit(matrix) if baselines else None
    with_ease = baselines and n_items <= settings.ease_max_products
    if baselines and not with_ease:
        log.info("EASE left out: %d products > evaluation.ease_max_products (%d)", n_items,
                 settings.ease_max_products)
    ease_models = [EaseRanker(l2).fit(matrix) for l2 in ease_l2] if with_ease else []
    depth = max(settings.ks)
    ranked: dict[tuple[str, float | None], Ranked] = {}

    def record(model, alpha, top, target_scores, negative_scores, block):
        """Record one model's top lists and sampled ranks for a block of users."""
        users_in, _, in_block, _ = block
        if (model, alpha) not in ranked:
            ranked[(model, alpha)] = Ranked(np.empty((len(users), depth), dtype=np.int64), np.empty(len(pair_users)))
        ranked[(model, alpha)].top[users_in] = top
        ranked[(model, alpha)].pair_rank[in_block] = sampled_rank(target_scores, negative_scores)

    def keep(model, alpha, scores, block):
        """A model with dense scores (users x products) for the block."""
        users_in, excluded, in_block, local = block
        record(model, alpha, _top_n(np.where(excluded.toarray() > 0, -np.inf, scores), depth),
               scores[local, pair_items[in_block]],
               np.take_along_axis(scores, negatives[users_in], axis=1)[local], block)

    def keep_popularity(block):
        """Popularity ranks every user's products alike: its lists are the catalog's order, less the excluded."""
        users_in, excluded, in_block, local = block
        record("popularity", None, _top_in_order(popular_order, excluded, depth),
               popularity.popularity_[pair_items[in_block]], popularity.popularity_[negatives[users_in][local]],
               block)

    def keep_hybrid(scores: HybridScores, block):
        """The hybrid at every alpha. What production lists: only its candidate pool can be recommended, so
        products outside it rank below every pool product (fused scores lie in [0, 1]: outside, 2 less).
        Lists come from the pool; a user whose pool is shorter than the lists has the rest filled from
        every other product, scored on demand."""
        users_in, excluded, in_block, local = block
        short = np.flatnonzero((scores.columns >= 0).sum(axis=1) < depth)
        every = np.arange(n_items)[None, :]
        at_short = scores.at(short[:, None], every) if len(short) else None
        at_negatives = scores.at(local[:, None], negatives[users_in][local])
        at_targets = scores.at(local, pair_items[in_block])

        def outside_pool_lower(content, behavior, pool, alpha):
            return fuse_scores(content, behavior, alpha) - 2.0 * ~pool

        for alpha in settings.alphas:
            top = _top_of(scores.columns, scores.fused(alpha), depth)
            if len(short):
                dense = outside_pool_lower(*at_short, alpha)
                top[short] = _top_n(np.where(excluded[short].toarray() > 0, -np.inf, dense), depth)
            record("hybrid", alpha, top, outside_pool_lower(*at_targets, alpha),
                   outside_pool_lower(*at_negatives, alpha), block)

    # Most popular first, ties to the lower column.
    popular_order = np.argsort(-popularity.popularity_, kind="stable") if popularity is not None else None
    starts = range(0, len(users), USER_BLOCK)
    # The hybrid's candidate pools, the costly part, are scored a block per core ahead of the loop's use.
    pools = in_parallel(lambda start: hybrid.block(rows[start:start + USER_BLOCK]), starts)
    for start, pool in tqdm(zip(starts, pools), total=len(starts), desc=f"evaluating {split.protocol}/{split.name}",
                            disable=not progress):
        block_users = np.arange(start, min(start + USER_BLOCK, len(users)))
        block_rows = rows[block_users]
        # What every model of this block shares: the products to exclude, and which target pairs fall in it.
        in_block = np.flatnonzero((pair_users >= start) & (pair_users < start + len(block_users)))
        block = (block_users, matrix.excluded[block_rows], in_block, pair_users[in_block] - start)
        if popularity is not None:
            keep_popularity(block)
        for model in ease_models:
            keep(f"ease:{model.l2:g}", None, model.scores(block_rows), block)
        keep_hybrid(pool, block)

    chosen_l2 = _best_ease(ranked, ease_l2, targets, settings) if len(ease_models) > 1 else ease_l2[0]
    ranked = {(("ease", None) if m.startswith("ease:") else (m, a)): r for (m, a), r in ranked.items()
              if not m.startswith("ease:") or m == f"ease:{chosen_l2:g}"}
    fitted = fitted or SplitFit({}, np.asarray((matrix.engagement > 0).sum(axis=0)).ravel(), len(matrix.user_ids))
    fitted.behaviors.setdefault(scoring.behavior.label, hybrid.behavior_)
    for label, model in models.items():
        fitted.behaviors.setdefault(label, model)
    frame = _metric_rows(split, ranked, targets, pair_users, pair_items, fitted, matrix, rows, settings, segments)
    return frame, chosen_l2, fitted


def _best_ease(ranked, ease_l2, targets, settings) -> float:
    scored = []
    for l2 in ease_l2:
        top = ranked[(f"ease:{l2:g}", None)].top
        scored.append(full_ranking_metrics(top, targets, 10)["ndcg"].mean())
    return float(ease_l2[int(np.argmax(scored))])


def _top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Each row's `n` best columns, best first; -1 pads rows (and catalogs) with fewer."""
    width = min(n, scores.shape[1])
    part = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    top = np.where(np.isfinite(np.take_along_axis(scores, top, axis=1)), top, -1)
    return np.pad(top, ((0, 0), (0, n - width)), constant_values=-1)


def _top_in_order(order: np.ndarray, excluded: sp.csr_matrix, n: int) -> np.ndarray:
    """Each row's first `n` columns of `order` that `excluded` (rows x columns, non-zero excludes) does not
    exclude; -1 pads."""
    head = order[:n + int(np.diff(excluded.indptr).max(initial=0))]
    allowed = excluded[:, head].toarray() == 0
    rank = np.cumsum(allowed, axis=1) - 1
    rows, at = np.nonzero(allowed & (rank < n))
    top = np.full((excluded.shape[0], n), -1, dtype=np.int64)
    top[rows, rank[rows, at]] = head[at]
    return top


def _true_columns(mask: np.ndarray) -> np.ndarray:
    """The columns where each row of `mask` is true, in order; -1 pads."""
    rows, columns = np.nonzero(mask)
    counts = np.bincount(rows, minlength=len(mask))
    out = np.full((len(mask), max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
    out[rows, np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)] = columns
    return out


def _top_of(columns: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Each row's `n` best `columns` by `scores` (ties to the lower column); -1 for non-finite and padding."""
    order = np.lexsort((columns, -scores), axis=1)[:, :n]
    top = np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)), np.take_along_axis(columns, order, axis=1), -1)
    return np.pad(top, ((0, 0), (0, n - top.shape[1])), constant_values=-1)


def _sample_negatives(matrix: InteractionMatrix, rows: np.ndarray, targets: sp.csr_matrix, n: int,
                      seed: int) -> np.ndarray:
    """For each evaluated user, `n` distinct products that are neither excluded for them before the cut-off
    (purchased, by default) nor a target.

    Drawn for all users at once: a few times `n` random products per user, the excluded and repeated ones
    dropped, the first `n` kept; the rare user left short (a tiny catalog, a huge history) is drawn alone."""
    rng = np.random.default_rng(seed)
    n_items = targets.shape[1]
    taken = SparseLookup(((matrix.excluded[rows] + targets) > 0).astype(np.float32))
    draw = rng.integers(n_items, size=(len(rows), 3 * n + 16))
    users = np.arange(len(rows))[:, None]
    order = np.argsort(draw, axis=1, kind="stable")
    ordered = np.take_along_axis(draw, order, axis=1)
    repeat = np.zeros_like(draw, dtype=bool)
    np.put_along_axis(repeat, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
    ok = ~repeat & (taken.get(users, draw) == 0)
    out = np.zeros((len(rows), n), dtype=np.int64)
    rank = np.cumsum(ok, axis=1) - 1
    kept = ok & (rank < n)
    out[np.broadcast_to(users, draw.shape)[kept], rank[kept]] = draw[kept]
    for i in np.flatnonzero(ok.sum(axis=1) < n):
        taken = set(matrix.excluded[rows[i]].indices) | set(targets[i].indices)
        pool = np.setdiff1d(np.arange(n_items), np.fromiter(taken, dtype=np.int64, count=len(taken)))
        if len(pool) == 0:
            continue
        chosen = rng.choice(pool, size=min(n, len(pool)), replace=False)
        out[i] = np.resize(chosen, n)  # tiny catalogs: repeat what there is
    return out


def _metric_rows(split, ranked, targets, pair_users, pair_items, fitted: SplitFit, matrix, rows, settings,
                 segments: bool) -> pl.DataFrame:
    n_items, engaged = targets.shape[1], fitted.engaged
    events_per_user = dict(split.train.group_by("user_id").len().iter_rows())
    train_events = np.array([events_per_user.get(matrix.user_ids[r], 0) for r in rows])
    popular_cut = np.sort(engaged)[::-1][max(0, int(settings.popular_item_share * n_items) - 1)]
    popular_item = engaged >= max(popular_cut, 1)
    share = engaged / max(fitted.users, 1)

    user_segments = {"all": np.ones(len(rows), dtype=bool)}
    target_segments = {}
    if segments:
        user_segments["cold_users"] = train_events < settings.cold_user_events
        user_segments["warm_users"] = train_events >= settings.cold_user_events
        target_segments["popular_targets"] = popular_item[pair_items]
        target_segments["long_tail_targets"] = ~popular_item[pair_items]

    weights_cache: dict[int, np.ndarray] = {}

    def intervals(values: dict[str, np.ndarray]) -> dict[str, tuple[float, float, float]]:
        """Mean and 95% interval of each metric's per-user values (one resampling for all of them)."""
        n = len(next(iter(values.values())))
        if n not in weights_cache:
            weights_cache[n] = bootstrap_weights(n, settings.bootstrap_resamples, settings.seed + n)
        stacked = np.column_stack([v.astype(np.float64) for v in values.values()])
        means, lows, highs = bootstrap_intervals(stacked, weights_cache[n])
        return {name: (float(m), float(lo), float(hi)) for name, m, lo, hi in zip(values, means, lows, highs)}

    records = []
    for (model, alpha), result in ranked.items():
        for segment, pair_mask in [("all", np.ones(len(pair_users), dtype=bool)), *target_segments.items()]:
            seg_targets = sp.csr_matrix((np.ones(pair_mask.sum(), dtype=np.float32),
                                         (pair_users[pair_mask], pair_items[pair_mask])), shape=targets.shape)
            has_target = np.asarray(seg_targets.getnnz(axis=1)).ravel() > 0
            user_sets = user_segments if segment == "all" else {segment: np.ones(len(rows), dtype=bool)}
            for user_segment, user_mask in user_sets.items():
                chosen = user_mask & has_target
                pairs = pair_mask & chosen[pair_users]
                if not chosen.any():
                    continue
                name = user_segment if segment == "all" else segment
                for k in settings.ks:
                    full = full_ranking_metrics(result.top[chosen], seg_targets[chosen], k)
                    sampled = sampled_metrics(result.pair_rank[pairs], k)
                    per_user_sampled = {m: _per_user_mean(v, pair_users[pairs], len(rows))[chosen]
                                        for m, v in sampled.items()}
                    top_k = result.top[chosen][:, :k]
                    values = {**full, **{f"sampled_{m}": v for m, v in per_user_sampled.items()},
                              "popularity": _mean_share(top_k, share)}
                    for metric, (value, low, high) in intervals(values).items():
                        records.append((split.protocol, split.name, model, alpha, k, metric, value, low, high,
                                        name, int(chosen.sum())))
                    coverage = len(np.unique(top_k[top_k >= 0])) / n_items
                    records.append((split.protocol, split.name, model, alpha, k, "coverage", coverage, None,
                                    None, name, int(chosen.sum())))
    return pl.DataFrame(records, orient="row", schema=METRICS_SCHEMA)


METRICS_SCHEMA = {
    "protocol": pl.String, "split": pl.String, "model": pl.String, "alpha": pl.Float64, "k": pl.Int32,
    "metric": pl.String, "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
    "segment": pl.String, "users": pl.Int64,
}


def _empty_metrics() -> pl.DataFrame:
    return pl.DataFrame(schema=METRICS_SCHEMA)


def _mean_share(top: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Mean training popularity (share of users who engaged) of each list's products."""
    present = top >= 0
    totals = np.where(present, share[np.maximum(top, 0)], 0.0).sum(axis=1)
    return np.divide(totals, present.sum(axis=1), out=np.zeros(len(top)), where=present.any(axis=1))


def _per_user_mean(values: np.ndarray, users: np.ndarray, n_users: int) -> np.ndarray:
    sums = np.bincount(users, weights=values, minlength=n_users)
    counts = np.bincount(users, minlength=n_users)
    return np.divide(sums, counts, out=np.zeros(n_users), where=counts > 0)
