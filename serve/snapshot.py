"""The published results the API serves: one immutable in-memory snapshot at a time, swapped atomically.

The pipeline publishes each run as a new DuckDB file and then points `snapshots/CURRENT` at it. The store
notices the pointer change, reads the new file read-only into plain dictionaries, and swaps one reference:
a request takes `store.current()` once and answers wholly from that run.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline.ingest import cut_text
from pipeline.warehouse import current_snapshot, read_snapshot

log = logging.getLogger(__name__)
HISTORY_LIMIT = 200
CARD_DESCRIPTION_CHARS = 300
"""A card's description is its product's, cut at a word to at most this many characters."""
EXAMPLE_USERS = 20


@dataclass(frozen=True)
class Snapshot:
    path: Path
    run: dict
    products: dict[str, dict]
    recommendations: dict[str, list[dict]]
    similar: dict[str, list[dict]]
    history: dict[str, list[dict]]
    popular: list[dict]
    model_info: dict
    alpha_sweep: list[dict]
    eval_metrics: list[dict]
    categories: list[str]
    example_users: list[str]
    """Users with a published list, most events first: something to try in the dashboard."""
    rendered: dict = field(default_factory=dict, repr=False, compare=False)
    """Cards already rendered as JSON, by user id (filled on first request)."""

    @property
    def summary(self) -> dict:
        """model_info as the original design's response carries it."""
        info = self.model_info
        return {key: info.get(key) for key in ("model_type", "hybrid_alpha", "hit_at_10", "ndcg_at_10")}

    @classmethod
    def load(cls, path: Path) -> "Snapshot":
        tables = read_snapshot(path)
        # A card carries its product's description as an excerpt (the product page, the whole of it), so
        # no list grows with the catalog's longest text.
        products = {row["product_id"]: row for row in tables["products"].with_columns(
            excerpt=pl.when(pl.col("description").str.len_chars() > CARD_DESCRIPTION_CHARS)
            .then(cut_text(pl.col("description"), CARD_DESCRIPTION_CHARS)).otherwise(pl.col("description"))
        ).iter_rows(named=True)}
        recommendations = _grouped(tables["recommendations"].iter_rows(named=True), "user_id")
        history = _grouped(tables["interactions"].iter_rows(named=True), "user_id")
        return cls(
            path=path,
            run=tables["run"].row(0, named=True),
            products=products,
            recommendations=recommendations,
            similar=_grouped(tables["similar_products"].iter_rows(named=True), "product_id"),
            history={u: rows[:HISTORY_LIMIT] for u, rows in history.items()},
            popular=[{**products[r["product_id"]], "buyers": r["buyers"]}
                     for r in tables["popular"].iter_rows(named=True)],
            model_info=tables["model_info"].row(0, named=True) if tables["model_info"].height else {},
            alpha_sweep=tables["alpha_sweep"].to_dicts(),
            eval_metrics=tables["eval_metrics"].to_dicts(),
            categories=sorted({p["category"] for p in products.values()}),
            example_users=sorted(recommendations, key=lambda u: (-len(history.get(u, ())), u))[:EXAMPLE_USERS],
        )


def _grouped(rows, key: str) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row[key], []).append(row)
    return grouped


class SnapshotStore:
    """Holds the current snapshot. `current()` looks at the pointer at most every `check_seconds`; a new
    snapshot loads in a background thread while requests keep getting the previous one, then one reference
    swap switches every later request to it."""

    def __init__(self, warehouse: Path, check_seconds: float = 0.5):
        self.warehouse = warehouse
        self.check_seconds = check_seconds
        self._snapshot: Snapshot | None = None
        self._checked = 0.0
        self._loading = threading.Lock()

    def current(self) -> Snapshot | None:
        now = time.monotonic()
        if now - self._checked >= self.check_seconds:
            self._checked = now
            target = current_snapshot(self.warehouse)
            if target is not None and (self._snapshot is None or self._snapshot.path != target):
                if self._snapshot is None:
                    self._load(target)  # nothing to serve yet: load in the foreground
                elif self._loading.acquire(blocking=False):
                    self._loading.release()
                    threading.Thread(target=self._load, args=(target,), daemon=True).start()
        return self._snapshot

    def _load(self, target: Path) -> None:
        if not self._loading.acquire(blocking=False):
            return  # a load is under way
        try:
            started = time.perf_counter()
            loaded = Snapshot.load(target)
            self._snapshot = loaded  # one reference swap: the switch is atomic for every request
            log.info("serving run %s from %s (loaded in %.2fs)", loaded.run["run_id"], target,
                     time.perf_counter() - started)
        except Exception:  # a vanished or unreadable file: keep the snapshot we have, try again later
            log.exception("could not load the published snapshot; still serving the previous one")
        finally:
            self._loading.release()
