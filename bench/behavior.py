"""What each behavioural model costs to fit at the three shop sizes of `bench.scale`: seconds and peak memory.

    python -m bench.behavior                       (small, medium and large)
    python -m bench.behavior --sizes small,medium  (any subset)

For each size, the shop `bench.scale` generates (kept under .cache/bench/<size>/input) is read as the pipeline
reads it and turned into the interaction matrix once (saved beside it); then every model is fitted in a process
of its own, so that its peak memory (the kernel's high-water mark, reset once the matrix is loaded, less the
resident memory then) is its own: cosine, RP3beta with one beta, RP3beta with the two betas the nightly tries (one shared pass), and EASE
where the catalog is small enough for its dense inverse (`evaluation.ease_max_products`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.scale import SIZES, WORK, shop_input

MODELS = ("cosine", "rp3beta:0.2", "rp3beta:0.2+rp3beta:0.5", "ease")


def matrix_path(name: str) -> Path:
    return WORK / name / "weights.npz"


def build_matrix(name: str) -> Path:
    """The size's users x products interest weights, as the nightly builds them, saved once."""
    from pipeline.config import load_settings
    from pipeline.ingest import read_catalog, read_event_log
    from pipeline.profiles import interaction_matrix

    path = matrix_path(name)
    folder, _ = shop_input(name)
    if path.exists() and path.stat().st_mtime > (folder / "interactions.csv").stat().st_mtime:
        return path
    started = time.perf_counter()
    products = read_catalog(folder).products
    events = read_event_log(folder, products["product_id"], strict=False).interactions
    matrix = interaction_matrix(events, products["product_id"].to_list(), load_settings().interest_weighting())
    sp.save_npz(path, matrix.weights)
    print(f"[{name}] interaction matrix {matrix.weights.shape} with {matrix.weights.nnz:,} entries in "
          f"{time.perf_counter() - started:.0f}s", flush=True)
    return path


def fit_one(name: str, model: str) -> dict:
    """Fit `model` ("+"-joined labels: fitted together) on the saved matrix; seconds and peak MB beyond loading."""
    from pipeline.behavior import BehaviorSpec, fit_behaviors
    from pipeline.memory import peak_rss_bytes, release_free_memory, reset_peak_rss, rss_bytes

    weights = sp.load_npz(matrix_path(name)).tocsr()
    release_free_memory()
    reset_peak_rss()  # the high-water mark from here on: the fit's, not the loading's
    loaded = rss_bytes() / 2 ** 20
    specs = [BehaviorSpec.parse(label) for label in model.split("+")]
    started = time.perf_counter()
    fitted = fit_behaviors(weights, [str(i) for i in range(weights.shape[1])], specs, neighbors=100)
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes() / 2 ** 20
    entries = sum(m.similarity_.nnz for m in fitted.values())
    return {"seconds": round(seconds, 1), "peak_mb": round(peak - loaded), "entries": int(entries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--fit", nargs=2, metavar=("SIZE", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit:
        print(json.dumps(fit_one(*args.fit)))
        return
    from pipeline.config import load_settings

    ease_max = load_settings().evaluation.ease_max_products
    sizes = args.sizes.split(",")
    figures: dict[tuple[str, str], dict | None] = {}
    for name in sizes:
        build_matrix(name)
        for model in MODELS:
            if model == "ease" and SIZES[name][1] > ease_max:
                figures[(name, model)] = None
                continue
            done = subprocess.run([sys.executable, "-m", "bench.behavior", "--fit", name, model],
                                  capture_output=True, text=True, check=True)
            figures[(name, model)] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"[{name}] {model}: {figures[(name, model)]}", flush=True)
    header = ["behavioural model"] + [f"{name}: {u:,} u x {p:,} p x {e / 1e6:g}M ev (s / peak MB)"
                                      for name, (u, p, e) in SIZES.items() if name in sizes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in MODELS:
        cells = []
        for name in sizes:
            found = figures[(name, model)]
            cells.append(f"{found['seconds']:,.1f} / {found['peak_mb']:,}" if found
                         else f"left out (> {ease_max:,} products)")
        lines.append("| " + " | ".join([model.replace("+", " and "), *cells]) + " |")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
