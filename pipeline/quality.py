"""Data quality: the expectation suites for the inputs and for the published lists, written here as code and
run with Great Expectations 1.x.

A suite's row-level expectations decide which rows are quarantined (kept aside with the rule they broke, so a
person can fix them); its table-level expectations and the quarantine's share decide whether the data may go
on. `QualityReport` carries both, for the Dagster asset checks and for a clear error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.config import QualityConfig
from pipeline.ids import ID_RULE, unservable_ids

EXAMPLES = 5
"""Failing values kept per expectation for the report."""

QUARANTINE_COLUMNS = {"source": pl.String, "row": pl.Int64, "rule": pl.String, "column": pl.String,
                      "value": pl.String, "record": pl.String}


@dataclass(frozen=True)
class Outcome:
    """One expectation's result."""

    rule: str
    column: str | None
    passed: bool
    observed: str
    examples: list[str]
    rows: list[int] = field(default_factory=list, repr=False)
    """Data rows (1-based) that broke a row-level rule."""


@dataclass(frozen=True)
class Problem:
    """Why data may not go on: what, and the first column and row concerned (when there are any)."""

    text: str
    column: str | None = None
    row: int | None = None

    def __str__(self) -> str:
        where = ", ".join(([f"column '{self.column}'"] if self.column else []) +
                          ([f"row {self.row}"] if self.row is not None else []))
        return f"{where}: {self.text}" if where else self.text


@dataclass(frozen=True)
class QualityReport:
    """What a suite found in one input (or output), and whether it may go on."""

    suite: str
    source: Path | str
    rows: int
    outcomes: list[Outcome]
    quarantine: pl.DataFrame
    """Rows set aside: source, row, rule, column, value, record (the row as read, JSON)."""
    counted: int
    """Quarantined rows that count against `tolerance` (not older versions, not unknown products)."""
    tolerated: int
    """Quarantined rows of "drop" rules (events for unknown products), with a limit of their own."""
    tolerance: float
    problems: list[Problem]
    """Why the data may not go on; empty when it may."""

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def share(self) -> float:
        return self.counted / self.rows if self.rows else 0.0

    def summary(self) -> str:
        if self.problems:
            return f"{self.source}: " + "; ".join(map(str, self.problems))
        kept = f", {self.quarantine.height} row(s) quarantined" if self.quarantine.height else ""
        held = sum(o.passed for o in self.outcomes)
        return f"{self.suite}: {held} of {len(self.outcomes)} rules held on all {self.rows} rows{kept}"

    def outcomes_table(self) -> str:
        """Markdown, one line per expectation, for the Dagster UI."""
        lines = ["| expectation | passed | observed | failing examples |", "|---|---|---|---|"]
        for o in self.outcomes:
            examples = ", ".join(o.examples).replace("|", "\\|")[:200] or "—"
            lines.append(f"| `{o.rule}` | {'yes' if o.passed else '**no**'} | {o.observed} | {examples} |")
        return "\n".join(lines)


class Suite:
    """An expectation suite plus what each expectation means for the rows it flags."""

    def __init__(self, name: str):
        self.name = name
        self.expectations: list[tuple[Any, str, str]] = []
        """(expectation, effect, meaning)"""

    def add(self, expectation: Any, effect: str = "quarantine", meaning: str = "", rule: str = "") -> "Suite":
        """`effect`: "quarantine" (rows set aside, counted against the tolerance), "drop" (set aside, not
        counted: a tolerated kind of row with its own limit), or "table" (a property of the whole data,
        with `meaning` saying in words what its failure means). `rule`: the rule's name in reports, where
        the expectation's own would not say it (a set of offending values found beforehand)."""
        if rule:
            expectation.meta = {**(expectation.meta or {}), "shoprec_rule": rule}
        self.expectations.append((expectation, effect, meaning))
        return self


def products_suite(config: QualityConfig, products: pl.DataFrame) -> Suite:
    """`products`: the typed rows the suite will check (the ids that break the id rule are found there)."""
    import great_expectations.expectations as gxe

    suite = Suite("products")
    suite.add(gxe.ExpectTableRowCountToBeBetween(min_value=1), "table", "the catalog has no usable products")
    suite.add(gxe.ExpectColumnValuesToNotBeNull(column="product_id"))
    _add_id_rule(suite, "product_id", unservable_ids(products["product_id"]))
    suite.add(gxe.ExpectColumnValueLengthsToBeBetween(column="title", min_value=1,
                                                       max_value=config.max_title_length))
    suite.add(gxe.ExpectColumnValueLengthsToBeBetween(column="category", min_value=1))
    if config.long_descriptions == "quarantine":
        suite.add(gxe.ExpectColumnValueLengthsToBeBetween(column="description",
                                                           max_value=config.max_description_length))
    if config.categories:
        suite.add(gxe.ExpectColumnValuesToBeInSet(column="category", value_set=config.categories))
    suite.add(gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0))
    return suite


