"""Reading the shop's inputs: a product catalog and an event log, as CSV, Parquet or JSON Lines.

Every value is parsed strictly; a value that does not parse stops the run with an `InputError` that names
the file, the column and the row, so a person can find and fix it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

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
_DEFAULTS = {"attributes": "", "price": None, "in_stock": "true", "updated_at": None, "value": "1"}

_TIMESTAMP_FORMATS = [  # tried in order; the first that parses wins
    "%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%:z",
    "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d",
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
    """The typed, deduplicated product catalog and what ingestion did to get it."""

    products: pl.DataFrame
    source: Path
    rows_read: int
    duplicates_dropped: int


@dataclass(frozen=True)
class EventLog:
    """The typed interactions, restricted to known products, and what was dropped on the way."""

    interactions: pl.DataFrame
    source: Path
    rows_read: int
    unknown_products_dropped: int
    duplicates_dropped: int


def find_input(input_dir: Path, stem: str) -> Path:
    """The one file named `stem` with a supported suffix in `input_dir`."""
    found = [input_dir / f"{stem}{suffix}" for suffix in SUFFIXES if (input_dir / f"{stem}{suffix}").exists()]
    if not found:
        raise InputError(input_dir / f"{stem}.csv", f"missing input: expected one of "
                         f"{', '.join(stem + s for s in SUFFIXES)} in {input_dir}")
    if len(found) > 1:
        raise InputError(found[0], f"ambiguous input: {', '.join(p.name for p in found)} all exist")
    return found[0]


def read_catalog(input_dir: Path) -> Catalog:
    """Read, type and deduplicate the products; the newest `updated_at` of a product id wins."""
    path = find_input(input_dir, "products")
    raw = _read_as_text(path, PRODUCT_COLUMNS)
    typed = _parse(raw, path, PRODUCT_COLUMNS)
    products = (
        typed.sort("updated_at", nulls_last=False, maintain_order=True)
        .unique("product_id", keep="last", maintain_order=True)
        .sort("product_id")
    )
    dropped = typed.height - products.height
    if dropped:
        log.warning("%s: %d duplicate product rows dropped (newest updated_at kept)", path, dropped)
    return Catalog(products=products, source=path, rows_read=raw.height, duplicates_dropped=dropped)


def read_event_log(input_dir: Path, known_products: pl.Series) -> EventLog:
    """Read and type the interactions; drop events for unknown products and exact duplicates, counted."""
    path = find_input(input_dir, "interactions")
    raw = _read_as_text(path, INTERACTION_COLUMNS)
    typed = _parse(raw, path, INTERACTION_COLUMNS)
    known = typed.filter(pl.col("product_id").is_in(known_products.implode()))
    unknown = typed.height - known.height
    if unknown:
        log.warning("%s: %d interactions name products not in the catalog; dropped", path, unknown)
    interactions = known.unique(maintain_order=True).sort(["timestamp", "user_id", "product_id"])
    duplicates = known.height - interactions.height
    if interactions.is_empty():
        raise InputError(path, "no usable interactions (the file has none, or none name a known product)")
    return EventLog(interactions=interactions, source=path, rows_read=raw.height,
                    unknown_products_dropped=unknown, duplicates_dropped=duplicates)


def _read_as_text(path: Path, columns: dict[str, tuple[str, bool]]) -> pl.DataFrame:
    """Read every known column as text (lists joined with '|') so parsing and its errors are ours."""
    try:
        if path.suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False, encoding="utf8")
        elif path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_ndjson(path, infer_schema_length=None)
    except Exception as exc:  # polars raises several types; the person needs the file and the reason
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
    as_text = []
    for column in columns:
        if column not in frame.columns:
            as_text.append(pl.lit(_DEFAULTS[column], dtype=pl.String).alias(column))
        elif isinstance(frame.schema[column], pl.List):
            as_text.append(pl.col(column).list.join("|").alias(column))
        else:
            as_text.append(pl.col(column).cast(pl.String).alias(column))
    return frame.select(as_text)


def _parse(raw: pl.DataFrame, path: Path, columns: dict[str, tuple[str, bool]]) -> pl.DataFrame:
    parsed = raw.select(_parser(kind, column) for column, (kind, _) in columns.items())
    # Data rows are numbered from 1; in a CSV that is the line number minus one (the header).
    for column, (kind, required) in columns.items():
        text = raw[column].str.strip_chars()
        present = text.is_not_null() & (text != "")
        if required:
            _fail_on_first(path, column, raw, ~present, "is empty; a value is required")
        if kind in {"number", "bool", "timestamp", "event_type"}:
            _fail_on_first(path, column, raw, present & parsed[column].is_null(), _EXPECTED[kind])
    return parsed


_EXPECTED = {
    "number": "is not a number",
    "bool": "is not a boolean (true/false, 1/0, yes/no)",
    "timestamp": "is not a timestamp (ISO 8601, 'YYYY-MM-DD HH:MM:SS' or Unix seconds)",
    "event_type": f"is not an event type ({', '.join(EVENT_TYPES)})",
}


def _fail_on_first(path: Path, column: str, raw: pl.DataFrame, bad: pl.Series, problem: str) -> None:
    bad_rows = bad.fill_null(True).arg_true()
    if len(bad_rows):
        first = int(bad_rows[0])
        value = raw[column][first]
        raise InputError(path, f"value {value!r} {problem} ({len(bad_rows)} bad row(s) in all); "
                         f"row: {raw.row(first, named=True)}", column=column, row=first + 1)


def _parser(kind: str, column: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    if kind == "id":
        return text.alias(column)
    if kind == "text":
        return pl.col(column).fill_null("").alias(column)
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
        lowered = text.str.to_lowercase()
        return pl.when(lowered.is_in(list(EVENT_TYPES))).then(lowered).otherwise(None).alias(column)
    if kind == "timestamp":
        attempts = [
            text.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us")
            if "%:z" in fmt
            else text.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC")
            for fmt in _TIMESTAMP_FORMATS
        ]
        epoch = pl.from_epoch(text.cast(pl.Int64, strict=False), time_unit="s").dt.replace_time_zone("UTC")
        return pl.coalesce([*attempts, epoch.dt.cast_time_unit("us")]).alias(column)
    raise AssertionError(f"unknown column kind {kind}")
