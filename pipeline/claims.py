"""What a card's "why this recommendation" claims, as data, and the words each claim is written in.

A card's reasons are a few factors; each factor is rendered from one or more claims, and every claim is a
countable statement about the published tables that SQL can check (`pipeline.audit` does, every run):

- `attribute` (term, event_types [T], count n): n products other than the recommended one hold the
  attribute `term` (as does the recommended product), and for each of them the shopper's strongest event
  is T. Strength: purchase > rating > cart > view (`EVENT_STRENGTH`); each product counts once, under the
  strongest thing the shopper did with it.
- `category` (term, event_types [T], count n): the same with the recommended product's category.
- `customers` (product_id q, event_types, count n): n users other than the shopper have an event of one of
  `event_types` on q and one on the recommended product. With ["purchase"] that is "bought both"; with
  every event type, it is read from the behavioural model's `item_cooccurrence.co_count` (users with any
  event on both, as of the cold night that fitted it).
- `similar_text` (product_id q, count r): the recommended product is at rank r in q's `similar_products`
  (nearest by the sentence embedding of title, category, attributes and description).
- `your_event` (product_id q, event_types [T], month m): the shopper's strongest event on q is T, and their
  latest event of type T on q was in the month m ("YYYY-MM", UTC): "you bought X in May 2014" (with a
  `customers` or `similar_text` claim naming q in the same factor, or alone).
"""

from __future__ import annotations

import polars as pl

EVENT_STRENGTH = {"purchase": 4, "rating": 3, "cart": 2, "view": 1}
"""Which of a shopper's events on a product says most: a product is counted under its strongest."""
BY_STRENGTH = sorted(EVENT_STRENGTH, key=EVENT_STRENGTH.get, reverse=True)

# How each event type reads in "you bought 2 items with 'x', added 1 more to your cart and viewed 3 more".
_ACTION = {"purchase": ("bought", ""), "rating": ("rated", ""), "cart": ("added", " to your cart"),
           "view": ("viewed", "")}
PAST_TENSE = {"purchase": "bought", "rating": "rated", "cart": "added to your cart", "view": "viewed"}
"""What "which you ..." says of one product, by the shopper's strongest event on it."""

MIN_OTHER_CUSTOMERS = 2
"""A `customers` claim is made from this many other customers up (one other customer is no signal)."""

CLAIM = pl.Struct({"factor": pl.Int32, "kind": pl.String, "term": pl.String, "product_id": pl.String,
                   "title": pl.String, "event_types": pl.List(pl.String), "count": pl.Int64, "month": pl.String})
"""One claim of a card: which of its factors states it, and what it says (see the module's docstring)."""

CLAIMS_TABLE = {"user_id": pl.String, "rank": pl.Int32, "product_id": pl.String, "factor": pl.Int32,
                "kind": pl.String, "term": pl.String, "named_product_id": pl.String,
                "event_types": pl.List(pl.String), "count": pl.Int64, "month": pl.String}
"""The published `explanation_claims` rows: one per claim, keyed by the card (user_id, rank, product_id)."""


def history_phrases(where: pl.Expr, first: pl.Expr, last: pl.Expr) -> pl.Expr:
    """The words of an `attribute` or `category` factor from its claims, one row each, strongest event first
    within each factor: "you bought 2 items with 'x', added 1 more to your cart and viewed 3 more". `where`
    is the phrase naming the term ("with 'x'", "in Lamps"); `first` and `last` say whether a row opens or
    closes its factor. Join the rows' words per factor."""
    event = pl.col("event_types").list.first()
    verb = event.replace_strict({t: verb for t, (verb, _) in _ACTION.items()}, return_dtype=pl.String)
    after = event.replace_strict({t: after for t, (_, after) in _ACTION.items()}, return_dtype=pl.String)
    items = pl.when(pl.col("count") == 1).then(pl.lit("item")).otherwise(pl.lit("items"))
    opening = pl.format("you {} {} {} {}{}", verb, pl.col("count"), items, where, after)
    more = pl.format("{} {} more{}", verb, pl.col("count"), after)
    separator = pl.when(first).then(pl.lit("")).when(last).then(pl.lit(" and ")).otherwise(pl.lit(", "))
    return pl.concat_str(separator, pl.when(first).then(opening).otherwise(more))


_MONTHS = {f"{m:02d}": name for m, name in enumerate(
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
     "November", "December"], start=1)}


def month_name(month: pl.Expr) -> pl.Expr:
    """A claim's month ("2014-05") as the shopper reads it: "May 2014"."""
    return pl.concat_str(month.str.slice(5, 2).replace_strict(_MONTHS, return_dtype=pl.String), pl.lit(" "),
                         month.str.slice(0, 4))


def you_did(event_type: pl.Expr, title: pl.Expr, month: pl.Expr) -> pl.Expr:
    """What the shopper did with a product, by their strongest event on it, and when they last did it: "you
    added X to your cart in May 2014"."""
    verb = event_type.replace_strict({t: verb for t, (verb, _) in _ACTION.items()}, return_dtype=pl.String)
    after = event_type.replace_strict({t: after for t, (_, after) in _ACTION.items()}, return_dtype=pl.String)
    return pl.format("you {} {}{} in {}", verb, title, after, month_name(month))


def customers_phrase(event_types: pl.Expr, count: pl.Expr, title: pl.Expr, you: pl.Expr, month: pl.Expr) -> pl.Expr:
    """The words of a `customers` factor, with what the shopper did with X and when, when known (`you`, an
    event type; `month`): "you viewed X in May 2014, and 3 other customers bought both it and this"; for any
    event type, "... and 12 other shoppers have both it and this in their histories"."""
    only = event_types.list.first()
    single = event_types.list.len() == 1
    both = (pl.when(single & (only == "purchase")).then(pl.format("{} other customers bought both", count))
            .when(single & (only == "rating")).then(pl.format("{} other shoppers rated both", count))
            .otherwise(pl.format("{} other shoppers have both", count)))
    tail = pl.when(single & only.is_in(["purchase", "rating"])).then(pl.lit("")).otherwise(pl.lit(" in their histories"))
    return (pl.when(you.is_null()).then(pl.format("{} {} and this{}", both, title, tail))
            .otherwise(pl.format("{}, and {} it and this{}", you_did(you, title, month), both, tail)))


def similar_phrase(rank: pl.Expr, title: pl.Expr, event_type: pl.Expr, month: pl.Expr) -> pl.Expr:
    """The words of a `similar_text` factor with its `your_event`: "its product text is among the 3 closest
    in our catalog to that of X, which you viewed in May 2014"."""
    you = event_type.replace_strict(PAST_TENSE, return_dtype=pl.String)
    return (pl.when(rank == 1).then(pl.format("its product text is the closest in our catalog to that of {}, "
                                              "which you {} in {}", title, you, month_name(month)))
            .otherwise(pl.format("its product text is among the {} closest in our catalog to that of {}, which "
                                 "you {} in {}", rank, title, you, month_name(month))))


def claims_table(facts: pl.DataFrame) -> pl.DataFrame:
    """The `explanation_claims` rows (`CLAIMS_TABLE`) of a facts frame's cards, in card order."""
    rows = (facts.select("user_id", "rank", card_product=pl.col("product").struct.field("product_id"),
                         claim="claims")
            .explode("claim").drop_nulls("claim").unnest("claim"))
    return rows.select("user_id", pl.col("rank").cast(pl.Int32), product_id="card_product", factor="factor",
                       kind="kind", term="term", named_product_id="product_id", event_types="event_types",
                       count="count", month="month")
