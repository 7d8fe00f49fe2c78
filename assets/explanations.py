"""The explanations asset: a blurb and a "why this recommendation" for every recommendation, bucket by bucket."""

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import dagster as dg
import polars as pl

from assets.buckets import BUCKET_NAMES, USER_BUCKETS, bucket_reported, events_of_buckets, user_buckets
from assets.reporting import PREVIEW_ROWS, frame_metadata, preview, reported
from assets.resources import ShopSettings, spilled_buckets
from pipeline.audit import ClaimAudit, audited_explanations, summed_audits
from pipeline.behavior import ItemCooccurrence
from pipeline.explain import CatalogTerms, ExplanationBatch, FactSource, LlmSelection
from pipeline.incremental import NightPlan
from pipeline.llm import WriteStats, resolve_llm, write_card_explanations
from pipeline.vector_index import SavedIndex


CARDS_AT_ONCE = 250_000
"""Cards whose facts are held at once (a million users' top-10 facts at once needed over 20 GB)."""


@dg.asset(group_name="recommender", kinds={"openai"}, partitions_def=user_buckets,
          check_specs=[dg.AssetCheckSpec("claims_hold", asset="explanations",
                                         description="Every claim of every card, re-derived in SQL from the "
                                                     "tables the run publishes, holds; a card whose claim does "
                                                     "not is published without it (fallback_reason 'audit').")])
def explanations(context: dg.AssetExecutionContext, settings: ShopSettings, recommendations: dict,
                 products: pl.DataFrame, interactions: pl.DataFrame, behavior_model: ItemCooccurrence,
                 faiss_index: SavedIndex, night_plan: NightPlan):
    """Grounded texts from facts in the warehouse only: an LLM behind any OpenAI-compatible endpoint for the
    configured share (cached by facts, budgeted, with a circuit breaker), the offline template for the rest
    and for every fallback, each row labelled with its provider, model, prompt version and any fallback.
    Each bucket of users gets an equal share of the run's LLM budget and its own circuit breaker, so its
    texts do not depend on which run, or how many buckets, it was written with. Every claim is then checked
    against the tables the run publishes (`pipeline.audit`), and the check `claims_hold` says how many held."""
    config = settings.get()
    # Shares are whole calls and tokens, rounded up; the run's budget is the sum over its buckets.
    options = replace(config.explanations, max_calls=math.ceil(config.explanations.max_calls / USER_BUCKETS),
                      max_tokens=math.ceil(config.explanations.max_tokens / USER_BUCKETS))
    llm = resolve_llm(options)
    with reported(context) as meta, spilled_buckets(context) as batches, contextlib.ExitStack() as run:
        buckets = [bucket for bucket in BUCKET_NAMES if bucket in recommendations]
        # What facts are drawn from is prepared once for the run's buckets (one pass over the catalog and the
        # co-occurrence pairs); the cards' facts are made a slice of a bucket at a time, so only that slice's
        # are held. "Active" users count from the newest event of the whole log.
        histories = events_of_buckets(context, night_plan.events_of(interactions))
        pairs = behavior_model.pairs(ranked=False)
        source = FactSource(products, histories, pairs, faiss_index.similar, log=interactions)
        check = run.enter_context(ClaimAudit(products, histories, pairs, faiss_index.similar, log=interactions))

        terms = CatalogTerms(products) if llm else None  # what an LLM's texts are checked against
        selection = (LlmSelection(histories, options.llm_top_ranks, options.llm_active_days,
                                  newest=night_plan.newest_in(interactions)) if llm else None)
        by_provider, audits, card_count = [], [], 0
        # A slice's audit (DuckDB) runs while the next slice's facts are made (polars): each leaves part of the
        # two cores idle (what it saves is measured in bench/README.md).
        auditor = run.enter_context(ThreadPoolExecutor(1, thread_name_prefix="audit"))
        for bucket in buckets:  # each slice's texts and claims go to storage as they are made (`spilled_buckets`)
            ranked = recommendations[bucket]
            use_llm = selection.of(ranked) if selection else [False] * ranked.height
            with bucket_reported(context, bucket) as bucket_meta, batches.filling(bucket) as stored:
                stats, bucket_audits, heads = WriteStats(), [], []

                def keep(written: pl.DataFrame, claims: pl.DataFrame, audit: pl.DataFrame) -> None:
                    """A slice once audited: its texts and claims to storage, its tallies kept."""
                    stored.append(frame=written, claims=claims)
                    bucket_audits.append(audit)
                    by_provider.append(written.group_by("provider", "fallback_reason").len())
                    if not heads:
                        heads.append(written.head(PREVIEW_ROWS))

                audited = None
                for first in range(0, max(ranked.height, 1), CARDS_AT_ONCE):
                    cards = ranked.slice(first, CARDS_AT_ONCE)
                    facts = source.facts(cards)
                    written, _ = write_card_explanations(facts, use_llm[first:first + cards.height], llm, terms,
                                                         config.cache_dir / "explanations.sqlite", stats=stats)
                    if audited is not None:
                        keep(*audited.result())
                    audited = auditor.submit(audited_explanations, facts, written, check)
                keep(*audited.result())
                audit = summed_audits(bucket_audits)
                stored.finish(ExplanationBatch(frame=None, claims=None, audit=audit, llm_calls=stats.calls,
                                               llm_tokens=stats.tokens, cache_hits=stats.cache_hits,
                                               fallbacks=dict(stats.fallbacks)))
                bucket_meta.update(frame_metadata(heads[0].select("user_id", "rank", "blurb", "explanation", "provider"),
                                                  row_count=ranked.height),
                                   llm_calls=stats.calls, llm_tokens=stats.tokens, cache_hits=stats.cache_hits,
                                   written_by_llm=stats.written, circuit_breaker_opened=stats.breaker_open,
                                   claims_checked=int(audit["checked"].sum()), claims_false=int(audit["false"].sum()))
            if stats.breaker_open:
                context.log.warning(f"{bucket}: the LLM endpoint kept failing; the rest of the bucket used the "
                                    "template writer")
            audits.append(audit)
            card_count += ranked.height
        by_provider = (pl.concat(by_provider).group_by("provider", "fallback_reason").agg(pl.col("len").sum())
                       .sort("len", descending=True))
        meta.update(buckets=len(batches), cards=card_count,
                    endpoint=llm.base_url if llm else "none (template)", model=llm.model if llm else "template",
                    llm_budget_per_bucket=f"{options.max_calls} calls, {options.max_tokens} tokens",
                    by_provider=preview(by_provider, rows=20))
        audit = summed_audits(audits)
        checked, false = int(audit["checked"].sum()), int(audit["false"].sum())
        meta.update(claims_checked=checked, claims_true=checked - false, claims_false=false,
                    audit=preview(audit, rows=10))
    yield dg.Output(batches, metadata=meta)
    yield dg.AssetCheckResult(
        check_name="claims_hold", passed=false == 0,
        description=(f"all {checked} claims held" if false == 0 else
                     f"{false} of {checked} claims did not hold; their cards were published without them"),
        metadata={"checked": checked, "false": false, "by_kind": preview(audit, rows=10)})