def interactions_suite(config: QualityConfig, events: pl.DataFrame, unknown_products: list[str], now: datetime,
                       whole_log: bool = True) -> Suite:
    """`events`: the typed rows the suite will check. `unknown_products`: the product ids the events name
    that the catalog lacks (found beforehand with a hash join). Flagging those ids is the same rule as "in
    the catalog's ids", but Great Expectations parses every value of a set on every pass: a 100,000-product
    catalog cost ~30 s per 2 million events, against well under a second for the few ids a log names
    wrongly; ids that break the id rule are found beforehand the same way. Without `whole_log` (only some of
    a log's rows are checked) the rule that the log has rows is left out."""
    import great_expectations.expectations as gxe

    from pipeline.ingest import EVENT_TYPES

    latest = now + timedelta(minutes=config.future_tolerance_minutes)
    suite = Suite("interactions")
    if whole_log:
        suite.add(gxe.ExpectTableRowCountToBeBetween(min_value=1), "table",
                  "no usable interactions: the file has no events with a user, product, event type and time")
    suite.add(gxe.ExpectColumnValuesToNotBeNull(column="user_id"))
    _add_id_rule(suite, "user_id", unservable_ids(events["user_id"]))
    suite.add(gxe.ExpectColumnValuesToNotBeNull(column="product_id"))
    _add_id_rule(suite, "product_id", unservable_ids(events["product_id"]))
    suite.add(gxe.ExpectColumnValuesToNotBeNull(column="event_type"))
    suite.add(gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)))
    suite.add(gxe.ExpectColumnValuesToNotBeNull(column="timestamp"))
    suite.add(gxe.ExpectColumnValuesToBeBetween(column="timestamp", max_value=latest))
    suite.add(gxe.ExpectColumnValuesToNotBeInSet(column="product_id", value_set=unknown_products), "drop")
    return suite


def _add_id_rule(suite: Suite, column: str, unservable: list[str]) -> None:
    import great_expectations.expectations as gxe

    suite.add(gxe.ExpectColumnValuesToNotBeInSet(column=column, value_set=unservable),
              rule=f"{column}: {ID_RULE}")


VOLUMES = {"products": "the catalog's products", "events": "the events", "users_with_lists": "the users with lists"}
"""What the volume gate compares, in words."""


def volume_drops(published: dict[str, int] | None, tonight: dict[str, int], max_drop: float) -> list[str]:
    """Each of `VOLUMES` that fell by more than `max_drop` (a share) from the published run's to tonight's,
    said in words; none against no published run. A catalog or log that shrinks overnight is nearly always
    an export gone wrong (a truncated file, a filter left on), rarely a shop that halved itself."""
    if not published:
        return []
    drops = []
    for key, what in VOLUMES.items():
        before, now = published.get(key) or 0, tonight.get(key, 0)
        if before and now < before * (1 - max_drop):
            drops.append(f"{what} fell from {before:,} to {now:,} (-{(before - now) / before:.0%}, more than the "
                         f"{max_drop:.0%} allowed by quality.max_volume_drop)")
    return drops


def recommendations_suite() -> Suite:
    """On the recommendation rows with their derived columns (see `pipeline.recommend.audit_frame`)."""
    import great_expectations.expectations as gxe

    suite = Suite("recommendations")
    suite.add(gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1))
    suite.add(gxe.ExpectColumnPairValuesToBeEqual(column_A="rank", column_B="position"))
    suite.add(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="previous_score", column_B="score",
                                                          or_equal=True))
    suite.add(gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "product_id"]))
    suite.add(gxe.ExpectColumnValuesToBeInSet(column="purchased_before", value_set=[False]))
    suite.add(gxe.ExpectColumnValuesToBeInSet(column="in_catalog_and_stock", value_set=[True]))
    return suite


