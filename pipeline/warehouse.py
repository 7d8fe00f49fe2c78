"""The published warehouse: every table's name and columns, and the only SQL that writes or reads them.

A run publishes all its tables and its `runs` row in one DuckDB transaction, so a reader sees either the
previous run's results or the new ones, never a mix; a run that fails before publishing changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import duckdb
import polars as pl

from pipeline.incremental import LastNights, LogRead, PublishedLog, PublishedState
from pipeline.quality import volume_drops
from pipeline.vector_index import ids_path

log = logging.getLogger(__name__)

# Columns every published data table carries after its own.
LINEAGE_COLUMNS = {"run_id": "VARCHAR", "computed_at": "TIMESTAMPTZ"}

TABLES: dict[str, dict[str, str]] = {
    "products": {
        "product_id": "VARCHAR", "title": "VARCHAR", "description": "VARCHAR", "category": "VARCHAR",
        "attributes": "VARCHAR[]", "price": "DOUBLE", "in_stock": "BOOLEAN", "updated_at": "TIMESTAMPTZ",
    },
    "interactions": {
        "user_id": "VARCHAR", "product_id": "VARCHAR", "event_type": "VARCHAR", "value": "DOUBLE",
        "timestamp": "TIMESTAMPTZ",
    },
    "product_embeddings": {"product_id": "VARCHAR", "text_hash": "VARCHAR", "embedding": "FLOAT[]"},
    "similar_products": {
        "product_id": "VARCHAR", "rank": "INTEGER", "similar_product_id": "VARCHAR", "similarity": "DOUBLE",
    },
    "user_profiles": {
        "user_id": "VARCHAR", "n_events": "BIGINT", "n_purchases": "BIGINT", "first_event_at": "TIMESTAMPTZ",
        "last_event_at": "TIMESTAMPTZ", "profile": "FLOAT[]",
    },
    "item_cooccurrence": {
        "product_id": "VARCHAR", "neighbor_id": "VARCHAR", "similarity": "DOUBLE", "co_count": "BIGINT",
    },
    "recommendations": {
        "user_id": "VARCHAR", "rank": "INTEGER", "product_id": "VARCHAR", "score": "DOUBLE",
        "content_score": "DOUBLE", "behavior_score": "DOUBLE", "content_similarity": "DOUBLE",
        "evidence_product_ids": "VARCHAR[]",
    },
    "explanations": {
        "user_id": "VARCHAR", "rank": "INTEGER", "product_id": "VARCHAR", "blurb": "VARCHAR",
        "explanation": "VARCHAR", "reasoning_factors": "VARCHAR[]", "provider": "VARCHAR", "model": "VARCHAR",
        "prompt_version": "VARCHAR", "facts_digest": "VARCHAR", "fallback_reason": "VARCHAR",
    },
    "explanation_claims": {
        "user_id": "VARCHAR", "rank": "INTEGER", "product_id": "VARCHAR", "factor": "INTEGER", "kind": "VARCHAR",
        "term": "VARCHAR", "named_product_id": "VARCHAR", "event_types": "VARCHAR[]", "count": "BIGINT",
        "month": "VARCHAR",
    },
}

# Tables with a row (or rows) per user, which an incremental night replaces user by user.
PER_USER_TABLES = ("interactions", "user_profiles", "recommendations", "explanations", "explanation_claims")
# Tables with rows per product, which an incremental night brings up to date product by product: the
# products whose rows differ from the published ones get tonight's.
PER_PRODUCT_TABLES = ("products", "product_embeddings", "similar_products")

# Evaluation history: appended by every published run and never overwritten, so SQL can compare nights.
HISTORY_TABLES: dict[str, dict[str, str]] = {
    "eval_metrics": {
        "protocol": "VARCHAR", "split": "VARCHAR", "model": "VARCHAR", "alpha": "DOUBLE", "k": "INTEGER",
        "metric": "VARCHAR", "value": "DOUBLE", "ci_low": "DOUBLE", "ci_high": "DOUBLE", "segment": "VARCHAR",
        "users": "BIGINT",
    },
    "eval_population": {"protocol": "VARCHAR", "split": "VARCHAR", "reason": "VARCHAR", "count": "BIGINT"},
    "explanation_audit": {"kind": "VARCHAR", "checked": "BIGINT", "true": "BIGINT", "false": "BIGINT"},
    "eval_tuning": {"protocol": "VARCHAR", "behavior_model": "VARCHAR", "half_life_events": "DOUBLE",
                    "best_alpha": "DOUBLE", "validation_ndcg_at_10": "DOUBLE", "ci_low": "DOUBLE", "ci_high": "DOUBLE",
                    "users": "BIGINT"},
    "alpha_sweep": {
        "alpha": "DOUBLE", "split": "VARCHAR", "metric": "VARCHAR", "value": "DOUBLE", "ci_low": "DOUBLE",
        "ci_high": "DOUBLE", "users": "BIGINT", "chosen": "BOOLEAN",
    },
    "model_info": {
        "model_type": "VARCHAR", "behavior_model": "VARCHAR", "chosen_on": "VARCHAR", "hybrid_alpha": "DOUBLE",
        "alpha_source": "VARCHAR",
        "validation_best_alpha": "DOUBLE", "recency_half_life_events": "DOUBLE", "protocol": "VARCHAR", "hit_at_10": "DOUBLE",
        "hit_at_10_ci_low": "DOUBLE", "hit_at_10_ci_high": "DOUBLE", "ndcg_at_10": "DOUBLE",
        "ndcg_at_10_ci_low": "DOUBLE", "ndcg_at_10_ci_high": "DOUBLE", "coverage_at_10": "DOUBLE",
        "users_evaluated": "BIGINT", "eval_seconds": "DOUBLE",
    },
}

# Rows the input checks set aside, appended by each run as it reads its inputs (kept when the run then fails).
QUARANTINE_COLUMNS = {
    "source": "VARCHAR", "row": "BIGINT", "rule": "VARCHAR", "column": "VARCHAR", "value": "VARCHAR",
    "record": "VARCHAR", "run_id": "VARCHAR", "quarantined_at": "TIMESTAMPTZ",
}

# What each run read of the event log, recorded as it reads it: the next night reads on from the published
# run's bytes when the log only grew since.
LOG_READS_COLUMNS = {
    "run_id": "VARCHAR", "source": "VARCHAR", "bytes": "BIGINT", "rows": "BIGINT", "sha256": "VARCHAR",
    "from_row": "BIGINT", "read_at": "TIMESTAMPTZ",
}

RUNS_COLUMNS = {
    "run_id": "VARCHAR PRIMARY KEY", "started_at": "TIMESTAMPTZ", "finished_at": "TIMESTAMPTZ",
    "status": "VARCHAR", "hybrid_alpha": "DOUBLE", "top_k": "INTEGER", "faiss_index": "VARCHAR",
    "row_counts": "JSON", "config": "JSON", "error": "VARCHAR", "llm_calls": "BIGINT", "llm_tokens": "BIGINT",
    "night": "VARCHAR", "users_recomputed": "BIGINT",
}


@dataclass(frozen=True)
class RunRecord:
    """One row of `runs`: what a run was, when, and what it published."""

    run_id: str
    started_at: datetime
    finished_at: datetime
    status: str
    hybrid_alpha: float
    top_k: int
    faiss_index: str | None
    row_counts: dict[str, int]
    config: dict
    error: str | None = None
    llm_calls: int | None = None
    llm_tokens: int | None = None
    night: str = "cold"
    """"cold" (everything recomputed) or "incremental" (only `users_recomputed` users' rows replaced)."""
    users_recomputed: int | None = None


Frames = pl.DataFrame | Iterable[pl.DataFrame]
"""A table's rows: one frame, or frames written one after another (a bucket of users at a time, so that
only one bucket's rows are held in memory)."""


PUBLISH_MEMORY_LIMIT = "1GB"
"""What DuckDB may hold in memory while publishing: writing is appending, which needs little; at a million
users 4 GB let the step peak at 12.2 GB, 1 GB at 9.3 GB, in the same time (measured)."""


class PublishError(RuntimeError):
    """Publishing failed; the message says what, and what readers still see."""


class VolumeDropError(PublishError):
    """Tonight's catalog, events or users with lists fell too far against the published run's."""


def publish(path: Path, tables: dict[str, Frames], run: RunRecord, on_step: Callable[[str], None] | None = None,
            amend: Callable[[RunRecord], RunRecord] | None = None,
            replace_users: pl.Series | None = None, max_volume_drop: float = 1.0) -> dict[str, int]:
    """Replace every table of `TABLES` given, append to every table of `HISTORY_TABLES` given, and append
    `run` to `runs`, atomically; then move the served snapshot to it. Returns the rows written per table,
    which are the run's `row_counts`; `amend` may complete the run's row from what was tallied while the
    tables streamed in. `on_step` is called with "written" (all written, not committed) and "committed"
    (committed, snapshot not yet moved).

    A replaced table is first built under a staging name, committed a few million rows at a time (DuckDB
    holds a transaction's rows in memory until it commits: a million users' tables in one transaction
    took over 20 GB); one last transaction swaps every staged table in and writes the rest, so readers and
    a run killed anywhere see the previous run's tables or the new ones, never a mix.

    `replace_users` (an incremental night): the per-user tables (`PER_USER_TABLES`) given lose only those
    users' rows, and the frames bring their new ones (few: written in the last transaction); every other
    user's rows stay as published. The per-product tables (`PER_PRODUCT_TABLES`) are given whole, and only
    the products whose rows differ from the published ones are replaced (rewriting 100,000 products'
    vectors and neighbour lists for the 1% that changed took 9 s of a million users' night). The counts
    returned are then the rows written.

    The volume gate: when the catalog, the events or the users with lists, as they would be published, fall
    by more than `max_volume_drop` against the published run's, nothing is committed (`VolumeDropError`)."""
    unknown = set(tables) - set(TABLES) - set(HISTORY_TABLES)
    if unknown:
        raise ValueError(f"not warehouse tables: {sorted(unknown)}")
    in_place = {name for name in tables if name in HISTORY_TABLES
                or (replace_users is not None and name in PER_USER_TABLES + PER_PRODUCT_TABLES)}
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        # DuckDB's own default is 80% of the machine; the pipeline's frames live beside it, so a night's
        # tables (tens of millions of rows) spill to disk rather than take the process down.
        con.execute(f"SET memory_limit = '{PUBLISH_MEMORY_LIMIT}'")
        if replace_users is not None:
            # The replaced users are spread over every row group of the per-user tables; compacting them
            # all at the checkpoint took 32 of its 33 s at a million users. Their space is reclaimed when
            # the next cold night rewrites those tables.
            con.execute("SET max_vacuum_tasks = 0")
        _drop_staged(con)  # a killed run's leftovers
        counts = {name: _stage_table(con, name, frames, run) for name, frames in tables.items()
                  if name not in in_place}
        con.execute("BEGIN TRANSACTION")
        published = _volumes(con)
        for name in counts:
            con.execute(f'DROP TABLE IF EXISTS "{name}"')
            con.execute(f'ALTER TABLE "{STAGING_PREFIX}{name}" RENAME TO "{name}"')
        if replace_users is not None:
            con.register("replaced_users", pl.DataFrame({"user_id": replace_users}).to_arrow())
        counts.update({name: _write_table(con, name, tables[name], run) for name in tables if name in in_place})
        counts = {name: counts[name] for name in tables}
        drops = volume_drops(published, _volumes(con) or {}, max_volume_drop)
        if drops:
            raise VolumeDropError("publishing stopped by the volume gate: " + "; ".join(drops) + ". Nothing of this "
                                  "run was published: the previous run's results are unchanged and still served. "
                                  "If the drop is meant, run the night again with quality.max_volume_drop raised "
                                  "(SHOPREC__QUALITY__MAX_VOLUME_DROP=1 for one run).")
        run = replace(run, row_counts=counts)
        run = amend(run) if amend else run
        _insert_run(con, run)
        if on_step:
            on_step("written")
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    except BaseException as exc:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # nothing was begun, or the transaction is already gone
        if isinstance(exc, (duckdb.IOException, OSError)) or "could not write" in str(exc).lower():
            raise PublishError(f"could not write the warehouse {path}: {exc}. The disk may be full (or a file "
                               "size limit reached). Nothing of this run was published: the previous run's "
                               "results are unchanged and still served.") from exc
        raise
    finally:
        con.close()
    if on_step:
        on_step("committed")
    try:
        publish_snapshot(path, run.run_id)
    except OSError as exc:
        raise PublishError(f"run {run.run_id} is committed to {path}, but its snapshot for the API could not be "
                           f"written ({exc}; is the disk full?). The API keeps serving the previous run; the "
                           "next successful run publishes a new snapshot.") from exc
    log.info("published run %s to %s: %s", run.run_id, path, run.row_counts)
    return counts


def _volumes(con: duckdb.DuckDBPyConnection) -> dict[str, int] | None:
    """What the volume gate compares (`pipeline.quality.VOLUMES`), as the tables hold them now; None before
    the first run has published them."""
    held = {name for name, in con.execute("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_schema = 'main'").fetchall()}
    if not {"products", "interactions", "recommendations"} <= held:
        return None
    return dict(zip(["products", "events", "users_with_lists"], con.execute(
        "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM interactions), "
        "(SELECT count(DISTINCT user_id) FROM recommendations)").fetchone()))


STAGING_PREFIX = "staging_"
"""A table being built for the next swap: never read, dropped when a run died before its swap."""

ROWS_PER_COMMIT = 2_000_000
"""Rows of a staged table committed at once, at most."""
BYTES_PER_COMMIT = 256 * 2**20
"""...and about this much of a frame's memory at once: each slice is copied to Arrow for DuckDB to read, and
2 million rows of explanations' texts are over a gigabyte."""


def _drop_staged(con: duckdb.DuckDBPyConnection) -> None:
    staged = con.execute("SELECT table_name FROM information_schema.tables WHERE table_name LIKE ?",
                         [STAGING_PREFIX + "%"]).fetchall()
    for (name,) in staged:
        con.execute(f'DROP TABLE "{name}"')


def _stage_table(con: duckdb.DuckDBPyConnection, name: str, frames: Frames, run: RunRecord) -> int:
    """Build `name`'s new rows as the staging table, committing every `ROWS_PER_COMMIT` rows; returns the rows."""
    columns = {**TABLES[name], **LINEAGE_COLUMNS}
    ddl = ", ".join(f'"{c}" {t}' for c, t in columns.items())
    con.execute(f'CREATE TABLE "{STAGING_PREFIX}{name}" ({ddl})')
    written = 0
    for frame in [frames] if isinstance(frames, pl.DataFrame) else frames:
        for chunk in frame.iter_slices(_rows_per_commit(frame)):
            written += _insert(con, f"{STAGING_PREFIX}{name}", name, TABLES[name], chunk, run)
    return written


def _rows_per_commit(frame: pl.DataFrame) -> int:
    bytes_per_row = frame.estimated_size() / max(frame.height, 1)
    return max(1, min(ROWS_PER_COMMIT, int(BYTES_PER_COMMIT / max(bytes_per_row, 1.0))))


def record_failed_run(path: Path, run: RunRecord, keep_recorded: bool = False) -> None:
    """Add (or update) a run's row in `runs` without touching any published results. With `keep_recorded`,
    a run that already has a row keeps it (what its failed step said is more than the run's end can say)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        if keep_recorded and _has_run(con, run.run_id):
            return
        _insert_run(con, run)
    finally:
        con.close()


def _has_run(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    held = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' "
                       "AND table_name = 'runs'").fetchone()[0]
    return bool(held) and bool(con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0])


def record_quarantine(path: Path, run_id: str, source: str, rows: pl.DataFrame) -> None:
    """Replace run `run_id`'s quarantined rows of input `source` with `rows` (source, row, rule, column,
    value, record); nothing published is touched."""
    with _run_rows(path, "quarantine", QUARANTINE_COLUMNS, "run_id = ? AND source = ?", [run_id, source]) as con:
        if rows.height:
            con.register("incoming", rows.select("source", "row", "rule", "column", "value", "record").to_arrow())
            con.execute("INSERT INTO quarantine SELECT *, ?, now() FROM incoming", [run_id])
            con.unregister("incoming")


def record_log_read(path: Path, run_id: str, source: str, read: LogRead) -> None:
    """Record (or replace) what run `run_id` read of the event log `source`; nothing published is touched."""
    with _run_rows(path, "event_log_reads", LOG_READS_COLUMNS, "run_id = ?", [run_id]) as con:
        con.execute("INSERT INTO event_log_reads VALUES (?, ?, ?, ?, ?, ?, now())",
                    [run_id, source, read.bytes, read.rows, read.sha256, read.from_row])


@contextmanager
def _run_rows(path: Path, table: str, columns: dict[str, str], where: str,
              parameters: list) -> Iterator[duckdb.DuckDBPyConnection]:
    """A transaction on a table that runs append to as they go (created if missing), with the rows matching
    `where` (a run's earlier rows) deleted: the caller inserts their replacements. Committed on leaving."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        ddl = ", ".join(f'"{c}" {t}' for c, t in columns.items())
        con.execute("BEGIN TRANSACTION")
        con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({ddl})')
        con.execute(f'DELETE FROM "{table}" WHERE {where}', parameters)
        yield con
        con.execute("COMMIT")
    finally:
        con.close()


def log_read(path: Path, run_id: str) -> LogRead | None:
    """What run `run_id` read of the event log, or None if it recorded nothing."""
    if not path.exists():
        return None
    con = connect_readonly(path)
    try:
        return _log_read(con, run_id)
    finally:
        con.close()


def _log_read(con: duckdb.DuckDBPyConnection, run_id: str) -> LogRead | None:
    try:
        row = con.execute("SELECT bytes, rows, sha256, from_row FROM event_log_reads WHERE run_id = ?",
                          [run_id]).fetchone()
    except duckdb.CatalogException:  # a warehouse from before reads were recorded
        return None
    return LogRead(*row) if row else None


def published_log(path: Path) -> PublishedLog | None:
    """What the published run read of the event log and what an incremental night needs to read on from
    there; None before any run, or when that run recorded no read (a night fanned out by bucket publishes
    from another run than the one that read the log). The log may have moved since: its bytes tell whether
    it is the same log grown (`pipeline.ingest.read_new_events`)."""
    with _published(path) as published:
        if published is None:
            return None
        con, run = published
        read = _log_read(con, run["run_id"])
        if read is None:
            return None
        products = con.execute("SELECT product_id FROM products").pl()["product_id"]
    return PublishedLog(read=read, products=products, histories=partial(published_events, path))


def published_events(path: Path, user_ids: pl.Series) -> pl.DataFrame:
    """The published events of `user_ids` (user_id, product_id, event_type, value, timestamp in UTC)."""
    con = connect_readonly(path)
    try:
        con.execute(f"SET memory_limit = '{PUBLISH_MEMORY_LIMIT}'")
        con.register("wanted", pl.DataFrame({"user_id": user_ids}).to_arrow())
        columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
        events = con.execute(f"SELECT {columns} FROM interactions SEMI JOIN wanted USING (user_id)").pl()
    finally:
        con.close()
    return events.with_columns(pl.col("timestamp").dt.convert_time_zone("UTC").dt.cast_time_unit("us"))


def _insert_run(con: duckdb.DuckDBPyConnection, run: RunRecord) -> None:
    columns = ", ".join(f'"{c}" {t}' for c, t in RUNS_COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS runs ({columns})")
    for column, kind in RUNS_COLUMNS.items():  # columns added since the table was made
        con.execute(f'ALTER TABLE runs ADD COLUMN IF NOT EXISTS "{column}" {kind.replace(" PRIMARY KEY", "")}')
    names = ", ".join(f'"{c}"' for c in RUNS_COLUMNS)
    con.execute(
        f"INSERT OR REPLACE INTO runs ({names}) VALUES ({', '.join('?' * len(RUNS_COLUMNS))})",
        [run.run_id, run.started_at, run.finished_at, run.status, run.hybrid_alpha, run.top_k,
         run.faiss_index, json.dumps(run.row_counts), json.dumps(run.config, default=str), run.error,
         run.llm_calls, run.llm_tokens, run.night, run.users_recomputed],
    )


def _write_table(con: duckdb.DuckDBPyConnection, name: str, frames: Frames, run: RunRecord) -> int:
    """Write a table's frames in place, in the open transaction: a history table gets them appended (this
    run's earlier rows, if any, replaced), a per-user table loses the rows of the users in the registered
    `replaced_users` first, a per-product table has its changed products' rows replaced. Returns the rows
    written."""
    if name in PER_PRODUCT_TABLES:
        return _replace_changed_products(con, name, frames, run)
    history = name in HISTORY_TABLES
    schema = HISTORY_TABLES[name] if history else TABLES[name]
    columns = {**schema, **LINEAGE_COLUMNS}
    ddl = ", ".join(f'"{c}" {t}' for c, t in columns.items())
    con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" ({ddl})')
    # Tables outlive releases: columns added since the table was created are added, older rows get NULL.
    for column, kind in columns.items():
        con.execute(f'ALTER TABLE "{name}" ADD COLUMN IF NOT EXISTS "{column}" {kind}')
    if history:
        con.execute(f'DELETE FROM "{name}" WHERE run_id = ?', [run.run_id])
    else:
        con.execute(f'DELETE FROM "{name}" WHERE user_id IN (SELECT user_id FROM replaced_users)')
    frames = [frames] if isinstance(frames, pl.DataFrame) else frames
    return sum(_insert(con, name, name, schema, frame, run) for frame in frames)


def _replace_changed_products(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame, run: RunRecord) -> int:
    """Replace the rows of the products whose rows in `frame` (the whole table tonight) differ from the
    published ones, in either direction (new, changed, fewer or gone); the rest keep their published rows
    and lineage. Returns the rows written."""
    schema = TABLES[name]
    compared = ", ".join(f'"{c}"' for c in SAME_PRODUCT_ROWS_WHEN.get(name, schema))
    casts = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in schema.items())
    con.register("incoming", frame.select(list(schema)).to_arrow())
    tonight = f"(SELECT {casts} FROM incoming)"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE changed_products AS "
        f'SELECT product_id FROM (SELECT {compared} FROM {tonight} EXCEPT SELECT {compared} FROM "{name}") '
        f'UNION SELECT product_id FROM (SELECT {compared} FROM "{name}" EXCEPT SELECT {compared} FROM {tonight})')
    con.execute(f'DELETE FROM "{name}" WHERE product_id IN (SELECT product_id FROM changed_products)')
    names = ", ".join(f'"{c}"' for c in {**schema, **LINEAGE_COLUMNS})
    written = con.execute(
        f'INSERT INTO "{name}" ({names}) SELECT *, ?, ? FROM {tonight} '
        "WHERE product_id IN (SELECT product_id FROM changed_products)", [run.run_id, run.finished_at]).fetchone()[0]
    con.unregister("incoming")
    con.execute("DROP TABLE changed_products")
    return written


