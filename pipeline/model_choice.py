"""Which model the nightly lists use (behavioural model, alpha, sequence recency), what it scored, the sweep
plot, and the quality gate.

`hybrid_alpha: "auto"` takes the alpha the evaluation chose on validation; a number pins it. Either way
`model_info` reports the test metrics of the alpha actually used, on the protocol the choice was made on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import polars as pl

from pipeline.behavior import BehaviorSpec
from pipeline.experiment import EvaluationResult


@dataclass(frozen=True)
class ModelChoice:
    alpha: float
    source: str
    """"auto" (chosen on validation) or "config" (pinned)."""
    half_life_events: float | None
    """Sequence recency the lists use (chosen with alpha on validation, or pinned); None: off."""
    behavior: BehaviorSpec
    """The behavioural model the lists use (chosen on validation, or pinned)."""
    info: dict
    """The `model_info` row: the alpha, its test metrics with intervals, users evaluated."""
    sweep: pl.DataFrame


def choose_model(result: EvaluationResult, configured_alpha: float | str) -> ModelChoice:
    auto = configured_alpha == "auto"
    alpha = result.chosen_alpha if auto else float(configured_alpha)
    hit = result.model_metric(alpha, "hit")
    ndcg = result.model_metric(alpha, "ndcg")
    coverage = result.model_metric(alpha, "coverage")
    info = {
        "model_type": "Hybrid Recommendation",
        "behavior_model": result.chosen_behavior.label,
        "hybrid_alpha": alpha,
        "alpha_source": "auto" if auto else "config",
        "validation_best_alpha": result.chosen_alpha,
        "recency_half_life_events": result.chosen_half_life_events or 0.0,
        "protocol": result.choice_protocol,
        "chosen_on": result.choice_reason,
        "hit_at_10": hit.get("value"), "hit_at_10_ci_low": hit.get("ci_low"),
        "hit_at_10_ci_high": hit.get("ci_high"),
        "ndcg_at_10": ndcg.get("value"), "ndcg_at_10_ci_low": ndcg.get("ci_low"),
        "ndcg_at_10_ci_high": ndcg.get("ci_high"),
        "coverage_at_10": coverage.get("value"),
        "users_evaluated": ndcg.get("users"),
        "eval_seconds": result.elapsed_seconds,
    }
    sweep = result.sweep.with_columns(chosen=pl.col("alpha") == alpha)
    return ModelChoice(alpha=alpha, source=info["alpha_source"], half_life_events=result.chosen_half_life_events,
                       behavior=result.chosen_behavior, info=info, sweep=sweep)


def sweep_plot(choice: ModelChoice) -> bytes:
    """PNG: NDCG@10 and Hit@10 against alpha on validation (solid) and test (dashed), 95% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for ax, metric, label in zip(axes, ["ndcg", "hit"], ["NDCG@10", "Hit@10"]):
        for split, style in [("validation", "-"), ("test", "--")]:
            rows = choice.sweep.filter((pl.col("metric") == metric) & (pl.col("split") == split)).sort("alpha")
            if rows.is_empty():
                continue
            line, = ax.plot(rows["alpha"], rows["value"], style, marker="o", markersize=3, label=split)
            ax.fill_between(rows["alpha"], rows["ci_low"], rows["ci_high"], alpha=0.2, color=line.get_color())
        ax.axvline(choice.alpha, color="grey", linewidth=1, linestyle=":")
        ax.set_xlabel("alpha (weight of the behavioural score)")
        ax.set_ylabel(label)
        ax.set_title(f"{label} ({choice.info['protocol']} split)")
        if ax.get_lines()[1:]:
            ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"Alpha sweep: alpha = {choice.alpha:g} ({choice.source}), behavioural model "
                 f"{choice.behavior.label}", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]
    current: dict
    previous: dict | None
    notes: list[str] = field(default_factory=list)
    """What the gate could not compare, and why."""


def quality_gate(current: dict, previous: dict | None, max_ndcg_drop: float,
                 min_coverage_ratio: float) -> GateResult:
    """Block publishing when test NDCG@10 falls by more than `max_ndcg_drop` (a fraction) against the last
    published run, or coverage@10 drops below `min_coverage_ratio` of it. The first run always passes, and
    NDCG is not compared across protocols (a night whose choice moved to the other protocol's split)."""
    reasons, notes = [], []
    if previous and previous.get("protocol") and previous.get("protocol") != current.get("protocol"):
        notes.append(f"test NDCG@10 not compared: measured on {current.get('protocol')} tonight, on "
                     f"{previous.get('protocol')} in the last published run")
    elif previous:
        before, now = previous.get("ndcg_at_10"), current.get("ndcg_at_10")
        if before and now is not None and now < before * (1.0 - max_ndcg_drop):
            reasons.append(f"test NDCG@10 fell from {before:.4f} to {now:.4f} "
                           f"({(before - now) / before:.0%} > {max_ndcg_drop:.0%} allowed)")
    if previous:
        before, now = previous.get("coverage_at_10"), current.get("coverage_at_10")
        if before and now is not None and now < before * min_coverage_ratio:
            reasons.append(f"catalog coverage@10 collapsed from {before:.3f} to {now:.3f} "
                           f"(below {min_coverage_ratio:.0%} of the last published run)")
    return GateResult(passed=not reasons, reasons=reasons, current=current, previous=previous, notes=notes)
