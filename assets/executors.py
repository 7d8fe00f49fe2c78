"""Where a run's steps execute, chosen by `scale.executor`: in one process, in a process per step, or on an
existing distributed engine through its Dagster integration (Dask, Celery, Kubernetes), never on cluster
code of our own. The engine's address and settings go in the run config (see docs/cluster/)."""

from __future__ import annotations

import importlib

import dagster as dg

from pipeline.config import ConfigError

# name -> (module, executor, the package that provides it)
ENGINES = {
    "dask": ("dagster_dask", "dask_executor", "dagster-dask"),
    "k8s": ("dagster_k8s", "k8s_job_executor", "dagster-k8s"),
    "celery": ("dagster_celery", "celery_executor", "dagster-celery"),
}


def executor_named(name: str) -> dg.ExecutorDefinition:
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    module, attribute, package = ENGINES[name]
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError as error:
        raise ConfigError(f"scale.executor '{name}' needs the {package} package installed ({error})") from error
