"""Top-K recommendations per user: candidates from FAISS and the behavioural model, fused and ranked.

For each user, the candidates are the union of the `candidates` nearest products to their content profile
(FAISS) and the `candidates` best behavioural scores. On that set both scores are put on [0, 1]:
- content: cosine(profile, product), min-max scaled over the user's candidates (cosine has no natural zero);
- behavioural: divided by the user's largest candidate score (zero keeps meaning "no evidence").
Then `score = alpha * behavioral + (1 - alpha) * content`. Products the user has an event of an excluded type
with (`InteractionMatrix.excluded`: purchased or rated, by default) and products out of stock are never
recommended. Work streams through blocks of users, and within a block only candidates are
held (users x a few hundred), so memory grows with users, never with users x products.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
from tqdm.auto import tqdm

from pipeline.behavior import ItemCooccurrence
from pipeline.order import WORST, best_columns, best_first, carried, carrying
from pipeline.parallel import in_parallel
from pipeline.profiles import InteractionMatrix
from pipeline.sparse import SparseLookup
from pipeline.vector_index import inner_products, search, top_inner_products

log = logging.getLogger(__name__)

EVIDENCE_ITEMS = 3
EVIDENCE_HISTORY = 32
"""History items considered as evidence: the user's most weighted."""
USERS_PER_BLOCK = 1024
"""Users scored at once: candidates are users x a few hundred, so memory stays small at any catalog size."""


@dataclass(frozen=True)
class RecommendationSettings:
    alpha: float = 0.2
    """Weight of the behavioural score."""
    top_k: int = 10
    candidates: int = 200
    """Candidates per source before fusion."""


def fuse_scores(content: np.ndarray, behavior: np.ndarray, alpha: float) -> np.ndarray:
    """The hybrid score: `alpha * behavior + (1 - alpha) * content`."""
    return alpha * behavior + (1.0 - alpha) * content


def scale_content(cosine: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Min-max scale cosines to [0, 1] with each row's minimum and maximum over its `pool` (the user's
    usable candidates); entries outside the pool use the same constants, clipped. A row whose pool
    cosines are all equal scales to 1."""
    low = np.where(pool, cosine, np.inf).min(axis=1, keepdims=True)
    high = np.where(pool, cosine, -np.inf).max(axis=1, keepdims=True)
    span = high - low
    scaled = np.divide(cosine - low, span, out=np.ones_like(cosine), where=np.isfinite(span) & (span > 0))
    return np.clip(scaled, 0.0, 1.0)


def scale_behavior(raw: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Divide each row by its largest score over its `pool`, so the strongest behavioural candidate gets 1
    and zero keeps meaning "no evidence"; entries outside the pool are clipped to [0, 1]."""
    raw = np.maximum(raw, 0.0)
    high = np.where(pool, raw, 0.0).max(axis=1, keepdims=True)
    return np.clip(np.divide(raw, high, out=np.zeros_like(raw), where=high > 0), 0.0, 1.0)


def recommend(matrix: InteractionMatrix, profiles: np.ndarray, item_vectors: np.ndarray, index: faiss.Index,
              behavior: ItemCooccurrence, in_stock: np.ndarray, settings: RecommendationSettings,
              progress: bool = True, users: np.ndarray | None = None) -> pl.DataFrame:
    """Top-K rows per user: user_id, rank, product_id, score, content_score, behavior_score,
    content_similarity (raw cosine) and evidence_product_ids (the history items that contributed most).

    `users`: rows of `matrix` to recommend for (default: every user), e.g. only those whose lists changed."""
    rows = np.arange(len(matrix.user_ids)) if users is None else np.asarray(users, dtype=np.int64)
    content = ContentSearch.over(index, item_vectors, in_stock)
    scorer = _BlockScorer(matrix, profiles, item_vectors, content, behavior, in_stock, settings)
    blocks = [rows[start:start + USERS_PER_BLOCK] for start in range(0, len(rows), USERS_PER_BLOCK)]
    parts = []
    bar = tqdm(total=len(rows), desc="recommending", unit="user", disable=not progress)
    for block, part in zip(blocks, in_parallel(scorer.block, blocks)):
        parts.append(part)
        bar.update(len(block))
    bar.close()
    return pl.concat(parts) if parts else _empty_frame()


