"""The Dagster entry point: assets, the settings resource, the nightly job and its schedule."""

import dagster as dg

from assets import behavior, catalog, content, evaluation, explanations, publishing, recommendations
from assets.resources import ShopSettings
from assets.schedules import nightly_job, nightly_schedule

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([catalog, content, behavior, evaluation, recommendations, explanations,
                                         publishing]),
    asset_checks=dg.load_asset_checks_from_modules([evaluation]),
    resources={"settings": ShopSettings()},
    jobs=[nightly_job],
    schedules=[nightly_schedule()],
    # One process: steps share the loaded model, and the 2-core machine has nothing to run in parallel.
    executor=dg.in_process_executor,
)
