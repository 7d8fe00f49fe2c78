"""Reading the shop's inputs: a product catalog and an event log, as CSV, Parquet or JSON Lines.

A file that cannot be read as a table (empty, not UTF-8, broken quoting, a required column missing) stops
the run with an `InputError` naming the file and, where there is one, the column and the row. Row by row,
every value is parsed strictly and checked by the suites in `pipeline.quality`: a bad row is quarantined
with the rule it broke; too many bad rows fail the input's quality check, which stops the run.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import polars as pl

from pipeline.config import QualityConfig
from pipeline.incremental import LogRead, PublishedLog
from pipeline.quality import (
    OLDER_VERSION_RULE, QualityReport, assess, empty_quarantine, interactions_suite, products_suite,
    quarantine_rows,
)

log = logging.getLogger(__name__)

EVENT_TYPES = ("view", "cart", "purchase", "rating")
SUFFIXES = (".csv", ".parquet", ".jsonl")

# column -> (kind, required). Optional columns get the default in `_DEFAULTS` when absent.
PRODUCT_COLUMNS = {
    "product_id": ("id", True),
    "title": ("text", True),
    "description": ("text", True),
    "category": ("text", True),
    "attributes": ("tags", False),
    "price": ("number", False),
    "in_stock": ("bool", False),
    "updated_at": ("timestamp", False),
}
INTERACTION_COLUMNS = {
    "user_id": ("id", True),
    "product_id": ("id", True),
    "event_type": ("event_type", True),
    "value": ("number", False),
    "timestamp": ("timestamp", True),
}
EVENT_ORDER = ["timestamp", "user_id", "product_id", "event_type", "value"]
"""How the event log is ordered once read."""
_DEFAULTS = {"attributes": "", "price": None, "in_stock": "true", "updated_at": None, "value": "1"}

_TIMESTAMP_FORMATS = [  # tried in order; the first that parses wins (whole seconds first: 3x faster to read)
    "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%:z", "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d",
]
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


class InputError(ValueError):
    """An input file cannot be used as it is; the message names the file, column and row."""

    def __init__(self, path: Path, message: str, column: str | None = None, row: int | None = None):
        where = str(path)
        if column is not None:
            where += f", column '{column}'"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {message}")
        self.path, self.column, self.row = path, column, row


@dataclass(frozen=True)
class Catalog:
    """The typed, checked, deduplicated product catalog and what ingestion did to get it."""

    products: pl.DataFrame
    source: Path
    rows_read: int
    duplicates_dropped: int
    """Rows dropped as repeats of another: exact copies, and older versions (also quarantined)."""
    report: QualityReport
    ignored_columns: list[str]
    descriptions_cut: int = 0
    """Descriptions cut to `quality.max_description_length`."""


@dataclass(frozen=True)
class EventLog:
    """The typed, checked interactions, restricted to known products, and what was dropped on the way."""

    interactions: pl.DataFrame
    source: Path
    rows_read: int
    unknown_products_dropped: int
    duplicates_dropped: int
    report: QualityReport
    ignored_columns: list[str]
    rows_checked: int = 0
    """Rows the checks ran over: all of them, or on an incremental night those not published before."""
    read: LogRead | None = None
    """What was read of the file, for the next night to find where to go on from."""


def find_input(input_dir: Path, stem: str) -> Path:
    """The one file named `stem` with a supported suffix in `input_dir`."""
    found = [input_dir / f"{stem}{suffix}" for suffix in SUFFIXES if (input_dir / f"{stem}{suffix}").exists()]
    if not found:
        raise InputError(input_dir / f"{stem}.csv", f"missing input: expected one of "
                         f"{', '.join(stem + s for s in SUFFIXES)} in {input_dir}")
    if len(found) > 1:
        raise InputError(found[0], f"ambiguous input: {', '.join(p.name for p in found)} all exist")
    return found[0]


def read_catalog(input_dir: Path, quality: QualityConfig | None = None, strict: bool = True) -> Catalog:
    """Read, type, check and deduplicate the products: among valid rows, the newest `updated_at` of a product
    id wins; older versions with other content are quarantined. With `strict`, a failed check raises."""
    quality = quality or QualityConfig()
    path = find_input(input_dir, "products")
    raw, ignored = _read_as_text(path, PRODUCT_COLUMNS)
    typed, unparsed = _parse(raw, path, PRODUCT_COLUMNS)
    long = typed["description"].str.len_chars() > quality.max_description_length
    descriptions_cut = int(long.sum())
    if descriptions_cut and quality.long_descriptions == "cut":
        log.warning("%s: %d descriptions longer than %d characters cut (quality.max_description_length)", path,
                    descriptions_cut, quality.max_description_length)
        typed = typed.with_columns(description=pl.when(long).then(
            cut_text(pl.col("description"), quality.max_description_length)).otherwise(pl.col("description")))
    report = assess(products_suite(quality, typed), typed, raw, path, quality, prior=unparsed)
    valid = typed.join(report.quarantine.select("row"), on="row", how="anti")
    distinct = valid.unique(list(PRODUCT_COLUMNS), keep="first", maintain_order=True)
    products = (
        distinct.sort(["updated_at", "row"], nulls_last=False)
        .unique("product_id", keep="last", maintain_order=True)
        .sort("product_id")
    )
    older = distinct.join(products.select("row"), on="row", how="anti")
    if older.height:
        log.warning("%s: %d older versions of products quarantined (newest updated_at kept)", path, older.height)
        moved = quarantine_rows(older, raw, path, OLDER_VERSION_RULE, "product_id")
        report = dataclasses.replace(report, quarantine=pl.concat([report.quarantine, moved]).sort("row"))
    catalog = Catalog(products=products.drop("row"), source=path, rows_read=raw.height,
                      duplicates_dropped=valid.height - products.height, report=report, ignored_columns=ignored,
                      descriptions_cut=descriptions_cut if quality.long_descriptions == "cut" else 0)
    if strict:
        ensure_passed(report, path)
    return catalog


def read_event_log(input_dir: Path, known_products: pl.Series, quality: QualityConfig | None = None,
                   now: datetime | None = None, strict: bool = True,
                   unpublished: Callable[[pl.DataFrame], pl.Series | None] | None = None) -> EventLog:
    """Read, type and check the interactions; events for unknown products are quarantined and dropped (up to
    `quality.max_unknown_product_share`), exact repeats dropped, both counted.

    `unpublished` (an incremental night): given the typed events (`row` and the event columns), the `row`s
    of those the warehouse does not hold (None: it holds none). The others were checked when they were
    published; only these, and rows naming a product the catalog no longer has, go through the checks again."""
    quality = quality or QualityConfig()
    path = find_input(input_dir, "interactions")
    data = _read_bytes(path)
    read = LogRead(bytes=len(data), rows=0, sha256=hashlib.sha256(data).hexdigest())
    raw, ignored = _read_as_text(path, INTERACTION_COLUMNS, data)
    del data
    typed, unparsed = _parse(raw, path, INTERACTION_COLUMNS)
    unknown_ids = _unknown_products(typed, known_products)
    new_rows = None if unpublished is None or typed.is_empty() else unpublished(typed)
    checking = typed if new_rows is None else typed.filter(
        pl.col("row").is_in(new_rows.implode()) | pl.col("product_id").is_in(unknown_ids))
    suite = interactions_suite(quality, checking, unknown_ids, now or datetime.now(timezone.utc),
                               whole_log=checking is typed)
    report = assess(suite, checking, raw, path, quality, prior=unparsed)
    # Each copy of a 20-million-event log is gigabytes: what is done with is let go before the next is made.
    rows_read, rows_checked = raw.height, checking.height
    del raw, checking, new_rows
    known = _without(typed, report)
    del typed
    interactions = _in_order_without_repeats(known)
    events = EventLog(interactions=interactions, source=path, rows_read=rows_read,
                      unknown_products_dropped=_warn_unknown(report, path),
                      duplicates_dropped=known.height - interactions.height, report=report,
                      ignored_columns=ignored, rows_checked=rows_checked,
                      read=dataclasses.replace(read, rows=rows_read))
    if strict:
        ensure_passed(report, path)
    return events


def read_new_events(input_dir: Path, known_products: pl.Series, published: PublishedLog,
                    quality: QualityConfig | None = None, now: datetime | None = None,
                    strict: bool = True) -> EventLog | None:
    """An incremental night's events when the log only grew since the published run read it (its first
    `published.read.bytes` bytes are the ones that run read, ending a line, and no product it knew has left
    the catalog): only the rows after those are read, typed and checked, and the result holds just the
    users those rows name, each with their whole history (their published events and the new ones, exact
    repeats dropped). None when the log changed otherwise (rewritten, reordered, shortened), or is not a
    CSV or JSON Lines file that can grow: read it whole with `read_event_log`.

    The published rows stay as the published run kept them: its quarantined rows stay out."""
    quality = quality or QualityConfig()
    path = find_input(input_dir, "interactions")
    before = published.read
    if (path.suffix not in (".csv", ".jsonl") or not published.products.is_in(known_products.implode()).all()
            or path.stat().st_size < before.bytes):
        return None
    with open(path, "rb") as file:
        digest = hashlib.sha256()
        remaining = before.bytes
        last = b""
        while remaining:  # the prefix hashed in pieces: the log is a gigabyte
            piece = file.read(min(remaining, 64 * 2**20))
            if not piece:
                return None
            digest.update(piece)
            remaining -= len(piece)
            last = piece[-1:]
        if digest.copy().hexdigest() != before.sha256 or last != b"\n":
            return None
        tail = file.read()
        digest.update(tail)  # tonight's read: the prefix and the new rows
        file.seek(0)
        header = file.readline() if path.suffix == ".csv" else b""
    if tail.strip():
        raw, ignored = _read_as_text(path, INTERACTION_COLUMNS, header + tail, first_row=before.rows + 1)
    else:  # nothing new tonight
        raw, ignored = _text_frame(pl.DataFrame(schema={c: pl.String for c in INTERACTION_COLUMNS}),
                                   INTERACTION_COLUMNS, 1), []
    typed, unparsed = _parse(raw, path, INTERACTION_COLUMNS)
    unknown_ids = _unknown_products(typed, known_products)
    suite = interactions_suite(quality, typed, unknown_ids, now or datetime.now(timezone.utc), whole_log=False)
    report = assess(suite, typed, raw, path, quality, prior=unparsed, rows_read=before.rows + raw.height)
    new = _without(typed, report)
    histories = pl.concat([published.histories(new["user_id"].unique()).select(new.columns), new]) \
        if new.height else new
    interactions = _in_order_without_repeats(histories)
    events = EventLog(interactions=interactions, source=path, rows_read=before.rows + raw.height,
                      unknown_products_dropped=_warn_unknown(report, path),
                      duplicates_dropped=histories.height - interactions.height, report=report,
                      ignored_columns=ignored, rows_checked=raw.height,
                      read=LogRead(bytes=before.bytes + len(tail), rows=before.rows + raw.height,
                                   sha256=digest.hexdigest(), from_row=before.rows))
    if strict:
        ensure_passed(report, path)
    return events


def _read_bytes(path: Path) -> bytes:
    if path.stat().st_size == 0:
        raise InputError(path, "the file is empty (0 bytes)")
    return path.read_bytes()


def _unknown_products(typed: pl.DataFrame, known_products: pl.Series) -> list[str]:
    """The product ids the events name that the catalog does not have, sorted."""
    named = typed["product_id"].drop_nulls().unique()
    return named.filter(~named.is_in(known_products.implode())).sort().to_list()


def _without(typed: pl.DataFrame, report: QualityReport) -> pl.DataFrame:
    """The typed events less the report's quarantined rows, without their `row`."""
    quarantined = report.quarantine.select("row")
    return (typed if quarantined.is_empty() else typed.join(quarantined, on="row", how="anti")).drop("row")


