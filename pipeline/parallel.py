"""Blocks of work spread over the machine's cores with threads.

numpy's sorts and matrix products, scipy's sparse products and polars all release the GIL, so one thread per
core, each with BLAS and OpenMP held to a single thread, keeps every core busy without copying the inputs
into other processes; two single-threaded matrix products on two cores also beat one product on two threads
(measured on the scoring tiles).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import threadpool_limits

Item = TypeVar("Item")
Result = TypeVar("Result")


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def in_parallel(work: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
    """`work(item)` for every item, one thread per core, the results in the items' order. At most two items
    per core are started ahead of the one being handed back, so results waiting to be read stay few."""
    workers = cores()
    with threadpool_limits(1), ThreadPoolExecutor(max_workers=workers) as pool:
        started: deque[Future[Result]] = deque()
        for item in items:
            started.append(pool.submit(work, item))
            if len(started) > 2 * workers:
                yield started.popleft().result()
        while started:
            yield started.popleft().result()
