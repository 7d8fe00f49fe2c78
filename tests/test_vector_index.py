"""The FAISS index: exact by default, approximate kinds close to exact, and saved with its product ids."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.vector_index import (build_index, load_index, save_index, search, similar_products,
                                   similar_products_since, top_inner_products)


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(7)
    # Clustered data, like product embeddings: 40 centres, 2,000 points.
    centres = rng.normal(size=(40, 32))
    points = centres[rng.integers(40, size=2000)] + 0.3 * rng.normal(size=(2000, 32))
    points = points.astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def assert_exact_top(scores, rows, queries, vectors, k, atol=1e-5):
    """`rows` are each query's `k` best vectors by inner product, best first, as far as float32 can tell: two
    BLAS kernels (AVX-512 or AVX2, another tile shape) may round the same product differently in its last
    bits, so only scores closer than `atol` may come in either order."""
    exact = np.float32(queries) @ np.float32(vectors).T
    assert rows.shape == (len(queries), k) and np.all(rows >= 0)
    assert np.allclose(scores, np.take_along_axis(exact, rows, axis=1), atol=atol)
    assert np.all(np.diff(scores, axis=1) <= atol)  # best first
    left_out = np.ones_like(exact, dtype=bool)
    np.put_along_axis(left_out, rows, False, axis=1)
    best_left_out = np.where(left_out, exact, -np.inf).max(axis=1)
    assert np.all(best_left_out <= scores[:, -1] + atol)  # nothing better was left out


def test_flat_search_is_exact(vectors):
    scores, rows = search(build_index(vectors, "flat"), vectors[:20], 10)
    assert_exact_top(scores, rows, vectors[:20], vectors, 10)
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)  # each vector is its own nearest neighbour


@pytest.mark.parametrize("tile", [64, 300, 5000])
def test_exact_scoring_in_tiles_finds_what_a_flat_search_finds(vectors, tile):
    # Queries unlike any product (profiles mix several) and a depth beyond one tile: many merges.
    rng = np.random.default_rng(3)
    queries = vectors[rng.integers(len(vectors), size=(300, 3))].sum(axis=1)
    scores, rows = top_inner_products(queries, vectors, 120, tile=tile)
    expected_scores, _ = search(build_index(vectors, "flat"), queries, 120)
    assert_exact_top(scores, rows, queries, vectors, 120)
    assert np.allclose(scores, expected_scores, atol=1e-5)


def test_exact_scoring_breaks_ties_to_the_lower_row_even_at_the_cut():
    # The tie rule is about equal computed scores. Small integer vectors make every inner product an exact
    # float32 integer whatever the kernel, its blocking or the order of its sums, so here ties are ties on
    # any CPU: every product twice (a catalog's duplicate listings), with the cut falling inside pairs.
    rng = np.random.default_rng(11)
    products = rng.integers(-3, 4, size=(400, 32)).astype(np.float32)
    queries = rng.integers(-3, 4, size=(50, 32)).astype(np.float32)
    twice = np.vstack([products, products])
    exact = queries @ twice.T
    assert np.array_equal(exact, np.round(exact))  # exact integers: no rounding anywhere
    for tile in (64, 5000):
        scores, rows = top_inner_products(queries, twice, 7, tile=tile)
        expected = np.lexsort((np.broadcast_to(np.arange(800), exact.shape), -exact), axis=1)[:, :7]
        assert np.array_equal(rows, expected)
        assert np.array_equal(scores, np.take_along_axis(exact, expected, axis=1))


def test_duplicate_listings_of_real_embeddings_score_alike_within_rounding(vectors):
    # With real-valued embeddings the two copies of a vector, scored in different tiles, may differ in the last
    # bits on some kernels, so which copy wins is not promised: both score within rounding, and the list is
    # the best by score.
    twice = np.vstack([vectors[:400], vectors[:400]])
    scores, rows = top_inner_products(vectors[400:450], twice, 7, tile=64)
    assert_exact_top(scores, rows, vectors[400:450], twice, 7)
    copies = np.float32(vectors[400:450]) @ twice.T
    assert np.allclose(copies[:, :400], copies[:, 400:], atol=1e-6)


@pytest.mark.parametrize("tile", [64, 5000])
def test_exact_scoring_also_scores_the_rows_asked_for(vectors, tile):
    # Candidates found elsewhere (the behavioural ones), scored from the same tiles as they pass.
    rng = np.random.default_rng(4)
    queries = vectors[rng.integers(len(vectors), size=(50, 2))].sum(axis=1)
    wanted = rng.integers(-1, len(vectors), size=(50, 30))  # -1 pads
    _, _, scores = top_inner_products(queries, vectors, 20, tile=tile, at=wanted)
    exact = np.take_along_axis(np.float32(queries) @ vectors.T, np.maximum(wanted, 0), axis=1)
    assert np.allclose(scores, np.where(wanted >= 0, exact, 0.0), atol=1e-5)
    assert np.all(scores[wanted < 0] == 0.0)


def test_exact_scoring_pads_when_asked_for_more_than_there_are(vectors):
    scores, rows = top_inner_products(vectors[:5], vectors[:30], 40, tile=8)
    assert sorted(rows[0, :30]) == list(range(30)) and np.all(rows[:, 30:] == -1)
    assert np.all(np.isneginf(scores[:, 30:]))
    assert rows.shape == (5, 40) and top_inner_products(vectors[:5], vectors[:0], 3)[1].tolist() == [[-1] * 3] * 5


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_find_most_true_neighbours(vectors, kind):
    _, approx = search(build_index(vectors, kind), vectors[:200], 10)
    _, exact = search(build_index(vectors, "flat"), vectors[:200], 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.9


def test_saved_index_round_trips_with_product_ids(vectors, tmp_path):
    ids = [f"P{i}" for i in range(len(vectors))]
    save_index(build_index(vectors), ids, tmp_path / "idx.faiss")
    index, loaded_ids = load_index(tmp_path / "idx.faiss")
    assert loaded_ids == ids and index.ntotal == len(vectors)


def test_similar_products_exclude_the_product_itself(vectors):
    ids = [f"P{i}" for i in range(len(vectors))]
    similar = similar_products(build_index(vectors), vectors, ids, k=5)
    assert similar.height == 5 * len(ids)
    assert (similar["product_id"] != similar["similar_product_id"]).all()
    ordered = similar.group_by("product_id").agg(pl.col("similarity").is_sorted(descending=True).alias("ok"))
    assert ordered["ok"].all()


def test_similar_products_of_a_flat_index_are_what_its_search_finds(vectors):
    # Scored in parallel blocks of queries by numpy (more products than one block of queries), not by FAISS.
    ids = [f"P{i}" for i in range(len(vectors))]
    similar = similar_products(build_index(vectors), vectors, ids, k=7)
    scores, rows = search(build_index(vectors, "flat"), vectors, 8)
    for product in (0, 1023, 1024, 1999):
        found = similar.filter(pl.col("product_id") == ids[product])
        expected = [(ids[r], s) for r, s in zip(rows[product], scores[product]) if r != product][:7]
        assert set(found["similar_product_id"]) == {i for i, _ in expected}
        assert found["similarity"].to_list() == pytest.approx(sorted((s for _, s in expected), reverse=True), abs=1e-5)


def test_similar_products_brought_up_to_date_equal_a_full_search(vectors):
    """An incremental night keeps the lists no changed product can enter or leave and searches the rest again:
    the result is what searching every product finds, with some products edited, some gone and some new."""
    rng = np.random.default_rng(11)
    ids = [f"P{i:04d}" for i in range(len(vectors))]
    before = similar_products(build_index(vectors), vectors, ids, 10)

    now = vectors.copy()
    moved = rng.choice(len(now), size=60, replace=False)
    edited, touched_up = moved[:30], moved[30:]  # rewritten; nudged (most lists naming them keep them)
    now[edited] = now[rng.choice(len(now), size=30)] + 0.2 * rng.normal(size=(30, now.shape[1]))
    now[touched_up] += 0.01 * rng.normal(size=(30, now.shape[1]))
    now /= np.linalg.norm(now, axis=1, keepdims=True)
    gone = set(rng.choice(len(now), size=10, replace=False).tolist()) - set(moved.tolist())
    keep = np.array([i for i in range(len(now)) if i not in gone])
    new = rng.normal(size=(5, now.shape[1])).astype(np.float32) + now[:5]
    now_ids = [ids[i] for i in keep] + [f"N{i}" for i in range(5)]
    now = np.vstack([now[keep], new / np.linalg.norm(new, axis=1, keepdims=True)]).astype(np.float32)
    unchanged = np.array([i not in set(moved.tolist()) for i in keep] + [False] * 5)

    index = build_index(now)
    full = similar_products(index, now, now_ids, 10).sort("product_id", "rank")
    updated = similar_products_since(index, now, now_ids, 10, before, unchanged)
    assert updated.height == full.height == len(now_ids) * 10
    assert updated["product_id"].equals(full["product_id"])
    assert np.allclose(updated["similarity"], full["similarity"], atol=1e-5)
    # The same neighbours in the same order, but where two are as similar as float32 can tell apart (kept
    # lists were scored in another night's matrix products, whose last bits may differ): those may swap.
    similarity = full["similarity"].to_numpy()
    same_product = full["product_id"].to_numpy()
    tied = np.zeros(len(similarity), dtype=bool)
    close = (np.abs(np.diff(similarity)) < 1e-6) & (same_product[1:] == same_product[:-1])
    tied[1:] |= close
    tied[:-1] |= close
    assert 0 < (~tied).sum() and (updated["similar_product_id"].to_numpy() == full["similar_product_id"].to_numpy())[~tied].all()