def _in_order_without_repeats(events: pl.DataFrame) -> pl.DataFrame:
    """In time order (then user, product, type, value: a total order, so runs agree), exact repeats dropped:
    sorted, a repeat is its predecessor's twin (20M events: 2.2 s, against 7.0 s hashing every row first)."""
    ordered = events.sort(EVENT_ORDER)
    repeat = pl.all_horizontal(pl.col(c).eq_missing(pl.col(c).shift(1)) for c in EVENT_ORDER)
    return ordered.filter(~repeat)


def _warn_unknown(report: QualityReport, path: Path) -> int:
    if report.tolerated:
        log.warning("%s: %d interactions name products not in the catalog; quarantined", path, report.tolerated)
    return report.tolerated


def ensure_passed(report: QualityReport, path: Path) -> None:
    """Raise the report's problems as an `InputError` (the message names the file, column and row)."""
    if not report.passed:
        first = report.problems[0]
        more = f" (and {len(report.problems) - 1} more problem(s): see the quality report)" if report.problems[1:] else ""
        raise InputError(path, first.text + more, column=first.column, row=first.row)


def _read_as_text(path: Path, columns: dict[str, tuple[str, bool]], data: bytes | None = None,
                  first_row: int = 1) -> tuple[pl.DataFrame, list[str]]:
    """Read every known column as text (lists joined with '|') so parsing and its errors are ours; also the
    names of the unknown columns, which are ignored. `data`: the file's bytes, already read (or, for a log
    read from where the published run stopped, its header and the rows after, the first being `first_row`)."""
    if data is None and path.stat().st_size == 0:
        raise InputError(path, "the file is empty (0 bytes)")
    source = path if data is None else data
    try:
        if path.suffix == ".csv":
            frame = pl.read_csv(source, infer_schema=False, encoding="utf8")
        elif path.suffix == ".parquet":
            frame = pl.read_parquet(source)
        else:
            frame = pl.read_ndjson(source, infer_schema_length=None)
    except Exception as exc:  # polars raises several types; the person needs the file, the row and the reason
        if path.suffix == ".csv":
            raise _diagnose_csv(path) from exc
        raise InputError(path, f"cannot be read as {path.suffix[1:]}: {exc}") from exc
    if frame.is_empty() and not frame.columns:
        raise InputError(path, "the file is empty")
    missing = [c for c, (_, required) in columns.items() if required and c not in frame.columns]
    if missing:
        raise InputError(path, f"missing required column(s): {', '.join(missing)} "
                         f"(found: {', '.join(frame.columns) or 'none'})", column=missing[0])
    extra = [c for c in frame.columns if c not in columns]
    if extra:
        log.info("%s: ignoring unknown column(s) %s", path, ", ".join(extra))
    return _text_frame(frame, columns, first_row), extra


