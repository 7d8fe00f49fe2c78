"""The nightly job and its schedule (cron and time zone from config), and the same night fanned out by user
bucket: `nightly_shared`, then one `nightly_buckets` run per bucket (side by side), then `nightly_publish`."""

from __future__ import annotations

import dagster as dg

from assets.buckets import BUCKETS_JOB, EVERY_BUCKET, PER_USER_ASSETS, user_buckets
from assets.runs import record_failure
from pipeline.config import load_settings

PER_USER = dg.AssetSelection.assets(*PER_USER_ASSETS)
PUBLISHING = dg.AssetSelection.assets("warehouse")
# Runs that write the warehouse or the shared results: a queue can let one of them run at a time (see
# docs/cluster/k8s/dagster.yaml) while bucket runs go side by side.
WRITES_WAREHOUSE = {"shoprec/writes": "warehouse"}

nightly_job = dg.define_asset_job(
    "nightly", selection=dg.AssetSelection.all(), run_tags={**EVERY_BUCKET, **WRITES_WAREHOUSE},
    description="Materialize every asset, from raw inputs to the published warehouse: every user bucket, in "
                "one run.",
    hooks={record_failure},
)

shared_job = dg.define_asset_job(
    "nightly_shared", selection=dg.AssetSelection.all() - PER_USER - PUBLISHING, run_tags=WRITES_WAREHOUSE,
    description="The night fanned out, step 1: everything shared by all users (inputs, embeddings, index, "
                "evaluation and alpha, behavioural model).",
    hooks={record_failure},
)

buckets_job = dg.define_asset_job(
    BUCKETS_JOB, selection=PER_USER, partitions_def=user_buckets,
    description="The night fanned out, step 2: one run per user bucket (a backfill of all partitions), side "
                "by side: profiles, lists and explanations of that bucket's users.",
    hooks={record_failure},
)

publish_job = dg.define_asset_job(
    "nightly_publish", selection=PUBLISHING, run_tags=WRITES_WAREHOUSE,
    description="The night fanned out, step 3: every bucket merged and published in one transaction, once "
                "each was checked to come from the shared results of step 1.",
    hooks={record_failure},
)


def nightly_schedule() -> dg.ScheduleDefinition:
    schedule = load_settings().schedule
    return dg.ScheduleDefinition(
        name="nightly_schedule", job=nightly_job, cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
    )
