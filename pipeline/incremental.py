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

Everyone else keeps their published rows, which tonight's inputs would reproduce: their events are the same
and a profile's day-based decay scales all of a user's weights alike, which normalisation removes. What an
incremental night does not see until the next cold one: a changed or restocked product entering the list of
a user who did nothing, behaviour learned from tonight's events, and a better alpha.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

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

    @property
    def incremental(self) -> bool:
        return self.kind == INCREMENTAL

    def only(self, frame: pl.DataFrame, column: str = "user_id") -> pl.DataFrame:
        """The rows of `frame` that belong to tonight's users (all of them on a cold night)."""
        if self.users is None:
            return frame
        return frame.filter(pl.col(column).is_in(self.users.implode()))


def cold_plan() -> NightPlan:
    return NightPlan(kind=COLD)


def plan_incremental(products: pl.DataFrame, text_hashes: list[str], events: pl.DataFrame,
                     published: PublishedState | None, listing: Callable[[pl.Series], pl.Series],
                     cosines: Callable[[pl.Series], pl.DataFrame], text_change_tolerance: float) -> NightPlan:
    """Compare tonight's inputs with the published run. `listing(product_ids)` returns the users whose
    published list names any of those products; `cosines(product_ids)` returns the published list rows that
    name them (user_id, product_id) with the cosine they were ranked by (`published`) and the cosine of the
    user's profile with the product's vector tonight (`tonight`)."""
    if published is None:
        raise IncrementalError("nothing has been published yet, so there is nothing to bring up to date: run "
                               "the cold `nightly` job first")
    # Times compared as epoch microseconds: the warehouse's time zone need not be the log's.
    now = events.lazy().group_by("user_id").agg(
        n_events=pl.len().cast(pl.Int64), last_event_at=pl.col("timestamp").max().dt.epoch("us")).collect()
    then = published.users.select("user_id", "n_events", pl.col("last_event_at").dt.epoch("us"))
    compared = now.join(then, on="user_id", how="full", suffix="_published", coalesce=True)
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
    return NightPlan(kind=INCREMENTAL, users=users, changed_products=changed_products,
                     users_with_changed_events=changed_users.len(),
                     users_listing_changed_products=listing_users.len(),
                     users_keeping_reworded_products=kept.len(), since_run_id=published.run_id)


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