@dataclass(frozen=True)
class ContentSearch:
    """Nearest in-stock products to a profile. With an exact (flat) index the in-stock products' vectors are
    scored exactly (`top_inner_products`), so nothing found is wasted; with an approximate one it searches the
    saved index deep enough that `n` in-stock products remain."""

    index: faiss.Index | None
    """The approximate index to search; None: score `stocked` exactly."""
    stocked: np.ndarray | None
    rows: np.ndarray
    """The product row of each index row (of each `stocked` row)."""
    extra_depth: int
    item_vectors: np.ndarray
    stocked_row: np.ndarray
    """Each product's row in `stocked` (-1: not there)."""

    @classmethod
    def over(cls, index: faiss.Index, item_vectors: np.ndarray, in_stock: np.ndarray) -> "ContentSearch":
        item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if isinstance(index, faiss.IndexFlat):
            rows = np.flatnonzero(in_stock)
            stocked_row = np.full(len(in_stock) + 1, -1, dtype=np.int64)  # + 1: product -1 (a pad) maps to -1
            stocked_row[rows] = np.arange(len(rows))
            return cls(None, item_vectors[rows], rows, 0, item_vectors, stocked_row)
        return cls(index, None, np.arange(len(in_stock)), int((~in_stock).sum()), item_vectors,
                   np.append(np.arange(len(in_stock)), -1))

    def top(self, profiles: np.ndarray, n: int, also: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cosines, product rows) of about the `n` + `extra_depth` nearest products, -1 padding, and the
        cosines of the products `also` names (users x m in-stock product rows, -1 pads: 0 there)."""
        if self.index is None:
            scores, found, also_scores = top_inner_products(profiles, self.stocked, n, at=self.stocked_row[also])
        else:
            scores, found = search(self.index, profiles, n + self.extra_depth)
            also_scores = inner_products(profiles, self.item_vectors, also)
        # -1 (padding) picks the appended -1, also when nothing is in stock and `rows` is empty.
        return scores, np.append(self.rows, -1)[found], also_scores


class _BlockScorer:
    """Scores a block of users at a time; everything it holds is per-run, not per-user."""

    def __init__(self, matrix, profiles, item_vectors, content, behavior, in_stock, settings):
        self.matrix, self.profiles, self.item_vectors = matrix, profiles, item_vectors
        self.content, self.behavior, self.in_stock, self.settings = content, behavior, in_stock, settings
        self.user_ids = pl.Series(matrix.user_ids, dtype=pl.String)
        self.product_ids = pl.Series(matrix.product_ids, dtype=pl.String)
        self.similarity = SparseLookup(behavior.similarity_)

    def block(self, rows: np.ndarray) -> pl.DataFrame:
        settings, n = self.settings, self.settings.candidates
        weights = self.matrix.weights[rows]
        excluded = SparseLookup(self.matrix.excluded[rows])
        local = np.arange(len(rows))[:, None]

        # Behavioural candidates: each user's strongest usable scores, straight from the sparse scores.
        engagement = self.matrix.engagement[rows]
        raw = SparseLookup(self.behavior.score(engagement))
        behavior_rows = raw.top_per_row(n, columns_allowed=self.in_stock, excluded=excluded)

        # Content candidates: the nearest in-stock products, deep enough to drop the excluded products of the
        # block's heaviest user and keep `candidates` of them; the behavioural candidates' cosines on the way.
        deepest = int(np.diff(excluded.matrix.indptr).max(initial=0))
        cosine_found, found, behavior_cosine = self.content.top(self.profiles[rows], n + deepest, behavior_rows)
        usable = (found >= 0) & self.in_stock[np.maximum(found, 0)] & (excluded.get(local, found) == 0)
        keep = usable & (np.cumsum(usable, axis=1) <= n)
        content_rows = np.where(keep, found, -1)

        candidates, cosine = merge_candidates(content_rows, cosine_found, behavior_rows, behavior_cosine)
        valid = candidates >= 0
        content_score = scale_content(cosine, valid)
        behavior_score = scale_behavior(raw.get(local, candidates), valid)
        score = np.where(valid, fuse_scores(content_score, behavior_score, settings.alpha), -np.inf)

        # Highest score first; ties go to the lower product row (candidates come in product order, so the
        # lower column) so runs are reproducible.
        order = best_columns(score, min(settings.top_k, score.shape[1]))
        top = np.take_along_axis(candidates, order, axis=1)
        chosen_valid = np.take_along_axis(valid, order, axis=1)
        u_idx, r_idx = np.nonzero(chosen_valid)
        chosen = top[u_idx, r_idx]

        def picked(values: np.ndarray) -> np.ndarray:
            return np.take_along_axis(values, order, axis=1)[u_idx, r_idx].astype(np.float64)

        evidence = _evidence(weights, engagement, self.item_vectors, self.similarity,
                             np.where(chosen_valid, top, -1), settings.alpha)[u_idx, r_idx]
        return pl.DataFrame({
            "user_id": self.user_ids.gather(rows[u_idx]),
            "rank": pl.Series((r_idx + 1).astype(np.int32)),
            "product_id": self.product_ids.gather(chosen),
            "score": picked(score),
            "content_score": picked(content_score),
            "behavior_score": picked(behavior_score),
            "content_similarity": picked(cosine),
            "evidence_product_ids": _id_lists(evidence, self.product_ids),
        })


def merge_candidates(content_rows: np.ndarray, content_cosine: np.ndarray, behavior_rows: np.ndarray,
                     behavior_cosine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user's content and behavioural candidates, each product once (-1 pads), with its cosine (for a
    product that is both, the content search's)."""
    rows = np.hstack([content_rows, behavior_rows])
    cosine = np.hstack([content_cosine, behavior_cosine]).astype(np.float32)
    # One word per candidate, (product, source) in its high half and its cosine's bits in the low half, so one
    # integer sort orders each row by product, a content candidate before the same behavioural one (its
    # cosine is the search's), pads last, and carries the cosines along (5x an argsort and its gathers).
    source = np.arange(rows.shape[1]) >= content_rows.shape[1]
    words = np.where(rows >= 0, carrying(rows * 2 + source, cosine), WORST)
    words.sort(axis=1)
    rows = np.where(words == WORST, -1, words >> 33)
    repeat = np.zeros_like(rows, dtype=bool)
    repeat[:, 1:] = rows[:, 1:] == rows[:, :-1]
    rows = np.where(repeat, -1, rows)
    return rows, np.where(rows >= 0, carried(words), 0.0)


