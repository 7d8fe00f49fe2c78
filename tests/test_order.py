"""Orderings by packed 64-bit words: best score first, ties to the lower label, scores given back exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.order import best_columns, best_first


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 8), width=st.integers(1, 60), levels=st.integers(1, 5), k=st.integers(0, 70),
       seed=st.integers(0, 2**32 - 1))
def test_best_first_is_a_lexsort_by_score_descending_then_label(rows, width, levels, k, seed):
    # Few distinct scores, negatives, zeros of both signs and -inf pads: ties are the rule.
    rng = np.random.default_rng(seed)
    choices = np.array([-np.inf, -2.5, -0.0, 0.0, 0.75, 3.0, 1e30][:levels + 2], dtype=np.float32)
    scores = rng.choice(choices, size=(rows, width))
    labels = np.stack([rng.permutation(width) for _ in range(rows)])
    labels[rng.random((rows, width)) < 0.1] = -1  # pads label -1: after every real label
    key = np.where(labels < 0, np.iinfo(np.int64).max, labels)
    order = np.lexsort((key, -(scores + np.float32(0.0))), axis=1)[:, :k]
    got_scores, got_labels = best_first(scores, labels, k)
    assert np.array_equal(got_labels, np.take_along_axis(labels, order, axis=1))
    assert np.array_equal(got_scores, np.take_along_axis(scores, order, axis=1))  # -0.0 == 0.0


def test_best_columns_prefer_the_lower_column_among_equal_scores():
    scores = np.array([[0.5, 0.9, 0.5, -np.inf, 0.9], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    assert best_columns(scores, 3).tolist() == [[1, 4, 0], [0, 1, 2]]
