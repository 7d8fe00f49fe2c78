"""Every explanation claim re-derived from the tables the run publishes, in SQL, apart from the writer's code.

The writer (`pipeline.explain.FactSource`) counts with polars joins over integer codes; this module counts
again from the string tables as they are published (products, interactions, item_cooccurrence,
similar_products), in DuckDB, one query per claim kind, and says of each claim whether it holds. The
queries are the literal reading of each kind (`pipeline.claims`), and the README shows them for a reader
who wants to re-check a card by hand.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import polars as pl

from pipeline.claims import EVENT_STRENGTH

AUDIT_MEMORY_LIMIT = "1GB"
"""What the audit's DuckDB may hold in memory; the rest of its tables stay on disk."""

CLAIM_KINDS = ("attribute", "category", "customers", "similar_text", "your_event")

AUDIT_TABLE = {"kind": pl.String, "checked": pl.Int64, "true": pl.Int64, "false": pl.Int64}
"""The published `explanation_audit` rows: per run and claim kind, how many claims were checked and held."""

_STRENGTH = "CASE event_type " + " ".join(f"WHEN '{e}' THEN {s}" for e, s in EVENT_STRENGTH.items()) + " ELSE 0 END"

# Each query returns (claim, actual): what the claim's count should have been (null: the claim cannot hold
# whatever its count); the claim holds when they are equal.
_RECOUNT = {
    # Products other than the card's holding the attribute (as the card's product does), under the
    # shopper's strongest event.
    "attribute": """
        SELECT c.claim, CASE WHEN bool_and(own.product_id IS NOT NULL) THEN count(s.product_id) END AS actual  -- one row per product: held and shoppers are distinct
        FROM claims c
        LEFT JOIN held own ON own.product_id = c.product_id AND own.term = c.term
        LEFT JOIN (shoppers s JOIN held h ON h.product_id = s.product_id)
               ON s.user_id = c.user_id AND s.product_id <> c.product_id AND h.term = c.term
              AND s.event_type = c.event_types[1]
        WHERE c.kind = 'attribute' GROUP BY c.claim""",
    "category": """
        SELECT c.claim, CASE WHEN bool_and(own.category = c.term) THEN count(s.product_id) END AS actual  -- one row per product: held and shoppers are distinct
        FROM claims c
        JOIN products own ON own.product_id = c.product_id
        LEFT JOIN (shoppers s JOIN products p ON p.product_id = s.product_id)
               ON s.user_id = c.user_id AND s.product_id <> c.product_id AND p.category = c.term
              AND s.event_type = c.event_types[1]
        WHERE c.kind = 'category' GROUP BY c.claim""",
    # Other customers who bought both: counted in the log; who engaged with both: the published co_count
    # (users with any event on both when the behavioural model was fitted), less the shopper.
    "customers": """
        WITH pairs AS (SELECT DISTINCT named_product_id AS a, product_id AS b FROM claims
                       WHERE kind = 'customers' AND event_types = ['purchase']),
             both_bought AS (SELECT pairs.a, pairs.b, count(*) AS users FROM pairs
                             JOIN bought x ON x.product_id = pairs.a
                             JOIN bought y ON y.product_id = pairs.b AND y.user_id = x.user_id
                             GROUP BY ALL)
        SELECT c.claim,
               CASE WHEN c.event_types = ['purchase'] THEN coalesce(any_value(bb.users), 0)
                         - CASE WHEN bool_or(m1.event_type = 'purchase') AND bool_or(m2.event_type = 'purchase')
                                THEN 1 ELSE 0 END
                    WHEN list_sort(c.event_types) = (SELECT event_types FROM logged)
                    THEN coalesce(any_value(co.co_count), 0)
                         - CASE WHEN count(m1.user_id) > 0 AND count(m2.user_id) > 0 THEN 1 ELSE 0 END
                    END AS actual
        FROM claims c
        LEFT JOIN both_bought bb ON bb.a = c.named_product_id AND bb.b = c.product_id
        LEFT JOIN item_cooccurrence co ON co.product_id = c.named_product_id AND co.neighbor_id = c.product_id
        LEFT JOIN shoppers m1 ON m1.user_id = c.user_id AND m1.product_id = c.named_product_id
        LEFT JOIN shoppers m2 ON m2.user_id = c.user_id AND m2.product_id = c.product_id
        WHERE c.kind = 'customers' AND c.named_product_id <> c.product_id GROUP BY c.claim, c.event_types""",
    # The card's product at the stated rank of the named product's nearest by text.
    "similar_text": """
        SELECT c.claim, min(s.rank) AS actual
        FROM claims c
        LEFT JOIN similar_products s ON s.product_id = c.named_product_id AND s.similar_product_id = c.product_id
        WHERE c.kind = 'similar_text' AND c.named_product_id <> c.product_id GROUP BY c.claim""",
    # The shopper's strongest event on the named product, and the month (UTC) of their latest one of that type.
    "your_event": """
        SELECT c.claim, CASE WHEN bool_or(s.event_type = c.event_types[1] AND s.month = c.month) THEN 1 ELSE 0 END
               AS actual
        FROM claims c
        LEFT JOIN shoppers s ON s.user_id = c.user_id AND s.product_id = c.named_product_id
        WHERE c.kind = 'your_event' AND c.named_product_id <> c.product_id GROUP BY c.claim, c.event_types""",
}


