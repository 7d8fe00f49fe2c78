"""Top-K recommendations per user: candidates from FAISS and the behavioural model, fused and ranked.

For each user, the candidates are the union of the `candidates` nearest products to their content profile
(FAISS) and the `candidates` best behavioural scores. On that set both scores are put on [0, 1]:
- content: cosine(profile, product), min-max scaled over the user's candidates (cosine has no natural zero);
- behavioural: divided by the user's largest candidate score (zero keeps meaning "no evidence").
Then `score = alpha * behavioral + (1 - alpha) * content`. Products the user purchased and products out of
stock are never recommended. Work streams through blocks of users, and within a block only candidates are
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
from pipeline.profiles import InteractionMatrix
from pipeline.vector_index import search

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
    parts = []
    bar = tqdm(total=len(rows), desc="recommending", unit="user", disable=not progress)
    for start in range(0, len(rows), USERS_PER_BLOCK):
        block = rows[start:start + USERS_PER_BLOCK]
        parts.append(scorer.block(block))
        bar.update(len(block))
    bar.close()
    return pl.concat(parts) if parts else _empty_frame()


@dataclass(frozen=True)
class ContentSearch:
    """Nearest in-stock products to a profile. With an exact (flat) index the search runs over an index of
    the in-stock products alone, so nothing found is wasted; with an approximate one it searches the saved
    index deep enough that `n` in-stock products remain."""

    index: faiss.Index
    rows: np.ndarray
    """The product row of each index row."""
    extra_depth: int

    @classmethod
    def over(cls, index: faiss.Index, item_vectors: np.ndarray, in_stock: np.ndarray) -> "ContentSearch":
        if isinstance(index, faiss.IndexFlat):
            rows = np.flatnonzero(in_stock)
            stocked = faiss.IndexFlatIP(item_vectors.shape[1])
            stocked.add(np.ascontiguousarray(item_vectors[rows], dtype=np.float32))
            return cls(stocked, rows, 0)
        return cls(index, np.arange(len(in_stock)), int((~in_stock).sum()))

    def top(self, profiles: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosines, product rows) of about the `n` + `extra_depth` nearest products; -1 pads."""
        scores, found = search(self.index, profiles, n + self.extra_depth)
        return scores, np.where(found >= 0, self.rows[np.maximum(found, 0)], -1)


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
        purchased = SparseLookup(self.matrix.purchased[rows])
        local = np.arange(len(rows))[:, None]

        # Content candidates: the nearest in-stock products, deep enough to drop the block's heaviest
        # buyer's purchases and keep `candidates` of them.
        deepest = int(np.diff(self.matrix.purchased[rows].indptr).max(initial=0))
        cosine_found, found = self.content.top(self.profiles[rows], n + deepest)
        usable = (found >= 0) & self.in_stock[np.maximum(found, 0)] & (purchased.get(local, found) == 0)
        keep = usable & (np.cumsum(usable, axis=1) <= n)
        content_rows = np.where(keep, found, -1)

        # Behavioural candidates: each user's strongest usable scores, straight from the sparse scores.
        raw = SparseLookup(self.behavior.score(weights))
        behavior_rows = raw.top_per_row(n, lambda r, c: self.in_stock[c] & (purchased.get(r, c) == 0))

        candidates, cosine = merge_candidates(content_rows, cosine_found, behavior_rows,
                                               self.profiles[rows], self.item_vectors)
        valid = candidates >= 0
        safe = np.maximum(candidates, 0)
        content_score = scale_content(cosine, valid)
        behavior_score = scale_behavior(raw.get(local, safe), valid)
        score = np.where(valid, fuse_scores(content_score, behavior_score, settings.alpha), -np.inf)

        k = min(settings.top_k, score.shape[1])
        # Highest score first; ties go to the lower product row so runs are reproducible.
        order = np.lexsort((safe, -score), axis=1)[:, :k]
        top = np.take_along_axis(candidates, order, axis=1)
        chosen_valid = np.take_along_axis(valid, order, axis=1)
        u_idx, r_idx = np.nonzero(chosen_valid)
        chosen = top[u_idx, r_idx]

        def picked(values: np.ndarray) -> np.ndarray:
            return np.take_along_axis(values, order, axis=1)[u_idx, r_idx].astype(np.float64)

        evidence = _evidence(weights, self.item_vectors, self.similarity, np.where(chosen_valid, top, -1),
                             settings.alpha)[u_idx, r_idx]
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


