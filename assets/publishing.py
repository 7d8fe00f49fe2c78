"""The publishing asset: every table and the run's record land in the warehouse in one transaction."""


from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl

from assets.reporting import reported
from assets.resources import ShopSettings
from pipeline.behavior import ItemCooccurrence
from pipeline.embeddings import ProductEmbeddings
from pipeline.profiles import UserProfiles
from pipeline.vector_index import SavedIndex
from pipeline.warehouse import RunRecord, prune_indexes, publish


@dg.asset(group_name="publish", kinds={"duckdb"})
def warehouse(context: dg.AssetExecutionContext, settings: ShopSettings, products: pl.DataFrame,
              interactions: pl.DataFrame, product_embeddings: ProductEmbeddings, faiss_index: SavedIndex,
              user_profiles: UserProfiles, behavior_model: ItemCooccurrence,
              recommendations: pl.DataFrame) -> dg.MaterializeResult:
    """Publishes every table, stamped with the run id, and a `runs` row to the DuckDB warehouse, atomically:
    readers see the previous run's results until this one commits."""
    config = settings.get()
    with reported(context) as meta:
        tables = {
            "products": products,
            "interactions": interactions,
            "product_embeddings": pl.DataFrame({
                "product_id": product_embeddings.product_ids, "text_hash": product_embeddings.text_hashes,
                "embedding": product_embeddings.vectors.astype(np.float32).tolist(),
            }),
            "similar_products": faiss_index.similar,
            "user_profiles": user_profiles.table(),
            "item_cooccurrence": behavior_model.pairs(),
            "recommendations": recommendations,
        }
        row_counts = {name: frame.height for name, frame in tables.items()}
        stats = context.instance.get_run_stats(context.run_id)
        started = datetime.fromtimestamp(stats.start_time, timezone.utc) if stats.start_time else None
        record = RunRecord(
            run_id=context.run_id, started_at=started or datetime.now(timezone.utc),
            finished_at=datetime.now(timezone.utc), status="success", hybrid_alpha=config.model.hybrid_alpha,
            top_k=config.model.top_k, faiss_index=str(faiss_index.path), row_counts=row_counts,
            config=config.as_dict(),
        )
        publish(config.warehouse_path, tables, record)
        removed = prune_indexes(config.warehouse_path)
        meta.update({f"rows/{name}": count for name, count in row_counts.items()})
        meta.update(path=dg.MetadataValue.path(str(config.warehouse_path)), run_id=context.run_id,
                    old_indexes_removed=len(removed))
    return dg.MaterializeResult(metadata=meta)