SAME_PRODUCT_ROWS_WHEN = {"product_embeddings": ("product_id", "text_hash")}
"""The columns that decide whether a per-product table's rows changed, where not all of them: a vector is its
text's (the model is the cold night's), so comparing text hashes is enough (comparing 100,000 vectors took
3.8 s at a million users)."""


def _insert(con: duckdb.DuckDBPyConnection, target: str, name: str, schema: dict[str, str], frame: pl.DataFrame,
            run: RunRecord) -> int:
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise ValueError(f"table {name}: frame lacks columns {missing}")
    select = ", ".join(f'CAST("{c}" AS {t})' for c, t in schema.items())
    names = ", ".join(f'"{c}"' for c in {**schema, **LINEAGE_COLUMNS})
    con.register("incoming", frame.select(list(schema)).to_arrow())
    con.execute(f'INSERT INTO "{target}" ({names}) SELECT {select}, ?, ? FROM incoming',
                [run.run_id, run.finished_at])
    con.unregister("incoming")
    return frame.height


SNAPSHOTS = "snapshots"
POINTER = "CURRENT"
KEEP_SNAPSHOTS = 3


def publish_snapshot(warehouse: Path, run_id: str) -> Path:
    """Copy the just-committed warehouse to `snapshots/warehouse-<run_id>.duckdb` and point `CURRENT` at it
    with an atomic rename. Readers (the API) open only snapshots, read-only, so the pipeline can always
    write the warehouse, and a reader switches from one whole run to the next, never a mix."""
    folder = warehouse.parent / SNAPSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"warehouse-{run_id}.duckdb"
    partial = target.with_name(target.name + ".partial")
    try:
        shutil.copyfile(warehouse, partial)
    except OSError:
        partial.unlink(missing_ok=True)  # never leave half a copy behind
        raise
    os.replace(partial, target)
    pointer = folder / (POINTER + ".partial")
    pointer.write_text(target.name, encoding="utf-8")
    os.replace(pointer, folder / POINTER)
    newest = sorted(folder.glob("warehouse-*.duckdb"), key=lambda p: p.stat().st_mtime)[-KEEP_SNAPSHOTS:]
    keep = {p.name for p in newest}
    for old in folder.glob("warehouse-*.duckdb"):
        if old.name not in keep and old != target:
            old.unlink(missing_ok=True)
    return target


