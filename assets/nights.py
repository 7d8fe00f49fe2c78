"""The night's plan: cold (everything recomputed) or incremental (only the users whose lists can have changed).

The run's `shoprec/night` tag says which: the `nightly` job is cold, `nightly_incremental` is incremental, and
the nightly schedule picks one each night (`pipeline.incremental.night_kind`). An incremental run does not
select the evaluation, the alpha sweep or the behavioural model, so Dagster hands the next steps their last
materializations: the last cold night's.
"""

from functools import partial
from pathlib import Path

import dagster as dg
import polars as pl

from assets.reporting import reported
from assets.resources import ShopSettings
from pipeline.embeddings import ProductEmbeddings
from pipeline.incremental import (INCREMENTAL, NIGHT_TAG, IncrementalError, LogRead, NightPlan, cold_plan,
                                  plan_incremental)
from pipeline.warehouse import listed_cosines, log_read, published_events, published_state, users_listing


def incremental_run(context: dg.AssetExecutionContext) -> bool:
    """Whether this run is an incremental night (its `shoprec/night` tag)."""
    return context.run.tags.get(NIGHT_TAG) == INCREMENTAL


def interactions_read(context: dg.AssetExecutionContext, warehouse: Path) -> LogRead | None:
    """What the run that made the stored `interactions` read of the event log (None if it recorded nothing):
    with `from_row`, it read on from the published run's rows and holds only the users with new rows."""
    made_by = context.instance.get_latest_materialization_event(dg.AssetKey("interactions"))
    return log_read(warehouse, made_by.run_id) if made_by else None


def require_whole_log(context: dg.AssetExecutionContext, warehouse: Path) -> None:
    """Refuse to fit, evaluate or publish as a whole log the `interactions` an incremental night read on from
    the published rows (only the users with new events): a cold night reads the log again first."""
    read = interactions_read(context, warehouse)
    if read is not None and read.from_row:
        raise IncrementalError(
            "the stored interactions hold only the users with new events (an incremental night read the log on "
            f"from row {read.from_row:,}), not the whole log: materialize `interactions` in this run too (the "
            "cold `nightly` job does)")


@dg.asset(group_name="recommender", kinds={"polars"})
def night_plan(context: dg.AssetExecutionContext, settings: ShopSettings, products: pl.DataFrame,
               interactions: pl.DataFrame, product_embeddings: ProductEmbeddings) -> dg.Output[NightPlan]:
    """Tonight's kind, from the run's `shoprec/night` tag (cold unless it says incremental), and on an
    incremental night the users made again: those whose events changed since the published run, and those
    whose published list names a product gone out of stock or from the catalog, or one whose new text moved
    its cosine with them by more than `scale.text_change_tolerance`."""
    config = settings.get()
    with reported(context) as meta:
        if incremental_run(context):
            warehouse = config.warehouse_path
            read = interactions_read(context, warehouse)
            plan = plan_incremental(products, product_embeddings.text_hashes, interactions,
                                    published_state(warehouse), lambda ids: users_listing(warehouse, ids),
                                    lambda ids: listed_cosines(warehouse, product_embeddings.frame(ids)),
                                    config.scale.text_change_tolerance,
                                    histories=partial(published_events, warehouse) if read and read.from_row else None)
            meta.update({"dagster/row_count": plan.users.len(), "users_recomputed": plan.users.len(),
                         "users_with_changed_events": plan.users_with_changed_events,
                         "users_listing_changed_products": plan.users_listing_changed_products,
                         "users_keeping_reworded_products": plan.users_keeping_reworded_products,
                         "changed_products": plan.changed_products.len(), "since_run": plan.since_run_id,
                         "events_of_users_recomputed": plan.events.height})
        else:
            plan = cold_plan()
        meta.update(night=plan.kind)
    return dg.Output(plan, metadata=meta)
