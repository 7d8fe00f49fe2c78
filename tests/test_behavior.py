"""The item co-occurrence model on tiny matrices whose answers are known."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from pipeline.behavior import EASE_NEIGHBORS_FACTOR, BehaviorSpec, ItemCooccurrence, ease_weights


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


def test_rp3beta_is_the_two_step_walk_discounted_by_popularity():
    # Item 0: users 0,1,2; item 1: user 0; item 2: users 0,1. User 0 has 3 products, user 1 two, user 2 one.
    weights = sp.csr_matrix(np.array([[1, 1, 1], [1, 0, 1], [1, 0, 0]], dtype=np.float32))
    beta = 0.5
    model = ItemCooccurrence(spec=BehaviorSpec("rp3beta", beta)).fit(weights, ["x", "y", "z"])
    walk = model.similarity_.toarray()
    # From item 0 (3 users) to item 2 (2 users): users 0 and 1 lead there, each splitting over their products.
    assert walk[0, 2] == pytest.approx((1 / 3) * (1 / 3 + 1 / 2) / 2 ** beta)
    assert walk[2, 1] == pytest.approx((1 / 2) * (1 / 3) / 1 ** beta)
    assert np.all(np.diag(walk) == 0)
    assert model.co_counts_.toarray()[0, 2] == 2  # the users behind the weight, for explanations


def test_a_larger_beta_demotes_popular_products():
    rng = np.random.default_rng(1)
    weights = sp.csr_matrix((rng.random((300, 40)) < np.linspace(0.02, 0.6, 40)).astype(np.float32))
    popularity = np.asarray(weights.sum(axis=0)).ravel()

    def mean_popularity_of_top(beta):
        model = ItemCooccurrence(neighbors_per_item=5, spec=BehaviorSpec("rp3beta", beta)).fit(weights, list("x" * 40))
        return popularity[model.similarity_.indices].mean()

    assert mean_popularity_of_top(0.8) < mean_popularity_of_top(0.0)


def test_ease_scores_with_all_its_weights_and_publishes_its_strongest():
    rng = np.random.default_rng(2)
    weights = sp.csr_matrix((rng.random((200, 60)) < 0.2).astype(np.float32))
    model = ItemCooccurrence(neighbors_per_item=3, spec=BehaviorSpec("ease", 50.0)).fit(weights, [str(i) for i in range(60)])
    gram = (weights.T @ weights).toarray()
    dense = ease_weights(gram, 50.0)
    # Scores are EASE's own, every weight counted (at alpha 1 the hybrid ranks as EASE does).
    assert np.allclose(model.score(weights[:20]).toarray(), weights[:20].toarray() @ dense, atol=1e-5)
    # What is published: each product's 3 * EASE_NEIGHBORS_FACTOR largest weights by magnitude, with the
    # users behind each.
    pairs = model.pairs()
    assert pairs.group_by("product_id").len()["len"].max() == 3 * EASE_NEIGHBORS_FACTOR
    for item in range(60):
        row = pairs.filter(pl.col("product_id") == str(item))
        neighbours = row["neighbor_id"].cast(pl.Int64).to_numpy()
        assert np.allclose(row["similarity"].to_numpy(), dense[item, neighbours], atol=1e-6)
        assert np.abs(row["similarity"]).min() >= np.sort(np.abs(dense[item]))[-row.height] - 1e-6  # its largest
        assert np.array_equal(row["co_count"].to_numpy(), gram[item, neighbours])


def test_ease_weights_reconstruct_engagement_better_than_nothing():
    # EASE is the least-squares fit of X from X with a zero diagonal: it must beat predicting zeros.
    rng = np.random.default_rng(3)
    blocks = np.kron(np.eye(4), np.ones((25, 5)))  # four groups of users, each with five products
    engaged = ((blocks + 0.05 * rng.random(blocks.shape)) > 0.5).astype(np.float32)
    engaged[rng.random(engaged.shape) < 0.2] = 0
    b = ease_weights(engaged.T @ engaged, 10.0)
    assert np.all(np.diag(b) == 0)
    assert np.linalg.norm(engaged - engaged @ b) < 0.6 * np.linalg.norm(engaged)


@pytest.mark.parametrize("label, kind, strength", [("cosine", "cosine", None), ("rp3beta", "rp3beta", 0.5),
                                                    ("rp3beta:0.2", "rp3beta", 0.2), ("ease:100", "ease", 100.0)])
def test_behavior_labels_round_trip(label, kind, strength):
    spec = BehaviorSpec.parse(label)
    assert (spec.kind, spec.strength) == (kind, strength)
    assert BehaviorSpec.parse(spec.label) == spec
    with pytest.raises(ValueError, match="unknown behavioural model"):
        BehaviorSpec.parse("slim")
