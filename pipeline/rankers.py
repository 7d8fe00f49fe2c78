"""Models scored side by side in offline evaluation, each giving dense scores for a block of users.

- `PopularityRanker`: how many users engaged with each product; the same list for everyone.
- `HybridRanker`: the production model (content profile + item co-occurrence, fused by alpha), with the
  same candidate pool and scaling as `pipeline.recommend`, scored densely so any alpha is one mix away.
- `EaseRanker`: EASE (Steck, WWW 2019), a strong linear item-item reference with a closed form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from pipeline.behavior import ItemCooccurrence
from pipeline.profiles import InteractionMatrix, user_profiles
from pipeline.recommend import top_columns, fuse_scores, scale_behavior, scale_content


@dataclass
class PopularityRanker:
    popularity_: np.ndarray = field(default=None, repr=False)
    """Users who engaged with each product in training."""

    def fit(self, matrix: InteractionMatrix) -> "PopularityRanker":
        self.popularity_ = np.asarray((matrix.weights > 0).sum(axis=0), dtype=np.float32).ravel()
        return self

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity_, (len(rows), len(self.popularity_))).copy()


@dataclass
class EaseRanker:
    """B = argmin ||X - XB||^2 + lambda ||B||^2 with diag(B) = 0, over binary engagement X."""

    l2: float = 100.0
    weights_: np.ndarray = field(default=None, repr=False)
    engaged_: sp.csr_matrix = field(default=None, repr=False)

    def fit(self, matrix: InteractionMatrix) -> "EaseRanker":
        self.engaged_ = (matrix.weights > 0).astype(np.float32).tocsr()
        # float32 halves the O(products^3) inverse; with lambda >= 10 added to the diagonal it is accurate far
        # beyond what ranking needs.
        gram = (self.engaged_.T @ self.engaged_).toarray().astype(np.float32)
        gram[np.diag_indices_from(gram)] += self.l2
        precision = np.linalg.inv(gram)
        weights = -precision / np.diag(precision)
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights_ = weights.astype(np.float32)
        return self

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.engaged_[rows] @ self.weights_)


@dataclass
class HybridScores:
    """For a block of users: scaled content and behavioural scores for every product, and the pool of
    candidates production would rank (the scaling constants come from that pool)."""

    content: np.ndarray
    behavior: np.ndarray
    pool: np.ndarray

    def fused(self, alpha: float) -> np.ndarray:
        return fuse_scores(self.content, self.behavior, alpha)


@dataclass
class HybridRanker:
    candidates: int = 200
    neighbors_per_item: int = 100
    matrix_: InteractionMatrix = field(default=None, repr=False)
    profiles_: np.ndarray = field(default=None, repr=False)
    item_vectors_: np.ndarray = field(default=None, repr=False)
    behavior_: ItemCooccurrence = field(default=None, repr=False)

    def fit(self, matrix: InteractionMatrix, item_vectors: np.ndarray,
            behavior: ItemCooccurrence | None = None) -> "HybridRanker":
        """`behavior`: a co-occurrence model already fitted on the same users' engagement, to reuse."""
        self.matrix_ = matrix
        self.item_vectors_ = item_vectors
        self.profiles_ = user_profiles(matrix, item_vectors)
        self.behavior_ = behavior or ItemCooccurrence(self.neighbors_per_item).fit(matrix.weights, matrix.product_ids)
        return self

    def block(self, rows: np.ndarray) -> HybridScores:
        """Dense scores for `rows`. The pool is the top `candidates` not-yet-purchased products by content
        (what an exact FAISS search gives) and by behaviour, as in `pipeline.recommend`; stock is ignored,
        since it is today's, not the evaluation window's."""
        cosine = self.profiles_[rows] @ self.item_vectors_.T
        raw_behavior = self.behavior_.score(self.matrix_.weights[rows]).toarray()
        purchased = self.matrix_.purchased[rows].toarray() > 0
        pool = np.zeros_like(purchased)
        by_content = top_columns(np.where(purchased, -np.inf, cosine + 2.0), self.candidates)
        by_behavior = top_columns(np.where(purchased, 0.0, raw_behavior), self.candidates)
        users = np.arange(len(rows))[:, None]
        for columns in (by_content, by_behavior):
            pool[np.broadcast_to(users, columns.shape)[columns >= 0], columns[columns >= 0]] = True
        pool &= ~purchased
        return HybridScores(content=scale_content(cosine, pool), behavior=scale_behavior(raw_behavior, pool),
                            pool=pool)
