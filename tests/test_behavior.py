"""The item co-occurrence model on tiny matrices whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pipeline.behavior import ItemCooccurrence


def checkerboard() -> sp.csr_matrix:
    """Users 0-1 engage with items 0-1, users 2-3 with items 2-3: two blocks, nothing across."""
    dense = np.array([[1, 1, 0, 0], [2, 1, 0, 0], [0, 0, 1, 3], [0, 0, 1, 1]], dtype=np.float32)
    return sp.csr_matrix(dense)


def test_items_engaged_together_are_similar_and_blocks_stay_apart():
    model = ItemCooccurrence().fit(checkerboard(), ["a", "b", "c", "d"])
    sim = model.similarity_.toarray()
    assert sim[0, 1] == pytest.approx(1.0) and sim[2, 3] == pytest.approx(1.0)
    assert sim[0, 2] == 0 and sim[1, 3] == 0
    assert np.all(np.diag(sim) == 0)
    assert model.co_counts_.toarray()[0, 1] == 2


def test_cosine_divides_by_each_items_audience():
    # Item 0: users 0,1,2; item 1: user 0 only; item 2: users 0,1.
    weights = sp.csr_matrix(np.array([[1, 1, 1], [1, 0, 1], [1, 0, 0]], dtype=np.float32))
    sim = ItemCooccurrence().fit(weights, ["x", "y", "z"]).similarity_.toarray()
    assert sim[0, 1] == pytest.approx(1 / np.sqrt(3 * 1))
    assert sim[0, 2] == pytest.approx(2 / np.sqrt(3 * 2))


def test_only_the_strongest_neighbours_are_kept():
    rng = np.random.default_rng(0)
    weights = sp.csr_matrix((rng.random((50, 30)) < 0.3).astype(np.float32))
    full = ItemCooccurrence(neighbors_per_item=100).fit(weights, [str(i) for i in range(30)]).similarity_
    pruned = ItemCooccurrence(neighbors_per_item=3).fit(weights, [str(i) for i in range(30)]).similarity_
    assert np.diff(pruned.indptr).max() <= 3
    for item in range(30):
        kept = pruned.getrow(item).data
        if len(kept):
            assert kept.min() >= np.sort(full.getrow(item).data)[-len(kept)] - 1e-6


def test_score_sums_history_weight_times_similarity():
    model = ItemCooccurrence().fit(checkerboard(), ["a", "b", "c", "d"])
    history = sp.csr_matrix(np.array([[2.0, 0, 0, 0]], dtype=np.float32))
    scores = model.score(history).toarray()[0]
    assert scores[1] == pytest.approx(2.0 * model.similarity_[0, 1])
    assert scores[2] == 0 and scores[3] == 0


def test_pairs_table_names_products():
    pairs = ItemCooccurrence().fit(checkerboard(), ["a", "b", "c", "d"]).pairs()
    assert set(zip(pairs["product_id"], pairs["neighbor_id"])) == {("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")}
    assert pairs["co_count"].to_list() == [2, 2, 2, 2]
