"""Blocks of work on every core: results in order, errors surface, and only a few blocks run ahead."""

from __future__ import annotations

import pytest

from pipeline.parallel import cores, in_parallel


def test_results_come_back_in_the_items_order():
    assert list(in_parallel(lambda n: n * n, range(50))) == [n * n for n in range(50)]


def test_a_failing_block_fails_the_whole():
    def work(n: int) -> int:
        if n == 7:
            raise ValueError("block 7 failed")
        return n

    with pytest.raises(ValueError, match="block 7"):
        list(in_parallel(work, range(20)))


def test_only_a_few_blocks_are_started_ahead_of_the_reader():
    pulled = []

    def items():
        for n in range(1_000):
            pulled.append(n)
            yield n

    results = in_parallel(lambda n: n, items())
    assert next(results) == 0
    assert len(pulled) <= 2 * cores() + 1  # a million users' blocks are not all queued at once
    assert list(results) == list(range(1, 1_000))
