"""The publishing asset: every table and the run's record land in the warehouse in one transaction."""

import dagster as dg
import numpy as np
import polars as pl

from assets.reporting import fault_point, reported
from assets.resources import ShopSettings
from assets.runs import run_record
from pipeline.behavior import ItemCooccurrence
from pipeline.embeddings import ProductEmbeddings
from pipeline.experiment import EvaluationResult
from pipeline.explain import ExplanationBatch
from pipeline.model_choice import ModelChoice
from pipeline.profiles import UserProfiles
from pipeline.vector_index import SavedIndex
from pipeline.warehouse import prune_indexes, publish


@dg.asset(group_name="recommender", kinds={"duckdb"})
def warehouse(context: dg.AssetExecutionContext, settings: ShopSettings, products: pl.DataFrame,
              interactions: pl.DataFrame, product_embeddings: ProductEmbeddings, faiss_index: SavedIndex,
              user_profiles: UserProfiles, behavior_model: ItemCooccurrence,
              recommendations: pl.DataFrame, evaluation: EvaluationResult,
              alpha_sweep: ModelChoice, explanations: ExplanationBatch) -> dg.MaterializeResult:
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
            "explanations": explanations.frame,
            "eval_metrics": evaluation.metrics,
            "eval_population": evaluation.population,
            "eval_tuning": evaluation.tuning,
            "alpha_sweep": alpha_sweep.sweep,
            "model_info": pl.DataFrame([alpha_sweep.info]),
        }
        row_counts = {name: frame.height for name, frame in tables.items()}
        record = run_record(context.instance, context.run_id, config, "success", alpha=alpha_sweep.alpha,
                            faiss_index=str(faiss_index.path), row_counts=row_counts,
                            llm_calls=explanations.llm_calls, llm_tokens=explanations.llm_tokens)
        publish(config.warehouse_path, tables, record, on_step=lambda step: fault_point(f"warehouse/{step}"))
        removed = prune_indexes(config.warehouse_path)
        meta.update({f"rows/{name}": count for name, count in row_counts.items()})
        meta.update(path=dg.MetadataValue.path(str(config.warehouse_path)), run_id=context.run_id,
                    old_indexes_removed=len(removed))
    return dg.MaterializeResult(metadata=meta)
