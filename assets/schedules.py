"""The nightly job and its schedule (cron and time zone from config)."""

from __future__ import annotations

import dagster as dg

from assets.runs import record_failure
from pipeline.config import load_settings

nightly_job = dg.define_asset_job(
    "nightly", selection=dg.AssetSelection.all(),
    description="Materialize every asset, from raw inputs to the published warehouse.",
    hooks={record_failure},
)


def nightly_schedule() -> dg.ScheduleDefinition:
    schedule = load_settings().schedule
    return dg.ScheduleDefinition(
        name="nightly_schedule", job=nightly_job, cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
    )
