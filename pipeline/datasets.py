"""Adapters that map public recommendation datasets onto our input schema, reading them where they lie.

A dataset is described by a few lines of config (see `bench/datasets.json`), not code:
- `catalog`: a delimited file; which column is the product id, which columns make the title (joined), the
  description, the category, and the attributes (split on a separator);
- either `events`: a delimited file of user, product and a time column (Unix seconds) or none (file order),
  with a fixed event type and an optional value column;
- or `sequences`: RecBole/UniSRec-style pre-split files (user, item history, target) whose order is the
  only time there is.
Events that share a user's timestamp keep their file order (the adapter adds microseconds), so
leave-last-out's "last" is the last in the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Dataset:
    name: str
    products: pl.DataFrame
    interactions: pl.DataFrame
    protocols: tuple[str, ...]


def load_dataset(name: str, registry: Path) -> Dataset:
    """Load dataset `name` as described in the JSON `registry`; relative folders resolve against the
    registry's folder."""
    specs = json.loads(registry.read_text(encoding="utf-8"))
    if name not in specs:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(specs))}")
    spec = specs[name]
    folder = Path(spec["folder"])
    if not folder.is_absolute():
        folder = registry.parent / folder
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: folder {folder} does not exist")
    products = _catalog(folder, spec["catalog"])
    if "events" in spec:
        interactions = _events(folder, spec["events"])
    else:
        interactions = _sequences(folder, spec["sequences"])
    known = interactions.join(products.select("product_id"), on="product_id", how="semi")
    return Dataset(name=name, products=products, interactions=known,
                   protocols=tuple(spec.get("protocols", ["temporal", "leave_last_out"])))


def _read(folder: Path, spec: dict, has_header: bool = True) -> pl.DataFrame:
    return pl.read_csv(folder / spec["file"], separator=spec.get("separator", "\t"), has_header=has_header,
                       infer_schema=False, quote_char=None)


def _catalog(folder: Path, spec: dict) -> pl.DataFrame:
    raw = _read(folder, spec)

    def joined(columns: list[str]) -> pl.Expr:
        if not columns:
            return pl.lit("")
        return pl.concat_str([pl.col(c).fill_null("") for c in columns], separator=" ").str.strip_chars()

    attributes = spec.get("attributes")
    return raw.select(
        pl.col(spec["product_id"]).alias("product_id"),
        joined(spec.get("title", [])).alias("title"),
        joined(spec.get("description", [])).alias("description"),
        (pl.col(spec["category"]).str.split(spec.get("attribute_separator", " ")).list.first()
         if spec.get("category") else pl.lit("")).fill_null("").alias("category"),
        (pl.col(attributes).str.split(spec.get("attribute_separator", " ")) if attributes
         else pl.lit([], dtype=pl.List(pl.String))).alias("attributes"),
        pl.lit(None, dtype=pl.Float64).alias("price"),
        pl.lit(True).alias("in_stock"),
        pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("updated_at"),
    ).unique("product_id", keep="first", maintain_order=True).sort("product_id")


def _events(folder: Path, spec: dict) -> pl.DataFrame:
    raw = _read(folder, spec).with_row_index("row")
    if spec.get("time"):
        seconds = pl.col(spec["time"]).cast(pl.Float64).cast(pl.Int64)
    else:
        seconds = pl.col("row").cast(pl.Int64)
    # File order breaks ties within a second.
    stamp = pl.from_epoch(seconds * 1_000_000 + pl.col("row").cast(pl.Int64) % 1_000_000, time_unit="us")
    value = pl.col(spec["value"]).cast(pl.Float64) if spec.get("value") else pl.lit(1.0)
    return raw.select(
        pl.col(spec["user_id"]).alias("user_id"),
        pl.col(spec["product_id"]).alias("product_id"),
        pl.lit(spec.get("event_type", "purchase")).alias("event_type"),
        value.alias("value"),
        stamp.dt.replace_time_zone("UTC").alias("timestamp"),
    )


def _sequences(folder: Path, spec: dict) -> pl.DataFrame:
    """Rebuild each user's full sequence from pre-split files: the shortest training row's history, then
    every training target from the shortest row to the longest, then the validation and test targets.
    UniSRec files list a user's rows longest first, so their order is reversed (histories are truncated
    to 50 items, so lengths alone cannot order the longest rows)."""
    index = _read(folder, {"file": spec["item_index"], "separator": spec.get("separator", "\t")},
                  has_header=False)
    item_of = dict(zip(index[:, 1].to_list(), index[:, 0].to_list()))
    user, history, target = spec["user"], spec["history"], spec["target"]
    train = _read(folder, {"file": spec["train"], "separator": spec.get("separator", "\t")})
    rows_of: dict[str, list[tuple[list[str], str]]] = {}
    for row_user, row_history, row_target in train.select(user, history, target).iter_rows():
        rows_of.setdefault(row_user, []).append((row_history.split(), row_target))
    sequences: dict[str, list[str]] = {}
    for row_user, rows in rows_of.items():
        # Shortest history first (files list a user's rows longest first); its history starts the sequence.
        if len(rows[0][0]) > len(rows[-1][0]):
            rows = rows[::-1]
        sequences[row_user] = rows[0][0] + [t for _, t in rows]
    for part in ("valid", "test"):
        rows = _read(folder, {"file": spec[part], "separator": spec.get("separator", "\t")})
        for row_user, row_history, row_target in rows.select(user, history, target).iter_rows():
            sequences.setdefault(row_user, row_history.split()).append(row_target)
    users, products, positions = [], [], []
    for row_user, items in sequences.items():
        users += [row_user] * len(items)
        products += [item_of[i] for i in items]
        positions += list(range(len(items)))
    # Order is the only time: one second apart, from a fixed epoch.
    return pl.DataFrame({"user_id": users, "product_id": products, "position": positions}).select(
        "user_id", "product_id", pl.lit("purchase").alias("event_type"), pl.lit(1.0).alias("value"),
        (pl.lit(EPOCH) + pl.duration(seconds=pl.col("position"))).dt.cast_time_unit("us").alias("timestamp"),
    )