def user_lists_suite() -> Suite:
    """On one row per eligible user: how long the list is and how long it should be."""
    import great_expectations.expectations as gxe

    suite = Suite("user_lists")
    suite.add(gxe.ExpectColumnPairValuesToBeEqual(column_A="list_length", column_B="expected_length"))
    return suite


def validate(frame: pl.DataFrame, suite: Suite) -> tuple[list[Outcome], dict[str, tuple[str, str]]]:
    """Run `suite` over `frame` (which carries a 1-based `row` column) with Great Expectations; returns each
    expectation's outcome and, by rule name, its effect and meaning.

    A large frame is validated `VALIDATE_ROWS` rows at a time (Great Expectations works on a pandas copy, so
    20 million events at once would need many GB); each rule's outcomes are then added up: failing rows and
    counts summed, examples from the first chunks, a table-level rule judged on the whole. A rule across rows
    (unique user and product pairs) then holds within each chunk: frames keep a user's rows together, so
    only a list split by a chunk's edge goes unchecked across it."""
    if frame.height <= VALIDATE_ROWS:
        return _validate_chunk(frame, suite)
    chunks = [_validate_chunk(frame.slice(start, VALIDATE_ROWS), suite)
              for start in range(0, frame.height, VALIDATE_ROWS)]
    effects = chunks[0][1]
    table_rules = {rule for rule, (effect, _) in effects.items() if effect == "table"}
    return merged_outcomes([outcomes for outcomes, _ in chunks], frame.height, table_rules), effects


def merged_outcomes(parts: list[list[Outcome]], rows: int, table_rules: set[str] = frozenset()) -> list[Outcome]:
    """One suite's outcomes on parts of a frame (chunks, buckets of users) added up to the whole's: failing
    rows and counts summed, examples from the first parts; a table-level rule (only the row count is one
    today) holds on the whole when it holds on any part."""
    merged = []
    for outcomes in zip(*parts):
        first = outcomes[0]
        if first.rule in table_rules:
            merged.append(Outcome(rule=first.rule, column=first.column, passed=any(o.passed for o in outcomes),
                                  observed=str(rows), examples=[]))
            continue
        failing = sum(int(o.observed.split(" of ")[0]) for o in outcomes if " of " in o.observed)
        merged.append(Outcome(rule=first.rule, column=first.column, passed=all(o.passed for o in outcomes),
                              observed=f"{failing} of {rows} rows",
                              examples=[e for o in outcomes for e in o.examples][:EXAMPLES],
                              rows=[r for o in outcomes for r in o.rows]))
    return merged


VALIDATE_ROWS = 2_000_000
"""Rows given to Great Expectations at once."""


def _validate_chunk(frame: pl.DataFrame, suite: Suite) -> tuple[list[Outcome], dict[str, tuple[str, str]]]:
    import great_expectations as gx

    context = _context()
    source = context.data_sources.add_or_update_pandas(f"shoprec_{suite.name}")
    batch_definition = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all")
    expectations = gx.ExpectationSuite(name=suite.name)
    for index, (expectation, _, _) in enumerate(suite.expectations):
        expectation.meta = {**(expectation.meta or {}), "shoprec_index": index}  # to find it in the results
        expectations.add_expectation(expectation)
    data = frame.drop([c for c, t in frame.schema.items() if isinstance(t, pl.List)]).to_pandas()
    batch = batch_definition.get_batch(batch_parameters={"dataframe": data.set_index("row", drop=False)
                                                         .rename_axis("row_index")})
    result = batch.validate(expectations, result_format={"result_format": "COMPLETE",
                                                         "partial_unexpected_count": EXAMPLES})
    outcomes, effects = [], {}
    for item in result.results:
        config = item.expectation_config
        details = item.result or {}
        if item.exception_info and item.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation {config.type} could not run: "
                               f"{item.exception_info.get('exception_message')}")
        rows = [int(r["row_index"]) if isinstance(r, dict) else int(r)
                for r in details.get("unexpected_index_list") or []]
        count = details.get("unexpected_count")
        observed = (f"{count} of {details.get('element_count', frame.height)} rows"
                    if count is not None else str(details.get("observed_value")))
        index = config.meta["shoprec_index"]
        effects[_rule_name(config)] = suite.expectations[index][1:]
        outcomes.append(Outcome(rule=_rule_name(config), column=config.kwargs.get("column"),
                                passed=bool(item.success), observed=observed,
                                examples=[str(v) for v in (details.get("partial_unexpected_list") or [])][:EXAMPLES],
                                rows=rows))
    return outcomes, effects


