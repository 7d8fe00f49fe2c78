"""How a nightly run grows: every asset's wall time and peak memory at three shop sizes, with growth factors,
and top-K scoring against the naive method and the machine's matrix-product ceiling.

    python -m bench.scale                       (small, medium and large; about an hour on 2 cores)
    python -m bench.scale --sizes small,medium  (any subset)

Each size's shop is generated once (pipeline.synthetic) under .cache/bench/<size>/input and kept. A run is
cold except for the embedding cache (.cache/bench/cache, shared: product i of a smaller shop is product i of
a larger one, so encoding the large catalog once serves all three): a fresh warehouse, fresh Dagster storage and run history, the nightly
job run as a person runs it (`dagster job execute`, its own process). Embeddings are timed too, but the
goals exclude them, so the "nightly, excluding embeddings" row leaves them out; the first run of a size pays
for encoding its catalog once. Per-asset times and peaks are the `elapsed_seconds` and `peak_rss_mb` every
asset reports; "whole run" is the command's wall time and the process's peak RSS.

After each cold run, an incremental night (`nightly_incremental`, same Dagster home and warehouse) on the
shop a day later (`pipeline.synthetic.next_day`: 1% of products changed, 5% of users active; made once under
.cache/bench/<size>/input_next; its new product texts dropped from the embedding cache first, so it encodes
them as a shop's night would): its assets, its whole run and its assets but the embeddings against the cold
one's, and what it recomputed.
`--no-incremental` skips it.

Scoring, measured in this process on the run's own profiles and embeddings:
- ceiling: one dense float32 product profiles (users x 384) @ embeddings.T (384 x products), in tiles,
  results discarded, timed both as one product on every core and as one single-threaded product per core
  (`pipeline.parallel`), the faster counting: the least any exact scoring of every (user, product) pair
  can cost;
- naive: what the original design describes, sklearn's cosine_similarity of every profile with every product
  then a full argsort per user (content only);
- ours: `pipeline.recommend.recommend` (exact content candidates + behavioural candidates, fused, top K).
Where a size has more users than `--scoring-users`, all three are timed on the same random users and scaled
to every user (each is linear in users); the table says so. Each is timed three times, taking turns, and the
fastest counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.synthetic import ShopSize, write_shop

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "bench"
CACHE = WORK / "cache"
SIZES = {  # users, products, events
    "small": (10_000, 5_000, 200_000),
    "medium": (100_000, 20_000, 2_000_000),
    "large": (1_000_000, 100_000, 20_000_000),
}
EMBEDDINGS = "product_embeddings"
NEXT_DAY = {"changed_share": 0.01, "active_share": 0.05}
"""The incremental night's day: 1% of products changed, 5% of users active (the issue's goal)."""


@dataclass
class SizeResult:
    name: str
    users: int
    products: int
    events: int
    assets: dict[str, tuple[float, float]] = field(default_factory=dict)
    """asset -> (seconds, peak MB)"""
    run_seconds: float = 0.0
    run_peak_mb: float = 0.0
    scoring: dict[str, float] = field(default_factory=dict)
    """ceiling / naive / ours -> seconds for every user"""
    scoring_sample: int = 0
    incremental: "SizeResult | None" = None
    """The incremental night after the cold one (`--incremental`)."""
    plan: dict[str, int] = field(default_factory=dict)
    """What the incremental night found: users recomputed, products changed and encoded."""
    behavior_fit: tuple[str, float] | None = None
    """The behavioural model the night chose and the seconds its fit took (inside `behavior_model`)."""


def shop_input(name: str) -> tuple[Path, ShopSize]:
    users, products, events = SIZES[name]
    size = ShopSize.with_events(users, products, events)
    folder = WORK / name / "input"
    stamp = folder / "size.json"
    wanted = json.dumps(size.__dict__, sort_keys=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"[{name}] generating {users:,} users x {products:,} products x ~{events:,} events ...", flush=True)
        started = time.perf_counter()
        write_shop(folder, size)
        stamp.write_text(wanted)
        print(f"[{name}] generated in {time.perf_counter() - started:.0f}s", flush=True)
    return folder, size


def next_day_input(name: str, input_dir: Path) -> Path:
    """The shop a day later (`pipeline.synthetic.next_day`: 1% of products changed, 5% of users back), made
    once beside the shop's input."""
    import polars as pl

    from pipeline.synthetic import next_day

    folder = WORK / name / "input_next"
    stamp = folder / "made_from.json"
    wanted = (input_dir / "size.json").read_text() + json.dumps(NEXT_DAY)
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"[{name}] making the next day's input ...", flush=True)
        products, events = next_day(pl.read_csv(input_dir / "products.csv"),
                                    pl.read_csv(input_dir / "interactions.csv"), **NEXT_DAY)
        folder.mkdir(parents=True, exist_ok=True)
        products.write_csv(folder / "products.csv")
        events.write_csv(folder / "interactions.csv")
        stamp.write_text(wanted)
    return folder