class ClaimAudit:
    """The tables an audit reads, loaded into DuckDB once per run; calling it with a slice of claims says of
    each whether it holds. `interactions`: the shoppers' events (or more); `log`: the whole event log, where
    other customers are counted (default: `interactions`); `cooccurrence`: item_cooccurrence's rows;
    `similar`: similar_products' rows. What is derived from them (each shopper's strongest event per
    product, who bought what, each product's attributes) is computed here once, not per slice: a slice's
    audit then costs about what its claims do, not what the log does."""

    def __init__(self, products: pl.DataFrame, interactions: pl.DataFrame, cooccurrence: pl.DataFrame,
                 similar: pl.DataFrame | None = None, log: pl.DataFrame | None = None):
        log = interactions if log is None else log
        similar = similar if similar is not None else pl.DataFrame(
            schema={"product_id": pl.String, "rank": pl.Int32, "similar_product_id": pl.String})
        # On disk, in a temporary folder, within AUDIT_MEMORY_LIMIT: at a million shoppers the derived tables
        # are gigabytes, which DuckDB pages in as the slices' queries need them.
        self._folder = tempfile.TemporaryDirectory(prefix="shoprec-audit-")
        self._con = con = duckdb.connect(str(Path(self._folder.name) / "audit.duckdb"))
        con.execute(f"SET memory_limit = '{AUDIT_MEMORY_LIMIT}'")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET TimeZone = 'UTC'")  # months are UTC months
        con.register("products", products.select("product_id", "category", "attributes"))
        con.register("interactions", interactions.select("user_id", "product_id", "event_type", "timestamp"))
        if log is interactions:  # most often the shoppers' events are the whole log: one copy of millions of rows
            con.execute("CREATE VIEW log AS SELECT user_id, product_id, event_type FROM interactions")
        else:
            con.register("log", log.select("user_id", "product_id", "event_type"))
        # Copied in once, not scanned from the frames by every slice's queries (10 million pairs: 0.8 -> 0.3 s a
        # slice of the large shop's cards).
        for name, frame in (("item_cooccurrence", cooccurrence.select("product_id", "neighbor_id", "co_count")),
                            ("similar_products", similar.select("product_id", "rank", "similar_product_id"))):
            con.register("frame", frame)
            con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM frame")
            con.unregister("frame")
        con.execute("CREATE TEMP TABLE held AS SELECT DISTINCT product_id, unnest(attributes) AS term FROM products")
        # Each shopper's strongest event on each product: the one with the largest (strength, time), and of
        # equal strengths the latest, one integer holding both (any timestamp's milliseconds from 1970 lie
        # within +-2**53, so offset by 2**56 they fit below 2**57). Sorted by user, so that a slice of users
        # (the writer's slices are runs of users) reads only the blocks holding them.
        con.execute(f"""CREATE TEMP TABLE strongest AS
            WITH keyed AS (SELECT user_id, product_id, event_type,
                                  ({_STRENGTH}) * {2**57} + epoch_ms(timestamp) + {2**56} AS latest
                           FROM interactions),
                 top AS (SELECT user_id, product_id, arg_max(event_type, latest) AS event_type, max(latest) AS latest
                         FROM keyed GROUP BY user_id, product_id)
            SELECT user_id, product_id, event_type,
                   strftime(epoch_ms(latest % {2**57} - {2**56}), '%Y-%m') AS month
            FROM top ORDER BY user_id""")
        con.execute("""CREATE TEMP TABLE bought AS
            SELECT DISTINCT user_id, product_id FROM log WHERE event_type = 'purchase'""")
        con.execute("CREATE TEMP TABLE logged AS SELECT list_sort(list(DISTINCT event_type)) AS event_types FROM log")
        if log is interactions:
            con.execute("DROP VIEW log")
        else:
            con.unregister("log")
        con.unregister("interactions")

    def __call__(self, claims: pl.DataFrame) -> pl.DataFrame:
        """`claims` (`pipeline.claims.CLAIMS_TABLE` rows) with `holds`: whether the tables bear each one out.
        A claim of a kind this module does not know never holds."""
        numbered = claims.with_row_index("claim")
        if numbered.is_empty():
            return numbered.drop("claim").with_columns(holds=pl.lit(None, pl.Boolean))
        con = self._con
        con.register("claims", numbered.select("claim", "user_id", "product_id", "kind", "term",
                                               "named_product_id", "event_types", "count", "month"))
        try:
            con.execute("""CREATE OR REPLACE TEMP TABLE shoppers AS
                SELECT s.* FROM strongest s
                WHERE s.user_id BETWEEN (SELECT min(user_id) FROM claims) AND (SELECT max(user_id) FROM claims)
                  AND s.user_id IN (SELECT user_id FROM claims)""")
            actual = pl.concat([con.execute(query).pl().cast({"claim": pl.UInt32, "actual": pl.Int64})
                                for query in _RECOUNT.values()])
        finally:
            con.unregister("claims")
        return (numbered.join(actual, on="claim", how="left", maintain_order="left")
                .with_columns(holds=(pl.col("actual") == pl.col("count")).fill_null(False))
                .drop("claim", "actual"))

    def close(self) -> None:
        self._con.close()
        self._folder.cleanup()

    def __enter__(self) -> "ClaimAudit":
        return self

    def __exit__(self, *_) -> None:
        self.close()