def _text_frame(frame: pl.DataFrame, columns: dict[str, tuple[str, bool]], first_row: int) -> pl.DataFrame:
    """`frame`'s known columns as text, absent optional ones filled with their default, and each data row's
    number (`row`, from `first_row`)."""
    as_text = []
    for column in columns:
        if column not in frame.columns:
            as_text.append(pl.lit(_DEFAULTS[column], dtype=pl.String).alias(column))
        elif isinstance(frame.schema[column], pl.List):
            as_text.append(pl.col(column).list.join("|").alias(column))
        else:
            as_text.append(pl.col(column).cast(pl.String).alias(column))
    # Data rows are numbered from 1; in a CSV that is the line number minus one (the header).
    return frame.select(as_text).with_row_index("row", offset=first_row).with_columns(pl.col("row").cast(pl.Int64))


def _diagnose_csv(path: Path) -> InputError:
    """Why a CSV did not parse, with the line and, where it can be told, the column."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        header = next(csv.reader([data.split(b"\n", 1)[0].decode("utf-8", "replace")]))
        bad_line = data.split(b"\n")[line - 1].decode("utf-8", "replace")
        fields = next(csv.reader([bad_line]), [])
        column = next((header[i] for i, f in enumerate(fields) if "\ufffd" in f and i < len(header)), None)
        return InputError(path, f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}); "
                          "save the file as UTF-8", column=column, row=line - 1)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] = []
    started = 1
    try:
        for record in reader:
            if not header:
                header = record
            elif record and len(record) != len(header):
                return InputError(path, f"line {started} has {len(record)} fields, the header {len(header)}",
                                  row=started - 1)
            started = reader.line_num + 1
    except csv.Error as exc:
        lines = text.splitlines()
        line = lines[started - 1] if started - 1 < len(lines) else ""
        quote = line.find('"')
        column = header[line[:quote].count(",")] if 0 <= quote and line[:quote].count(",") < len(header) else None
        return InputError(path, f"broken CSV quoting from line {started}: {exc} (a field opens a quote that "
                          "does not close properly)", column=column, row=started - 1)
    return InputError(path, "cannot be read as csv (the reason could not be located)")


def _parse(raw: pl.DataFrame, path: Path, columns: dict[str, tuple[str, bool]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed rows, and quarantine rows for values present but unparseable (those rows are left out)."""
    parsed = raw.select("row", *(_parser(kind, column) for column, (kind, _) in columns.items()
                                 if kind != "timestamp"))
    parsed = parsed.with_columns(_parse_timestamps(raw[column]) for column, (kind, _) in columns.items()
                                 if kind == "timestamp").select("row", *columns)
    rejected = []
    for column, (kind, _) in columns.items():
        if kind not in _EXPECTED:
            continue
        suspect = parsed[column].is_null() & raw[column].is_not_null()
        if not suspect.any():  # every value read: no need to strip 20 million texts again to be sure
            continue
        bad = (suspect & (raw[column].str.strip_chars() != "")).fill_null(False)
        if bad.any():
            rejected.append(quarantine_rows(parsed.filter(bad), raw, path, f"{column} {_EXPECTED[kind]}", column))
    if not rejected:
        return parsed, empty_quarantine()
    quarantine = pl.concat(rejected).unique("row", keep="first", maintain_order=True).sort("row")
    return parsed.join(quarantine.select("row"), on="row", how="anti"), quarantine