def catch_up_snapshot(warehouse: Path) -> Path | None:
    """Point the served snapshot at the warehouse's newest successful run if it is not already (a run killed
    between its commit and its snapshot leaves it behind). Returns the new snapshot, or None if none was due."""
    run = latest_run(warehouse)
    served = current_snapshot(warehouse)
    if run is None or (served is not None and served.name == f"warehouse-{run['run_id']}.duckdb"):
        return None
    log.warning("the served snapshot was behind the warehouse; now serving run %s", run["run_id"])
    return publish_snapshot(warehouse, run["run_id"])


def current_snapshot(warehouse: Path) -> Path | None:
    """The snapshot `CURRENT` points at, or None before the first publish."""
    pointer = warehouse.parent / SNAPSHOTS / POINTER
    try:
        return pointer.parent / pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def read_snapshot(snapshot: Path) -> dict[str, pl.DataFrame]:
    """What the API serves, read from one snapshot over one read-only connection."""
    con = connect_readonly(snapshot)
    try:
        run = con.execute("SELECT * FROM runs WHERE status = 'success' ORDER BY finished_at DESC LIMIT 1").pl()
        evaluated = _evaluated_run_id(con)
        tables = {
            "run": run,
            "products": con.execute("SELECT * EXCLUDE (run_id, computed_at) FROM products").pl(),
            "recommendations": con.execute(
                "SELECT r.user_id, r.rank, r.product_id, r.score, r.content_score, r.behavior_score, "
                "r.content_similarity, r.evidence_product_ids, e.blurb, e.explanation, e.reasoning_factors, "
                "r.computed_at FROM recommendations r LEFT JOIN explanations e USING (user_id, product_id) "
                "ORDER BY r.user_id, r.rank").pl(),
            "similar_products": con.execute(
                "SELECT product_id, rank, similar_product_id, similarity FROM similar_products "
                "ORDER BY product_id, rank").pl(),
            "interactions": con.execute(
                "SELECT user_id, product_id, event_type, value, timestamp FROM interactions "
                "ORDER BY user_id, timestamp DESC").pl(),
            # The evaluation of the newest cold night (an incremental night evaluates nothing).
            "model_info": con.execute("SELECT * FROM model_info WHERE run_id = ?", [evaluated]).pl(),
            "alpha_sweep": con.execute("SELECT * FROM alpha_sweep WHERE run_id = ? ORDER BY split, metric, alpha",
                                       [evaluated]).pl(),
            "eval_metrics": con.execute(
                "SELECT protocol, split, model, alpha, k, metric, value, ci_low, ci_high, segment, users "
                "FROM eval_metrics WHERE run_id = ? AND segment = 'all' AND k = 10", [evaluated]).pl(),
        }
        # The fallback list: most purchased and carted in-stock products of the last 30 days of the log.
        tables["popular"] = con.execute(
            "WITH recent AS (SELECT * FROM interactions WHERE timestamp >= "
            "(SELECT max(timestamp) - INTERVAL 30 DAY FROM interactions) AND event_type IN ('purchase', 'cart')) "
            "SELECT p.product_id, count(DISTINCT r.user_id) AS buyers FROM recent r JOIN products p USING "
            "(product_id) WHERE p.in_stock GROUP BY p.product_id ORDER BY buyers DESC, p.product_id LIMIT 100").pl()
        return tables
    finally:
        con.close()


