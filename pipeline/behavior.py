"""The behavioural model: item-to-item similarity learned from which products users engage with together.

Two products are similar when the same users interact with both: cosine similarity of their binary user
columns, `co_count(i, j) / sqrt(users(i) * users(j))`. Only each product's top neighbours are kept, so the
model stays sparse (O(products x neighbours)) and scales to catalogs of 100k products.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.sparse import top_entries


@dataclass
class ItemCooccurrence:
    """Item-item cosine over co-engagement; learned state ends in `_`."""

    neighbors_per_item: int = 100
    """Neighbours kept per product (the strongest by similarity)."""
    similarity_: sp.csr_matrix = field(default=None, repr=False)
    """products x products, zero diagonal, at most `neighbors_per_item` entries per row."""
    co_counts_: sp.csr_matrix = field(default=None, repr=False)
    """How many users engaged with both products, on the same sparsity pattern as `similarity_`."""
    product_ids_: list[str] = field(default_factory=list, repr=False)
    """The product of each row and column."""

    def fit(self, weights: sp.csr_matrix, product_ids: list[str]) -> "ItemCooccurrence":
        """Learn from a users x products matrix of interest weights (any positive entry counts once)."""
        self.product_ids_ = list(product_ids)
        engaged = (weights > 0).astype(np.float32).tocsc()
        co_counts = (engaged.T @ engaged).tocsr()
        co_counts.setdiag(0)
        co_counts.eliminate_zeros()
        users_per_item = np.asarray(engaged.sum(axis=0)).ravel()
        co_counts.sort_indices()
        coo = co_counts.tocoo()
        shape = co_counts.shape
        cosine = coo.data / np.sqrt(users_per_item[coo.row] * users_per_item[coo.col])
        keep = np.sort(top_entries(coo.row, cosine, coo.col, shape[1], self.neighbors_per_item))
        self.similarity_ = sp.csr_matrix((cosine[keep].astype(np.float32), (coo.row[keep], coo.col[keep])), shape)
        self.co_counts_ = sp.csr_matrix((coo.data[keep].astype(np.float32), (coo.row[keep], coo.col[keep])), shape)
        return self

    def score(self, weights: sp.csr_matrix) -> sp.csr_matrix:
        """Behavioural score of every product for each row of users: sum over their history of weight x similarity."""
        return (weights @ self.similarity_).tocsr()

    def pairs(self) -> pl.DataFrame:
        """The model as a table: product_id, neighbor_id, similarity, co_count."""
        sim, counts = self.similarity_.tocoo(), self.co_counts_.tocoo()
        ids = pl.Series(self.product_ids_)
        return pl.DataFrame({
            "product_id": ids.gather(sim.row),
            "neighbor_id": ids.gather(sim.col),
            "similarity": sim.data.astype(np.float64),
            "co_count": counts.data.astype(np.int64),
        }).sort(["product_id", "similarity"], descending=[False, True])