def assess(suite: Suite, frame: pl.DataFrame, raw: pl.DataFrame, source: Path | str, config: QualityConfig,
           prior: pl.DataFrame | None = None, rows_read: int | None = None) -> QualityReport:
    """Validate `frame`, quarantine the rows it flags (after `prior`: rows already set aside, such as values
    that did not parse), and decide. The data may go on when every table-level expectation holds and the
    quarantined share is within `quality.max_quarantine_share` (rows of "drop" rules, such as events for
    unknown products, within `quality.max_unknown_product_share` instead). Shares are of `rows_read`: the
    input's rows (default: `raw`'s; a log read on from where the published run stopped has more)."""
    rows_read = raw.height if rows_read is None else rows_read
    outcomes, effects = validate(frame, suite)
    parts = [prior] if prior is not None else []
    problems = []
    for outcome in outcomes:
        effect, meaning = effects[outcome.rule]
        if effect == "table" and not outcome.passed:
            problems.append(Problem(f"{meaning} ({outcome.rule} failed: observed {outcome.observed})"))
        elif effect != "table" and outcome.rows:
            flagged = frame.filter(pl.col("row").is_in(outcome.rows))
            parts.append(quarantine_rows(flagged, raw, source, outcome.rule, outcome.column))
    quarantine = _first_rule_per_row(pl.concat(parts)) if parts else empty_quarantine()
    dropped = quarantine.filter(pl.col("rule").is_in([r for r, (e, _) in effects.items() if e == "drop"]))
    counted = quarantine.join(dropped, on=["source", "row"], how="anti")
    problems += _over_tolerance(counted, rows_read, config.max_quarantine_share, "break row rules",
                                "quality.max_quarantine_share")
    problems += _over_tolerance(dropped, rows_read, config.max_unknown_product_share,
                                "name products not in the catalog", "quality.max_unknown_product_share")
    if prior is not None and prior.height:  # values that did not parse: listed like the suite's rules
        outcomes = [Outcome(rule=rule, column=column, passed=False, observed=f"{group.height} of {rows_read} rows",
                            examples=[str(v) for v in group["value"].head(EXAMPLES)], rows=group["row"].to_list())
                    for (rule, column), group in prior.group_by(["rule", "column"], maintain_order=True)] + outcomes
    return QualityReport(suite=suite.name, source=source, rows=rows_read, outcomes=outcomes,
                         quarantine=quarantine, counted=counted.height, tolerated=dropped.height,
                         tolerance=config.max_quarantine_share, problems=problems)


def _over_tolerance(rows: pl.DataFrame, rows_read: int, tolerance: float, what: str, key: str) -> list[Problem]:
    share = rows.height / rows_read if rows_read else 0.0
    if share <= tolerance:
        return []
    first = rows.sort("row").row(0, named=True)
    return [Problem(f"value {first['value']!r} breaks the rule {first['rule']}; {rows.height} of {rows_read} rows "
                    f"({share:.1%}) {what}, more than the {tolerance:.1%} tolerated ({key})",
                    column=first["column"], row=first["row"])]


def quarantine_rows(flagged: pl.DataFrame, raw: pl.DataFrame, source: Path | str, rule: str,
                    column: str | None) -> pl.DataFrame:
    """Quarantine rows for the `flagged` typed rows: the value as read and the whole raw row as JSON."""
    if flagged.is_empty():
        return empty_quarantine()
    originals = raw.filter(pl.col("row").is_in(flagged["row"].implode())).sort("row")
    records = [json.dumps({k: v for k, v in r.items() if k != "row"}, ensure_ascii=False, default=str)
               for r in originals.iter_rows(named=True)]
    values = originals[column].cast(pl.String) if column and column in originals.columns else pl.Series(
        [None] * originals.height, dtype=pl.String)
    return pl.DataFrame({"source": [str(source)] * originals.height, "row": originals["row"], "rule": rule,
                         "column": column, "value": values, "record": records}, schema=QUARANTINE_COLUMNS)


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_COLUMNS)


def _first_rule_per_row(quarantine: pl.DataFrame) -> pl.DataFrame:
    """A row broken by several rules is quarantined once, under the first it broke."""
    return quarantine.unique(["source", "row"], keep="first", maintain_order=True).sort(["source", "row"])


OLDER_VERSION_RULE = "duplicate product_id: an older version (the newest updated_at wins)"


