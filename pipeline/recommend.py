"""Top-K recommendations per user: candidates from FAISS and the behavioural model, fused and ranked.

For each user, the candidates are the union of the `candidates` nearest products to their content profile
(FAISS) and the `candidates` best behavioural scores. On that set both scores are put on [0, 1]:
- content: cosine(profile, product), min-max scaled over the user's candidates (cosine has no natural zero);
- behavioural: divided by the user's largest candidate score (zero keeps meaning "no evidence").
Then `score = alpha * behavioral + (1 - alpha) * content`. Products the user purchased and products out of
stock are never recommended. Work streams through blocks of users, so memory grows with users, not with
users x products.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm.auto import tqdm

from pipeline.behavior import ItemCooccurrence
from pipeline.profiles import InteractionMatrix
from pipeline.vector_index import search

log = logging.getLogger(__name__)

EVIDENCE_ITEMS = 3
DENSE_BLOCK_CELLS = 8_000_000  # users x products scored densely at once (about 32 MB of float32)


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
              progress: bool = True) -> pl.DataFrame:
    """Top-K rows per user: user_id, rank, product_id, score, content_score, behavior_score,
    content_similarity (raw cosine) and evidence_product_ids (the history items that contributed most)."""
    n_users, n_items = matrix.weights.shape
    block = max(1, min(n_users, DENSE_BLOCK_CELLS // max(n_items, 1)))
    parts = []
    bar = tqdm(total=n_users, desc="recommending", unit="user", disable=not progress)
    for start in range(0, n_users, block):
        stop = min(start + block, n_users)
        parts.append(_recommend_block(matrix, profiles, item_vectors, index, behavior, in_stock, settings,
                                      start, stop))
        bar.update(stop - start)
    bar.close()
    return pl.concat(parts) if parts else _empty_frame()


def _recommend_block(matrix, profiles, item_vectors, index, behavior, in_stock, settings, start, stop):
    weights = matrix.weights[start:stop]
    users = np.arange(stop - start)

    purchased = matrix.purchased[start:stop].toarray() > 0
    usable = ~purchased & in_stock[None, :]
    # Search deep enough that `candidates` usable products remain after dropping the user's purchases
    # and what is out of stock; otherwise a heavy buyer could end up with fewer than K.
    excluded = int(purchased.sum(axis=1).max(initial=0)) + int((~in_stock).sum())
    _, content_rows = search(index, profiles[start:stop], settings.candidates + excluded)
    content_rows = _first_usable(content_rows, usable, settings.candidates)
    behavior_dense = behavior.score(weights).toarray()
    behavior_rows = top_columns(np.where(usable, behavior_dense, 0.0), settings.candidates)
    candidates = _unique_per_row(np.hstack([content_rows, behavior_rows]))

    safe = np.maximum(candidates, 0)
    valid = (candidates >= 0) & usable[users[:, None], safe]

    cosine = _candidate_cosines(profiles[start:stop], item_vectors, safe)
    content = scale_content(cosine, valid)
    behavioral = scale_behavior(behavior_dense[users[:, None], safe], valid)
    score = np.where(valid, fuse_scores(content, behavioral, settings.alpha), -np.inf)

    k = min(settings.top_k, score.shape[1])
    # Highest score first; ties go to the lower product row so runs are reproducible.
    order = np.lexsort((safe, -score), axis=1)[:, :k]
    top = np.take_along_axis(candidates, order, axis=1)
    top_valid = np.take_along_axis(valid, order, axis=1)

    user_ids = np.asarray(matrix.user_ids[start:stop], dtype=object)
    product_ids = np.asarray(matrix.product_ids, dtype=object)
    u_idx, r_idx = np.nonzero(top_valid)
    chosen = top[u_idx, r_idx]
    evidence = _evidence(weights, item_vectors, behavior, u_idx, chosen, settings.alpha)
    return pl.DataFrame({
        "user_id": pl.Series(user_ids[u_idx].tolist(), dtype=pl.String),
        "rank": pl.Series((r_idx + 1).astype(np.int32)),
        "product_id": pl.Series(product_ids[chosen].tolist(), dtype=pl.String),
        "score": np.take_along_axis(score, order, axis=1)[u_idx, r_idx].astype(np.float64),
        "content_score": np.take_along_axis(content, order, axis=1)[u_idx, r_idx].astype(np.float64),
        "behavior_score": np.take_along_axis(behavioral, order, axis=1)[u_idx, r_idx].astype(np.float64),
        "content_similarity": np.take_along_axis(cosine, order, axis=1)[u_idx, r_idx].astype(np.float64),
        "evidence_product_ids": pl.Series([[product_ids[i] for i in e] for e in evidence],
                                          dtype=pl.List(pl.String)),
    })


def _candidate_cosines(profiles: np.ndarray, item_vectors: np.ndarray, candidates: np.ndarray,
                       users_per_chunk: int = 64) -> np.ndarray:
    """cosine(profile of user u, product candidates[u, c]), gathering a few users' vectors at a time
    (gathering all at once would copy users x candidates x dimensions floats)."""
    cosine = np.empty(candidates.shape, dtype=np.float32)
    for first in range(0, len(candidates), users_per_chunk):
        rows = slice(first, first + users_per_chunk)
        cosine[rows] = np.einsum("ud,ucd->uc", profiles[rows], item_vectors[candidates[rows]])
    return cosine


def _first_usable(ranked: np.ndarray, usable: np.ndarray, n: int) -> np.ndarray:
    """Keep the first `n` usable products of each ranked row; -1 elsewhere."""
    ok = (ranked >= 0) & np.take_along_axis(usable, np.maximum(ranked, 0), axis=1)
    return np.where(ok & (np.cumsum(ok, axis=1) <= n), ranked, -1)


def top_columns(dense: np.ndarray, n: int) -> np.ndarray:
    """Columns of each row's `n` largest positive values; -1 fills rows with fewer."""
    n = min(n, dense.shape[1])
    top = np.argpartition(-dense, n - 1, axis=1)[:, :n]
    positive = np.take_along_axis(dense, top, axis=1) > 0
    return np.where(positive, top, -1)


