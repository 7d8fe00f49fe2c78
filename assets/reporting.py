"""What every asset reports to Dagster: elapsed time, row counts and a preview, and the result of a
`pipeline.quality` suite as a blocking asset check; and the fault-injection point.

`SHOPREC_FAULT=<point>` makes the run fail at that point: `<asset>` after the asset's work,
`product_embeddings/chunk` after the first committed chunk of embeddings, `warehouse/written` with every
table written but not committed, `warehouse/committed` after the commit but before the served snapshot
moves. `<point>:kill` kills the process there (SIGKILL) instead, `<point>:sleep=<s>` pauses it there. Tests
use them to show that a run stopped anywhere leaves the published results whole.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from typing import Any, Iterator

import dagster as dg
import polars as pl

from pipeline.memory import peak_rss_bytes, release_free_memory, reset_peak_rss
from pipeline.quality import QualityReport

FAULT_ENV = "SHOPREC_FAULT"
PREVIEW_ROWS = 5


class InjectedFault(RuntimeError):
    """Raised where SHOPREC_FAULT asks an asset to fail."""

def fault_point(name: str) -> None:
    wanted = os.environ.get(FAULT_ENV, "")
    target, _, action = wanted.partition(":")
    if target != name:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action.startswith("sleep="):
        time.sleep(float(action.removeprefix("sleep=")))
        return
    raise InjectedFault(f"fault injected at {name} ({FAULT_ENV}={wanted})")


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def preview(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """The first rows as a Markdown table (long cells shortened)."""
    head = frame.head(rows)
    cells = [[_cell(v) for v in row] for row in head.iter_rows()]
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return dg.MetadataValue.md("\n".join(lines))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4f}"
    elif isinstance(value, list):
        text = ", ".join(str(v) for v in value[:4]) + (" …" if len(value) > 4 else "")
    else:
        text = str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "…"


@contextmanager
def reported(context: dg.AssetExecutionContext) -> Iterator[dict[str, Any]]:
    """Time an asset body and take its peak memory (from what the process holds once the memory earlier steps
    freed is handed back); the body fills the yielded dict with metadata; the fault point fires at the end."""
    release_free_memory()
    reset_peak_rss()
    watch = Stopwatch()
    metadata: dict[str, Any] = {}
    yield metadata
    name = context.asset_key.to_user_string()
    peak_mb = round(peak_rss_bytes() / 2**20, 1)
    metadata["elapsed_seconds"] = dg.MetadataValue.float(watch.elapsed)
    metadata["peak_rss_mb"] = dg.MetadataValue.float(peak_mb)
    context.log.info(f"{name}: done in {watch.elapsed:.2f}s, peak memory {peak_mb:,.0f} MB")
    fault_point(name)


def frame_metadata(frame: pl.DataFrame, row_count: int | None = None) -> dict[str, Any]:
    """A table's rows (`row_count` when `frame` is only its first rows) and a preview of them."""
    return {"dagster/row_count": frame.height if row_count is None else row_count, "preview": preview(frame)}


QUALITY_CHECK = "quality"


def quality_check(asset: str) -> dg.AssetCheckSpec:
    """The blocking check an asset declares for its expectation suite (evaluated in the asset's own step)."""
    return dg.AssetCheckSpec(QUALITY_CHECK, asset=asset, blocking=True,
                             description="the asset's expectation suite (pipeline/quality.py): on an input, rows "
                                         "breaking a row rule are quarantined and too many fail it; on the lists, "
                                         "any break fails it")


def check_result(report: QualityReport) -> dg.AssetCheckResult:
    """The suite's outcome as the Dagster UI shows it: each expectation, observed value, failing examples."""
    return dg.AssetCheckResult(
        check_name=QUALITY_CHECK, passed=report.passed, description=report.summary()[:1000],
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"expectations": dg.MetadataValue.md(report.outcomes_table()),
                  "rows": report.rows, "quarantined": report.quarantine.height,
                  "quarantined_share": round(report.share, 6), "tolerated_share": report.tolerance,
                  "unknown_products": report.tolerated})
