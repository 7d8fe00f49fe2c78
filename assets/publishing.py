"""The publishing asset: every table and the run's record land in the warehouse in one transaction, the
per-user tables streamed in from every bucket."""

from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl

import assets.content
import assets.explanations
import assets.recommendations
from assets.buckets import USER_BUCKETS, buckets_out_of_step, by_bucket, sorted_parts
from assets.nights import require_whole_log
from assets.reporting import fault_point, reported
from assets.resources import ShopSettings
from assets.runs import run_record
from pipeline.audit import summed_audits
from pipeline.behavior import ItemCooccurrence
from pipeline.embeddings import ProductEmbeddings
from pipeline.experiment import EvaluationResult
from pipeline.incremental import NightPlan
from pipeline.model_choice import ModelChoice
from pipeline.vector_index import SavedIndex
from pipeline.warehouse import RunRecord, prune_indexes, publish, quarantined_by_rule


@dg.asset(group_name="recommender", kinds={"duckdb"})
def warehouse(context: dg.AssetExecutionContext, settings: ShopSettings, products: pl.DataFrame,
              interactions: pl.DataFrame, product_embeddings: ProductEmbeddings, faiss_index: SavedIndex,
              user_profiles: dict, behavior_model: ItemCooccurrence, recommendations: dict,
              evaluation: EvaluationResult, alpha_sweep: ModelChoice, explanations: dict,
              night_plan: NightPlan) -> dg.MaterializeResult:
    """Publishes every table, stamped with the run id, and a `runs` row to the DuckDB warehouse, atomically:
    readers see the previous run's results until this one commits. The per-user tables are every bucket's
    rows, written a bucket at a time (each in user order); it refuses when a bucket was computed from other
    shared results than the ones it publishes (a bucket run left over from another night).

    An incremental night replaces only its users' rows of the per-user tables (their events included) and
    leaves the co-occurrence model and the evaluation history as the last cold night published them."""
    config = settings.get()
    with reported(context) as meta:
        out_of_step = buckets_out_of_step(context.instance, PER_USER)
        if out_of_step:
            raise BucketsOutOfStepError(
                "the user buckets do not all come from the shared results being published, so nothing is "
                "published: " + "; ".join(out_of_step[:6]) + (" …" if len(out_of_step) > 6 else "")
                + ". Run the nightly job, or every nightly_buckets run again after nightly_shared.")
        if not night_plan.incremental:  # a cold night publishes the log whole
            require_whole_log(context, config.warehouse_path)
        spent = {"calls": 0, "tokens": 0}
        audits = []

        def explanation_frames():
            for batch in by_bucket(explanations):
                spent["calls"] += batch.llm_calls
                spent["tokens"] += batch.llm_tokens
                audits.append(batch.audit)
                yield batch.frame

        # The per-user tables stream in a bucket at a time (each bucket's rows in user order), so only one
        # bucket's rows are held: at a million users, all of them at once would be several GB.
        tables = {
            "products": products,
            "interactions": night_plan.events_of(interactions),
            "product_embeddings": product_embeddings.frame(),
            "similar_products": faiss_index.similar,
            "user_profiles": sorted_parts((profiles.table() for profiles in by_bucket(user_profiles)), ["user_id"]),
            "recommendations": sorted_parts(by_bucket(recommendations), ["user_id", "rank"]),
            "explanations": sorted_parts(explanation_frames(), ["user_id", "rank"]),
            "explanation_claims": sorted_parts((batch.claims for batch in by_bucket(explanations)),
                                               ["user_id", "rank"]),
            # Written after the texts (a history table goes in last), so every bucket's audit is tallied by then.
            "explanation_audit": (summed_audits(audits) for _ in range(1)),
        }
        if not night_plan.incremental:  # what only a cold night fits and evaluates
            tables.update({
                "item_cooccurrence": behavior_model.pairs(),
                "eval_metrics": evaluation.metrics,
                "eval_population": evaluation.population,
                "eval_tuning": evaluation.tuning,
                "alpha_sweep": alpha_sweep.sweep,
                "model_info": pl.DataFrame([alpha_sweep.info]),
            })

        def completed(run: RunRecord) -> RunRecord:  # with what was tallied while the tables streamed in
            recomputed = night_plan.users.len() if night_plan.incremental else run.row_counts["user_profiles"]
            return replace(run, llm_calls=spent["calls"], llm_tokens=spent["tokens"], users_recomputed=recomputed)

        record = run_record(context.instance, context.run_id, config, "success", alpha=alpha_sweep.alpha,
                            faiss_index=str(faiss_index.path))
        row_counts = publish(config.warehouse_path, tables, record,
                             on_step=lambda step: fault_point(f"warehouse/{step}"), amend=completed,
                             replace_users=night_plan.users, max_volume_drop=config.quality.max_volume_drop)
        removed = prune_indexes(config.warehouse_path)
        meta.update({f"rows/{name}": count for name, count in row_counts.items()})
        set_aside = inputs_set_aside(context, config.warehouse_path)
        context.log.info(f"published {row_counts.get('recommendations', 0):,} recommendations; inputs set aside "
                         f"this run: {set_aside}")
        meta.update(path=dg.MetadataValue.path(str(config.warehouse_path)), run_id=context.run_id,
                    night=night_plan.kind, inputs_set_aside=set_aside,
                    old_indexes_removed=len(removed), user_buckets=USER_BUCKETS)
    return dg.MaterializeResult(metadata=meta)


PER_USER = [assets.content.user_profiles, assets.recommendations.recommendations, assets.explanations.explanations]


class BucketsOutOfStepError(RuntimeError):
    """The per-user buckets were not all computed from the shared results being published."""


def inputs_set_aside(context: dg.AssetExecutionContext, warehouse_path: Path) -> str:
    """What this run's inputs lost on the way, in one line for the run's log: rows quarantined by file and rule,
    and the columns the inputs' assets ignored."""
    parts = [f"{Path(source).name}: {rows} quarantined ({rule})"
             for source, rule, rows in quarantined_by_rule(warehouse_path, context.run_id).iter_rows()]
    for asset in ("products", "interactions"):
        event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
        ignored = (event.asset_materialization.metadata.get("ignored_columns")
                   if event and event.run_id == context.run_id and event.asset_materialization else None)
        if ignored is not None and ignored.value:
            parts.append(f"{asset}: ignored columns {ignored.value}")
    return "; ".join(parts) or "nothing quarantined or ignored"