def forget_changed_texts(input_dir: Path, next_dir: Path, home: Path) -> None:
    """Drop the next day's new product texts from the embedding cache, so that the incremental night encodes
    them as it would in a shop (an earlier bench run left them cached). Keyed by the model and backend of
    the runs in `home`'s config (environment overrides included), as the night will look them up."""
    from pipeline.config import load_settings
    from pipeline.embeddings import EmbeddingCache, product_text, text_hash
    from pipeline.ingest import read_catalog

    before = set(product_text(read_catalog(input_dir).products).to_list())
    new = [text for text in product_text(read_catalog(next_dir).products).to_list() if text not in before]
    model = load_settings(str(home.parent / "config.json")).model
    cache = EmbeddingCache(CACHE / "embeddings.duckdb")
    try:
        cache.forget([text_hash(model.embedding_model, text, model.embedding_backend) for text in new])
    finally:
        cache.close()


def run_nightly(name: str, input_dir: Path, job: str = "nightly") -> tuple[SizeResult, Path]:
    """A run of `job` as a person runs it; `nightly` starts cold but for the embedding cache (a fresh Dagster
    home and warehouse), `nightly_incremental` follows it in the same ones. Returns its figures and the home."""
    base = WORK / name
    home, warehouse_dir = base / "dagster_home", base / "warehouse"
    if job == "nightly":
        for stale in (home, warehouse_dir, CACHE / "explanations.sqlite"):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        home.mkdir(parents=True)
        warehouse_dir.mkdir(parents=True)
    config = base / "config.json"
    config.write_text(json.dumps({"data": {"input_dir": str(input_dir), "warehouse": str(warehouse_dir / "warehouse.duckdb"),
                                           "cache_dir": str(CACHE)}}))
    env = {**os.environ, "SHOPREC_CONFIG": str(config), "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("SHOPREC_FAULT", None)
    log_path = base / f"{job}.log"
    print(f"[{name}] {job} run (log: {log_path}) ...", flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "dagster", "job", "execute", "-m", "assets.definitions",
                                    "-j", job], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"[{name}] the {job} run failed; see {log_path}")
    users, products, events = SIZES[name]
    result = SizeResult(name, users, products, events, run_seconds=seconds, run_peak_mb=usage.ru_maxrss / 1024)
    result.assets = asset_figures(home, job)
    result.behavior_fit = behavior_fit(home, job)
    # Each asset restarts the kernel's high-water mark (pipeline.memory.reset_peak_rss), which is also what
    # the exit status's ru_maxrss reads: that is the last asset's peak, so the run's is the highest of all.
    result.run_peak_mb = max([result.run_peak_mb, *(peak for _, peak in result.assets.values())])
    print(f"[{name}] {job} run: {seconds:.0f}s, peak {result.run_peak_mb:,.0f} MB", flush=True)
    return result, home


