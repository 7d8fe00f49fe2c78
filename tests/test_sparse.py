"""Sparse rows read without a dense copy: each row's strongest entries (exactly the top n, ties to the lower
column) and the values at any (row, column) pairs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sparse import SparseLookup, strongest_entries, top_entries


def reference(rows: np.ndarray, values: np.ndarray, columns: np.ndarray, n: int) -> list[tuple[int, int]]:
    """(row, column) of each row's n largest values as float32, ties to the lower column, row by row."""
    chosen = []
    for row in np.unique(rows):
        at = np.flatnonzero(rows == row)
        order = sorted(at, key=lambda i: (-np.float32(values[i]), columns[i]))
        chosen += [(int(row), int(columns[i])) for i in order[:n]]
    return chosen


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 400), min_size=1, max_size=40), n=st.integers(1, 150),
       levels=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_each_row_keeps_exactly_its_n_largest_with_ties_to_the_lower_column(lengths, n, levels, seed):
    # Few distinct values (co-engagement counts are small integers), so ties at the cut are the rule.
    rng = np.random.default_rng(seed)
    width = 500
    rows = np.repeat(np.arange(len(lengths)), lengths)
    columns = np.concatenate([rng.choice(width, size=length, replace=False) for length in lengths]).astype(np.int64)
    values = rng.integers(0, levels, size=len(rows)) / levels
    kept = top_entries(rows, values, columns, width, n)
    expected = reference(rows, values, columns, n)
    assert [(int(rows[i]), int(columns[i])) for i in kept] == expected
    found_rows, found_columns, found_values = strongest_entries(rows, values, columns, width, n)
    assert list(zip(found_rows.tolist(), found_columns.tolist())) == expected
    assert np.array_equal(found_values, values[kept].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lookups_read_what_the_matrix_holds_whatever_its_column_order(dtype):
    # A product of sparse matrices comes with its columns unsorted within rows (a block's behavioural scores).
    rng = np.random.default_rng(5)
    dense = np.where(rng.random((60, 90)) < 0.2, rng.normal(size=(60, 90)), 0.0).astype(dtype)
    matrix = sp.csr_matrix(dense)
    shuffled = sp.csr_matrix((matrix.data.copy(), matrix.indices.copy(), matrix.indptr.copy()), shape=matrix.shape)
    for start, end in zip(shuffled.indptr[:-1], shuffled.indptr[1:]):
        order = start + rng.permutation(end - start)
        shuffled.indices[start:end], shuffled.data[start:end] = shuffled.indices[order], shuffled.data[order]
    shuffled.has_sorted_indices = False
    lookup = SparseLookup(shuffled)
    rows = rng.integers(0, 60, size=(200, 7))
    columns = rng.integers(-1, 90, size=(200, 7))  # in no order, -1 reads 0
    expected = np.where(columns >= 0, dense[rows, np.maximum(columns, 0)], 0)
    assert np.array_equal(lookup.get(rows, columns), expected)
    ascending = np.sort(columns, axis=1)  # the sorted path: a block's candidates, in product order
    assert np.array_equal(lookup.get(np.arange(200)[:, None] % 60, ascending),
                          np.where(ascending >= 0, dense[np.arange(200)[:, None] % 60, np.maximum(ascending, 0)], 0))
    best = lookup.top_per_row(4)
    for row in range(60):
        positive = [(-dense[row, c], c) for c in range(90) if dense[row, c] > 0]
        assert [c for c in best[row] if c >= 0] == [c for _, c in sorted(positive)[:4]]
