"""The behavioural model: item-to-item weights learned from which products users engage with together.

Every kind is a sparse products x products matrix `W` (row: a product in a user's history, column: a product
to recommend, at most `neighbors_per_item` entries a row) and scores a user as `sum over history i of
weight(i) * W[i, j]`, so candidates, evidence and explanations work alike whichever kind the nightly
evaluation chooses (`BehaviorSpec`). Engagement is binary: any positive interest weight counts once.

- `cosine`: `co_count(i, j) / sqrt(users(i) * users(j))`, item-item cosine of the binary user columns.
- `rp3beta` (Paudel et al., 2017; as tuned by Dacrema et al., 2019): the probability of the random walk
  i -> user -> j, `(1 / users(i)) * sum over users u of both of 1 / products(u)`, divided by `users(j) ** beta`,
  so that popular products do not win every list (`strength` is beta). Sparse products only: fits any
  catalog.
- `ease` (Steck, 2019): the closed-form linear model `B = argmin ||X - XB||^2 + lambda ||B||^2`, diag(B) = 0,
  whose dense inverse limits it to catalogs of up to `evaluation.ease_max_products` products; `strength` is
  lambda. Its weights are dense and many small ones add up, negative ones included, so it scores with every
  one of them: at alpha 1 the hybrid ranks as EASE itself does (what keeping only the largest cost is in
  bench/README.md). What it publishes and explanations cite are each product's `EASE_NEIGHBORS_FACTOR` times
  `neighbors_per_item` largest weights by magnitude (`pairs`).

The sparse kinds keep only each product's strongest neighbours, so they stay O(products x neighbours) and
scale to catalogs of 100k products. Beside each weight, `co_counts_` holds how many users
engaged with both products (what explanations cite).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.parallel import in_parallel
from pipeline.sparse import top_entries

PRODUCTS_PER_BLOCK = 4096
"""Products whose co-engagement counts are held at once while fitting the sparse kinds."""
BEHAVIOR_KINDS = ("cosine", "rp3beta", "ease")
EASE_NEIGHBORS_FACTOR = 10
DEFAULT_STRENGTH = {"cosine": None, "rp3beta": 0.5, "ease": 250.0}
"""A kind's parameter when none is given: rp3beta's beta, ease's lambda."""


@dataclass(frozen=True)
class BehaviorSpec:
    """Which behavioural model, and its parameter (rp3beta: beta; ease: lambda; cosine: none)."""

    kind: str = "cosine"
    strength: float | None = None

    def __post_init__(self):
        if self.kind not in BEHAVIOR_KINDS:
            raise ValueError(f"unknown behavioural model {self.kind!r} ({', '.join(BEHAVIOR_KINDS)})")
        if self.strength is None and DEFAULT_STRENGTH[self.kind] is not None:
            object.__setattr__(self, "strength", DEFAULT_STRENGTH[self.kind])

    @property
    def label(self) -> str:
        """"cosine", "rp3beta:0.5", "ease:250": how `model_info` and the evaluation tables name it."""
        return self.kind if self.strength is None else f"{self.kind}:{self.strength:g}"

    @classmethod
    def parse(cls, label: str) -> "BehaviorSpec":
        kind, _, strength = label.partition(":")
        return cls(kind, float(strength) if strength else None)


