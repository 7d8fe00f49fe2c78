"""Evaluation assets: the offline evaluation, the alpha sweep and model choice, and the quality gate."""

import base64

import dagster as dg
import polars as pl

from assets.nights import require_whole_log
from assets.reporting import frame_metadata, preview, reported
from assets.resources import ShopSettings
from pipeline.embeddings import ProductEmbeddings
from pipeline.experiment import EvaluationResult, evaluate, evaluation_settings, scoring_settings
from pipeline.model_choice import ModelChoice, choose_model, quality_gate, sweep_plot
from pipeline.warehouse import latest_model_info, report_path


@dg.asset(group_name="recommender", kinds={"numpy"})
def evaluation(context: dg.AssetExecutionContext, settings: ShopSettings, interactions: pl.DataFrame,
               product_embeddings: ProductEmbeddings) -> dg.Output[EvaluationResult]:
    """Popularity, EASE and the hybrid at every alpha, on a global temporal split and per-user leave-last-out:
    full-ranking and sampled Hit/NDCG/Recall/MRR at 5/10/20, coverage and popularity, 95% bootstrap intervals."""
    config = settings.get()
    with reported(context) as meta:
        require_whole_log(context, config.warehouse_path)
        result = evaluate(interactions, product_embeddings.product_ids, product_embeddings.vectors,
                          scoring_settings(config), evaluation_settings(config))
        test = result.metrics.filter((pl.col("split") == "test") & (pl.col("k") == 10)
                                     & (pl.col("segment") == "all") & pl.col("metric").is_in(["ndcg", "hit"]))
        table = test.pivot(on="metric", index=["protocol", "model", "alpha"], values="value").sort(
            "protocol", "model", "alpha")
        meta.update(frame_metadata(result.metrics), test_at_10=preview(table, rows=40),
                    population=preview(result.population, rows=40),
                    validation_best_alpha=result.chosen_alpha, ease_l2=result.chosen_ease_l2,
                    behavior_model=result.chosen_behavior.label, chosen_on=result.choice_reason)
    return dg.Output(result, metadata=meta)


@dg.asset(group_name="recommender", kinds={"matplotlib"})
def alpha_sweep(context: dg.AssetExecutionContext, settings: ShopSettings,
                evaluation: EvaluationResult) -> dg.Output[ModelChoice]:
    """The alpha the nightly lists use: the validation NDCG@10 winner when `model.hybrid_alpha` is "auto",
    else the configured number; with the sweep plotted (NDCG@10 and Hit@10 against alpha, 95% bands)."""
    config = settings.get()
    with reported(context) as meta:
        choice = choose_model(evaluation, config.model.hybrid_alpha)
        png = sweep_plot(choice)
        path = report_path(config.warehouse_path, context.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        image = base64.b64encode(png).decode()
        meta.update(alpha=choice.alpha, alpha_source=choice.source, behavior_model=choice.behavior.label,
                    chosen_on=choice.info["chosen_on"],
                    recency_half_life_events=choice.half_life_events or 0.0,
                    tuning=preview(evaluation.tuning, rows=20),
                    test_ndcg_at_10=choice.info["ndcg_at_10"], test_hit_at_10=choice.info["hit_at_10"],
                    plot=dg.MetadataValue.md(f"![alpha sweep](data:image/png;base64,{image})"),
                    plot_file=dg.MetadataValue.path(str(path)), sweep=preview(choice.sweep, rows=50))
    return dg.Output(choice, metadata=meta)


@dg.asset_check(asset=alpha_sweep, blocking=True,
                description="Blocks publishing when test NDCG@10 or catalog coverage falls too far against the "
                            "last published run; the previous lists stay served.")
def quality_gate_check(settings: ShopSettings, alpha_sweep: ModelChoice) -> dg.AssetCheckResult:
    config = settings.get()
    gate = quality_gate(alpha_sweep.info, latest_model_info(config.warehouse_path),
                        config.evaluation.gate_max_ndcg_drop, config.evaluation.gate_min_coverage_ratio)
    previous = gate.previous or {}
    return dg.AssetCheckResult(
        passed=gate.passed,
        description="; ".join(gate.reasons or ["within the gates", *gate.notes]),
        metadata={
            "ndcg_at_10": gate.current.get("ndcg_at_10"), "previous_ndcg_at_10": previous.get("ndcg_at_10"),
            "coverage_at_10": gate.current.get("coverage_at_10"),
            "previous_coverage_at_10": previous.get("coverage_at_10"),
            "max_ndcg_drop": config.evaluation.gate_max_ndcg_drop,
            "min_coverage_ratio": config.evaluation.gate_min_coverage_ratio,
        },
    )