def _rule_name(config: Any) -> str:
    """`expect_column_values_to_be_between(price, min_value=0)`: short, stable, readable."""
    if (config.meta or {}).get("shoprec_rule"):
        return config.meta["shoprec_rule"]
    kwargs = dict(config.kwargs)
    target = kwargs.pop("column", None) or kwargs.pop("column_list", None)
    if target is None and "column_A" in kwargs:
        target = f"{kwargs.pop('column_A')}, {kwargs.pop('column_B')}"
    shown = []
    for key, value in kwargs.items():
        if key in {"result_format", "catch_exceptions", "meta", "batch_id"}:
            continue
        if isinstance(value, list) and len(value) > 6:
            value = f"<{len(value)} values>"
        shown.append(f"{key}={value}")
    inside = ", ".join([str(target)] * (target is not None) + shown)
    return f"{config.type}({inside})"


_CONTEXT = None


def _context() -> Any:
    """One ephemeral Great Expectations context per process: suites live in code, nothing on disk."""
    global _CONTEXT
    if _CONTEXT is None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False)
    return _CONTEXT


def check_recommendations(buckets: Iterable[tuple[pl.DataFrame, pl.DataFrame]], products: pl.DataFrame,
                          k: int, excluded_events: tuple[str, ...]) -> QualityReport:
    """The published lists' contract: every eligible user has min(K, products they could still be shown)
    recommendations ranked 1..n, scores in [0, 1] and non-increasing, no product twice in a list, nothing
    the user has an event of an `excluded_events` type with (bought, by default), every product in the catalog
    and in stock. Any break fails the check.

    `buckets` are (lists, events) of disjoint sets of users (buckets of users, or everyone at once), checked
    one at a time, so only one bucket's rows are held; the outcomes are added up."""
    on_rows, on_users, rows, users = [], [], 0, 0
    for recommendations, interactions in buckets:
        audited, lengths = audit_frames(recommendations, products, interactions, k, excluded_events)
        on_rows.append(validate(audited, recommendations_suite())[0])
        on_users.append(validate(lengths, user_lists_suite())[0])
        rows, users = rows + audited.height, users + lengths.height
    outcomes = merged_outcomes(on_rows, rows) + merged_outcomes(on_users, users)
    problems = [Problem(f"{o.rule}: {o.observed} break it (e.g. {', '.join(o.examples[:3])})")
                for o in outcomes if not o.passed]
    return QualityReport(suite="recommendations", source="recommendations", rows=rows,
                         outcomes=outcomes, quarantine=empty_quarantine(), counted=0, tolerated=0, tolerance=0.0,
                         problems=problems)


def audit_frames(recommendations: pl.DataFrame, products: pl.DataFrame, interactions: pl.DataFrame,
                 k: int, excluded_events: tuple[str, ...]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The recommendation rows with the columns the suite states rules on, and one row per eligible user."""
    purchased = (interactions.filter(pl.col("event_type").is_in(list(excluded_events)))
                 .select("user_id", "product_id").unique().with_columns(purchased_before=pl.lit(True)))
    stock = products.select("product_id", in_catalog_and_stock=pl.col("in_stock"))
    rows = (
        recommendations.select("user_id", "rank", "product_id", "score")
        .sort(["user_id", "rank"])
        .with_columns(position=pl.int_range(1, pl.len() + 1).over("user_id"),
                      previous_score=pl.col("score").shift(1).over("user_id").fill_null(pl.col("score")))
        .join(purchased, on=["user_id", "product_id"], how="left")
        .join(stock, on="product_id", how="left")
        .with_columns(pl.col("purchased_before").fill_null(False), pl.col("in_catalog_and_stock").fill_null(False))
        .with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))
    )
    in_stock = products.filter("in_stock").select("product_id")
    could_see = (
        interactions.select("user_id").unique()
        .join(purchased.join(in_stock, on="product_id", how="semi").group_by("user_id").len("bought"),
              on="user_id", how="left")
        .with_columns(expected_length=pl.min_horizontal(pl.lit(k), in_stock.height - pl.col("bought").fill_null(0)))
    )
    lists = (
        could_see.join(recommendations.group_by("user_id").len("list_length"), on="user_id", how="left")
        .with_columns(pl.col("list_length").fill_null(0).cast(pl.Int64), pl.col("expected_length").cast(pl.Int64))
        .sort("user_id").with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))
    )
    return rows, lists