def _parse_timestamps(text: pl.Series) -> pl.Series:
    """Timestamps in any of `_TIMESTAMP_FORMATS` or Unix seconds, each value read with the first that parses
    it; null where none does. Each format is tried only on the values the ones before it left unread (a log
    is nearly always in one format: trying all nine on every row made reading 20 million events 25 s)."""
    text = text.str.strip_chars()
    first, *others = [*(partial(_read_timestamps, fmt=fmt) for fmt in _TIMESTAMP_FORMATS), _read_unix_seconds]
    parsed = first(text)  # on the whole column, with no gathering: the format of nearly every log
    unread = text.is_not_null() & (text != "") & parsed.is_null()
    for read in others:
        at = unread.arg_true()
        if at.is_empty():
            break
        values = read(text.gather(at))
        found = values.is_not_null()
        parsed = parsed.scatter(at.filter(found), values.filter(found))
        unread = unread.scatter(at.filter(found), False)
    return parsed


def _read_timestamps(text: pl.Series, fmt: str) -> pl.Series:
    if "%:z" in fmt:
        return text.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us")
    return text.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC")


def _read_unix_seconds(text: pl.Series) -> pl.Series:
    seconds = pl.from_epoch(text.cast(pl.Int64, strict=False), time_unit="s")
    return seconds.dt.cast_time_unit("us").dt.replace_time_zone("UTC")


