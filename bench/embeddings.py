"""Compare the embedding backends on this CPU: throughput, agreement with PyTorch fp32, retrieval quality.

    python -m bench.embeddings                 (--texts 1000 --repeats 5; --readme writes bench/README.md)

For each backend (config `model.embedding_backend`): texts/second on the first N product texts of the sample
catalog (median and range of repeats) and on every product text of the real datasets (one pass) in
bench/datasets.json; the speedup against torch; the cosine of each vector with torch fp32's (mean, min);
and the content-only model's test NDCG@10 / Hit@10 on each dataset and protocol (95% bootstrap interval for
torch, change against torch for the others). Timings are warm (after the export and a warm-up batch), with
torch's threads and ONNX Runtime's parallel runs set to the core count, and the backends take turns every
four batches.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import statistics
import textwrap
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.evaluate import REGISTRY
from pipeline.config import load_settings
from pipeline.datasets import load_dataset
from pipeline.embeddings import EMBEDDING_BACKENDS, load_encoder, product_text
from pipeline.experiment import evaluate, evaluation_settings, scoring_settings
from pipeline.ingest import read_catalog

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "bench" / "README.md"
SECTION = "## Embedding backends"
DATASETS = ("amazon-scientific", "movielens-100k")


@dataclass
class BackendResult:
    sample_rates: list[float] = field(default_factory=list)
    """Texts/second of each repeat on the sample texts."""
    dataset_rates: dict[str, float] = field(default_factory=dict)
    cosines: list[np.ndarray] = field(default_factory=list)
    """Per text, the cosine with torch fp32's vector (sample and datasets)."""
    quality: dict[tuple[str, str], dict[str, dict]] = field(default_factory=dict)
    """(dataset, protocol) -> metric -> the test row of the content-only model."""


def interleaved_encode(encoders: dict, texts: list[str], batch_size: int) -> dict[str, tuple[np.ndarray, float]]:
    """Each backend's vectors of `texts` and its texts/second. The backends take turns every few batches, so
    a neighbour's load (this machine is shared) falls on all of them alike rather than on whoever runs then."""
    chunk = batch_size * 4
    parts: dict[str, list[np.ndarray]] = {b: [] for b in encoders}
    seconds = dict.fromkeys(encoders, 0.0)
    for start in range(0, len(texts), chunk):
        for backend, encoder in encoders.items():
            started = time.perf_counter()
            parts[backend].append(encoder.encode(texts[start:start + chunk], batch_size))
            seconds[backend] += time.perf_counter() - started
    return {b: (np.concatenate(parts[b]), len(texts) / seconds[b]) for b in encoders}


def content_only_quality(dataset, product_ids: list[str], vectors: np.ndarray, config) -> dict:
    """The content-only model's (alpha 0) test NDCG@10 and Hit@10 per protocol, through the project's own
    evaluation. Sequence recency is pinned off (not tuned), so every backend is scored by the same model."""
    settings = replace(evaluation_settings(config), protocols=dataset.protocols, alphas=(0.0,), ease_l2=(50.0,))
    scoring = replace(scoring_settings(config), half_life_events_grid=None)
    result = evaluate(dataset.interactions, product_ids, vectors, scoring, settings, progress=False)
    rows = result.metrics.filter((result.metrics["split"] == "test") & (result.metrics["model"] == "hybrid")
                                 & (result.metrics["k"] == 10) & (result.metrics["segment"] == "all"))
    return {(dataset.name, protocol): {metric: rows.filter((rows["protocol"] == protocol)
                                                           & (rows["metric"] == metric)).row(0, named=True)
                                       for metric in ("ndcg", "hit")}
            for protocol in dataset.protocols}


