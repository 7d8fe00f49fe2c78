"""Settings: the original design's config.json shape, env overrides, and fail-fast validation."""

from __future__ import annotations

import json

import pytest

from pipeline.config import ConfigError, load_settings


def write(tmp_path, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_project_config_loads_with_original_keys():
    settings = load_settings(environ={})
    assert settings.model.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert settings.model.hybrid_alpha == "auto"  # chosen nightly on validation; a number pins it
    assert settings.model.top_k == 10
    assert settings.frontend.items_per_page == 12
    assert settings.schedule.cron == "0 2 * * *"


def test_relative_paths_resolve_beside_the_config_file(tmp_path):
    settings = load_settings(write(tmp_path, {"data": {"warehouse": "out/w.duckdb"}}), environ={})
    assert settings.warehouse_path == tmp_path / "out" / "w.duckdb"


@pytest.mark.parametrize("config, key", [
    ({"model": {"hybrid_alpha": 1.5}}, "model.hybrid_alpha"),
    ({"model": {"hybrid_alpha": -0.1}}, "model.hybrid_alpha"),
    ({"model": {"top_k": 0}}, "model.top_k"),
    ({"model": {"top_k": "ten"}}, "model.top_k"),
    ({"model": {"temperature": 0.3}}, "model.temperature"),
    ({"modle": {}}, "modle"),
    ({"model": {"faiss_index": "annoy"}}, "model.faiss_index"),
    ({"schedule": {"cron": "nightly"}}, "schedule.cron"),
    ({"model": {"exclude_events": ["bought"]}}, "model.exclude_events"),
    ({"model": {"behavior_model": "slim"}}, "model.behavior_model"),
    ({"model": {"behavior_model": "ease:strong"}}, "model.behavior_model"),
    ({"evaluation": {"behavior_models": ["rp3beta:0.2", "als"]}}, "evaluation.behavior_models"),
])
def test_bad_values_fail_fast_naming_the_key(tmp_path, config, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_settings(write(tmp_path, config), environ={})


def test_environment_overrides_a_key_with_its_type(tmp_path):
    path = write(tmp_path, {"model": {"hybrid_alpha": 0.2}})
    settings = load_settings(path, environ={"SHOPREC__MODEL__HYBRID_ALPHA": "0.7",
                                            "SHOPREC__DATA__INPUT_DIR": "elsewhere"})
    assert settings.model.hybrid_alpha == 0.7
    assert settings.input_dir == tmp_path / "elsewhere"


def test_environment_override_is_validated_too(tmp_path):
    with pytest.raises(ConfigError, match="'model.top_k'"):
        load_settings(write(tmp_path, {}), environ={"SHOPREC__MODEL__TOP_K": "-3"})


def test_config_file_named_by_environment(tmp_path):
    path = write(tmp_path, {"model": {"top_k": 7}})
    assert load_settings(environ={"SHOPREC_CONFIG": str(path)}).model.top_k == 7


def test_missing_config_file_named(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.json"):
        load_settings(tmp_path / "nowhere.json", environ={})
