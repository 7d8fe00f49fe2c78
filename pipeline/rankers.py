"""Models scored side by side in offline evaluation, each scoring a block of users.

- `PopularityRanker`: how many users engaged with each product; the same list for everyone.
- `HybridRanker`: the production model (content profile + a behavioural model, fused by alpha), with the
  same candidate pool and scaling as `pipeline.recommend`: scores of the pool, and of any other pair on
  demand, so any alpha is one mix away and nothing users x products is held.
- `EaseRanker`: EASE (Steck, WWW 2019), a strong linear item-item reference with a closed form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from pipeline.behavior import BehaviorSpec, ItemCooccurrence, ease_weights
from pipeline.profiles import InteractionMatrix, profile_vectors
from pipeline.recommend import fuse_scores, merge_candidates, scale_behavior, scale_content
from pipeline.sparse import SparseLookup
from pipeline.vector_index import inner_products, top_inner_products


@dataclass
class PopularityRanker:
    popularity_: np.ndarray = field(default=None, repr=False)
    """Users who engaged with each product in training."""

    def fit(self, matrix: InteractionMatrix) -> "PopularityRanker":
        self.popularity_ = np.asarray((matrix.engagement > 0).sum(axis=0), dtype=np.float32).ravel()
        return self


@dataclass
class EaseRanker:
    """B = argmin ||X - XB||^2 + lambda ||B||^2 with diag(B) = 0, over binary engagement X."""

    l2: float = 100.0
    weights_: np.ndarray = field(default=None, repr=False)
    engaged_: sp.csr_matrix = field(default=None, repr=False)

    def fit(self, matrix: InteractionMatrix) -> "EaseRanker":
        self.engaged_ = (matrix.engagement > 0).astype(np.float32).tocsr()
        self.weights_ = ease_weights((self.engaged_.T @ self.engaged_).toarray().astype(np.float32), self.l2)
        return self

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.engaged_[rows] @ self.weights_)


@dataclass
class HybridScores:
    """For a block of users: the pool of candidates production would rank (`columns`, -1 pads) with their
    scaled content and behavioural scores, and the per-user scaling constants (taken from the pool), so
    any other (user, product) pair can be scored the same way with `at`."""

    columns: np.ndarray
    content: np.ndarray
    behavior: np.ndarray
    profiles: np.ndarray = field(repr=False)
    item_vectors: np.ndarray = field(repr=False)
    raw_behavior: SparseLookup = field(repr=False)
    in_pool: SparseLookup = field(repr=False)
    content_low: np.ndarray = field(repr=False)
    content_span: np.ndarray = field(repr=False)
    behavior_high: np.ndarray = field(repr=False)

    def fused(self, alpha: float) -> np.ndarray:
        """The pool's fused scores (-inf at padding)."""
        return np.where(self.columns >= 0, fuse_scores(self.content, self.behavior, alpha), -np.inf)

    def at(self, rows: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scaled content, scaled behaviour, in the pool) for users `rows` (of the block) x `items`, any
        broadcastable shapes."""
        cosine = self._cosine(rows, items)
        rows, items = np.broadcast_arrays(rows, items)
        low, span = self.content_low[rows], self.content_span[rows]
        content = np.divide(cosine - low, span, out=np.ones_like(cosine), where=np.isfinite(span) & (span > 0))
        raw, high = np.maximum(self.raw_behavior.get(rows, items), 0.0), self.behavior_high[rows]
        behavior = np.divide(raw, high, out=np.zeros_like(raw), where=high > 0)
        return np.clip(content, 0.0, 1.0), np.clip(behavior, 0.0, 1.0), self.in_pool.get(rows, items) > 0


    def _cosine(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """profile . item for the broadcast pairs, without gathering a profile once per pair."""
        if rows.ndim == 2 and rows.shape[1] == 1 and items.ndim == 2 and items.shape[0] == 1:  # users x products
            return self.profiles[rows[:, 0]] @ self.item_vectors[items[0]].T
        if rows.ndim == 2 and rows.shape[1] == 1 and items.ndim == 2 and len(items) == len(rows):
            return inner_products(self.profiles[rows[:, 0]], self.item_vectors, items)  # each user x their own
        rows, items = np.broadcast_arrays(rows, items)
        return np.einsum("...d,...d->...", self.profiles[rows], self.item_vectors[items])


@dataclass
class HybridRanker:
    candidates: int = 200
    neighbors_per_item: int = 100
    behavior: BehaviorSpec = field(default_factory=BehaviorSpec)
    matrix_: InteractionMatrix = field(default=None, repr=False)
    item_vectors_: np.ndarray = field(default=None, repr=False)
    behavior_: ItemCooccurrence = field(default=None, repr=False)

    def fit(self, matrix: InteractionMatrix, item_vectors: np.ndarray,
            behavior: ItemCooccurrence | None = None) -> "HybridRanker":
        """`behavior`: the behavioural model already fitted on the same users' engagement, to reuse."""
        self.matrix_ = matrix
        self.item_vectors_ = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.behavior_ = behavior or ItemCooccurrence(self.neighbors_per_item, self.behavior).fit(
            matrix.engagement, matrix.product_ids)
        return self

    def block(self, rows: np.ndarray) -> HybridScores:
        """The candidate pool of `rows`: the top `candidates` products not excluded for the user by content (scored
        exactly) and by behaviour, as in `pipeline.recommend`; stock is ignored, since it is today's,
        not the evaluation window's. Nothing users x products is held."""
        n = self.candidates
        # Profiles of the block's users only: the split's every user would be users x 384 floats per fit.
        profiles = profile_vectors(self.matrix_.weights[rows], self.item_vectors_)
        excluded = SparseLookup(self.matrix_.excluded[rows])
        local = np.arange(len(rows))[:, None]
        raw = SparseLookup(self.behavior_.score(self.matrix_.engagement[rows]))
        behavior_rows = raw.top_per_row(n, excluded=excluded)
        deepest = int(np.diff(excluded.matrix.indptr).max(initial=0))
        cosine_found, found, behavior_cosine = top_inner_products(profiles, self.item_vectors_, n + deepest,
                                                                  at=behavior_rows)
        usable = (found >= 0) & (excluded.get(local, found) == 0)
        content_rows = np.where(usable & (np.cumsum(usable, axis=1) <= n), found, -1)
        columns, cosine = merge_candidates(content_rows, cosine_found, behavior_rows, behavior_cosine)
        valid = columns >= 0
        low = np.where(valid, cosine, np.inf).min(axis=1)
        span = np.where(valid, cosine, -np.inf).max(axis=1) - low
        raw_at_pool = np.maximum(raw.get(local, columns), 0.0)
        high = np.where(valid, raw_at_pool, 0.0).max(axis=1)
        pool_rows = np.broadcast_to(local, columns.shape)[valid]
        in_pool = SparseLookup(sp.csr_matrix((np.ones(valid.sum(), dtype=np.float32), (pool_rows, columns[valid])),
                                             shape=(len(rows), len(self.item_vectors_))))
        return HybridScores(columns=columns, content=scale_content(cosine, valid),
                            behavior=scale_behavior(raw_at_pool, valid), profiles=profiles,
                            item_vectors=self.item_vectors_, raw_behavior=raw, in_pool=in_pool, content_low=low,
                            content_span=span, behavior_high=high)