_EXPECTED = {
    "number": "must be a number",
    "bool": "must be a boolean (true/false, 1/0, yes/no)",
    "timestamp": "must be a timestamp (ISO 8601, 'YYYY-MM-DD HH:MM:SS' or Unix seconds)",
}


def cut_text(text: pl.Expr, limit: int) -> pl.Expr:
    """Text cut to at most `limit` characters at the last space before it (or at the limit), "…" ending it."""
    head = text.str.slice(0, limit - 1)
    at_word = head.str.replace(r"\s+\S*$", "")
    return pl.concat_str(pl.when(at_word.str.len_chars() > limit // 2).then(at_word).otherwise(head), pl.lit("…"))


def _parser(kind: str, column: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    if kind == "id":
        return pl.when(text != "").then(text).alias(column)
    if kind == "text":  # trimmed: a title of spaces is no title
        return text.fill_null("").alias(column)
    if kind == "tags":
        return (
            text.fill_null("").str.split("|")
            .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
            .alias(column)
        )
    if kind == "number":
        return text.cast(pl.Float64, strict=False).alias(column)
    if kind == "bool":
        lowered = text.str.to_lowercase()
        return (
            pl.when(lowered.is_in(list(_TRUE))).then(True)
            .when(lowered.is_in(list(_FALSE))).then(False)
            .otherwise(None).alias(column)
        )
    if kind == "event_type":
        return text.str.to_lowercase().alias(column)
    raise AssertionError(f"unknown column kind {kind}")
