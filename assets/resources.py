"""Dagster resources: the project's settings, read from config.json and the environment."""

from __future__ import annotations

import dagster as dg

from pipeline.config import Settings, load_settings


class ShopSettings(dg.ConfigurableResource):
    """The project's `Settings`; `config_path` empty means $SHOPREC_CONFIG or the project's config.json."""

    config_path: str = ""

    def get(self) -> Settings:
        return load_settings(self.config_path or None)