def quarantined_by_rule(path: Path, run_id: str) -> pl.DataFrame:
    """How many rows run `run_id` quarantined (source, rule, rows), most first per input."""
    con = connect_readonly(path)
    try:
        return con.execute("SELECT source, rule, count(*) AS rows FROM quarantine WHERE run_id = ? "
                           "GROUP BY source, rule ORDER BY source, rows DESC, rule", [run_id]).pl()
    finally:
        con.close()


def connect_readonly(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=True)


def read_table(path: Path, name: str) -> pl.DataFrame:
    """A whole published table (or `runs`), as polars."""
    if name not in TABLES and name not in HISTORY_TABLES and name not in ("runs", "quarantine"):
        raise ValueError(f"not a warehouse table: {name}")
    con = connect_readonly(path)
    try:
        return con.execute(f'SELECT * FROM "{name}"').pl()
    finally:
        con.close()


def latest_run(path: Path) -> dict | None:
    """The newest successful run, or None when nothing has been published yet."""
    with _published(path) as published:
        return published[1] if published else None


@contextmanager
def _published(path: Path) -> Iterator[tuple[duckdb.DuckDBPyConnection, dict] | None]:
    """A read-only connection to the warehouse and its newest successful run; None before anything was
    published."""
    if not path.exists():
        yield None
        return
    con = connect_readonly(path)
    try:
        has_runs = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'").fetchone()[0]
        rows = (con.execute("SELECT * FROM runs WHERE status = 'success' ORDER BY finished_at DESC LIMIT 1").pl()
                if has_runs else None)
        yield (con, rows.row(0, named=True)) if rows is not None and rows.height else None
    finally:
        con.close()