def run(backends: list[str], n_texts: int, repeats: int, datasets: list[str]) -> tuple[str, str]:
    import onnxruntime
    import torch

    config = load_settings()
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    batch_size = config.model.encode_batch_size
    load_before = os.getloadavg()
    sample = product_text(read_catalog(config.input_dir).products).to_list()[:n_texts]
    encoders = {b: load_encoder(config.model.embedding_model, b, config.cache_dir / "models", cores)
                for b in backends}
    for encoder in encoders.values():
        encoder.encode(sample[:batch_size], batch_size)  # warm-up

    results = {b: BackendResult() for b in backends}
    for repeat in range(repeats):
        encoded = interleaved_encode(encoders, sample, batch_size)
        for backend, (vectors, rate) in encoded.items():
            results[backend].sample_rates.append(rate)
            if repeat == 0:
                results[backend].cosines.append((vectors * encoded["torch"][0]).sum(axis=1))

    loaded = [load_dataset(name, REGISTRY) for name in datasets]
    for dataset in loaded:
        texts = product_text(dataset.products).to_list()
        product_ids = dataset.products["product_id"].to_list()
        encoded = interleaved_encode(encoders, texts, batch_size)
        for backend, (vectors, rate) in encoded.items():
            results[backend].dataset_rates[dataset.name] = rate
            results[backend].cosines.append((vectors * encoded["torch"][0]).sum(axis=1))
            results[backend].quality.update(content_only_quality(dataset, product_ids, vectors, config))
    load_after = os.getloadavg()

    table = render_table(results, n_texts, repeats, loaded)
    notes = (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {cores} cores "
             f"({cpu_model()}), {torch.get_num_threads()} torch threads, ONNX Runtime {cores} batches at a time; "
             f"batch size {batch_size}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
             f"{openvino_note(encoders)}; "
             f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (the machine is shared: the "
             f"backends take turns every 4 batches, so others' work slows them alike).")
    return table, notes


def openvino_note(encoders: dict) -> str:
    """OpenVINO's version and the precision it chose for this CPU, when the openvino backend ran."""
    if "openvino" not in encoders:
        return ""
    import openvino

    return f", openvino {openvino.__version__.split('-')[0]} computing in {encoders['openvino'].precision}"


def render_table(results: dict[str, BackendResult], n_texts: int, repeats: int, datasets) -> str:
    base = results["torch"]
    base_rate = statistics.median(base.sample_rates)
    pairs = [key for key in base.quality]
    header = [
        "backend", f"texts/s, {n_texts} sample texts (median [min–max] of {repeats})", "speedup vs torch",
        *[f"texts/s, {d.name} ({d.products.height:,} texts)" for d in datasets],
        "cosine vs torch fp32, mean / min",
        *[f"{name} {protocol}: NDCG@10 / Hit@10 (content only)" for name, protocol in pairs],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for backend, result in results.items():
        rate = statistics.median(result.sample_rates)
        cosines = np.concatenate(result.cosines)
        cells = [
            BACKEND_LABELS.get(backend, backend),
            f"{rate:.1f} [{min(result.sample_rates):.1f}–{max(result.sample_rates):.1f}]",
            f"{rate / base_rate:.2f}x",
            *[f"{result.dataset_rates[d.name]:.1f} ({result.dataset_rates[d.name] / base.dataset_rates[d.name]:.2f}x)"
              for d in datasets],
            f"{cosines.mean():.4f} / {cosines.min():.4f}",
        ]
        for pair in pairs:
            ndcg, hit = result.quality[pair]["ndcg"], result.quality[pair]["hit"]
            if backend == "torch":
                cells.append(f"{ndcg['value']:.4f} [{ndcg['ci_low']:.4f}, {ndcg['ci_high']:.4f}] / "
                             f"{hit['value']:.4f} [{hit['ci_low']:.4f}, {hit['ci_high']:.4f}]")
            else:
                ref = base.quality[pair]
                cells.append(f"{ndcg['value']:.4f} ({ndcg['value'] - ref['ndcg']['value']:+.4f}) / "
                             f"{hit['value']:.4f} ({hit['value'] - ref['hit']['value']:+.4f})")
        lines.append("| " + " | ".join(cells) + " |")
    users = ", ".join(f"{name} {protocol} {base.quality[(name, protocol)]['ndcg']['users']:,}"
                      for name, protocol in pairs)
    return "\n".join(lines) + f"\n\nTest users evaluated: {users}."


BACKEND_LABELS = {
    "torch": "torch fp32 (sentence-transformers)",
    "onnx": "onnx fp32 (ONNX Runtime)",
    "onnx-int8": "onnx-int8 (ONNX Runtime, dynamic int8)",
    "openvino": "openvino (OpenVINO, its precision for the CPU)",
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_readme(table: str, notes: str, command: str) -> None:
    """Add or replace this benchmark's section of bench/README.md, leaving the rest as it is."""
    intro = textwrap.fill(f"`{command}` (bench/embeddings.py) on {notes}", width=110)
    section = f"{SECTION}\n\n{intro}\n\n{table}\n"
    text = README.read_text(encoding="utf-8") if README.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    README.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000, help="sample product texts timed (default 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing repeats (default 5)")
    parser.add_argument("--backends", default=",".join(EMBEDDING_BACKENDS),
                        help=f"comma-separated, torch first (default {','.join(EMBEDDING_BACKENDS)})")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="names in bench/datasets.json")
    parser.add_argument("--readme", action="store_true", help="write the table into bench/README.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if backends[:1] != ["torch"]:
        parser.error("--backends must start with torch: it is the reference")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    table, notes = run(backends, args.texts, args.repeats, datasets)
    print(f"\nEmbedding backends, {notes}\n")
    print(table)
    if args.readme:
        command = "python -m bench.embeddings" + "".join(
            f" --{name} {value}" for name, value, default in [("texts", args.texts, 1000),
                                                             ("repeats", args.repeats, 5)] if value != default)
        write_readme(table, notes, command)
        print(f"\nwritten to {README.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
