"""Writing explanations with an LLM behind any OpenAI-compatible endpoint: cached, budgeted, concurrent,
and never able to fail the run.

The official `openai` client (async) makes the calls, with its own retries and exponential backoff on 429
and 5xx and a per-call timeout. Around it: a cache keyed by (provider, model, prompt version, facts digest),
a budget of calls and tokens per run, bounded concurrency, and a circuit breaker that hands the rest of the
run to the template writer when the endpoint keeps failing. Every row the LLM did not write says why.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from pipeline.config import ExplanationsConfig
from pipeline.explain import (
    PROMPT_VERSION, REPLY_SCHEMA, CatalogTerms, copied_factors, Explanation, Facts, explanations_frame, facts_frame, facts_objects,
    grounding_problem, parse_reply, prompt_messages, template_explanations,
)

log = logging.getLogger(__name__)
PROVIDER = "openai"


@dataclass(frozen=True)
class LLMSettings:
    """A resolved endpoint, and the knobs of `ExplanationsConfig` (documented there)."""

    base_url: str
    model: str = "gpt-4o-mini"
    api_key: str = "not-needed"
    options: ExplanationsConfig = field(default_factory=ExplanationsConfig)
    max_reply_tokens: int = 300


@dataclass
class WriteStats:
    calls: int = 0
    tokens: int = 0
    cache_hits: int = 0
    written: int = 0
    fallbacks: Counter = field(default_factory=Counter)
    breaker_open: bool = False


class ExplanationCache:
    """LLM-written texts by cache key, in an SQLite file of their own (stdlib; a committed row costs well
    under a millisecond). Each text is committed as soon as it is written, so a crashed run loses nothing
    it paid for."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(str(path))
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS explanations (cache_key TEXT PRIMARY KEY, provider TEXT, model TEXT, "
            "prompt_version TEXT, blurb TEXT, explanation TEXT, reasoning_factors TEXT, "
            "created_at TEXT DEFAULT CURRENT_TIMESTAMP)")
        self._con.commit()

    @staticmethod
    def key(model: str, facts: Facts) -> str:
        return hashlib.sha256(f"{PROVIDER}\x00{model}\x00{PROMPT_VERSION}\x00{facts.digest}".encode()).hexdigest()

    def lookup(self, keys: list[str]) -> dict[str, dict]:
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = self._con.execute(
                f"SELECT cache_key, blurb, explanation, reasoning_factors FROM explanations "
                f"WHERE cache_key IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
            found.update({k: {"blurb": b, "explanation": e, "reasoning_factors": json.loads(f)}
                          for k, b, e, f in rows})
        return found

    def store(self, key: str, model: str, reply: dict) -> None:
        self._con.execute(
            "INSERT OR REPLACE INTO explanations (cache_key, provider, model, prompt_version, blurb, explanation, "
            "reasoning_factors) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [key, PROVIDER, model, PROMPT_VERSION, reply["blurb"], reply["explanation"],
             json.dumps(reply["reasoning_factors"])])
        self._con.commit()

    def close(self) -> None:
        self._con.close()


def resolve_llm(options: ExplanationsConfig, environ=os.environ) -> LLMSettings | None:
    """The endpoint to use, or None for the template writer alone.

    `provider` "template" never calls out; "openai" needs an endpoint; "auto" uses one when config or
    $OPENAI_BASE_URL names it. The model is config's, else $OPENAI_MODEL, else gpt-4o-mini."""
    url = options.base_url or environ.get("OPENAI_BASE_URL", "")
    if options.provider == "template" or (options.provider == "auto" and not url):
        return None
    if not url:
        raise ValueError("explanations.provider is 'openai' but no endpoint is set: give explanations.base_url "
                         "or $OPENAI_BASE_URL (https://api.openai.com/v1 for OpenAI itself)")
    return LLMSettings(base_url=url, model=options.model or environ.get("OPENAI_MODEL") or "gpt-4o-mini",
                       api_key=environ.get(options.api_key_env) or "not-needed", options=options)


def write_card_explanations(facts: pl.DataFrame, use_llm: list[bool], llm: LLMSettings | None,
                            terms: CatalogTerms | None, cache_path: Path, progress: bool = True,
                            stats: WriteStats | None = None) -> tuple[pl.DataFrame, WriteStats]:
    """The explanations frame of a facts frame (`FactSource.facts`): the template's text for every card, then
    the LLM's where `use_llm` says so and an endpoint is configured (from the cache when it already wrote
    these facts; `terms`, the catalog's, check its texts: None only without an endpoint). Only those cards
    become `Facts` objects; a card the LLM fails keeps its template row, labelled with why. Pass the same
    `stats` to calls writing one budget's cards a slice at a time: the budget counts across them."""
    written, stats = template_explanations(facts), stats or WriteStats()
    if llm is None or not any(use_llm):
        return written, stats
    chosen = pl.Series(use_llm, dtype=pl.Boolean)
    templates = [Explanation(**row) for row in written.filter(chosen).iter_rows(named=True)]
    cache = ExplanationCache(cache_path)
    try:
        rows = asyncio.run(_write_all(facts_objects(facts.filter(chosen)), templates, llm, terms, cache, stats,
                                      progress))
    finally:
        cache.close()
    by_llm = explanations_frame(rows).with_row_index().with_columns(index=chosen.arg_true())
    return pl.concat([written.with_row_index().filter(~chosen), by_llm]).sort("index").drop("index"), stats


