"""Content assets: product embeddings, the FAISS index over them, and users' content profiles (by bucket)."""

import dagster as dg
import polars as pl

from assets.buckets import bucket_reported, events_by_bucket, user_buckets
from assets.nights import incremental_run
from assets.reporting import fault_point, frame_metadata, reported
from assets.resources import ShopSettings
from pipeline.embeddings import ProductEmbeddings, embed_products
from pipeline.incremental import NightPlan
from pipeline.model_choice import ModelChoice
from pipeline.profiles import build_user_profiles
from pipeline.vector_index import SavedIndex, build_index, save_index, similar_products, similar_products_since
from pipeline.warehouse import index_path, published_similar


@dg.asset(group_name="recommender", kinds={"pytorch"})
def product_embeddings(context: dg.AssetExecutionContext, settings: ShopSettings,
                       products: pl.DataFrame) -> dg.Output[ProductEmbeddings]:
    """L2-normalized sentence embeddings of title + category + attributes + description.

    Cached by a hash of the text and model name: unchanged products are never encoded twice."""
    config = settings.get()
    with reported(context) as meta:
        embeddings = embed_products(products, config.model.embedding_model,
                                    config.cache_dir / "embeddings.duckdb", config.model.encode_batch_size,
                                    on_chunk=lambda: fault_point("product_embeddings/chunk"),
                                    backend=config.model.embedding_backend)
        meta.update({"dagster/row_count": len(embeddings.product_ids), "encoded": embeddings.encoded,
                     "from_cache": embeddings.cached, "dimensions": int(embeddings.vectors.shape[1]),
                     "model": config.model.embedding_model})
    return dg.Output(embeddings, metadata=meta)


@dg.asset(group_name="recommender", kinds={"faiss"})
def faiss_index(context: dg.AssetExecutionContext, settings: ShopSettings,
                product_embeddings: ProductEmbeddings) -> dg.Output[SavedIndex]:
    """A FAISS inner-product index over the embeddings, saved beside the warehouse (one file per run),
    and each product's nearest neighbours (on an incremental night, the published ones brought up to date:
    only products whose neighbours can have changed are searched again)."""
    config = settings.get()
    with reported(context) as meta:
        embeddings = product_embeddings
        index = build_index(embeddings.vectors, config.model.faiss_index)
        path = index_path(config.warehouse_path, context.run_id)
        save_index(index, embeddings.product_ids, path)
        k = config.model.similar_products
        published = published_similar(config.warehouse_path) if incremental_run(context) else None
        if published is None:
            similar = similar_products(index, embeddings.vectors, embeddings.product_ids, k)
        else:
            previous, hashes = published
            now = pl.DataFrame({"product_id": embeddings.product_ids, "text_hash": embeddings.text_hashes})
            unchanged = now.join(hashes, on="product_id", how="left", suffix="_published").select(
                pl.col("text_hash").eq_missing(pl.col("text_hash_published")))["text_hash"].to_numpy()
            similar = similar_products_since(index, embeddings.vectors, embeddings.product_ids, k, previous,
                                             unchanged)
            meta.update(vectors_changed=int((~unchanged).sum()))
        meta.update(frame_metadata(similar), path=dg.MetadataValue.path(str(path)), kind=config.model.faiss_index,
                    vectors=index.ntotal)
    return dg.Output(SavedIndex(path=path, kind=config.model.faiss_index, similar=similar), metadata=meta)


@dg.asset(group_name="recommender", kinds={"numpy"}, partitions_def=user_buckets)
def user_profiles(context: dg.AssetExecutionContext, settings: ShopSettings, interactions: pl.DataFrame,
                  product_embeddings: ProductEmbeddings, alpha_sweep: ModelChoice,
                  night_plan: NightPlan) -> dg.Output[dict]:
    """Each user's content profile: the mean of their products' embeddings, weighted by event type
    (purchase > cart > view) and recency (in days, and in events as chosen by `alpha_sweep`), for each
    bucket of users the run does (on an incremental night, only the plan's users). Ages count from each
    user's own latest event, so a bucket's profiles are what the whole log gives."""
    weighting = settings.get().interest_weighting(alpha_sweep.half_life_events)
    with reported(context) as meta:
        profiles = {}
        for bucket, events in events_by_bucket(context, night_plan.events_of(interactions)).items():
            with bucket_reported(context, bucket) as bucket_meta:
                profiles[bucket] = build_user_profiles(events, product_embeddings.product_ids,
                                                       product_embeddings.vectors, weighting)
                bucket_meta.update(frame_metadata(profiles[bucket].summary),
                                   users=len(profiles[bucket].matrix.user_ids),
                                   user_product_pairs=profiles[bucket].matrix.weights.nnz)
        meta.update(buckets=len(profiles))
    return dg.Output(profiles, metadata=meta)