@dataclass
class ItemCooccurrence:
    """A behavioural model of `spec`'s kind; learned state ends in `_`."""

    neighbors_per_item: int = 100
    """Neighbours kept per product (the strongest weights)."""
    spec: BehaviorSpec = field(default_factory=BehaviorSpec)
    similarity_: sp.csr_matrix = field(default=None, repr=False)
    """products x products weights W[history product, recommended product], zero diagonal, at most
    `neighbors_per_item` entries per row (EASE: all of them, some negative)."""
    co_counts_: sp.csr_matrix = field(default=None, repr=False)
    """How many users engaged with both products, for the pairs the model publishes (`pairs`): on the same
    sparsity pattern as `similarity_`, EASE's on its strongest weights only."""
    product_ids_: list[str] = field(default_factory=list, repr=False)
    """The product of each row and column."""

    def fit(self, weights: sp.csr_matrix, product_ids: list[str]) -> "ItemCooccurrence":
        """Learn from a users x products matrix of engagement (`InteractionMatrix.engagement`) or interest weights:
        any positive entry counts once."""
        engaged = (weights > 0).astype(np.float32).tocsr()
        return self._learned(product_ids, engaged.shape[1],
                             *_learned_parts(engaged, [self.spec], self.neighbors_per_item)[self.spec.label])

    def _learned(self, product_ids: list[str], n: int, rows, columns, values, co,
                 published: np.ndarray | None = None) -> "ItemCooccurrence":
        """`published`: the entries `pairs` publishes, when not all."""
        self.product_ids_ = list(product_ids)
        self.similarity_ = sp.csr_matrix((np.asarray(values, dtype=np.float32), (rows, columns)), (n, n))
        if published is not None:
            rows, columns, co = rows[published], columns[published], co[published]
        self.co_counts_ = sp.csr_matrix((np.asarray(co, dtype=np.float32), (rows, columns)), (n, n))
        return self

    def score(self, engagement: sp.csr_matrix) -> sp.csr_matrix:
        """Behavioural score of every product for each row of users: sum over their history of engagement x W
        (`InteractionMatrix.engagement`); EASE's can be negative, which the fusion reads as no evidence."""
        if self.spec.kind == "ease":  # dense weights: a sparse x dense product, several times a sparse one's speed
            return sp.csr_matrix(engagement @ self._dense_weights())
        return (engagement @ self.similarity_).tocsr()

    def _dense_weights(self) -> np.ndarray:
        """`similarity_` as a dense array, made once (only EASE's, dense anyway, are asked for)."""
        dense = self.__dict__.get("_dense")
        if dense is None:
            dense = self.__dict__["_dense"] = self.similarity_.toarray()
        return dense

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_dense"}  # derived, 4 n^2 bytes

    def pairs(self, ranked: bool = True) -> pl.DataFrame:
        """The model as a table: product_id, neighbor_id, similarity (the weight W), co_count; `ranked`: each
        product's neighbours strongest first, as the warehouse publishes them (a lookup can skip the sort: 10
        million pairs are made in 0.5 s, sorted in 2.1 s)."""
        counts = self.co_counts_.tocoo()
        # EASE's published pairs are its strongest weights; the sparse kinds publish every weight, in the
        # order of the same pattern.
        weights = (self._dense_weights()[counts.row, counts.col] if self.spec.kind == "ease"
                   else self.similarity_.tocoo().data)
        ids = pl.Series(self.product_ids_)
        pairs = pl.DataFrame({
            "product_id": ids.gather(counts.row),
            "neighbor_id": ids.gather(counts.col),
            "similarity": weights.astype(np.float64),
            "co_count": counts.data.astype(np.int64),
        })
        return pairs.sort(["product_id", "similarity"], descending=[False, True]) if ranked else pairs


def fit_behaviors(weights: sp.csr_matrix, product_ids: list[str], specs: list[BehaviorSpec],
                  neighbors: int) -> dict[str, ItemCooccurrence]:
    """Models of each of `specs`, by label, learned from one users x products matrix of interest weights (any
    positive entry counts once); the sparse kinds share one pass over the co-engagement counts, so trying two
    betas costs little more than one."""
    engaged = (weights > 0).astype(np.float32).tocsr()
    parts = _learned_parts(engaged, specs, neighbors)
    return {spec.label: ItemCooccurrence(neighbors, spec)._learned(product_ids, engaged.shape[1], *parts[spec.label])
            for spec in specs}


def _learned_parts(engaged: sp.csr_matrix, specs: list[BehaviorSpec], neighbors: int) -> dict[str, tuple]:
    """(rows, columns, weights, co-counts[, published]) of each spec's model, by label: the sparse kinds in one
    pass."""
    sparse = [spec for spec in specs if spec.kind != "ease"]
    parts = dict(zip((spec.label for spec in sparse), _fit_sparse(engaged, sparse, neighbors))) if sparse else {}
    parts.update({spec.label: _fit_ease(engaged, spec, neighbors) for spec in specs if spec.kind == "ease"})
    return parts


