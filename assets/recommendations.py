"""The recommendations asset: top-K per user from fused content and behavioural scores."""

from typing import Iterator

import dagster as dg
import polars as pl

from assets.reporting import check_result, frame_metadata, quality_check, reported
from assets.resources import ShopSettings
from pipeline.behavior import ItemCooccurrence
from pipeline.embeddings import ProductEmbeddings
from pipeline.model_choice import ModelChoice
from pipeline.profiles import UserProfiles
from pipeline.quality import check_recommendations
from pipeline.recommend import RecommendationSettings, recommend
from pipeline.vector_index import SavedIndex, load_index


@dg.asset(group_name="recommender", kinds={"polars"}, check_specs=[quality_check("recommendations")])
def recommendations(context: dg.AssetExecutionContext, settings: ShopSettings, products: pl.DataFrame,
                    interactions: pl.DataFrame, product_embeddings: ProductEmbeddings, faiss_index: SavedIndex,
                    user_profiles: UserProfiles, behavior_model: ItemCooccurrence,
                    alpha_sweep: ModelChoice) -> Iterator:
    """Top-K products per user, `alpha * behavioral + (1 - alpha) * content` with alpha from `alpha_sweep`,
    purchased and out-of-stock products excluded, with the history items that contributed most as evidence.
    Its blocking check holds the lists to their contract before anything is explained or published."""
    model = settings.get().model
    with reported(context) as meta:
        index, index_ids = load_index(faiss_index.path)
        if index_ids != product_embeddings.product_ids or behavior_model.product_ids_ != index_ids:
            raise ValueError("products of the index, embeddings and behavioural model disagree; rerun all assets")
        in_stock = products["in_stock"].to_numpy()
        ranked = recommend(user_profiles.matrix, user_profiles.vectors, product_embeddings.vectors, index,
                           behavior_model, in_stock,
                           RecommendationSettings(alpha_sweep.alpha, model.top_k, model.candidates))
        per_user = ranked.group_by("user_id").len()
        meta.update(frame_metadata(ranked), users=per_user.height,
                    users_with_fewer_than_k=per_user.filter(pl.col("len") < model.top_k).height,
                    hybrid_alpha=alpha_sweep.alpha, alpha_source=alpha_sweep.source, top_k=model.top_k,
                    catalog_coverage=round(ranked["product_id"].n_unique() / products.height, 4))
        report = check_recommendations(ranked, products, interactions, model.top_k)
    yield dg.Output(ranked, metadata=meta)
    yield check_result(report)
