"""User buckets as Dagster partitions: the per-user assets (`user_profiles`, `recommendations`,
`explanations`) are partitioned by a stable hash of the user id (`pipeline.buckets`), everything else is not.

A step of a per-user asset does whichever buckets its run targets (one, several or all) and returns
`{bucket: value}`; `BucketedFilesystemIOManager` stores one file per bucket. The nightly job targets every
bucket in one run; a backfill runs one bucket per run (Dagster's default backfill policy), so the per-user
work fans out over as many run workers as the deployment has. Publishing reads every bucket, after checking
that all of them were computed from the same shared results it publishes (`buckets_out_of_step`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import polars as pl

from pipeline.buckets import bucket_by_bucket, split_by_bucket
from pipeline.config import load_settings

USER_BUCKETS = load_settings().scale.user_buckets
PER_USER_ASSETS = ("user_profiles", "recommendations", "explanations")
BUCKETS_JOB = "nightly_buckets"


def bucket_name(bucket: int, buckets: int = USER_BUCKETS) -> str:
    """The partition key of bucket `bucket`: bucket-0 .. bucket-3, or zero-padded (bucket-00 ..) so they sort."""
    return f"bucket-{bucket:0{len(str(buckets - 1))}d}"


BUCKET_NAMES = [bucket_name(b) for b in range(USER_BUCKETS)]
# A backfill of these partitions makes one run per bucket (Dagster's default backfill policy): that is how
# the per-user work fans out over run workers.
user_buckets = dg.StaticPartitionsDefinition(BUCKET_NAMES)
# The nightly run covers every bucket in one run (each per-user step loops over them).
EVERY_BUCKET = {"dagster/asset_partition_range_start": BUCKET_NAMES[0],
                "dagster/asset_partition_range_end": BUCKET_NAMES[-1]}


def events_by_bucket(context: dg.AssetExecutionContext, interactions: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The events of the users in each bucket this step does, keyed by partition key."""
    wanted = {BUCKET_NAMES.index(key): key for key in context.partition_keys}
    parts = split_by_bucket(interactions, USER_BUCKETS, wanted=sorted(wanted))
    return {wanted[bucket]: frame for bucket, frame in parts.items()}


def events_bucket_by_bucket(context: dg.AssetExecutionContext,
                            interactions: pl.DataFrame) -> Iterator[tuple[str, pl.DataFrame]]:
    """What `events_by_bucket` returns, one bucket at a time (only that bucket's events copied out)."""
    wanted = {BUCKET_NAMES.index(key): key for key in context.partition_keys}
    return ((wanted[bucket], frame) for bucket, frame in bucket_by_bucket(interactions, USER_BUCKETS,
                                                                          wanted=sorted(wanted)))


def events_of_buckets(context: dg.AssetExecutionContext, interactions: pl.DataFrame) -> pl.DataFrame:
    """The events of the users in the buckets this step does, in one frame: `interactions` itself when it
    does every bucket (a split and re-joined copy of 20 million events is gigabytes)."""
    if len(context.partition_keys) == USER_BUCKETS:
        return interactions
    return pl.concat(events_by_bucket(context, interactions).values())


@contextmanager
def bucket_reported(context: dg.AssetExecutionContext, key: str) -> Iterator[dict[str, Any]]:
    """Time one bucket; the body fills the yielded dict, which becomes that partition's metadata."""
    started = time.perf_counter()
    metadata: dict[str, Any] = {}
    yield metadata
    metadata["bucket_seconds"] = dg.MetadataValue.float(round(time.perf_counter() - started, 3))
    context.add_asset_metadata(metadata, partition_key=key)


def per_user_only(run: dg.DagsterRun) -> bool:
    """A run of per-user buckets only (the fan-out): it writes nothing to the warehouse."""
    if run.job_name == BUCKETS_JOB:
        return True
    selected = {key.to_user_string() for key in run.asset_selection or ()}
    return bool(selected) and selected <= set(PER_USER_ASSETS)


def buckets_out_of_step(instance: dg.DagsterInstance, assets: Sequence[dg.AssetsDefinition]) -> list[str]:
    """Why the latest materializations of every bucket of `assets` cannot be published together (empty when
    they can): a bucket never materialized, a bucket computed from another materialization of a shared
    (unpartitioned) parent than its latest, or a bucket older than the same bucket of its per-user parent.

    Dagster records which materialization of each parent a materialization read (its data provenance), so
    buckets made by separate runs are checked against the very results publishing reads."""
    per_user = {asset.key for asset in assets}
    latest_cache: dict[tuple[dg.AssetKey, str | None], Any] = {}

    def latest(key: dg.AssetKey, partition: str | None = None):
        if (key, partition) not in latest_cache:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
                limit=1).records
            latest_cache[key, partition] = records[0] if records else None
        return latest_cache[key, partition]

    problems = []
    for asset in assets:
        name = asset.key.to_user_string()
        for bucket in BUCKET_NAMES:
            record = latest(asset.key, bucket)
            if record is None:
                problems.append(f"{name} {bucket} was never materialized")
                continue
            provenance = dg.DataProvenance.from_tags(record.asset_materialization.tags or {})
            read = provenance.input_storage_ids if provenance else {}
            stale = []
            for parent in sorted(asset.dependency_keys):
                if parent in per_user:
                    upstream = latest(parent, bucket)
                    if upstream is None or upstream.storage_id > record.storage_id:
                        problems.append(f"{name} {bucket} is older than {parent.to_user_string()} {bucket}")
                elif (upstream := latest(parent)) is not None and read.get(parent) != upstream.storage_id:
                    stale.append(parent.to_user_string())
            if stale:
                problems.append(f"{name} {bucket} was computed from earlier {', '.join(stale)}")
    return problems


def by_bucket(value: Mapping[str, Any]) -> Iterator[Any]:
    """A per-user input's buckets, in bucket order, one at a time (a `LazyBuckets` input then holds one
    bucket's value, not all of them)."""
    return (value[key] for key in BUCKET_NAMES if key in value)


def sorted_parts(frames: Iterable[pl.DataFrame], by: Sequence[str]) -> Iterator[pl.DataFrame]:
    """Buckets' frames, each sorted by `by`; empty buckets, whose columns may lack a type, are left out. A frame
    already in order (the lists and texts come in user order) is passed on as it is, not copied: a bucket of a
    million users' explanations is gigabytes."""
    return (frame if in_order(frame, by) else frame.sort(by) for frame in frames if frame.height)


def in_order(frame: pl.DataFrame, by: Sequence[str]) -> bool:
    """Whether `frame`'s rows are sorted by the columns `by` (ascending, the first deciding; equal rows in any
    order), as `frame.sort(by)` would order them."""
    later, same = pl.lit(False), pl.lit(True)
    for column in by:
        previous = pl.col(column).shift(1)
        later = later | (same & (pl.col(column) > previous))
        same = same & (pl.col(column) == previous)
    return bool(frame.select((later | same).slice(1).all()).item()) if frame.height > 1 else True