def _fit_sparse(engaged: sp.csr_matrix, specs: list[BehaviorSpec], neighbors: int) -> list[tuple[np.ndarray, ...]]:
    """cosine and rp3beta models, one (rows, columns, weights, co-counts) per spec: co-engagement is counted for
    a block of products at a time (one block per core) and cut to each model's neighbours before the next, so
    the full products x products counts (hundreds of millions of pairs at a million users) are never held."""
    by_product = engaged.T.tocsr()
    users_per_item = np.asarray(engaged.sum(axis=0)).ravel()
    n = engaged.shape[1]
    walks = any(spec.kind == "rp3beta" for spec in specs)
    if walks:
        # The walk's user step: each user's products share the user's probability mass.
        products_per_user = np.asarray(engaged.sum(axis=1)).ravel()
        stepped = (sp.diags(1.0 / np.maximum(products_per_user, 1.0)).astype(np.float32) @ engaged).tocsr()
    # Each rp3beta's popularity discount of a recommended product, users(j) ** -beta.
    discount = {spec.label: np.power(np.maximum(users_per_item, 1.0), -spec.strength) for spec in specs
                if spec.kind == "rp3beta"}

    def neighbours(first: int) -> list[tuple[np.ndarray, ...]]:
        rows_of_block = by_product[first:first + PRODUCTS_PER_BLOCK]
        counts = rows_of_block @ engaged
        counts.sort_indices()
        counts = counts.tocoo()
        rows, columns = counts.row.astype(np.int64) + first, counts.col.astype(np.int64)
        other = (rows != columns) & (counts.data > 0)  # a product is not its own neighbour
        if walks:
            walk = rows_of_block @ stepped  # the same sparsity pattern as the counts (positive entries)
            walk.sort_indices()
            walked = walk.tocoo().data[other] / users_per_item[rows[other]]
        rows, columns, co = rows[other], columns[other], counts.data[other]
        found = []
        for spec in specs:
            if spec.kind == "rp3beta":
                weight = walked * discount[spec.label][columns]
            else:
                weight = co / np.sqrt(users_per_item[rows] * users_per_item[columns])
            best = top_entries(rows, weight, columns, n, neighbors)
            found.append((rows[best], columns[best], weight[best], co[best]))
        return found

    kept = list(in_parallel(neighbours, range(0, n, PRODUCTS_PER_BLOCK)))
    empty = (np.zeros(0, dtype=np.int64),) * 4
    return [tuple(np.concatenate(parts) for parts in zip(*(block[i] for block in kept))) if kept else empty
            for i in range(len(specs))]


def _fit_ease(engaged: sp.csr_matrix, spec: BehaviorSpec, neighbors: int) -> tuple[np.ndarray, ...]:
    """EASE's weights, every non-zero one, the co-engagement counts behind them, and which of them are each
    product's `EASE_NEIGHBORS_FACTOR * neighbors` largest by magnitude (what it publishes)."""
    gram = (engaged.T @ engaged).toarray().astype(np.float32)
    weights = ease_weights(gram, spec.strength)
    rows, columns = np.nonzero(weights)
    rows, columns, values = rows.astype(np.int64), columns.astype(np.int64), weights[rows, columns]
    published = top_entries(rows, np.abs(values), columns, len(gram), EASE_NEIGHBORS_FACTOR * neighbors)
    return rows, columns, values, gram[rows, columns], published


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's B from the products x products gram matrix X'X of binary engagement (float32; with lambda >= 10
    added to the diagonal the inverse is accurate far beyond what ranking needs, at half float64's cost)."""
    regularized = np.array(gram, dtype=np.float32)
    regularized[np.diag_indices_from(regularized)] += l2
    precision = np.linalg.inv(regularized)
    weights = -precision / np.diag(precision)
    weights[np.diag_indices_from(weights)] = 0.0
    return weights.astype(np.float32)
