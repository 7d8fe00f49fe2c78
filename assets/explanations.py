"""The explanations asset: a blurb and a "why this recommendation" for every published recommendation."""

import dagster as dg
import polars as pl

from assets.reporting import frame_metadata, preview, reported
from assets.resources import ShopSettings
from pipeline.behavior import ItemCooccurrence
from pipeline.explain import CatalogTerms, ExplanationBatch, build_facts, explanations_frame, llm_selection
from pipeline.llm import resolve_llm, write_explanations


@dg.asset(group_name="recommender", kinds={"openai"})
def explanations(context: dg.AssetExecutionContext, settings: ShopSettings, recommendations: pl.DataFrame,
                 products: pl.DataFrame, interactions: pl.DataFrame,
                 behavior_model: ItemCooccurrence) -> dg.Output[ExplanationBatch]:
    """Grounded texts from facts in the warehouse only: an LLM behind any OpenAI-compatible endpoint for the
    configured share (cached by facts, budgeted, with a circuit breaker), the offline template for the rest
    and for every fallback, each row labelled with its provider, model, prompt version and any fallback."""
    config = settings.get()
    options = config.explanations
    with reported(context) as meta:
        facts = build_facts(recommendations, products, interactions, behavior_model.pairs())
        use_llm = llm_selection(recommendations, interactions, options.llm_top_ranks, options.llm_active_days)
        llm = resolve_llm(options)
        rows, stats = write_explanations(facts, use_llm, llm, CatalogTerms(products),
                                         config.cache_dir / "explanations.sqlite")
        frame = explanations_frame(rows)
        batch = ExplanationBatch(frame=frame, llm_calls=stats.calls, llm_tokens=stats.tokens,
                                 cache_hits=stats.cache_hits, fallbacks=dict(stats.fallbacks))
        by_provider = frame.group_by("provider", "fallback_reason").len().sort("len", descending=True)
        meta.update(frame_metadata(frame.select("user_id", "rank", "blurb", "explanation", "provider")),
                    endpoint=llm.base_url if llm else "none (template)", model=llm.model if llm else "template",
                    llm_calls=stats.calls, llm_tokens=stats.tokens, cache_hits=stats.cache_hits,
                    written_by_llm=stats.written, circuit_breaker_opened=stats.breaker_open,
                    by_provider=preview(by_provider, rows=20))
        if stats.breaker_open:
            context.log.warning("the LLM endpoint kept failing; the rest of the run used the template writer")
    return dg.Output(batch, metadata=meta)