def write_explanations(facts: list[Facts], use_llm: list[bool], llm: LLMSettings | None, terms: CatalogTerms,
                       cache_path: Path, progress: bool = True) -> tuple[list[Explanation], WriteStats]:
    """`write_card_explanations` for callers holding `Facts` objects: one explanation per facts."""
    frame, stats = write_card_explanations(facts_frame(facts), use_llm, llm, terms, cache_path, progress)
    return [Explanation(**row) for row in frame.iter_rows(named=True)], stats


async def _write_all(facts: list[Facts], templates: list[Explanation], llm: LLMSettings, terms,
                     cache: ExplanationCache, stats: WriteStats, progress: bool) -> list[Explanation]:
    """The LLM's text for each facts (cached, budgeted, behind the breaker), else its template row, labelled."""
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion

    results: list[Explanation | None] = [None] * len(facts)
    keys = [ExplanationCache.key(llm.model, f) for f in facts]
    cached = cache.lookup(keys)
    todo = []
    for i, f in enumerate(facts):
        if keys[i] in cached:
            stats.cache_hits += 1
            results[i] = _from_reply(f, cached[keys[i]], llm.model)
        else:
            todo.append(i)
    log.info("explanations: %d for the LLM, %d of them from cache, %d to write with %s", len(facts),
             stats.cache_hits, len(todo), llm.model)
    if not todo:
        return results
    options = llm.options
    client = AsyncOpenAI(base_url=llm.base_url, api_key=llm.api_key, timeout=options.timeout_seconds,
                         max_retries=options.max_retries)
    gate = asyncio.Semaphore(options.concurrency)
    failures_in_a_row = 0
    bar = tqdm(total=len(todo), desc="writing explanations", unit="card", disable=not progress)

    async def one(i: int) -> None:
        nonlocal failures_in_a_row
        f = facts[i]
        async with gate:
            reason = None
            for _ in range(2):  # an unparseable reply is asked again once
                reason = _budget_problem(options, stats, failures_in_a_row)
                if reason:
                    break
                stats.calls += 1
                try:
                    # `post` is the client's own request path (retries, backoff, timeout, errors) without
                    # `create`'s recursive re-validation of the params we built, which costs more CPU
                    # per call than the HTTP round trip does at high concurrency.
                    response = await client.post("/chat/completions", cast_to=ChatCompletion, body={
                        "model": llm.model, "messages": prompt_messages(f), "temperature": 0.3,
                        "max_tokens": llm.max_reply_tokens,
                        **({"response_format": _response_format(options)} if options.json_mode else {})})
                except Exception as exc:  # the client already retried; any failure here falls back
                    failures_in_a_row += 1
                    reason = f"endpoint error: {type(exc).__name__}"
                    break
                failures_in_a_row = 0
                if response.usage:
                    stats.tokens += response.usage.total_tokens or 0
                reply = parse_reply(response.choices[0].message.content if response.choices else "")
                if reply is None:
                    reason = "unparseable reply"
                    continue
                problem = grounding_problem(reply, f, terms)
                if problem:
                    reason = f"rejected: {problem}"
                    break
                cache.store(keys[i], llm.model, reply)
                stats.written += 1
                results[i] = _from_reply(f, reply, llm.model)
                reason = None
                break
            if results[i] is None:
                stats.fallbacks[reason.split(":")[0]] += 1
                results[i] = Explanation(**{**templates[i].__dict__, "fallback_reason": reason})
            bar.update(1)

    try:
        await asyncio.gather(*(one(i) for i in todo))
    finally:
        bar.close()
        await client.close()
    stats.breaker_open = failures_in_a_row >= options.breaker_failures
    return results


def _response_format(options: ExplanationsConfig) -> dict:
    """JSON mode, with the reply's schema when the server takes one (`reply_schema`)."""
    return {"type": "json_object", **({"schema": REPLY_SCHEMA} if options.reply_schema else {})}


def _budget_problem(options: ExplanationsConfig, stats: WriteStats, failures_in_a_row: int) -> str | None:
    if failures_in_a_row >= options.breaker_failures:
        return "circuit breaker open: the endpoint kept failing"
    if stats.calls >= options.max_calls:
        return "budget: max calls reached"
    if stats.tokens >= options.max_tokens:
        return "budget: max tokens reached"
    return None


def _from_reply(facts: Facts, reply: dict, model: str) -> Explanation:
    return Explanation(user_id=facts.user_id, rank=facts.rank, product_id=facts.product["product_id"],
                       blurb=reply["blurb"], explanation=reply["explanation"],
                       reasoning_factors=copied_factors(reply, facts) or facts.factors[:3], provider=PROVIDER,
                       model=model, prompt_version=PROMPT_VERSION, facts_digest=facts.digest)
