"""The Dagster entry point: assets, resources, the nightly job (whole, or fanned out by user bucket) and its
schedule, and the executor named by `scale.executor`."""

import dagster as dg

from assets import behavior, catalog, content, evaluation, explanations, nights, publishing, recommendations
from assets.executors import executor_named
from assets.resources import BucketedFilesystemIOManager, ShopSettings
from assets.runs import record_failed_runs
from assets.schedules import (buckets_job, incremental_job, nightly_job, nightly_schedule, publish_job,
                              shared_job)
from pipeline.config import load_settings

config = load_settings()
step_storage = str(config.path(config.scale.step_storage)) if config.scale.step_storage else ""

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([catalog, content, behavior, evaluation, nights, recommendations,
                                         explanations, publishing]),
    asset_checks=dg.load_asset_checks_from_modules([evaluation]),
    resources={"settings": ShopSettings(), "io_manager": BucketedFilesystemIOManager(base_dir=step_storage)},
    jobs=[nightly_job, incremental_job, shared_job, buckets_job, publish_job],
    schedules=[nightly_schedule()],
    sensors=[record_failed_runs],
    # in_process by default: on the 2-core machine it is faster than a process per step (README, "Scaling out").
    executor=executor_named(config.scale.executor),
)
