"""Whether every explanation claim is true: the nightly job run on a dataset, then its cards read back.

    python -m bench.claims                       (the sample, movielens-100k and amazon-scientific)
    python -m bench.claims movielens-100k-ratings

For each dataset: a cold nightly run (`dagster job execute`, the template writer, a fresh Dagster home and
warehouse, the shared embedding cache), then from the warehouse: the run's `explanation_audit` (claims
checked, true, false by kind), the same audit run again over the published tables as read back, the share of
distinct explanation texts and blurbs, and how many cards name their own product as evidence.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from pipeline.audit import audit_claims, audit_summary
from pipeline.datasets import load_dataset
from pipeline.warehouse import read_table

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "bench" / "datasets.json"
CACHE = ROOT / ".cache"
DEFAULT = ["sample", "movielens-100k", "amazon-scientific"]


def shop_input(name: str, folder: Path) -> Path:
    """The dataset as the pipeline's two input files (the sample is its own folder)."""
    if name == "sample":
        return ROOT / "data" / "sample"
    data = load_dataset(name, REGISTRY)
    folder.mkdir(parents=True, exist_ok=True)
    # A shop must give every product a category; a dataset without any (Amazon Scientific) files them all
    # under one, named for the dataset, as a one-category shop would.
    # Titles longer than the catalog allows (Scientific's text runs title, categories and brand together)
    # are cut at a word, the whole text kept as the description.
    long = pl.col("title").str.len_chars() > 300
    data.products.with_columns(title=pl.when(long).then(pl.col("title").str.slice(0, 299).str.replace(r"\s+\S*$", ""))
                               .otherwise(pl.col("title")),
                               description=pl.when(long & (pl.col("description") == "")).then(pl.col("title"))
                               .otherwise(pl.col("description")),
                               category=pl.when(pl.col("category") == "").then(pl.lit(name.split("-")[-1].title()))
                               .otherwise(pl.col("category")),
                               attributes=pl.col("attributes").list.join("|"),
                               updated_at=pl.col("updated_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
                               ).write_csv(folder / "products.csv")
    data.interactions.with_columns(timestamp=pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                                   ).write_csv(folder / "interactions.csv")
    return folder


def run_nightly(name: str, work: Path) -> tuple[Path, float]:
    """A cold nightly run on `name`'s input; the warehouse's path and the run's seconds."""
    input_dir = shop_input(name, work / "input")
    home, warehouse = work / "dagster_home", work / "warehouse.duckdb"
    home.mkdir(parents=True, exist_ok=True)
    config = work / "config.json"
    config.write_text(json.dumps({"data": {"input_dir": str(input_dir), "warehouse": str(warehouse),
                                           "cache_dir": str(CACHE)}}))
    env = {**os.environ, "SHOPREC_CONFIG": str(config), "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("OPENAI_BASE_URL", None)  # the template writer: the claims, not an endpoint, are measured
    started = time.perf_counter()
    with open(work / "nightly.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "dagster", "job", "execute", "-m", "assets.definitions",
                               "-j", "nightly"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        errors = [line for line in (work / "nightly.log").read_text().splitlines() if "Error" in line or ("Asset check" in line and "passed" not in line)]
        raise SystemExit(f"{name}: the nightly run failed: " + "\n".join(errors[-5:]))
    return warehouse, time.perf_counter() - started


def report(name: str, warehouse: Path, seconds: float) -> None:
    tables = {t: read_table(warehouse, t) for t in (
        "products", "interactions", "item_cooccurrence", "similar_products", "recommendations", "explanations",
        "explanation_claims", "explanation_audit")}
    cards, claims = tables["explanations"], tables["explanation_claims"]
    again = audit_summary(audit_claims(claims, tables["products"], tables["interactions"],
                                       tables["item_cooccurrence"], tables["similar_products"]))
    in_run = tables["explanation_audit"].select("kind", "checked", "true", "false")
    recs = tables["recommendations"]
    cites_itself = recs.filter(pl.col("evidence_product_ids").list.contains(pl.col("product_id"))).height
    names_itself = claims.filter(pl.col("named_product_id") == pl.col("product_id")).height
    print(f"\n## {name}: {cards.height:,} cards, {claims.height:,} claims (nightly run {seconds:.0f} s)\n")
    print("| claim kind | checked in the run | true | false | checked again from the warehouse | true |")
    print("|---|---|---|---|---|---|")
    for row, re_row in zip(in_run.sort("kind").iter_rows(named=True), again.sort("kind").iter_rows(named=True)):
        print(f"| {row['kind']} | {row['checked']:,} | {row['true']:,} | {row['false']:,} | "
              f"{re_row['checked']:,} | {re_row['true']:,} |")
    distinct = cards["explanation"].n_unique() / max(cards.height, 1)
    blurbs = cards.select("product_id", "blurb").unique()
    print(f"\ndistinct explanation texts: {cards['explanation'].n_unique():,} of {cards.height:,} cards "
          f"({distinct:.1%}); distinct blurbs {blurbs['blurb'].n_unique():,} of {blurbs.height:,} products; "
          f"cards citing their own product as evidence: {cites_itself}; claims naming it: {names_itself}; "
          f"cards without a claim: {cards.filter(pl.col('reasoning_factors').list.len() == 0).height:,}; "
          f"fallbacks: {cards['fallback_reason'].drop_nulls().value_counts().rows() or 'none'}")
    print("\nexamples:")
    for blurb, text in cards.sample(4, seed=7).select("blurb", "explanation").rows():
        print(f"- {blurb} / {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="*", default=DEFAULT, help=f"default: {' '.join(DEFAULT)}")
    args = parser.parse_args()
    for name in args.datasets:
        with tempfile.TemporaryDirectory(prefix=f"claims-{name}-") as folder:
            warehouse, seconds = run_nightly(name, Path(folder))
            report(name, warehouse, seconds)


if __name__ == "__main__":
    main()