def _unique_per_row(candidates: np.ndarray) -> np.ndarray:
    """Sort each row and replace repeats with -1, so every product is scored once per user."""
    ordered = np.sort(candidates, axis=1)
    repeat = np.zeros_like(ordered, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return np.where(repeat, -1, ordered)


def _evidence(weights: sp.csr_matrix, item_vectors: np.ndarray, behavior: ItemCooccurrence,
              users: np.ndarray, items: np.ndarray, alpha: float) -> list[list[int]]:
    """For each (user, recommended item): the history items whose share of the score is largest.

    A history item i adds `w_i * cos(i, item)` to the content side and `w_i * sim(i, item)` to the
    behavioural side; each side is scaled by its largest contribution, then the sides are mixed by alpha.
    """
    evidence: list[list[int]] = []
    similarity = behavior.similarity_
    # Pairs arrive grouped by user; score each user's recommended items together.
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], dtype=int)
    for first, last in zip(starts, np.r_[starts[1:], len(users)]):
        lo, hi = weights.indptr[users[first]], weights.indptr[users[first] + 1]
        history, w = weights.indices[lo:hi], weights.data[lo:hi, None]
        recommended = items[first:last]
        content = w * (item_vectors[history] @ item_vectors[recommended].T)
        behavioral = w * similarity[history][:, recommended].toarray()
        mixed = (1 - alpha) * _share(content) + alpha * _share(behavioral)
        for column in mixed.T:
            best = np.argsort(-column, kind="stable")[:EVIDENCE_ITEMS]
            evidence.append(history[best[column[best] > 0]].tolist())
    return evidence


def _share(values: np.ndarray) -> np.ndarray:
    """Scale each column (one recommended item) by its largest contribution."""
    high = values.max(axis=0, keepdims=True) if len(values) else np.zeros((1, values.shape[1]))
    return np.divide(values, high, out=np.zeros_like(values), where=high > 0).clip(0.0, None)


def _empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema={
        "user_id": pl.String, "rank": pl.Int32, "product_id": pl.String, "score": pl.Float64,
        "content_score": pl.Float64, "behavior_score": pl.Float64, "content_similarity": pl.Float64,
        "evidence_product_ids": pl.List(pl.String),
    })
