"""Each run's row in the warehouse's `runs` table: written by publishing on success, by a hook when a step
fails, and by a run failure sensor when a run ends failed with no step left to say so (its process killed)."""

from datetime import datetime, timezone

import dagster as dg

from pipeline.config import Settings, load_settings
from pipeline.incremental import COLD, NIGHT_TAG
from pipeline.warehouse import RunRecord, record_failed_run


def run_record(instance: dg.DagsterInstance, run_id: str, config: Settings, status: str,
               alpha: float | None = None, faiss_index: str | None = None,
               row_counts: dict[str, int] | None = None, error: str | None = None,
               llm_calls: int | None = None, llm_tokens: int | None = None) -> RunRecord:
    stats = instance.get_run_stats(run_id)
    run = instance.get_run_by_id(run_id)
    night = (run.tags.get(NIGHT_TAG) if run else None) or COLD
    now = datetime.now(timezone.utc)
    started = datetime.fromtimestamp(stats.start_time, timezone.utc) if stats.start_time else now
    return RunRecord(run_id=run_id, started_at=started, finished_at=now, status=status,
                     hybrid_alpha=alpha if alpha is not None else _pinned_alpha(config), top_k=config.model.top_k, faiss_index=faiss_index,
                     row_counts=row_counts or {}, config=config.as_dict(), error=error, llm_calls=llm_calls,
                     llm_tokens=llm_tokens, night=night)


def _pinned_alpha(config: Settings) -> float | None:
    alpha = config.model.hybrid_alpha
    return None if alpha == "auto" else alpha


@dg.failure_hook(required_resource_keys={"settings"})
def record_failure(context: dg.HookContext) -> None:
    """A failed step marks its run `failed` in `runs`; the published results stay as they were."""
    config = context.resources.settings.get()
    error = f"{context.op.name}: {context.op_exception!r}" if context.op_exception else context.op.name
    failed_checks = _failed_check_descriptions(context.instance, context.run_id)
    if failed_checks:
        error = f"{context.op.name}: blocking check failed: " + " | ".join(failed_checks)
    record_failed_run(config.warehouse_path, run_record(context.instance, context.run_id, config, "failed",
                                                        error=error[:2000]))
    context.log.warning(f"run {context.run_id} recorded as failed in {config.warehouse_path}")


def _failed_check_descriptions(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What each failed asset check of the run said (a blocking check's failure carries no details)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    return [f"{e.asset_key.to_user_string()} {e.check_name}: {e.description}" for e in evaluations if not e.passed]


@dg.run_failure_sensor(name="record_failed_runs", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Records in the warehouse's runs table every failed run that has no row there "
                                   "yet: a run whose process was killed (failed by run monitoring) ran no hook.")
def record_failed_runs(context: dg.RunFailureSensorContext) -> None:
    config = load_settings()
    run_id = context.dagster_run.run_id
    error = (context.failure_event.message or "the run failed")[:2000]
    record_failed_run(config.warehouse_path, run_record(context.instance, run_id, config, "failed", error=error),
                      keep_recorded=True)