def plan_figures(home: Path) -> dict[str, int]:
    """What the newest incremental night recomputed: its plan's counts and the products it encoded."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    run = instance.get_runs(dg.RunsFilter(job_name="nightly_incremental"), limit=1)[0]
    wanted = {"night_plan": ("users_recomputed", "users_with_changed_events", "users_listing_changed_products",
                             "users_keeping_reworded_products", "changed_products"), EMBEDDINGS: ("encoded",),
              "interactions": ("rows_skipped", "rows_checked")}
    figures = {}
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.dagster_event.event_specific_data.materialization
        for key in wanted.get(materialization.asset_key.to_user_string(), ()):
            figures[key] = int(materialization.metadata[key].value)
    return figures


def asset_figures(home: Path, job: str = "nightly") -> dict[str, tuple[float, float]]:
    """Each asset's reported elapsed seconds and peak memory in the runs of `job`: a step that did several
    partitions reports its figures on each, so take them once per run; runs (one per bucket, when fanned
    out) add up."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    figures: dict[str, tuple[float, float]] = {}
    for run in instance.get_runs(dg.RunsFilter(job_name=job)):
        in_run: dict[str, tuple[float, float]] = {}
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            materialization = entry.dagster_event.event_specific_data.materialization
            metadata = materialization.metadata
            if "elapsed_seconds" not in metadata:
                continue
            name = materialization.asset_key.to_user_string()
            seconds = float(metadata["elapsed_seconds"].value)
            peak = float(metadata["peak_rss_mb"].value) if "peak_rss_mb" in metadata else 0.0
            known = in_run.get(name, (0.0, 0.0))
            in_run[name] = (max(known[0], seconds), max(known[1], peak))
        for name, (seconds, peak) in in_run.items():
            total, highest = figures.get(name, (0.0, 0.0))
            figures[name] = (total + seconds, max(highest, peak))
    return figures