def audit_claims(claims: pl.DataFrame, products: pl.DataFrame, interactions: pl.DataFrame,
                 cooccurrence: pl.DataFrame, similar: pl.DataFrame | None = None,
                 log: pl.DataFrame | None = None) -> pl.DataFrame:
    """`claims` with `holds`, audited once against these tables (`ClaimAudit`, whose arguments these are)."""
    with ClaimAudit(products, interactions, cooccurrence, similar, log) as audit:
        return audit(claims)


def audit_summary(audited: pl.DataFrame) -> pl.DataFrame:
    """Per claim kind (every known kind, checked or not): claims checked, true, false (`AUDIT_TABLE`)."""
    counted = audited.group_by("kind").agg(checked=pl.len().cast(pl.Int64),
                                           true=pl.col("holds").sum().cast(pl.Int64))
    kinds = pl.DataFrame({"kind": sorted({*CLAIM_KINDS, *counted["kind"].to_list()})})
    return (kinds.join(counted, on="kind", how="left").fill_null(0)
            .with_columns(false=pl.col("checked") - pl.col("true")).select(list(AUDIT_TABLE)))


def without_false_claims(facts: pl.DataFrame, audited: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """`facts` (a facts frame) less every factor one of whose claims does not hold (`audit_claims` of its
    `claims_table`, in the same card order), its other claims renumbered; and, per card, the kind of the first
    claim withdrawn from it (null: none), for the text written again to say why."""
    false = (audited.filter(~pl.col("holds")).group_by("user_id", "rank", "factor")
             .agg(pl.col("kind").first()))
    cards = facts.select("user_id", "rank").with_row_index("card")
    withdrawn = cards.join(false, on=["user_id", "rank"]).sort("card", "factor")
    if withdrawn.is_empty():
        return facts, pl.Series("withdrawn", [None] * facts.height, dtype=pl.String)
    drop = withdrawn.select("card", "factor", drop=pl.lit(True))
    factors = (facts.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("card"), words="factors")
               .explode("words", empty_as_null=True)
               .with_columns(factor=pl.int_range(pl.len(), dtype=pl.Int32).over("card"))
               .join(drop, on=["card", "factor"], how="left", maintain_order="left")
               .with_columns(keep=pl.col("words").is_not_null() & pl.col("drop").is_null()))
    renumbered = (factors.filter("keep").with_columns(new=pl.int_range(pl.len(), dtype=pl.Int32).over("card"))
                  .select("card", "factor", "new"))
    claims = (facts.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("card"), claim="claims")
              .explode("claim", empty_as_null=True).unnest("claim")
              .join(renumbered, on=["card", "factor"], maintain_order="left")
              .with_columns(factor="new").drop("new"))
    claim_fields = [f.name for f in facts.schema["claims"].inner.fields]
    kept = (pl.DataFrame({"card": pl.int_range(facts.height, dtype=pl.UInt32, eager=True)})
            .join(factors.filter("keep").group_by("card", maintain_order=True).agg(factors="words"),
                  on="card", how="left", maintain_order="left")
            .join(claims.group_by("card", maintain_order=True).agg(claims=pl.struct(claim_fields)),
                  on="card", how="left", maintain_order="left"))
    facts = facts.with_columns(
        factors=kept["factors"].fill_null(pl.lit([], dtype=facts.schema["factors"])).cast(facts.schema["factors"]),
        claims=kept["claims"].fill_null(pl.lit([], dtype=facts.schema["claims"])).cast(facts.schema["claims"]))
    reason = (pl.DataFrame({"card": pl.int_range(facts.height, dtype=pl.UInt32, eager=True)})
              .join(withdrawn.group_by("card").agg(pl.col("kind").first()), on="card", how="left",
                    maintain_order="left")["kind"])
    return facts, reason


