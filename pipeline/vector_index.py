"""The FAISS index over product embeddings: building it, saving it beside the warehouse, and querying it.

Vectors are L2-normalized, so inner product is cosine similarity. `flat` is exact; `hnsw` and `ivf` trade a
little recall for speed on large catalogs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from pipeline.order import WORST, pack, scores_of, unpack
from pipeline.parallel import in_parallel
from pipeline.sparse import position_in_row

HNSW_NEIGHBORS = 32
HNSW_EF_SEARCH = 128
IVF_PROBES = 16
SCORING_TILE = 8192
"""Products scored at once by `top_inner_products`: a block of 1,024 queries holds 32 MB of scores."""
QUERIES_PER_BLOCK = 1024
"""Queries a core scores at once in `exact_search`."""


@dataclass(frozen=True)
class SavedIndex:
    """A FAISS index written to `path`, and each product's nearest neighbours found with it."""

    path: Path
    kind: str
    similar: pl.DataFrame


def build_index(vectors: np.ndarray, kind: str = "flat") -> faiss.Index:
    """An inner-product index of `kind` (flat, hnsw or ivf) holding `vectors` in row order."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBORS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "ivf":
        lists = max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))  # FAISS wants ~39 training points a list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(IVF_PROBES, lists)
    else:
        raise ValueError(f"unknown FAISS index kind {kind!r} (flat, hnsw, ivf)")
    index.add(vectors)
    return index


def save_index(index: faiss.Index, product_ids: list[str], path: Path) -> None:
    """Write the index and, beside it, the product id of each row (`<path>.ids.json`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(path))
    ids_path(path).write_text(json.dumps(product_ids), encoding="utf-8")


def load_index(path: Path) -> tuple[faiss.Index, list[str]]:
    return faiss.read_index(str(path)), json.loads(ids_path(path).read_text(encoding="utf-8"))


