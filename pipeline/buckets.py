"""Users split into a fixed number of buckets by a stable hash of their id, so per-user work (profiles, lists,
explanations) can run bucket by bucket, in as many processes or machines as there are buckets.

A user's bucket is crc32 of the id's UTF-8 bytes, modulo the number of buckets: the same in every process, on
every machine and in every Python run (unlike `hash()`, salted per process), and it depends on nothing but the
id and the number of buckets, never on which other users there are.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import polars as pl


def user_buckets(user_ids: Iterable[str] | pl.Series, buckets: int) -> np.ndarray:
    """Each id's bucket in [0, buckets) (about 0.3 s per million ids)."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    ids = user_ids.to_list() if isinstance(user_ids, pl.Series) else list(user_ids)
    hashes = np.fromiter((zlib.crc32(user.encode("utf-8")) for user in ids), dtype=np.uint32, count=len(ids))
    return (hashes % np.uint32(buckets)).astype(np.int32)


def split_by_bucket(frame: pl.DataFrame, buckets: int, wanted: Sequence[int] | None = None,
                    column: str = "user_id") -> dict[int, pl.DataFrame]:
    """The rows of `frame` by their user's bucket, for the `wanted` buckets (default: all), row order kept;
    a bucket no user falls into gets an empty frame. Each distinct user is hashed once."""
    wanted = list(range(buckets)) if wanted is None else list(wanted)
    tagged = (frame.join(_users_by_bucket(frame, buckets, column), on=column, how="left", maintain_order="left")
              .filter(pl.col("_bucket").is_in(wanted)))
    parts = tagged.partition_by("_bucket", as_dict=True, include_key=False, maintain_order=True)
    return {bucket: parts.get((bucket,), frame.clear()) for bucket in wanted}


def bucket_by_bucket(frame: pl.DataFrame, buckets: int, wanted: Sequence[int] | None = None,
                     column: str = "user_id") -> Iterator[tuple[int, pl.DataFrame]]:
    """What `split_by_bucket` returns, one bucket at a time: only the bucket being used is copied out of
    `frame` (every bucket at once is a second copy of, say, a 20-million-event log)."""
    users = _users_by_bucket(frame, buckets, column)
    for bucket in list(range(buckets)) if wanted is None else wanted:
        chosen = users.filter(pl.col("_bucket") == bucket).select(column)
        yield bucket, frame.join(chosen, on=column, how="semi", maintain_order="left")


def _users_by_bucket(frame: pl.DataFrame, buckets: int, column: str) -> pl.DataFrame:
    """Each distinct user of `frame` (`column`) with its bucket (`_bucket`), each hashed once."""
    users = frame.select(pl.col(column).unique())
    return users.with_columns(_bucket=pl.Series(user_buckets(users[column], buckets), dtype=pl.Int32))
