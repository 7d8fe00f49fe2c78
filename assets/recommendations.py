"""The recommendations asset: top-K per user from fused content and behavioural scores, bucket by bucket."""

from typing import Iterator

import dagster as dg
import polars as pl

from assets.buckets import bucket_reported, events_bucket_by_bucket, user_buckets
from assets.reporting import check_result, frame_metadata, quality_check, reported
from assets.resources import ShopSettings, spilled_buckets
from pipeline.behavior import ItemCooccurrence
from pipeline.embeddings import ProductEmbeddings
from pipeline.incremental import NightPlan
from pipeline.model_choice import ModelChoice
from pipeline.quality import check_recommendations
from pipeline.recommend import RecommendationSettings, recommend
from pipeline.vector_index import SavedIndex, load_index


@dg.asset(group_name="recommender", kinds={"polars"}, check_specs=[quality_check("recommendations")],
          partitions_def=user_buckets)
def recommendations(context: dg.AssetExecutionContext, settings: ShopSettings, products: pl.DataFrame,
                    interactions: pl.DataFrame, product_embeddings: ProductEmbeddings, faiss_index: SavedIndex,
                    user_profiles: dict, behavior_model: ItemCooccurrence, alpha_sweep: ModelChoice,
                    night_plan: NightPlan) -> Iterator:
    """Top-K products per user, `alpha * behavioral + (1 - alpha) * content` with alpha from `alpha_sweep`,
    purchased and out-of-stock products excluded, with the history items that contributed most as evidence;
    for each bucket of users the run does (a user's list depends on nothing else in the bucket), and of
    those only the users `user_profiles` made profiles for (on an incremental night, the plan's users).
    Its blocking check holds the run's lists to their contract before anything is explained or published."""
    model = settings.get().model
    with reported(context) as meta, spilled_buckets(context) as lists:
        index, index_ids = load_index(faiss_index.path)
        if index_ids != product_embeddings.product_ids or behavior_model.product_ids_ != index_ids:
            raise ValueError("products of the index, embeddings and behavioural model disagree; rerun all assets")
        in_stock = products["in_stock"].to_numpy()
        options = RecommendationSettings(alpha_sweep.alpha, model.top_k, model.candidates)

        def checked_buckets():
            """Each bucket's lists, made, stored (`spilled_buckets`: one bucket's lists held at a time) and
            handed to the check with the bucket's events."""
            events = events_bucket_by_bucket(context, night_plan.events_of(interactions))
            for bucket, bucket_events in events:
                with bucket_reported(context, bucket) as bucket_meta:
                    profiles = user_profiles[bucket]  # one bucket's profiles read at a time
                    ranked = recommend(profiles.matrix, profiles.vectors, product_embeddings.vectors, index,
                                       behavior_model, in_stock, options)
                    lists[bucket] = ranked
                    bucket_meta.update(_list_metadata(ranked, products, model.top_k))
                yield ranked, bucket_events

        report = check_recommendations(checked_buckets(), products, model.top_k, tuple(model.exclude_events))
        # Step-wide metadata goes on every partition's materialization (a bucket's own keys win there).
        meta.update(buckets=len(lists), hybrid_alpha=alpha_sweep.alpha, alpha_source=alpha_sweep.source,
                    top_k=model.top_k)
    yield dg.Output(lists, metadata=meta)
    yield check_result(report)


def _list_metadata(ranked: pl.DataFrame, products: pl.DataFrame, top_k: int) -> dict:
    per_user = ranked.group_by("user_id").len()
    return {**frame_metadata(ranked), "users": per_user.height,
            "users_with_fewer_than_k": per_user.filter(pl.col("len") < top_k).height,
            "catalog_coverage": round(ranked["product_id"].n_unique() / products.height, 4)}
