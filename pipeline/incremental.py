"""Cold and incremental nights: which kind tonight is, and whose lists an incremental night makes again.

A cold night fits and evaluates everything and recomputes every user. An incremental night keeps what the
last cold night learned (the evaluation, its alpha and recency, the co-occurrence model: the assets it does
not run) and recomputes, from tonight's inputs, only the users whose lists can have changed:

- users whose events changed: new users, users with new events, users gone from the log (found by
  comparing each user's event count and newest event with the published `user_profiles`);
- users whose published list names a product that went out of stock or left the catalog;
- users whose published list names a product whose text changed enough to move its cosine with their
  profile by more than `scale.text_change_tolerance` (a reworded description; a touch-up such as a line
  appended to a long description moves it by thousandths, and those lists are kept until the next cold
  night, their published scores and explanation for that product from its earlier text).

Everyone else keeps their published rows, which tonight's inputs would reproduce: their events are the same,
and a user's weights count ages from their own latest event, so they depend on nothing else. What an
incremental night does not see until the next cold one: a changed or restocked product entering the list of
a user who did nothing, behaviour learned from tonight's events, and a better alpha.

An event log that only grew since the published run read it (`LogRead`, `PublishedLog`) is read on from
there: tonight's events are then those of the users with new rows, and the plan brings the recomputed users'
whole histories (`NightPlan.events`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import polars as pl


NIGHT_TAG = "shoprec/night"
"""The run tag that says which kind of night a run is: "cold" or "incremental"."""

COLD, INCREMENTAL = "cold", "incremental"

UNTOUCHED_BY_INCREMENTAL = {"explanations", "schedule", "api", "frontend", "quality", "data.cache_dir",
                            "scale.executor", "scale.step_storage", "scale.incremental", "scale.cold_every_days",
                            "scale.text_change_tolerance"}
"""Config sections and settings an incremental night may differ in from its cold night; a change anywhere
else (the model, the weighting, the evaluation, the inputs, the user buckets) needs a cold night."""


class IncrementalError(RuntimeError):
    """An incremental night cannot run; the message says why and what to run instead."""


@dataclass(frozen=True)
class PublishedState:
    """What the warehouse's last published run holds, as far as an incremental night needs it."""

    run_id: str
    users: pl.DataFrame
    """user_id, n_events, last_event_at: one row per user with a published profile."""
    products: pl.DataFrame
    """product_id, text_hash, in_stock: one row per published product."""


@dataclass(frozen=True)
class LogRead:
    """What a run read of an event log: its first `bytes` bytes (SHA-256 `sha256`), `rows` data rows."""

    bytes: int
    rows: int
    sha256: str
    from_row: int = 0
    """Rows the run took as published and did not read again (0: it read the whole log)."""


@dataclass(frozen=True)
class PublishedLog:
    """The published run's read of the event log, with what an incremental night needs to go on from it."""

    read: LogRead
    products: pl.Series
    """The products the published run knew (if one left the catalog, its events must leave the log)."""
    histories: Callable[[pl.Series], pl.DataFrame]
    """The published events of the users given (user_id, product_id, event_type, value, timestamp)."""


@dataclass(frozen=True)
class NightPlan:
    """Tonight's kind and, on an incremental night, the users whose rows are made again."""

    kind: str
    users: pl.Series | None = None
    """Users recomputed tonight, sorted (None on a cold night: everyone)."""
    changed_products: pl.Series | None = None
    """Products whose text or stock changed, or that are new or gone, since the published run."""
    users_with_changed_events: int = 0
    users_listing_changed_products: int = 0
    """Users whose list names a product gone out of stock or from the catalog, or one whose new text moved
    its cosine with their profile by more than the tolerance."""
    users_keeping_reworded_products: int = 0
    """Users whose list names a product with a new text that moved its cosine with them by no more than the
    tolerance, and who are recomputed for no other reason: their lists are kept."""
    since_run_id: str | None = None
    events: pl.DataFrame | None = None
    """Tonight's users' events, each user's whole history (None on a cold night: every user's are the log)."""
    newest_event: datetime | None = None
    """The newest event of the whole log (None on a cold night: the log's own)."""

    @property
    def incremental(self) -> bool:
        return self.kind == INCREMENTAL

    def events_of(self, interactions: pl.DataFrame) -> pl.DataFrame:
        """The events of tonight's users: on a cold night `interactions`, the whole log."""
        return interactions if self.events is None else self.events

    def newest_in(self, interactions: pl.DataFrame) -> datetime:
        """The newest event of the whole log, which "active" users count from (on an incremental night
        `interactions` may hold only the users with new events)."""
        return interactions["timestamp"].max() if self.newest_event is None else self.newest_event


def cold_plan() -> NightPlan:
    return NightPlan(kind=COLD)


