"""The behavioural model asset: item-to-item similarity from co-engagement."""

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
    """Item-item cosine over which users engaged with both products; sparse, top neighbours per product.
    Each user's engagement is weighted as the profiles are (recency as chosen by `alpha_sweep`)."""
    config = settings.get()
    model = config.model
    with reported(context) as meta:
        require_whole_log(context, config.warehouse_path)
        weighting = config.interest_weighting(alpha_sweep.half_life_events)
        matrix = interaction_matrix(interactions, products["product_id"].to_list(), weighting)
        fitted = ItemCooccurrence(neighbors_per_item=model.neighbors_per_item).fit(
            matrix.weights, matrix.product_ids)
        pairs = fitted.pairs()
        meta.update(frame_metadata(pairs), products_with_neighbors=pairs["product_id"].n_unique())
    return dg.Output(fitted, metadata=meta)
