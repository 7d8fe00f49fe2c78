"""Each row's strongest entries, read straight from sparse rows: exactly the top n, ties to the lower column."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sparse import top_entries


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
    assert [(int(rows[i]), int(columns[i])) for i in kept] == reference(rows, values, columns, n)