def latest_model_info(path: Path) -> dict | None:
    """The `model_info` row of the newest successful run that evaluated (a cold night), or None before the
    first one."""
    with _published(path) as published:
        if published is None:
            return None
        try:
            rows = published[0].execute("SELECT * FROM model_info WHERE run_id = ?",
                                        [_evaluated_run_id(published[0])]).pl()
        except duckdb.CatalogException:
            return None
    return rows.row(0, named=True) if rows.height else None


def _evaluated_run_id(con: duckdb.DuckDBPyConnection) -> str | None:
    """The newest successful run that published an evaluation (incremental nights publish none)."""
    row = con.execute(
        "SELECT run_id FROM runs WHERE status = 'success' AND run_id IN (SELECT run_id FROM model_info) "
        "ORDER BY finished_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


def published_state(path: Path) -> PublishedState | None:
    """What an incremental night compares tonight's inputs with: the newest successful run's users (event
    count, newest event) and products (text hash, stock); None before anything was published."""
    with _published(path) as published:
        if published is None:
            return None
        con, run = published
        users = con.execute("SELECT user_id, n_events, last_event_at FROM user_profiles").pl()
        products = con.execute(
            "SELECT p.product_id, e.text_hash, p.in_stock FROM products p "
            "LEFT JOIN product_embeddings e USING (product_id)").pl()
    return PublishedState(run_id=run["run_id"], users=users, products=products)


def unpublished_events(path: Path, events: pl.DataFrame) -> pl.Series | None:
    """The `row` of each of `events` (row, user_id, product_id, event_type, value, timestamp) that the
    published run's interactions do not hold, or None before any run.

    DuckDB compares them where they lie (loading 20 million published events into polars to compare there
    took 5 GB more), by a 128-bit fingerprint of each event: two DuckDB hashes of its columns, one salted.
    Two different events share one with odds below 10^-24 a night at 20 million events; comparing the
    five columns themselves took 10.2 s there, the fingerprints 6.3 s."""
    with _published(path) as published:
        if published is None:
            return None
        con = published[0]
        con.execute(f"SET memory_limit = '{PUBLISH_MEMORY_LIMIT}'")
        con.register("tonight", events.select("row", *EVENT_COLUMNS).to_arrow())
        columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
        fingerprint = f"hash({columns}) AS plain, hash({columns}, 'salted') AS salted"
        return con.execute(
            f"WITH new AS (SELECT row, {fingerprint} FROM tonight), held AS (SELECT {fingerprint} FROM interactions) "
            "SELECT row FROM new ANTI JOIN held USING (plain, salted)").pl()["row"]


EVENT_COLUMNS = list(TABLES["interactions"])


def published_similar(path: Path) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The published run's `similar_products` and the text hash each product's vector was made from
    (product_id, text_hash), or None before any run."""
    with _published(path) as published:
        if published is None:
            return None
        con = published[0]
        return (con.execute("SELECT product_id, rank, similar_product_id, similarity FROM similar_products").pl(),
                con.execute("SELECT product_id, text_hash FROM product_embeddings").pl())


def users_listing(path: Path, product_ids: pl.Series) -> pl.Series:
    """Users whose published recommendations name any of `product_ids`."""
    con = connect_readonly(path)
    try:
        con.register("wanted", pl.DataFrame({"product_id": product_ids}).to_arrow())
        return con.execute("SELECT DISTINCT user_id FROM recommendations WHERE product_id IN "
                           "(SELECT product_id FROM wanted)").pl()["user_id"]
    finally:
        con.close()


def listed_cosines(path: Path, vectors: pl.DataFrame) -> pl.DataFrame:
    """Each published list row naming a product of `vectors` (product_id, embedding: tonight's vector), with
    the cosine it was ranked by (`published`) and its user's published profile's cosine with the vector
    given (`tonight`): user_id, product_id, published, tonight."""
    con = connect_readonly(path)
    try:
        con.register("tonight", vectors.select("product_id", "embedding").to_arrow())
        # The listing rows first, then their users' profiles (joining all three at once took 2.3x as long).
        return con.execute(
            "WITH listed AS (SELECT user_id, product_id, content_similarity FROM recommendations "
            "SEMI JOIN tonight USING (product_id)) "
            "SELECT l.user_id, l.product_id, l.content_similarity AS published, "
            "list_inner_product(p.profile, t.embedding::FLOAT[])::DOUBLE AS tonight "
            "FROM listed l JOIN tonight t USING (product_id) JOIN user_profiles p USING (user_id)").pl()
    finally:
        con.close()


def last_nights(path: Path) -> LastNights:
    """When the newest published cold night finished, and with which configuration."""
    with _published(path) as published:
        if published is None:
            return LastNights(published=False, last_cold_at=None, last_cold_config=None)
        con = published[0]
        try:
            row = con.execute(
                "SELECT finished_at, config FROM runs WHERE status = 'success' AND coalesce(night, 'cold') = 'cold' "
                "ORDER BY finished_at DESC LIMIT 1").fetchone()
        except duckdb.BinderException:  # a warehouse from before `night` existed: every run was cold
            row = con.execute("SELECT finished_at, config FROM runs WHERE status = 'success' "
                              "ORDER BY finished_at DESC LIMIT 1").fetchone()
    if row is None:
        return LastNights(published=True, last_cold_at=None, last_cold_config=None)
    return LastNights(published=True, last_cold_at=row[0], last_cold_config=json.loads(row[1]))


def index_path(warehouse: Path, run_id: str) -> Path:
    """Where a run writes its FAISS index: beside the warehouse, one file per run."""
    return warehouse.parent / "indexes" / f"products-{run_id}.faiss"


def report_path(warehouse: Path, run_id: str) -> Path:
    """Where a run writes its alpha-sweep plot: beside the warehouse, one file per run."""
    return warehouse.parent / "reports" / f"alpha-sweep-{run_id}.png"


def prune_indexes(warehouse: Path, keep_runs: int = 3) -> list[Path]:
    """Remove index files that none of the newest `keep_runs` published runs points at."""
    keep = {Path(p).name for p in published_index_paths(warehouse, keep_runs)}
    removed = []
    for candidate in sorted((warehouse.parent / "indexes").glob("products-*.faiss")):
        if candidate.name not in keep:
            candidate.unlink(missing_ok=True)
            ids_path(candidate).unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def published_index_paths(path: Path, keep_runs: int = 3) -> set[str]:
    """The FAISS files that the newest `keep_runs` runs point at (older files may be removed)."""
    if not path.exists():
        return set()
    con = connect_readonly(path)
    try:
        rows = con.execute(
            "SELECT faiss_index FROM runs WHERE faiss_index IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
            [keep_runs],
        ).fetchall()
        return {r[0] for r in rows}
    except duckdb.CatalogException:
        return set()
    finally:
        con.close()
