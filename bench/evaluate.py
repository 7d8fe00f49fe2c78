"""Run the whole offline evaluation on a named dataset and print one table.

    python -m bench.evaluate movielens-100k        (or amazon-scientific, `sample`, or `long-span`)

Each model's Hit@10, NDCG@10, Recall@10 and MRR@10 on the test split, full ranking and sampled (target among
100 random negatives), with 95% bootstrap intervals, for every protocol the dataset supports; then the
elapsed time. Datasets are read where they lie, as described in bench/datasets.json. `long-span` is generated:
the sample's catalog and kind of users over ten years, each user active for half a year somewhere in them (the
shop where recency counted from the log's end once erased every user but the latest).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from pipeline.config import load_settings
from pipeline.datasets import load_dataset
from pipeline.embeddings import embed_products
from pipeline.evaluation import METRICS
from pipeline.experiment import EvaluationResult, evaluate, evaluation_settings, scoring_settings
from pipeline.behavior import BehaviorSpec
from pipeline.ingest import read_catalog, read_event_log
from pipeline.synthetic import ShopSize, generate_shop

ROOT = Path(__file__).resolve().parent.parent
LONG_SPAN = ShopSize(users=10_000, days=3650, active_days=180)
"""Ten years, each user active for 180 days of them: users last seen years before the log ends. Ten thousand
users, so that the temporal split's validation and test windows each hold a few hundred of them (with 3,000,
about 100: intervals of +-30%, too wide to tell the published model from EASE)."""
REGISTRY = ROOT / "bench" / "datasets.json"


def long_span_shop() -> tuple[pl.DataFrame, pl.DataFrame]:
    """The LONG_SPAN shop, ending on the day it is made (a log from the future would be quarantined), read as
    the pipeline reads its inputs."""
    products, interactions = generate_shop(LONG_SPAN)
    end = interactions["timestamp"].str.to_datetime(time_zone="UTC").max()
    shift = datetime.now(timezone.utc).replace(microsecond=0) - end
    interactions = interactions.with_columns(
        timestamp=(pl.col("timestamp").str.to_datetime(time_zone="UTC") + shift).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    with tempfile.TemporaryDirectory() as folder:
        products.write_csv(Path(folder) / "products.csv")
        interactions.write_csv(Path(folder) / "interactions.csv")
        catalog = read_catalog(Path(folder)).products
        return catalog, read_event_log(Path(folder), catalog["product_id"]).interactions


def model_rows(result: EvaluationResult) -> list[tuple[str, str, float | None]]:
    """(label, model, alpha) of each row of the table, in reading order."""
    return [
        ("popularity", "popularity", None),
        ("content only (alpha 0, same recency)", "hybrid", 0.0),
        ("behaviour only (alpha 1, same recency)", "hybrid", 1.0),
        (f"hybrid ({result.chosen_behavior.label}), alpha {result.chosen_alpha:g}, recency half-life "
         f"{result.chosen_half_life_events or 0:g} events (chosen on validation)", "hybrid", result.chosen_alpha),
        (f"EASE, lambda {result.chosen_ease_l2:g} (chosen on validation)", "ease", None),
    ]


def table(result: EvaluationResult, protocol: str) -> str:
    test = result.metrics.filter((pl.col("protocol") == protocol) & (pl.col("split") == "test")
                                 & (pl.col("k") == 10) & (pl.col("segment") == "all"))
    header = ["model"] + [f"{m}@10" for m in METRICS] + [f"sampled {m}@10" for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, model, alpha in model_rows(result):
        rows = test.filter((pl.col("model") == model)
                           & (pl.col("alpha").is_null() if alpha is None else pl.col("alpha") == alpha))
        cells = [label]
        for metric in [*METRICS, *(f"sampled_{m}" for m in METRICS)]:
            row = rows.filter(pl.col("metric") == metric)
            if row.is_empty():
                cells.append("—")
                continue
            v = row.row(0, named=True)
            cells.append(f"{v['value']:.4f} [{v['ci_low']:.4f}, {v['ci_high']:.4f}]")
        lines.append("| " + " | ".join(cells) + " |")
    users = test["users"].max()
    return "\n".join(lines) + f"\n\n{users} test users evaluated."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a name in bench/datasets.json, 'sample' or 'long-span'")
    parser.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: config)")
    parser.add_argument("--each-behavior", default="",
                        help="also evaluate the hybrid with each of these behavioural models pinned (comma-separated, "
                             "e.g. cosine,rp3beta:0.2,rp3beta:0.5,ease) and print their test NDCG@10 side by side")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_settings()
    started = time.perf_counter()
    if args.dataset == "sample":
        catalog = read_catalog(config.input_dir)
        products = catalog.products
        interactions = read_event_log(config.input_dir, products["product_id"]).interactions
        protocols = tuple(config.evaluation.protocols)
    elif args.dataset == "long-span":
        products, interactions = long_span_shop()
        protocols = tuple(config.evaluation.protocols)
    else:
        dataset = load_dataset(args.dataset, REGISTRY)
        products, interactions, protocols = dataset.products, dataset.interactions, dataset.protocols
    loaded = time.perf_counter()
    embeddings = embed_products(products, config.model.embedding_model, config.cache_dir / "embeddings.duckdb",
                                config.model.encode_batch_size)
    embedded = time.perf_counter()
    settings = evaluation_settings(config)
    overrides = {"protocols": protocols}
    if args.resamples:
        overrides["bootstrap_resamples"] = args.resamples
    settings = type(settings)(**{**settings.__dict__, **overrides})
    result = evaluate(interactions, embeddings.product_ids, embeddings.vectors, scoring_settings(config), settings)
    done = time.perf_counter()

    print(f"\n## {args.dataset}: {products.height:,} products, {interactions['user_id'].n_unique():,} users, "
          f"{interactions.height:,} events\n")
    for protocol in protocols:
        print(f"### {protocol}, test split (full ranking over all products, the user's excluded products left out)\n")
        print(table(result, protocol))
        print()
    print("validation tuning (each configuration tried, its best alpha and validation NDCG@10):")
    for row in result.tuning.iter_rows(named=True):
        if row["validation_ndcg_at_10"] is not None:
            print(f"  {row['protocol']}: {row['behavior_model']}, half-life {row['half_life_events']:g} events: "
                  f"alpha {row['best_alpha']:g}, {row['validation_ndcg_at_10']:.4f} "
                  f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}] ({row['users']} users)")
    print(f"chosen: {result.chosen_behavior.label}, alpha {result.chosen_alpha:g}, half-life "
          f"{result.chosen_half_life_events or 0:g} events; {result.choice_reason}")
    print(f"elapsed: load {loaded - started:.1f} s, embeddings {embedded - loaded:.1f} s "
          f"({embeddings.encoded} encoded, {embeddings.cached} cached), evaluation {done - embedded:.1f} s, "
          f"total {done - started:.1f} s on {os.cpu_count()} cores ({platform.processor() or platform.machine()})")
    if args.each_behavior:
        print()
        print(behavior_table(args.dataset, interactions, embeddings, config, settings, protocols, result,
                             [BehaviorSpec.parse(label) for label in args.each_behavior.split(",")]))


def behavior_table(name, interactions, embeddings, config, settings, protocols, auto, specs) -> str:
    """Each behavioural model pinned in turn (half-life and alpha still chosen on validation), its test NDCG@10
    on every protocol with 95% intervals, beside the nightly's own choice ("auto") and EASE."""
    header = ["behavioural model"] + [f"{p} test NDCG@10" for p in protocols] + ["alpha, half-life", "evaluation s"]
    lines = [f"### {name}: each behavioural model, hybrid tuned on validation", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cells(result: EvaluationResult, model: str, alpha) -> list[str]:
        out = []
        for protocol in protocols:
            row = result.metrics.filter(
                (pl.col("protocol") == protocol) & (pl.col("split") == "test") & (pl.col("model") == model)
                & ((pl.col("alpha") == alpha) if alpha is not None else pl.col("alpha").is_null())
                & (pl.col("metric") == "ndcg") & (pl.col("k") == 10) & (pl.col("segment") == "all"))
            out.append("—" if row.is_empty() else
                       "{value:.4f} [{ci_low:.4f}, {ci_high:.4f}]".format(**row.row(0, named=True)))
        return out

    for spec in specs:
        if spec.kind == "ease" and len(embeddings.product_ids) > settings.ease_max_products:
            lines.append(f"| {spec.label} | " + " | ".join("too many products" for _ in protocols) + " | — | — |")
            continue
        scoring = replace(scoring_settings(config), behavior=spec, behavior_options=None)
        started = time.perf_counter()
        pinned = evaluate(interactions, embeddings.product_ids, embeddings.vectors, scoring, settings, progress=False)
        seconds = time.perf_counter() - started
        lines.append(f"| {spec.label} | " + " | ".join(cells(pinned, "hybrid", pinned.chosen_alpha))
                     + f" | {pinned.chosen_alpha:g}, {pinned.chosen_half_life_events or 0:g} | {seconds:.0f} |")
    lines.append(f"| **auto: {auto.chosen_behavior.label}** (the nightly's choice) | "
                 + " | ".join(cells(auto, "hybrid", auto.chosen_alpha))
                 + f" | {auto.chosen_alpha:g}, {auto.chosen_half_life_events or 0:g} | — |")
    lines.append("| EASE reference (lambda tuned on validation) | " + " | ".join(cells(auto, "ease", None)) + " | — | — |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