def audited_explanations(facts: pl.DataFrame, written: pl.DataFrame,
                         check) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The cards' texts (`written`, in `facts`' order) once every claim has been checked by `check` (claims
    rows -> the same with `holds`, `audit_claims` over the run's tables): a card with a claim that does not
    hold gets the template's text without that factor, labelled `audit: ...` in fallback_reason. Returns the
    texts, the claims they state (all holding) and the audit's `audit_summary`."""
    from pipeline.claims import claims_table
    from pipeline.explain import facts_digests, template_explanations

    claims = claims_table(facts)
    audited = check(claims)
    facts, withdrawn = without_false_claims(facts, audited)
    changed = withdrawn.is_not_null()
    if changed.any():
        digests = facts["digest"].clone().scatter(changed.arg_true(), facts_digests(facts.filter(changed)))
        facts = facts.with_columns(digest=digests)
        rewritten = template_explanations(facts.filter(changed)).with_columns(
            fallback_reason=pl.format("audit: a {} claim did not hold", withdrawn.filter(changed)))
        index = pl.int_range(pl.len(), dtype=pl.UInt32)
        written = (pl.concat([written.with_columns(index.alias("card")).filter(~changed),
                              rewritten.with_columns(card=changed.arg_true().cast(pl.UInt32))])
                   .sort("card").drop("card"))
        claims = claims_table(facts)
    return written, claims, audit_summary(audited)


def summed_audits(audits: list[pl.DataFrame]) -> pl.DataFrame:
    """Audit summaries (`AUDIT_TABLE`: of buckets, of slices) added up kind by kind."""
    if not audits:
        return pl.DataFrame(schema=AUDIT_TABLE)
    return pl.concat(audits).group_by("kind").agg(pl.col("checked", "true", "false").sum()).sort("kind")
