"""Dagster resources: the project's settings, read from config.json and the environment, and the run lock."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from pipeline.config import Settings, load_settings
from pipeline.runlock import RunLock
from pipeline.warehouse import catch_up_snapshot


class ShopSettings(dg.ConfigurableResource):
    """The project's `Settings`; `config_path` empty means $SHOPREC_CONFIG or the project's config.json.

    Set up once per run, it takes the warehouse's run lock for the run's whole life: a second run started
    while one is going refuses with the holder named (see `pipeline.runlock`). Holding it, it first lets the
    API catch up with a run that was committed but killed before its snapshot was written."""

    config_path: str = ""
    _lock: RunLock | None = PrivateAttr(default=None)

    def get(self) -> Settings:
        return load_settings(self.config_path or None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.dagster_run is None:  # outside a run (e.g. a sensor or a test building it): no lock
            return
        warehouse = self.get().warehouse_path
        self._lock = RunLock(warehouse)
        self._lock.acquire(context.dagster_run.run_id)
        catch_up_snapshot(warehouse)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