def plan_incremental(products: pl.DataFrame, text_hashes: list[str], events: pl.DataFrame,
                     published: PublishedState | None, listing: Callable[[pl.Series], pl.Series],
                     cosines: Callable[[pl.Series], pl.DataFrame], text_change_tolerance: float,
                     histories: Callable[[pl.Series], pl.DataFrame] | None = None) -> NightPlan:
    """Compare tonight's inputs with the published run. `listing(product_ids)` returns the users whose
    published list names any of those products; `cosines(product_ids)` returns the published list rows that
    name them (user_id, product_id) with the cosine they were ranked by (`published`) and the cosine of the
    user's profile with the product's vector tonight (`tonight`).

    `events` is the whole log, or, when tonight's log was read on from where the published run stopped
    (`pipeline.ingest.read_new_events`), only the users with new rows, each with their whole history; then
    `histories(user_ids)` gives the published events of other users the plan recomputes."""
    if published is None:
        raise IncrementalError("nothing has been published yet, so there is nothing to bring up to date: run "
                               "the cold `nightly` job first")
    # Times compared as epoch microseconds: the warehouse's time zone need not be the log's.
    now = events.lazy().group_by("user_id").agg(
        n_events=pl.len().cast(pl.Int64), last_event_at=pl.col("timestamp").max().dt.epoch("us")).collect()
    then = published.users.select("user_id", "n_events", pl.col("last_event_at").dt.epoch("us"))
    # A log read whole shows every user, so a published user missing from it is gone; a log read on from
    # the published run's rows shows only the users with new rows, the others' events being as published.
    compared = now.join(then, on="user_id", how="full" if histories is None else "left", suffix="_published",
                        coalesce=True)
    changed_users = compared.filter(
        pl.col("n_events").ne_missing(pl.col("n_events_published"))
        | pl.col("last_event_at").ne_missing(pl.col("last_event_at_published")))["user_id"]

    current = products.select("product_id", "in_stock").with_columns(
        text_hash=pl.Series(text_hashes, dtype=pl.String))
    versus = current.join(published.products, on="product_id", how="full", suffix="_published", coalesce=True)
    stock_changed = pl.col("in_stock").ne_missing(pl.col("in_stock_published"))
    text_changed = pl.col("text_hash").ne_missing(pl.col("text_hash_published"))
    changed_products = versus.filter(stock_changed | text_changed)["product_id"].sort()
    # Stock changed: out of stock or gone, the product leaves every list (new or back, it is on none).
    stock_changes = versus.filter(stock_changed)["product_id"]
    reworded = versus.filter(text_changed & ~stock_changed)["product_id"]
    none = pl.Series("user_id", [], pl.String)
    listing_users = listing(stock_changes).alias("user_id") if stock_changes.len() else none
    if reworded.len():
        rows = cosines(reworded)
        moved = (pl.col("tonight") - pl.col("published")).abs() > text_change_tolerance
        listing_users = pl.concat([listing_users, rows.filter(moved)["user_id"]]).unique()
        reworded_listers = rows["user_id"].unique()
    else:
        reworded_listers = none

    users = pl.concat([changed_users, listing_users]).unique().sort()
    kept = reworded_listers.filter(~reworded_listers.is_in(users.implode()))
    tonights = events.filter(pl.col("user_id").is_in(users.implode()))
    newest = events["timestamp"].max()
    if histories is not None:
        held = users.filter(~users.is_in(events["user_id"].implode()))
        if held.len():
            tonights = pl.concat([tonights, histories(held).select(events.columns)])
        before = published.users["last_event_at"].max()  # the published log's newest event, in its time zone
        newest = max((t.astimezone(timezone.utc) for t in (newest, before) if t is not None), default=None)
    return NightPlan(kind=INCREMENTAL, users=users, changed_products=changed_products,
                     users_with_changed_events=changed_users.len(),
                     users_listing_changed_products=listing_users.len(),
                     users_keeping_reworded_products=kept.len(), since_run_id=published.run_id,
                     events=tonights, newest_event=newest)


@dataclass(frozen=True)
class LastNights:
    """The warehouse's record of the nights before this one (from `runs`)."""

    published: bool
    """Any run published at all."""
    last_cold_at: datetime | None
    """When the newest published cold run finished."""
    last_cold_config: dict | None
    """Its configuration."""


def night_kind(config: dict, incremental_enabled: bool, cold_every_days: float, last: LastNights,
               now: datetime) -> tuple[str, str]:
    """Tonight's kind and why: cold when incremental nights are off, when nothing was published, when the last
    cold night is `cold_every_days` old or more, or when the configuration changed since it; else incremental."""
    if not incremental_enabled:
        return COLD, "incremental nights are off (scale.incremental)"
    if not last.published or last.last_cold_at is None:
        return COLD, "no cold night has been published yet"
    age = now - last.last_cold_at
    if age >= timedelta(days=cold_every_days):
        return COLD, f"the last cold night was {age.total_seconds() / 86400:.1f} days ago (scale.cold_every_days)"
    changed = _changed_sections(config, last.last_cold_config or {})
    if changed:
        return COLD, f"the configuration changed since the last cold night: {', '.join(changed)}"
    return INCREMENTAL, "the last cold night is recent and the configuration is unchanged"


def _changed_sections(config: dict, before: dict) -> list[str]:
    changed = []
    for section, values in config.items():
        if section in UNTOUCHED_BY_INCREMENTAL:
            continue
        old = before.get(section, {})
        for key, value in values.items():
            if f"{section}.{key}" in UNTOUCHED_BY_INCREMENTAL:
                continue
            if json.dumps(value, sort_keys=True, default=str) != json.dumps(old.get(key), sort_keys=True,
                                                                            default=str):
                changed.append(f"{section}.{key}")
    return changed
