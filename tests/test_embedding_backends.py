"""The ONNX embedding backends: the int8 export agrees with PyTorch fp32, is made once, and keys its own cache.

Real model, real export (about 10 s): nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from pipeline.config import ConfigError, load_settings
from pipeline.embeddings import embed_products, exported_model, load_encoder, product_text, text_hash
from pipeline.ingest import read_catalog
from tests.conftest import SAMPLE

MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Dynamic int8 quantization perturbs every vector a little: over the 8,000 texts of bench/embeddings.py (the
# sample catalog and two real catalogs) the cosine with torch fp32 is 0.993 on average and never below 0.98.
# 0.97 per text leaves room for another ONNX Runtime's rounding, and is far above what a real fault gives
# (a lost attention mask measured 0.03; another pooling or tokenizer sits well below 0.9).
MIN_COSINE = 0.97
MIN_MEAN_COSINE = 0.985


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def int8_model(cache_dir):
    return exported_model(MODEL, "onnx-int8", cache_dir / "models")


@pytest.fixture(scope="module")
def sample_products():
    return read_catalog(SAMPLE).products.head(50)


def test_int8_vectors_agree_with_torch_fp32(cache_dir, int8_model, sample_products):
    texts = product_text(sample_products).to_list()
    reference = load_encoder(MODEL, "torch").encode(texts, 16)
    vectors = load_encoder(MODEL, "onnx-int8", cache_dir / "models").encode(texts, 16)

    assert vectors.shape == reference.shape == (50, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() >= MIN_COSINE, f"text {cosines.argmin()}: cosine {cosines.min():.4f} with torch fp32"
    assert cosines.mean() >= MIN_MEAN_COSINE
    # Activations are quantized per batch, so a text's int8 vector depends a little on its batch-mates (and
    # their padding); encoded alone it agrees with torch all the same.
    alone = load_encoder(MODEL, "onnx-int8", cache_dir / "models").encode(texts[:3], 1)
    assert ((alone * reference[:3]).sum(axis=1) >= MIN_COSINE).all()


def test_export_is_made_once_and_reused(cache_dir, int8_model):
    onnx_file = int8_model / "model.onnx"
    made = onnx_file.stat().st_mtime_ns
    load_encoder.cache_clear()

    again = exported_model(MODEL, "onnx-int8", cache_dir / "models")
    load_encoder(MODEL, "onnx-int8", cache_dir / "models")

    assert again == int8_model
    assert onnx_file.stat().st_mtime_ns == made
    assert [p.name for p in (cache_dir / "models").iterdir()] == [int8_model.name]  # no half-made export left
    meta = json.loads((int8_model / "export.json").read_text(encoding="utf-8"))
    assert (meta["model"], meta["backend"], meta["max_seq_length"]) == (MODEL, "onnx-int8", 256)
    assert int8_model.name.startswith("all-MiniLM-L6-v2-onnx-int8-")


def test_each_backend_keys_its_own_cache_entries(cache_dir, int8_model, sample_products):
    products = sample_products.head(5)
    cache = cache_dir / "embeddings.duckdb"  # models/ beside it holds the export made above

    by_torch = embed_products(products, MODEL, cache, progress=False)
    by_int8 = embed_products(products, MODEL, cache, progress=False, backend="onnx-int8")
    by_int8_again = embed_products(products, MODEL, cache, progress=False, backend="onnx-int8")

    assert (by_torch.encoded, by_int8.encoded, by_int8_again.encoded) == (5, 5, 0)
    assert set(by_torch.text_hashes).isdisjoint(by_int8.text_hashes)
    np.testing.assert_array_equal(by_int8_again.vectors, by_int8.vectors)
    # torch keeps the key it had before there was a choice of backend, so existing caches stay valid.
    text = product_text(products).to_list()[0]
    assert text_hash(MODEL, text) == hashlib.sha256(f"{MODEL}\x00{text}".encode()).hexdigest()


def test_an_unknown_backend_is_refused_naming_the_config_key(tmp_path, sample_products):
    with pytest.raises(ValueError, match="model.embedding_backend must be one of torch, onnx, onnx-int8"):
        load_encoder(MODEL, "tensorrt", tmp_path / "models")
    with pytest.raises(ValueError, match="model.embedding_backend"):
        embed_products(sample_products.head(2), MODEL, tmp_path / "embeddings.duckdb", progress=False,
                       backend="onnx-int4")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"embedding_backend": "gpu"}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="'model.embedding_backend' must be one of torch, onnx, onnx-int8"):
        load_settings(config, environ={})
    assert load_settings(environ={"SHOPREC__MODEL__EMBEDDING_BACKEND": "onnx-int8"}).model.embedding_backend \
        == "onnx-int8"
