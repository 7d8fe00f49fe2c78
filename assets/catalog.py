"""Ingestion assets: the product catalog and the event log, typed, checked and deduplicated.

Each carries a blocking asset check, run with the asset: the input's Great Expectations suite
(`pipeline.quality`). Its rows that break a row rule go to the warehouse's `quarantine` table; when too many
do, or a table rule fails, the check fails and nothing downstream runs, so nothing is published.
"""

from typing import Iterator

import dagster as dg
import polars as pl

from assets.reporting import frame_metadata, reported
from assets.resources import ShopSettings
from pipeline.ingest import read_catalog, read_event_log
from pipeline.quality import QualityReport
from pipeline.warehouse import record_quarantine

QUALITY_CHECK = "quality"


def quality_check(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(QUALITY_CHECK, asset=asset, blocking=True,
                             description="the input's expectation suite; rows breaking a row rule are "
                                         "quarantined, too many fail it")


def check_result(report: QualityReport) -> dg.AssetCheckResult:
    """The suite's outcome as the Dagster UI shows it: each expectation, observed value, failing examples."""
    return dg.AssetCheckResult(
        check_name=QUALITY_CHECK, passed=report.passed, description=report.summary()[:1000],
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"expectations": dg.MetadataValue.md(report.outcomes_table()),
                  "rows": report.rows, "quarantined": report.quarantine.height,
                  "quarantined_share": round(report.share, 6), "tolerated_share": report.tolerance,
                  "unknown_products": report.tolerated})


def quarantined(context: dg.AssetExecutionContext, settings: ShopSettings, report: QualityReport) -> dict:
    """Write the report's quarantined rows to the warehouse (now, so they stay even if the run stops)."""
    record_quarantine(settings.get().warehouse_path, context.run_id, str(report.source), report.quarantine)
    if report.quarantine.height:
        context.log.warning(f"{report.source}: {report.quarantine.height} row(s) quarantined; see the "
                            f"warehouse's quarantine table (run_id = '{context.run_id}')")
    return {"quarantined": report.quarantine.height}


@dg.asset(group_name="recommender", kinds={"polars"}, check_specs=[quality_check("products")])
def products(context: dg.AssetExecutionContext, settings: ShopSettings) -> Iterator:
    """The product catalog from `data.input_dir`: typed, checked, one row per product id (the newest valid
    version by `updated_at` wins)."""
    config = settings.get()
    with reported(context) as meta:
        catalog = read_catalog(config.input_dir, config.quality, strict=False)
        meta.update(frame_metadata(catalog.products), source=str(catalog.source), rows_read=catalog.rows_read,
                    duplicates_dropped=catalog.duplicates_dropped, ignored_columns=", ".join(catalog.ignored_columns),
                    categories=catalog.products["category"].n_unique(),
                    **quarantined(context, settings, catalog.report))
    yield dg.Output(catalog.products, metadata=meta)
    yield check_result(catalog.report)


@dg.asset(group_name="recommender", kinds={"polars"}, check_specs=[quality_check("interactions")])
def interactions(context: dg.AssetExecutionContext, settings: ShopSettings, products: pl.DataFrame) -> Iterator:
    """User events from `data.input_dir`, typed and checked; events naming unknown products are counted,
    quarantined and dropped (up to `quality.max_unknown_product_share`)."""
    config = settings.get()
    with reported(context) as meta:
        log = read_event_log(config.input_dir, products["product_id"], config.quality, strict=False)
        events = log.interactions
        meta.update(frame_metadata(events), source=str(log.source), rows_read=log.rows_read,
                    unknown_products_dropped=log.unknown_products_dropped,
                    duplicates_dropped=log.duplicates_dropped, ignored_columns=", ".join(log.ignored_columns),
                    users=events["user_id"].n_unique(),
                    first_event=str(events["timestamp"].min()), last_event=str(events["timestamp"].max()),
                    **quarantined(context, settings, log.report))
    yield dg.Output(events, metadata=meta)
    yield check_result(log.report)
