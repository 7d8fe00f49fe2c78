"""The exported embedding backends: the int8 export and OpenVINO agree with PyTorch fp32, the export is made
once and shared, and each backend keys its own cache.

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


# OpenVINO computes in bfloat16 on CPUs with AMX: over the sample's texts the cosine with torch fp32 is 0.99998
# at worst (fp32 elsewhere: 1.0). 0.999 is far from int8's perturbation and from any real fault.
MIN_OPENVINO_COSINE = 0.999


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


def test_openvino_runs_the_fp32_export_and_agrees_with_torch_fp32(cache_dir, sample_products):
    texts = product_text(sample_products).to_list()
    reference = load_encoder(MODEL, "torch").encode(texts, 16)
    encoder = load_encoder(MODEL, "openvino", cache_dir / "models")
    vectors = encoder.encode(texts, 16)

    assert vectors.shape == (50, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() >= MIN_OPENVINO_COSINE, \
        f"text {cosines.argmin()}: cosine {cosines.min():.5f} with torch fp32 ({encoder.precision})"
    # Batch-mates do not move a vector: a text encoded alone gets the vector it got in its batch.
    alone = encoder.encode(texts[-3:], 1)
    assert ((alone * vectors[-3:]).sum(axis=1) >= 0.9999).all()
    # OpenVINO reads the onnx (fp32) export: there is no export of its own.
    runs = exported_model(MODEL, "openvino", cache_dir / "models")
    assert runs == exported_model(MODEL, "onnx", cache_dir / "models")
    assert runs.name.startswith("all-MiniLM-L6-v2-onnx-") and not runs.name.startswith("all-MiniLM-L6-v2-onnx-int8")


def test_export_is_made_once_and_reused(cache_dir, int8_model):
    onnx_file = int8_model / "model.onnx"
    made = onnx_file.stat().st_mtime_ns
    load_encoder.cache_clear()

    again = exported_model(MODEL, "onnx-int8", cache_dir / "models")
    load_encoder(MODEL, "onnx-int8", cache_dir / "models")

    assert again == int8_model
    assert onnx_file.stat().st_mtime_ns == made
    assert int8_model.name in [p.name for p in (cache_dir / "models").iterdir()]
    assert not list((cache_dir / "models").glob(".partial-*"))  # no half-made export left
    meta = json.loads((int8_model / "export.json").read_text(encoding="utf-8"))
    assert (meta["model"], meta["backend"], meta["max_seq_length"]) == (MODEL, "onnx-int8", 256)
    assert int8_model.name.startswith("all-MiniLM-L6-v2-onnx-int8-")


def test_each_backend_keys_its_own_cache_entries(cache_dir, int8_model, sample_products):
    products = sample_products.head(5)
    cache = cache_dir / "embeddings.duckdb"  # models/ beside it holds the export made above

    by_torch = embed_products(products, MODEL, cache, progress=False)
    by_int8 = embed_products(products, MODEL, cache, progress=False, backend="onnx-int8")
    by_int8_again = embed_products(products, MODEL, cache, progress=False, backend="onnx-int8")

    by_openvino = embed_products(products, MODEL, cache, progress=False, backend="openvino")

    assert (by_torch.encoded, by_int8.encoded, by_int8_again.encoded, by_openvino.encoded) == (5, 5, 0, 5)
    assert set(by_torch.text_hashes).isdisjoint(by_int8.text_hashes)
    assert set(by_openvino.text_hashes).isdisjoint(by_torch.text_hashes + by_int8.text_hashes)
    np.testing.assert_array_equal(by_int8_again.vectors, by_int8.vectors)
    # torch keeps the key it had before there was a choice of backend, so existing caches stay valid.
    text = product_text(products).to_list()[0]
    assert text_hash(MODEL, text) == hashlib.sha256(f"{MODEL}\x00{text}".encode()).hexdigest()


def test_an_unknown_backend_is_refused_naming_the_config_key(tmp_path, sample_products):
    with pytest.raises(ValueError, match="model.embedding_backend must be one of torch, onnx, onnx-int8, openvino"):
        load_encoder(MODEL, "tensorrt", tmp_path / "models")
    with pytest.raises(ValueError, match="model.embedding_backend"):
        embed_products(sample_products.head(2), MODEL, tmp_path / "embeddings.duckdb", progress=False,
                       backend="onnx-int4")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"embedding_backend": "gpu"}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="'model.embedding_backend' must be one of torch, onnx, onnx-int8, openvino"):
        load_settings(config, environ={})
    assert load_settings(environ={"SHOPREC__MODEL__EMBEDDING_BACKEND": "onnx-int8"}).model.embedding_backend \
        == "onnx-int8"