def _evidence(weights: sp.csr_matrix, engagement: sp.csr_matrix, item_vectors: np.ndarray,
              similarity: SparseLookup, top: np.ndarray, alpha: float) -> np.ndarray:
    """For each user (row) and recommended item (`top`, -1 pads): up to EVIDENCE_ITEMS history items whose
    share of the score is largest (-1 pads), from the user's EVIDENCE_HISTORY most weighted history items
    other than the recommended item itself.

    A history item i adds `w_i * cos(i, item)` to the content side and `e_i * W(i, item)` to the behavioural
    side (its engagement times the behavioural model's weight, as the score sums them); each side is scaled
    by its largest contribution, then the sides are mixed by alpha. Ties go to the lower product row.
    """
    history, w = SparseLookup(weights).strongest_per_row(EVIDENCE_HISTORY)  # users x H, -1 pads, weight 0 there
    e = SparseLookup(engagement).get(np.arange(len(history))[:, None], history)  # 0 at the pads
    users, k, h = len(top), top.shape[1], history.shape[1]
    # users x K x H; a recommended product the user engaged with (a view) is never its own evidence
    present = (top >= 0)[:, :, None] & (history >= 0)[:, None, :] & (history[:, None, :] != top[:, :, None])
    # Cosines and similarities for each user's real history items only (pads are most of the H slots).
    at_user, at_slot = np.nonzero(history >= 0)
    items = history[at_user, at_slot]
    cosine, similar = np.zeros((2, users, k, h), dtype=np.float32)
    cosine[at_user, :, at_slot] = inner_products(item_vectors[items], item_vectors, top[at_user])
    similar[at_user, :, at_slot] = similarity.get(items[:, None], top[at_user])
    content = np.where(present, w[:, None, :] * cosine, 0.0)
    behavioral = np.where(present, e[:, None, :] * similar, 0.0)
    mixed = (1 - alpha) * _share(content) + alpha * _share(behavioral)
    mixed, best = best_first(np.where(present, mixed, -np.inf), np.broadcast_to(history[:, None, :], mixed.shape),
                             EVIDENCE_ITEMS)
    return np.where(mixed > 0, best, -1)


def _share(values: np.ndarray) -> np.ndarray:
    """Scale each (user, recommended item)'s contributions (users x items x history) by the largest."""
    high = values.max(axis=2, keepdims=True) if values.shape[2] else np.zeros_like(values[:, :, :1])
    return np.divide(values, high, out=np.zeros_like(values), where=high > 0).clip(0.0, None)


def _id_lists(rows: np.ndarray, ids: pl.Series) -> pl.Series:
    """A List(String) column from a matrix of product rows padded with -1 (pads at the end of each row)."""
    counts = (rows >= 0).sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    values = ids.gather(rows[rows >= 0]).to_arrow()
    return pl.Series(pa.ListArray.from_arrays(pa.array(offsets), values), dtype=pl.List(pl.String))


def _empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema={
        "user_id": pl.String, "rank": pl.Int32, "product_id": pl.String, "score": pl.Float64,
        "content_score": pl.Float64, "behavior_score": pl.Float64, "content_similarity": pl.Float64,
        "evidence_product_ids": pl.List(pl.String),
    })
