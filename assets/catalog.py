"""Ingestion assets: the product catalog and the event log, typed and deduplicated."""

import dagster as dg
import polars as pl

from assets.reporting import frame_metadata, reported
from assets.resources import ShopSettings
from pipeline.ingest import read_catalog, read_event_log


@dg.asset(group_name="recommender", kinds={"polars"})
def products(context: dg.AssetExecutionContext, settings: ShopSettings) -> dg.Output[pl.DataFrame]:
    """The product catalog from `data.input_dir`: typed, one row per product id (newest `updated_at` wins)."""
    with reported(context) as meta:
        catalog = read_catalog(settings.get().input_dir)
        meta.update(frame_metadata(catalog.products), source=str(catalog.source), rows_read=catalog.rows_read,
                    duplicates_dropped=catalog.duplicates_dropped,
                    categories=catalog.products["category"].n_unique())
    return dg.Output(catalog.products, metadata=meta)


@dg.asset(group_name="recommender", kinds={"polars"})
def interactions(context: dg.AssetExecutionContext, settings: ShopSettings,
                 products: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """User events from `data.input_dir`; events naming unknown products are counted and dropped."""
    with reported(context) as meta:
        log = read_event_log(settings.get().input_dir, products["product_id"])
        events = log.interactions
        meta.update(frame_metadata(events), source=str(log.source), rows_read=log.rows_read,
                    unknown_products_dropped=log.unknown_products_dropped,
                    duplicates_dropped=log.duplicates_dropped, users=events["user_id"].n_unique(),
                    first_event=str(events["timestamp"].min()), last_event=str(events["timestamp"].max()))
    return dg.Output(events, metadata=meta)