def ids_path(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + ".ids.json")


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` rows by inner product for each query: (scores, row numbers; -1 where fewer were found)."""
    k = min(k, index.ntotal)
    if k <= 0:  # an empty index (say, nothing in stock) finds nothing
        return np.zeros((len(queries), 0), dtype=np.float32), np.zeros((len(queries), 0), dtype=np.int64)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def top_inner_products(queries: np.ndarray, vectors: np.ndarray, k: int, tile: int = SCORING_TILE,
                       at: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Each query's `k` largest inner products with `vectors`, exactly: (scores, rows), best first (equal
    scores by row); -inf and -1 pad when there are fewer than `k` vectors.

    The tie rule holds for equal computed float32 scores. The BLAS kernel (AVX-512 or AVX2, the position of a
    row within its tile) may round the product of one vector stored at two rows differently in the last bits,
    so duplicate listings tie only when their computed scores are equal; which copy ranks first is otherwise
    the kernel's rounding, never promised. What a flat index's search finds,
    but in plain numpy, which releases the GIL, so threads scoring separate blocks of queries run in parallel
    (FAISS's search holds it: two threads searching took as long as one, measured).

    Products are scored a `tile` at a time by one matrix product. Only the scores above the query's k-th best
    so far wait to be merged (the first tile's own k-th best seeds it), and they are merged once as many wait
    as are kept: the work beyond the matrix products is a comparison per score and a few hundred candidates
    per query, and the memory is queries x `tile`.

    `at` (queries x m rows of `vectors`, -1 pads): also return each query's inner products with those rows
    (0 at pads), read from the same tiles as they pass (candidates found elsewhere, scored at no extra
    product: gathering their vectors one by one took 45 ms a block of 1,024 x 200, measured)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    vectors = np.asarray(vectors, dtype=np.float32)
    n_queries, k = len(queries), max(k, 0)
    keep = min(k, len(vectors))
    kept = np.full((n_queries, 0), WORST, dtype=np.int64)  # each query's best so far, as `pipeline.order` words
    first = max(tile, keep)
    starts = [0, *range(first, len(vectors), tile)] if keep else []
    passing = _TilePasses(at, first, tile, len(starts)) if at is not None else None
    if keep:
        out = np.empty((n_queries, first), dtype=np.float32)  # one buffer for every full tile's scores
        waiting: list[tuple[np.ndarray, np.ndarray]] = []
        for number, start in enumerate(starts):
            part = vectors[start:start + (first if start == 0 else tile)].T
            scores = np.matmul(queries, part, out=out if part.shape[1] == first else None)
            if passing is not None:
                passing.read(number, start, scores)
            if start == 0:
                kth = scores.shape[1] - keep
                threshold = np.partition(scores, kth, axis=1)[:, kth:kth + 1]
                above = np.flatnonzero(scores >= threshold)
            else:
                above = np.flatnonzero(scores > threshold)
            rows, columns = np.divmod(above, scores.shape[1])
            waiting.append((rows, pack(scores.ravel()[above], columns + start)))
            if start == 0 or sum(len(rows) for rows, _ in waiting) >= n_queries * keep:
                kept = _merged(kept, waiting, keep)
                threshold = scores_of(kept.max(axis=1, keepdims=True))  # each query's worst kept
                waiting = []
        kept = _merged(kept, waiting, keep)
    kept.sort(axis=1)
    best, best_rows = unpack(kept)
    pad = k - keep
    found = (np.hstack([best, np.full((n_queries, pad), -np.inf, dtype=np.float32)]),
             np.hstack([best_rows, np.full((n_queries, pad), -1, dtype=np.int64)]))
    if at is None:
        return found
    return (*found, passing.scores if passing is not None else np.zeros(np.shape(at), dtype=np.float32))


class _TilePasses:
    """The (query, row) pairs of `at`, grouped by the tile that scores them, and their scores as tiles pass."""

    def __init__(self, at: np.ndarray, first: int, tile: int, tiles: int):
        at = np.asarray(at, dtype=np.int64)
        self.width = at.shape[1]
        self.scores = np.zeros(at.shape, dtype=np.float32)
        self.flat = np.flatnonzero(at.ravel() >= 0)
        self.rows = at.ravel()[self.flat]
        tile_of = np.where(self.rows < first, 0, 1 + (self.rows - first) // tile)
        tile_of = tile_of.astype(np.uint16 if tiles < 1 << 16 else np.int64)
        self.order = np.argsort(tile_of, kind="stable")  # a radix sort on 16-bit keys
        self.bounds = np.searchsorted(tile_of[self.order], np.arange(tiles + 1))

    def read(self, number: int, start: int, scores: np.ndarray) -> None:
        chosen = self.order[self.bounds[number]:self.bounds[number + 1]]
        flat = self.flat[chosen]
        self.scores.ravel()[flat] = scores[flat // self.width, self.rows[chosen] - start]


def exact_search(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`top_inner_products` for many queries, a block of them per core (what a flat index's search finds; FAISS's
    search holds the GIL, and run from one thread it kept both cores busy only part of the time)."""
    starts = range(0, len(queries), QUERIES_PER_BLOCK)
    parts = list(in_parallel(lambda start: top_inner_products(queries[start:start + QUERIES_PER_BLOCK], vectors, k),
                             starts))
    if not parts:
        return top_inner_products(queries, vectors, k)
    return np.vstack([scores for scores, _ in parts]), np.vstack([rows for _, rows in parts])


def _merged(kept: np.ndarray, waiting: list[tuple[np.ndarray, np.ndarray]], keep: int) -> np.ndarray:
    """The `keep` best words of each query's kept ones and its waiting (query, word) pairs; each tile's pairs
    come grouped by query, so a pair's slot is its place among its query's, counted over the tiles before it
    (no sort)."""
    if not sum(len(queries) for queries, _ in waiting):
        return kept
    n_queries = len(kept)
    taken = np.zeros(n_queries, dtype=np.int64)
    slots = []
    for queries, _ in waiting:
        slots.append(position_in_row(queries, n_queries) + taken[queries])
        taken += np.bincount(queries, minlength=n_queries)
    queries, words = (np.concatenate(parts) for parts in zip(*waiting))
    width = int(taken.max())
    found = np.full((n_queries, width), WORST, dtype=np.int64)
    found.ravel()[queries * width + np.concatenate(slots)] = words
    merged = np.hstack([kept, found])
    return np.partition(merged, keep - 1, axis=1)[:, :keep] if keep < merged.shape[1] else merged


def inner_products(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """<queries[i], vectors[rows[i, j]]> for every (i, j), in FAISS's threaded kernel: no gathered copy of the
    vectors (numpy's gather-then-matmul was 4-5x slower, measured). Negative rows read vector 0."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.ascontiguousarray(np.maximum(rows, 0), dtype=np.int64)
    out = np.empty(rows.shape, dtype=np.float32)
    if out.size:
        faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(queries), faiss.swig_ptr(vectors),
                                         faiss.swig_ptr(rows), vectors.shape[1], len(queries), rows.shape[1])
    return out


def similar_products(index: faiss.Index, vectors: np.ndarray, product_ids: list[str], k: int,
                     rows: np.ndarray | None = None) -> pl.DataFrame:
    """Each product's `k` nearest other products: product_id, rank, similar_product_id, similarity; for the
    products at `rows` only, when given."""
    rows = np.arange(len(product_ids)) if rows is None else np.asarray(rows, dtype=np.int64)
    if isinstance(index, faiss.IndexFlat):  # exact: the index holds `vectors` as they are
        scores, found = exact_search(vectors[rows], vectors, min(k + 1, len(vectors)))
    else:
        scores, found = search(index, vectors[rows], k + 1)
    source = np.repeat(rows, found.shape[1])
    flat_rows, flat_scores = found.ravel(), scores.ravel()
    keep = (flat_rows >= 0) & (flat_rows != source)
    return _ranked(source[keep], flat_rows[keep], flat_scores[keep], product_ids, k)


def similar_products_since(index: faiss.Index, vectors: np.ndarray, product_ids: list[str], k: int,
                           previous: pl.DataFrame, unchanged: np.ndarray) -> pl.DataFrame:
    """`similar_products` brought up to date from `previous` (the published lists) when only some vectors
    changed (`unchanged[i]`: product i's vector is the one `previous` was found with). A product that changed
    itself, or whose list names a vanished product or loses a changed one that nothing unsearched can be
    proven not to replace, is searched again; every other product's list keeps its unchanged neighbours,
    merged with the changed products scored against it alone."""
    ids = pl.Series("product_id", product_ids)
    row_of = pl.DataFrame({"product_id": ids, "row": np.arange(len(ids)), "unchanged": unchanged})
    known = previous.join(row_of, on="product_id").join(
        row_of.rename({"product_id": "similar_product_id", "row": "target", "unchanged": "target_unchanged"}),
        on="similar_product_id", how="left")
    whole = min(k, len(ids) - 1)
    # A list can be brought up to date without a search when its product kept its vector and every product
    # it names is still there: its unchanged neighbours keep their similarities, and the changed products
    # are scored against it alone. Every product it did not name ranked below its last neighbour, so the
    # merged list is exact when its k-th entry still ranks at or above that last neighbour.
    lists = known.group_by("row").agg(
        updatable=pl.col("unchanged").first() & pl.col("target").is_not_null().all() & (pl.len() >= whole),
        last_similarity=pl.col("similarity").sort_by("rank").last(),
        last_target=pl.col("target").sort_by("rank").last())
    updatable = np.sort(lists.filter("updatable")["row"].to_numpy())
    changed = np.flatnonzero(~unchanged)
    parts = [_as_rows(known.filter(pl.col("row").is_in(updatable) & pl.col("target_unchanged")))]
    if len(updatable) and len(changed):
        scores, found = exact_search(vectors[updatable], vectors[changed], min(k, len(changed)))
        parts.append(pl.DataFrame({"row": np.repeat(updatable, found.shape[1]), "target": changed[found.ravel()],
                                   "similarity": scores.ravel().astype(np.float64)}))
    merged = (pl.concat(parts).sort(["row", "similarity", "target"], descending=[False, True, False])
              .with_columns(rank=pl.int_range(1, pl.len() + 1).over("row")).filter(pl.col("rank") <= k))
    tail = merged.group_by("row").agg(entries=pl.len(), similarity=pl.col("similarity").last(),
                                      target=pl.col("target").last()).join(lists, on="row")
    exact = tail.filter((pl.col("entries") >= whole) & (
        (pl.col("similarity") > pl.col("last_similarity"))
        | ((pl.col("similarity") == pl.col("last_similarity")) & (pl.col("target") <= pl.col("last_target")))))
    kept = merged.filter(pl.col("row").is_in(exact["row"].implode()))
    updated = _ranked(kept["row"].to_numpy(), kept["target"].to_numpy(), kept["similarity"].to_numpy(),
                      product_ids, k)
    redo = np.setdiff1d(np.arange(len(ids)), exact["row"].to_numpy())
    if len(redo):
        updated = pl.concat([updated, similar_products(index, vectors, product_ids, k, rows=redo)])
    return updated.sort("product_id", "rank")


def _as_rows(known: pl.DataFrame) -> pl.DataFrame:
    return known.select("row", pl.col("target").cast(pl.Int64), pl.col("similarity").cast(pl.Float64))


def _ranked(source: np.ndarray, target: np.ndarray, similarity: np.ndarray, product_ids: list[str],
            k: int) -> pl.DataFrame:
    """(source, target, similarity) triples, best first within each source, as the first `k` per product."""
    frame = pl.DataFrame({"source": source, "target": target, "similarity": similarity.astype(np.float64)})
    ranked = frame.with_columns(rank=pl.int_range(1, pl.len() + 1).over("source")).filter(pl.col("rank") <= k)
    ids = pl.Series(product_ids)
    return pl.DataFrame({
        "product_id": ids.gather(ranked["source"]),
        "rank": ranked["rank"].cast(pl.Int32),
        "similar_product_id": ids.gather(ranked["target"]),
        "similarity": ranked["similarity"],
    })
