"""The nightly jobs and their schedule (cron and time zone from config): `nightly` (a cold night: every asset),
`nightly_incremental` (only the users whose lists can have changed, with the last cold night's models; see
`pipeline.incremental`), the schedule choosing between them each night; and the cold night fanned out by
user bucket: `nightly_shared`, then one `nightly_buckets` run per bucket (side by side), then
`nightly_publish`."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from assets.buckets import BUCKETS_JOB, EVERY_BUCKET, PER_USER_ASSETS, user_buckets
from assets.runs import record_failure
from pipeline.config import load_settings
from pipeline.incremental import COLD, INCREMENTAL, NIGHT_TAG, night_kind
from pipeline.warehouse import last_nights

PER_USER = dg.AssetSelection.assets(*PER_USER_ASSETS)
PUBLISHING = dg.AssetSelection.assets("warehouse")
# What only a cold night does: an incremental run leaves them out, so its steps read their last (cold) results.
COLD_ONLY = dg.AssetSelection.assets("evaluation", "alpha_sweep", "behavior_model")
# Runs that write the warehouse or the shared results: a queue can let one of them run at a time (see
# docs/cluster/k8s/dagster.yaml) while bucket runs go side by side.
WRITES_WAREHOUSE = {"shoprec/writes": "warehouse"}
# Each job's tags are given as its `tags`, not `run_tags`: Dagster copies job tags onto every run of the job
# however it is started (schedule, UI, `dagster job launch`, `dagster job execute`), while `dagster job
# launch` leaves `run_tags` out, and a night without its bucket-range tags fails at its first per-user step.

nightly_job = dg.define_asset_job(
    "nightly", selection=dg.AssetSelection.all(), tags={**EVERY_BUCKET, **WRITES_WAREHOUSE, NIGHT_TAG: COLD},
    description="A cold night: materialize every asset, from raw inputs to the published warehouse (models fit "
                "and evaluated again, every user recomputed), every user bucket in one run.",
    hooks={record_failure},
)

INCREMENTAL_ASSETS = dg.AssetSelection.all() - COLD_ONLY
NIGHT_REASON_TAG = "shoprec/night_reason"

incremental_job = dg.define_asset_job(
    "nightly_incremental", selection=INCREMENTAL_ASSETS,
    tags={**EVERY_BUCKET, **WRITES_WAREHOUSE, NIGHT_TAG: INCREMENTAL},
    description="An incremental night: new inputs read and checked, changed products encoded, and only the "
                "users whose events or listed products changed recomputed and replaced in the warehouse, with "
                "the last cold night's evaluation, alpha and behavioural model.",
    hooks={record_failure},
)

shared_job = dg.define_asset_job(
    "nightly_shared", selection=dg.AssetSelection.all() - PER_USER - PUBLISHING, tags=WRITES_WAREHOUSE,
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
    "nightly_publish", selection=PUBLISHING, tags=WRITES_WAREHOUSE,
    description="The night fanned out, step 3: every bucket merged and published in one transaction, once "
                "each was checked to come from the shared results of step 1.",
    hooks={record_failure},
)


def nightly_schedule() -> dg.ScheduleDefinition:
    """Each night a cold run (the `nightly` job) or an incremental one (`nightly_incremental`'s assets), as
    `night_kind` decides from the warehouse's record of the last cold night."""
    schedule = load_settings().schedule

    @dg.schedule(name="nightly_schedule", job=nightly_job, cron_schedule=schedule.cron,
                 execution_timezone=schedule.timezone, default_status=dg.DefaultScheduleStatus.RUNNING)
    def nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return tonight(context.scheduled_execution_time, context.repository_def.asset_graph)

    return nightly


def tonight(now: datetime, asset_graph) -> dg.RunRequest:
    """The run the schedule asks for at `now`, tagged with its kind and why."""
    config = load_settings()
    kind, reason = night_kind(config.as_dict(), config.scale.incremental, config.scale.cold_every_days,
                              last_nights(config.warehouse_path), now)
    tags = {NIGHT_TAG: kind, NIGHT_REASON_TAG: reason}
    if kind == COLD:
        return dg.RunRequest(tags=tags)
    return dg.RunRequest(tags=tags, asset_selection=sorted(INCREMENTAL_ASSETS.resolve(asset_graph)))
