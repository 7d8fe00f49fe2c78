"""The behavioural model asset: item-to-item similarity from co-engagement."""

import time

import dagster as dg
import polars as pl

from assets.nights import require_whole_log
from assets.reporting import frame_metadata, reported
from assets.resources import ShopSettings
from pipeline.behavior import ItemCooccurrence
from pipeline.model_choice import ModelChoice
from pipeline.profiles import interaction_matrix


@dg.asset(group_name="recommender", kinds={"scipy"})
def behavior_model(context: dg.AssetExecutionContext, settings: ShopSettings, products: pl.DataFrame,
                   interactions: pl.DataFrame, alpha_sweep: ModelChoice) -> dg.Output[ItemCooccurrence]:
    """The behavioural model `alpha_sweep` chose (or config pins): item-to-item weights learned from which
    users engaged with both products (cosine, RP3beta or EASE); sparse, top neighbours per product."""
    config = settings.get()
    model = config.model
    with reported(context) as meta:
        require_whole_log(context, config.warehouse_path)
        started = time.perf_counter()
        weighting = config.interest_weighting(alpha_sweep.half_life_events)
        matrix = interaction_matrix(interactions, products["product_id"].to_list(), weighting)
        fitted = ItemCooccurrence(neighbors_per_item=model.neighbors_per_item, spec=alpha_sweep.behavior).fit(
            matrix.engagement, matrix.product_ids)
        fitting_seconds = round(time.perf_counter() - started, 2)
        pairs = fitted.pairs()
        meta.update(frame_metadata(pairs), products_with_neighbors=pairs["product_id"].n_unique(),
                    behavior_model=alpha_sweep.behavior.label, fitting_seconds=fitting_seconds)
    return dg.Output(fitted, metadata=meta)