class SparseLookup:
    """Values of a CSR matrix at arbitrary (row, column) pairs, vectorised (0 where nothing is stored)."""

    def __init__(self, matrix: sp.csr_matrix):
        matrix = matrix.tocsr()
        matrix.sort_indices()
        self.matrix = matrix
        self.width = np.int64(matrix.shape[1])
        rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
        self.keys = rows * self.width + matrix.indices
        self.rows = rows

    def get(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """matrix[rows, columns] broadcast together; negative columns read 0."""
        rows, columns = np.broadcast_arrays(rows, columns)
        wanted = rows.astype(np.int64) * self.width + np.maximum(columns, 0)
        at = np.minimum(np.searchsorted(self.keys, wanted), max(len(self.keys) - 1, 0))
        found = (len(self.keys) > 0) & (columns >= 0)
        found &= self.keys[at] == wanted if len(self.keys) else False
        values = self.matrix.data[at] if len(self.keys) else np.zeros(wanted.shape, dtype=self.matrix.dtype)
        return np.where(found, values, 0).astype(self.matrix.dtype)

    def top_per_row(self, n: int, allowed) -> np.ndarray:
        """Columns of each row's `n` largest positive values among those `allowed(row, column)`; -1 pads."""
        data, columns = self.matrix.data, self.matrix.indices.astype(np.int64)
        ok = (data > 0) & allowed(self.rows, columns)
        rows, columns, data = self.rows[ok], columns[ok], data[ok]
        order = _by_row_then_value(rows, data)
        rows, columns = rows[order], columns[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
        out = np.full((self.matrix.shape[0], n), -1, dtype=np.int64)
        kept = rank < n
        out[rows[kept], rank[kept]] = columns[kept]
        return out


def _by_row_then_value(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The order that sorts entries by row, then by non-negative float32 value, largest first, ties kept in
    their given order (column order for CSR entries): one integer sort, since the bit patterns of
    non-negative floats sort as the floats do."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.int64)
    return np.argsort((rows.astype(np.int64) << 32) | (0xFFFFFFFF - bits), kind="stable")


def merge_candidates(content_rows: np.ndarray, content_cosine: np.ndarray, behavior_rows: np.ndarray,
                      profiles: np.ndarray, item_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user's content and behavioural candidates, each product once (-1 pads), with its cosine: from
    the search for content candidates, computed for the behavioural ones."""
    behavior_cosine = _candidate_cosines(profiles, item_vectors, np.maximum(behavior_rows, 0))
    rows = np.hstack([content_rows, behavior_rows])
    cosine = np.hstack([content_cosine, behavior_cosine]).astype(np.float32)
    order = np.argsort(np.where(rows >= 0, rows, np.iinfo(np.int64).max), axis=1, kind="stable")
    rows, cosine = np.take_along_axis(rows, order, axis=1), np.take_along_axis(cosine, order, axis=1)
    repeat = np.zeros_like(rows, dtype=bool)
    repeat[:, 1:] = rows[:, 1:] == rows[:, :-1]
    rows = np.where(repeat, -1, rows)
    return rows, np.where(rows >= 0, cosine, 0.0)


def _candidate_cosines(profiles: np.ndarray, item_vectors: np.ndarray, candidates: np.ndarray,
                       users_per_chunk: int = 64) -> np.ndarray:
    """cosine(profile of user u, product candidates[u, c]), gathering a few users' vectors at a time
    (gathering all at once would copy users x candidates x dimensions floats)."""
    cosine = np.empty(candidates.shape, dtype=np.float32)
    for first in range(0, len(candidates), users_per_chunk):
        rows = slice(first, first + users_per_chunk)
        cosine[rows] = np.matmul(item_vectors[candidates[rows]], profiles[rows][:, :, None])[:, :, 0]
    return cosine


def top_columns(dense: np.ndarray, n: int) -> np.ndarray:
    """Columns of each row's `n` largest positive values; -1 fills rows with fewer."""
    n = min(n, dense.shape[1])
    top = np.argpartition(-dense, n - 1, axis=1)[:, :n]
    positive = np.take_along_axis(dense, top, axis=1) > 0
    return np.where(positive, top, -1)


def _evidence(weights: sp.csr_matrix, item_vectors: np.ndarray, similarity: SparseLookup, top: np.ndarray,
              alpha: float) -> np.ndarray:
    """For each user (row) and recommended item (`top`, -1 pads): up to EVIDENCE_ITEMS history items whose
    share of the score is largest (-1 pads), from the user's EVIDENCE_HISTORY most weighted history items.

    A history item i adds `w_i * cos(i, item)` to the content side and `w_i * sim(i, item)` to the
    behavioural side; each side is scaled by its largest contribution, then the sides are mixed by alpha.
    Ties go to the lower product row.
    """
    history, w = _strongest_history(weights, EVIDENCE_HISTORY)  # users x H, -1 pads, weight 0 there
    present = (history >= 0)[:, :, None] & (top >= 0)[:, None, :]  # users x H x K
    safe_history, safe_top = np.maximum(history, 0), np.maximum(top, 0)
    cosine = np.einsum("uhd,ukd->uhk", item_vectors[safe_history], item_vectors[safe_top])
    content = np.where(present, w[:, :, None] * cosine, 0.0)
    behavioral = np.where(present, w[:, :, None] * similarity.get(safe_history[:, :, None], safe_top[:, None, :]), 0.0)
    mixed = (1 - alpha) * _share(content) + alpha * _share(behavioral)
    mixed = np.where(present, mixed, -np.inf).transpose(0, 2, 1)  # users x K x H
    tie = np.broadcast_to(np.where(history >= 0, history, np.iinfo(np.int64).max)[:, None, :], mixed.shape)
    order = np.lexsort((tie, -mixed), axis=2)[:, :, :EVIDENCE_ITEMS]
    best = np.take_along_axis(np.broadcast_to(history[:, None, :], mixed.shape), order, axis=2)
    return np.where(np.take_along_axis(mixed, order, axis=2) > 0, best, -1)


def _strongest_history(weights: sp.csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `n` most weighted columns (ties to the lower column), in column order, and their weights."""
    lookup = SparseLookup(weights)
    data, columns, rows = lookup.matrix.data, lookup.matrix.indices.astype(np.int64), lookup.rows
    order = _by_row_then_value(rows, np.maximum(data, 0))
    rows, columns, data = rows[order], columns[order], data[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    kept = rank < n
    chosen = np.lexsort((columns[kept], rows[kept]))
    rows, columns, data = rows[kept][chosen], columns[kept][chosen], data[kept][chosen]
    slot = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    history = np.full((weights.shape[0], n), -1, dtype=np.int64)
    strength = np.zeros((weights.shape[0], n), dtype=np.float32)
    history[rows, slot], strength[rows, slot] = columns, data
    return history, strength


def _share(values: np.ndarray) -> np.ndarray:
    """Scale each (user, recommended item)'s contributions (users x history x items) by the largest."""
    high = values.max(axis=1, keepdims=True) if values.shape[1] else np.zeros_like(values[:, :1])
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