def behavior_fit(home: Path, job: str) -> tuple[str, float] | None:
    """The newest `job` run's behavioural model and its fitting seconds (the `behavior_model` asset's metadata;
    None on a night that did not fit one)."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    for run in instance.get_runs(dg.RunsFilter(job_name=job), limit=1):
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            materialization = entry.dagster_event.event_specific_data.materialization
            metadata = materialization.metadata
            if materialization.asset_key.to_user_string() == "behavior_model" and "fitting_seconds" in metadata:
                return str(metadata["behavior_model"].value), float(metadata["fitting_seconds"].value)
    return None


def stored_output(home: Path, asset: str):
    """An asset's value as the run's filesystem IO manager stored it (partitions concatenated by caller)."""
    from assets.resources import load_value

    path = home / "storage" / asset
    if path.is_dir():
        return [load_value(part) for part in sorted(path.iterdir()) if not part.name.startswith(".")]
    return load_value(path)


def time_scoring(result: SizeResult, home: Path, sample: int, top_k: int = 10) -> None:
    """Ceiling, naive and ours on the same users (a random sample when there are more than `sample`)."""
    from sklearn.metrics.pairwise import cosine_similarity

    from pipeline.config import load_settings
    from pipeline.parallel import in_parallel
    from pipeline.recommend import RecommendationSettings, recommend
    from pipeline.vector_index import load_index

    embeddings = stored_output(home, EMBEDDINGS)
    profiles = stored_output(home, "user_profiles")
    parts = profiles if isinstance(profiles, list) else [profiles]  # one per user bucket when partitioned
    behavior = stored_output(home, "behavior_model")
    choice = stored_output(home, "alpha_sweep")
    index_file = stored_output(home, "faiss_index").path
    index, _ = load_index(index_file)
    config = load_settings(str(home.parent / "config.json"))
    products = stored_output(home, "products")
    in_stock = products["in_stock"].to_numpy()
    items = embeddings.vectors.astype(np.float32)

    n_users = sum(len(p.matrix.user_ids) for p in parts)
    rng = np.random.default_rng(0)
    chosen_part = parts[0]
    take = min(sample, len(chosen_part.matrix.user_ids))
    rows = np.sort(rng.choice(len(chosen_part.matrix.user_ids), size=take, replace=False))
    scale = n_users / take
    result.scoring_sample = take if take < n_users else 0
    vectors = np.ascontiguousarray(chosen_part.vectors[rows])

    def product(first: int, users: int, tile: int = 8192) -> None:
        block = vectors[first:first + users]
        out = np.empty((len(block), tile), dtype=np.float32)  # reused, as ours reuses its own
        for start in range(0, len(items), tile):
            part = items[start:start + tile].T
            np.matmul(block, part, out=out if part.shape[1] == tile else None)

    def ceiling() -> None:
        for first in range(0, take, 4096):
            product(first, 4096)

    def ceiling_per_core() -> None:
        list(in_parallel(lambda first: product(first, 2048), range(0, take, 2048)))

    naive_take = min(take, 2000)

    def naive() -> None:
        for first in range(0, naive_take, 500):
            similarity = cosine_similarity(vectors[first:min(first + 500, naive_take)], items)
            np.argsort(-similarity, axis=1)[:, :top_k]

    matrix = chosen_part.matrix
    subset = type(matrix)(user_ids=[matrix.user_ids[r] for r in rows], product_ids=matrix.product_ids,
                          weights=matrix.weights[rows], engagement=matrix.engagement[rows],
                          excluded=matrix.excluded[rows])

    def ours() -> None:
        recommend(subset, vectors, items, index, behavior, in_stock,
                  RecommendationSettings(choice.alpha, config.model.top_k, config.model.candidates), progress=False)

    # Each method SCORING_REPEATS times, taking turns, the fastest counting: on a shared machine one pass
    # of each differed by up to 30% between runs of the same code.
    methods = {"ceiling": ceiling, "ceiling_per_core": ceiling_per_core, "naive": naive, "ours": ours}
    fastest = {name: float("inf") for name in methods}
    for _ in range(SCORING_REPEATS):
        for name, method in methods.items():
            started = time.perf_counter()
            method()
            fastest[name] = min(fastest[name], time.perf_counter() - started)
    result.scoring["ceiling"] = min(fastest["ceiling"], fastest["ceiling_per_core"]) * scale
    result.scoring["naive"] = fastest["naive"] * n_users / naive_take
    result.scoring["ours"] = fastest["ours"] * scale


SCORING_REPEATS = 3
"""How many times each scoring method is timed (taking turns; the fastest counts)."""


def growth(a: float, b: float) -> str:
    return f"x{b / a:.1f}" if a > 0 else "-"


def table(results: list[SizeResult]) -> str:
    sizes = [f"{r.users:,} u x {r.products:,} p x {r.events / 1e6:g}M ev" for r in results]
    header = ["step"] + [f"{name}: s / peak MB" for name in sizes]
    header += [f"growth {a.name}->{b.name} (time, memory)" for a, b in zip(results, results[1:])]
    assets = list(dict.fromkeys(a for r in results for a in r.assets))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label, figures):
        cells = [f"{s:,.1f} / {m:,.0f}" if s is not None else "-" for s, m in figures]
        cells += [f"{growth(a[0], b[0])}, {growth(a[1], b[1])}" if a[0] and b[0] else "-"
                  for a, b in zip(figures, figures[1:])]
        lines.append("| " + " | ".join([label, *cells]) + " |")

    for asset in assets:
        row(asset, [r.assets.get(asset, (None, None)) for r in results])
    row("**nightly, excluding embeddings** (sum of assets)",
        [(without_embeddings(r), max((m for a, (_, m) in r.assets.items() if a != EMBEDDINGS), default=0.0))
         for r in results])
    row("whole run (command wall time, process peak)", [(r.run_seconds, r.run_peak_mb) for r in results])
    fits = [f"{r.behavior_fit[1]:,.1f} s ({r.behavior_fit[0]})" if r.behavior_fit else "-" for r in results]
    lines.append("| " + " | ".join(["behavioural model fit, inside behavior_model (the chosen kind)", *fits,
                                     *[""] * (len(results) - 1)]) + " |")
    lines.append("")
    header = ["top-K scoring, every user"] + sizes + [f"growth {a.name}->{b.name}" for a, b in zip(results, results[1:])]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    labels = {"ceiling": "ceiling: float32 profiles @ embeddings.T (s)",
              "ours": "ours: recommend(), exact content + behaviour, fused top-K (s)",
              "naive": "naive: sklearn cosine_similarity + argsort (s)"}
    for key, label in labels.items():
        values = [r.scoring.get(key) for r in results]
        cells = [f"{v:,.1f}" if v is not None else "-" for v in values]
        cells += [growth(a, b) if a and b else "-" for a, b in zip(values, values[1:])]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    ratios = [f"{r.scoring['ours'] / r.scoring['ceiling']:.2f}x ceiling, {r.scoring['naive'] / r.scoring['ours']:.1f}x faster than naive"
              if r.scoring else "-" for r in results]
    lines.append("| " + " | ".join(["ours vs ceiling / naive", *ratios, *[""] * (len(results) - 1)]) + " |")
    notes = [f"{r.name}: scoring timed on {r.scoring_sample:,} random users (naive on {min(r.scoring_sample, 2000):,}), "
             f"scaled to {r.users:,}" for r in results if r.scoring_sample]
    lines += [""] + notes if notes else []
    if any(r.incremental for r in results):
        lines += ["", incremental_table(results)]
    return "\n".join(lines)


def without_embeddings(result: SizeResult) -> float:
    """The sum of a run's asset times but the embeddings' (whose encoding the goals leave out)."""
    return sum(seconds for asset, (seconds, _) in result.assets.items() if asset != EMBEDDINGS)


def incremental_table(results: list[SizeResult]) -> str:
    """The incremental night after each cold one: each asset it ran, its whole run against the cold one's."""
    done = [r for r in results if r.incremental]
    header = ["incremental night (1% products changed, 5% users active)"] + [
        f"{r.name}: s / peak MB" for r in done]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    assets = list(dict.fromkeys(a for r in done for a in r.incremental.assets))
    for asset in assets:
        cells = [(lambda f: f"{f[0]:,.1f} / {f[1]:,.0f}" if f else "-")(r.incremental.assets.get(asset))
                 for r in done]
        lines.append("| " + " | ".join([asset, *cells]) + " |")
    rows = {
        "whole run (command wall time, process peak)":
            lambda r: f"{r.incremental.run_seconds:,.1f} / {r.incremental.run_peak_mb:,.0f}",
        "share of the cold night's whole run":
            lambda r: f"{100 * r.incremental.run_seconds / r.run_seconds:.1f}% of {r.run_seconds:,.1f} s",
        "**excluding embeddings** (sum of assets; the cold goal's measure), share of the cold night's":
            lambda r: f"{without_embeddings(r.incremental):,.1f} s = "
                      f"{100 * without_embeddings(r.incremental) / without_embeddings(r):.1f}% of "
                      f"{without_embeddings(r):,.1f} s",
        "users recomputed (events changed; listing a changed product)":
            lambda r: f"{r.plan.get('users_recomputed', 0):,} of {r.users:,} "
                      f"({r.plan.get('users_with_changed_events', 0):,}; "
                      f"{r.plan.get('users_listing_changed_products', 0):,})",
        "users kept though a listed product's text changed (cosine moved <= scale.text_change_tolerance)":
            lambda r: f"{r.plan.get('users_keeping_reworded_products', 0):,}",
        "products changed / encoded": lambda r: f"{r.plan.get('changed_products', 0):,} / {r.plan.get('encoded', 0):,}",
        "event rows taken as published / read and checked (0 taken: the whole log read)":
            lambda r: f"{r.plan.get('rows_skipped', 0):,} / {r.plan.get('rows_checked', 0):,}",
    }
    for label, cell in rows.items():
        lines.append("| " + " | ".join([label, *(cell(r) for r in done)]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--scoring-users", type=int, default=20_000,
                        help="time scoring on at most this many users and scale to all (default 20000)")
    parser.add_argument("--no-incremental", action="store_true",
                        help="skip the incremental night that follows each cold one")
    args = parser.parse_args()
    results = []
    for name in args.sizes.split(","):
        input_dir, _ = shop_input(name)
        result, home = run_nightly(name, input_dir)
        time_scoring(result, home, args.scoring_users)
        if not args.no_incremental:
            next_dir = next_day_input(name, input_dir)
            forget_changed_texts(input_dir, next_dir, home)
            result.incremental, _ = run_nightly(name, next_dir, job="nightly_incremental")
            result.plan = plan_figures(home)
        results.append(result)
        print(table(results), flush=True)
    print(f"\n{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB, "
          f"{dt.date.today().isoformat()}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
