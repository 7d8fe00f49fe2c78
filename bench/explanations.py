"""Explanation throughput: the template writer over the whole published sample, and the real `openai`
client against a local OpenAI-compatible server with 100 ms latency per call, at concurrency 1, 8 and 32,
then a rerun over the same cards (all cache hits, zero calls).

    python -m bench.explanations          (after `make materialize`, which publishes the sample's lists)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.config import ExplanationsConfig, load_settings
from pipeline.explain import CatalogTerms, FactSource, facts_objects, template_explanations
from pipeline.llm import LLMSettings, write_explanations
from pipeline.warehouse import read_table

LATENCY = 0.1
RUNS = [(1, 40), (8, 320), (32, 1280)]  # (concurrency, cards): about four seconds of calls each


def start_server() -> tuple[subprocess.Popen, str]:
    """The fake server in its own process, so its threads do not compete with the client for the GIL."""
    process = subprocess.Popen([sys.executable, "-m", "bench.openai_server", "--latency", str(LATENCY)],
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    return process, process.stdout.readline().strip()


def main() -> None:
    config = load_settings()
    warehouse = config.warehouse_path
    if not warehouse.exists():
        sys.exit(f"{warehouse} does not exist: run `make materialize` first")
    tables = {t: read_table(warehouse, t) for t in ("recommendations", "products", "interactions",
                                                     "item_cooccurrence")}
    # The pipeline's path: the facts as one frame, the template texts written column-wise.
    started = time.perf_counter()
    source = FactSource(tables["products"], tables["interactions"], tables["item_cooccurrence"])
    prepared = time.perf_counter()
    frame = source.facts(tables["recommendations"])
    built = time.perf_counter()
    written = template_explanations(frame)
    templated = time.perf_counter()
    print(f"\ntemplate writer: {written.height:,} cards (the whole sample's top-10 lists) in "
          f"{templated - started:.2f} s (preparing the catalog and engagement {prepared - started:.2f} s, facts "
          f"{built - prepared:.2f} s, writing {templated - built:.2f} s; "
          f"{(templated - prepared) / max(written.height, 1) * 1e6:.0f} us a card)\n")
    facts = facts_objects(frame.head(max(cards for _, cards in RUNS)))  # what the LLM path gets

    terms = CatalogTerms(tables["products"])
    process, base_url = start_server()
    try:
        print(f"openai client against a local server ({LATENCY * 1000:.0f} ms per call), {os.cpu_count()} cores:\n")
        print("| concurrency | cards | calls | seconds | explanations/s |")
        print("|---|---|---|---|---|")
        for concurrency, cards in RUNS:
            with tempfile.TemporaryDirectory() as folder:
                llm = LLMSettings(base_url=base_url, model="bench",
                                  options=ExplanationsConfig(concurrency=concurrency, max_calls=10**6))
                chosen = facts[:cards]
                t0 = time.perf_counter()
                rows, stats = write_explanations(chosen, [True] * cards, llm, terms, Path(folder) / "c.duckdb",
                                                 progress=False)
                elapsed = time.perf_counter() - t0
                ok = sum(r.provider == "openai" for r in rows)
                print(f"| {concurrency} | {cards} | {stats.calls} | {elapsed:.2f} | {ok / elapsed:.0f} |")
                if concurrency == RUNS[-1][0]:
                    t0 = time.perf_counter()
                    _, again = write_explanations(chosen, [True] * cards, llm, terms, Path(folder) / "c.duckdb",
                                                  progress=False)
                    print(f"| {concurrency}, rerun (cache) | {cards} | {again.calls} | "
                          f"{time.perf_counter() - t0:.2f} | {again.cache_hits} cache hits |")
    finally:
        process.terminate()


if __name__ == "__main__":
    main()
