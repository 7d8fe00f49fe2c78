"""The project's settings: one `config.json` in the original design's shape, each key overridable by env.

An environment variable `SHOPREC__SECTION__KEY` (JSON or a bare string) overrides `section.key`; unknown keys
and out-of-range values fail fast with a message naming the key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping, get_type_hints

ENV_PREFIX = "SHOPREC__"
CONFIG_ENV = "SHOPREC_CONFIG"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A config key is unknown, mistyped or out of range; the message names the key."""


@dataclass(frozen=True)
class ModelConfig:
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    """Sentence-transformers model name or local folder; all-MiniLM-L6-v2 loads offline from its package."""
    embedding_backend: str = "torch"
    """How the model runs on CPU: `torch` (sentence-transformers on PyTorch), `onnx` (ONNX Runtime, fp32),
    `onnx-int8` (ONNX Runtime with int8 weights: faster, vectors within ~1% of torch's) or `openvino` (the
    fp32 file in OpenVINO, bfloat16 on CPUs with AMX: the fastest there); see bench/README.md. The ONNX
    files are exported once from the local weights into `data.cache_dir`/models."""
    hybrid_alpha: float | str = "auto"
    """Weight of the behavioural score in `alpha * behavioral + (1 - alpha) * content`, in [0, 1], or
    "auto" for the alpha the nightly evaluation picks on validation."""
    top_k: int = 10
    """How many recommendations each user gets."""
    candidates: int = 200
    """Candidates per source (FAISS content neighbours, behavioural neighbours) before fusion."""
    faiss_index: str = "flat"
    """`flat` (exact inner product), `hnsw` or `ivf` (approximate, for large catalogs)."""
    similar_products: int = 20
    """Nearest neighbours published per product."""
    event_weights: dict = field(default_factory=lambda: {"view": 1.0, "cart": 3.0, "purchase": 5.0, "rating": 1.0})
    """Weight of each event type in profiles and co-occurrence; a rating's weight is scaled by (stars - 2.5)."""
    exclude_events: list = field(default_factory=lambda: ["purchase", "rating"])
    """A product a user has an event of one of these types with is never recommended to them, and is never
    an evaluation target for them after it: what they bought, and what they rated (one rates what one has
    bought, watched or read). A catalog of films or books, where every event is a consumption, lists every
    type; a shop of consumables that wants repurchases recommended lists none ([])."""
    recency_half_life_days: float = 30.0
    """An event this many days older than the same user's latest event counts half."""
    recency_half_life_events: float | str = "auto"
    """A user's event this many events back counts half; 0 switches sequence recency off; "auto" takes the
    value the nightly evaluation picks on validation from `evaluation.half_life_events_grid`."""
    neighbors_per_item: int = 100
    """Item-to-item neighbours kept per product in the behavioural model (keeps it sparse)."""
    behavior_model: str = "auto"
    """The behavioural side of the fusion: `cosine` (item-item cosine of co-engagement), `rp3beta` (a random
    walk product -> user -> product that discounts popular products; `rp3beta:0.5` sets its beta), `ease`
    (Steck's closed-form linear model, for catalogs of up to `evaluation.ease_max_products`; `ease:250` sets
    its lambda), or "auto": the nightly evaluation chooses among `evaluation.behavior_models` on validation."""
    encode_batch_size: int = 64


@dataclass(frozen=True)
class EvaluationConfig:
    protocols: list = field(default_factory=lambda: ["temporal", "leave_last_out"])
    """The first is primary: alpha is chosen on its validation split and `model_info` reports it."""
    valid_fraction: float = 0.1
    """Share of events (by time) in the validation window, just before the test window."""
    test_fraction: float = 0.1
    """Share of events (by time) in the test window, at the end."""
    target_events: list = field(default_factory=lambda: ["purchase", "cart", "rating"])
    """Event types whose products count as targets (a rating is a consumption: a ratings log's only one)."""
    sampled_negatives: int = 100
    bootstrap_resamples: int = 500
    cold_user_events: int = 5
    popular_item_share: float = 0.2
    half_life_events_grid: list = field(default_factory=lambda: [0, 1, 3, 10])
    """Sequence-recency half-lives (in events; 0 = off) tried on validation when the model's is "auto"."""
    behavior_models: list = field(default_factory=lambda: ["rp3beta:0.2", "rp3beta:0.5", "ease"])
    """Behavioural models tried on validation when `model.behavior_model` is "auto" (`ease`, tried where the
    catalog allows it, takes the lambda the EASE reference chose on the same split)."""
    max_users: int = 10_000
    """Users scored per split at most: a larger shop is evaluated on a fixed random sample of this many
    (models still learn from everyone); the intervals say how precise that is. 0: everyone."""
    ease_max_products: int = 5_000
    """EASE needs a dense products x products inverse; above this many products it is left out."""
    gate_max_ndcg_drop: float = 0.2
    """Do not publish when test NDCG@10 falls by more than this fraction against the last published run."""
    gate_min_coverage_ratio: float = 0.5
    """Do not publish when catalog coverage@10 falls below this fraction of the last published run's."""


@dataclass(frozen=True)
class ExplanationsConfig:
    provider: str = "auto"
    """"template" (offline), "openai" (any OpenAI-compatible endpoint), or "auto": openai when an endpoint
    is configured (base_url or $OPENAI_BASE_URL), else template."""
    base_url: str = ""
    """e.g. http://127.0.0.1:8080/v1 for llama.cpp's server, http://127.0.0.1:11434/v1 for Ollama; empty:
    $OPENAI_BASE_URL."""
    model: str = ""
    """Empty: $OPENAI_MODEL, else gpt-4o-mini."""
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the API key (local servers need none)."""
    timeout_seconds: float = 20.0
    """Per call."""
    max_retries: int = 2
    """Retries per call on 429, 5xx and timeouts; the client backs off exponentially."""
    concurrency: int = 8
    """Calls in flight at once."""
    max_calls: int = 2000
    """Budget per run: completions requested (a re-asked unparseable reply counts); each user bucket gets an
    equal share, rounded up."""
    max_tokens: int = 1000000
    """Budget per run: prompt + completion tokens as the endpoint reports them."""
    breaker_failures: int = 5
    """After this many failed calls in a row the rest of the run is written by the template."""
    json_mode: bool = True
    """Ask for `response_format={"type": "json_object"}` (switch off for servers that reject it)."""
    reply_schema: bool = False
    """With JSON mode, send the reply's JSON schema in it (`{"type": "json_object", "schema": ...}`, as the
    llama.cpp and llama-cpp-python servers take it): a small model then answers in the reply's shape."""
    llm_top_ranks: int = 3
    """Only the first this-many ranks of each list get LLM text; the rest get the template's."""
    llm_active_days: int = 0
    """Only users active in the last this-many days (before the newest event) get LLM text; 0: everyone."""


@dataclass(frozen=True)
class DataConfig:
    input_dir: str = "data/sample"
    """Folder with `products.{csv,parquet,jsonl}` and `interactions.{csv,parquet,jsonl}`."""
    warehouse: str = "warehouse.duckdb"
    """The published DuckDB file; the FAISS index is written beside it."""
    cache_dir: str = ".cache"
    """Embedding cache (kept between runs)."""


@dataclass(frozen=True)
class QualityConfig:
    max_quarantine_share: float = 0.01
    """The run goes on while at most this share of an input's rows break a row rule (they are quarantined);
    above it, the input check fails and nothing is published."""
    max_unknown_product_share: float = 0.05
    """Events naming products not in the catalog: tolerated (counted, quarantined, dropped) up to this share."""
    future_tolerance_minutes: float = 60.0
    """An event stamped later than now plus this is quarantined (clock skew allowance)."""
    max_title_length: int = 300
    max_description_length: int = 5000
    """A longer product description is cut at a word to at most this many characters ("…" ending it), or its
    row quarantined (`long_descriptions`); either way counted in the products asset's metadata and the log."""
    long_descriptions: str = "cut"
    """"cut" or "quarantine"."""
    categories: list = field(default_factory=list)
    """Allowed product categories; empty: any non-empty category."""
    max_volume_drop: float = 0.5
    """Publishing stops when the catalog, the events or the users with lists fall by more than this share
    against the last published run (1: never; for a night whose drop is meant, set it for that run)."""


@dataclass(frozen=True)
class ScheduleConfig:
    cron: str = "0 2 * * *"
    timezone: str = "UTC"


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    debug: bool = False
    max_k: int = 100
    """The largest `k` a request may ask for."""
    api_key: str = ""
    """When set (here or as SHOPREC__API__API_KEY), every endpoint that reads published data needs it in
    X-API-Key (/health, /frontend, /docs, /openapi.json and the dashboard's files stay public)."""
    cors_origins: list = field(default_factory=lambda: ["http://localhost:8000", "http://127.0.0.1:8000"])
    """Browser origins allowed to call the API (the dashboard's)."""


@dataclass(frozen=True)
class FrontendConfig:
    items_per_page: int = 12


EXECUTORS = ("in_process", "multiprocess", "dask", "k8s", "celery")


@dataclass(frozen=True)
class ScaleConfig:
    user_buckets: int = 4
    """Users are split into this many buckets by a stable hash of their id: the Dagster partitions of the
    per-user assets. One run can do every bucket, or one run per bucket fans out. Read when the definitions
    load; changing it renames the partitions, so the next run must be a whole one."""
    executor: str = "in_process"
    """How a run's steps execute: `in_process` (one process, fastest on one machine), `multiprocess` (a
    process per step, as many at once as cores), or on an existing engine: `dask` (dagster-dask), `k8s`
    (dagster-k8s) or `celery` (dagster-celery), whose address goes in the run config (docs/cluster/)."""
    step_storage: str = ""
    """Folder where steps leave their results for the next steps (Dagster's IO manager); empty:
    $DAGSTER_HOME/storage. When steps run on several machines, a folder on storage they all mount."""
    incremental: bool = True
    """The nightly schedule runs an incremental night (only users whose events or listed products changed are
    recomputed, with the last cold night's models) when the last cold night is recent and the configuration
    is unchanged; false: every night is cold."""
    cold_every_days: float = 7.0
    """A cold night (every model fit and evaluated again, every user recomputed) at least this often."""
    text_change_tolerance: float = 0.01
    """On an incremental night, a listed product whose text changed sends its lister back to be recomputed
    only when its cosine with the lister's profile moved by more than this (a touch-up to a long description
    moves it by thousandths); smaller moves keep the list until the next cold night."""


@dataclass(frozen=True)
class Settings:
    model: ModelConfig = field(default_factory=ModelConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    explanations: ExplanationsConfig = field(default_factory=ExplanationsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    base_dir: Path = field(default=PROJECT_ROOT, compare=False)
    """Relative paths in `data` resolve against the config file's folder."""

    def path(self, relative: str) -> Path:
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    @property
    def input_dir(self) -> Path:
        return self.path(self.data.input_dir)

    @property
    def warehouse_path(self) -> Path:
        return self.path(self.data.warehouse)

    @property
    def cache_dir(self) -> Path:
        return self.path(self.data.cache_dir)

    def interest_weighting(self, chosen_half_life_events: float | None = None):
        """The event weighting of profiles and co-occurrence; `chosen_half_life_events` is the evaluation's
        pick, used when the config says "auto"."""
        from pipeline.profiles import InterestWeighting

        half_life = self.model.recency_half_life_events
        if half_life == "auto":
            half_life = chosen_half_life_events
        return InterestWeighting(event_weights=self.model.event_weights,
                                 half_life_days=self.model.recency_half_life_days,
                                 half_life_events=half_life or None,
                                 excluded_events=tuple(self.model.exclude_events))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: _section_dict(getattr(self, f.name)) for f in fields(self) if f.name != "base_dir"}


def _section_dict(section: Any) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in fields(section)}


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the config file (default: $SHOPREC_CONFIG or ./config.json), apply env overrides, validate."""
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get(CONFIG_ENV) or PROJECT_ROOT / "config.json")
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    elif path != PROJECT_ROOT / "config.json":
        raise ConfigError(f"config file {path} does not exist")
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX):
            _apply_override(raw, name, value)
    return _build(raw, base_dir=path.resolve().parent)


def _apply_override(raw: dict[str, Any], name: str, value: str) -> None:
    parts = name[len(ENV_PREFIX):].lower().split("__")
    if len(parts) != 2:
        raise ConfigError(f"environment variable {name}: expected {ENV_PREFIX}SECTION__KEY")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    raw.setdefault(parts[0], {})[parts[1]] = parsed


def _build(raw: dict[str, Any], base_dir: Path) -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a JSON object")
    sections = {f.name: f for f in fields(Settings) if f.name != "base_dir"}
    built: dict[str, Any] = {}
    for section_name, values in raw.items():
        if section_name not in sections:
            raise ConfigError(f"unknown config key '{section_name}' (known: {', '.join(sections)})")
        section_type = get_type_hints(Settings)[section_name]
        built[section_name] = _build_section(section_name, section_type, values)
    settings = Settings(**built, base_dir=base_dir)
    _validate(settings)
    return settings


def _build_section(section_name: str, section_type: type, values: Any) -> Any:
    assert is_dataclass(section_type)
    if not isinstance(values, dict):
        raise ConfigError(f"config key '{section_name}' must be an object")
    hints = get_type_hints(section_type)
    known = {f.name for f in fields(section_type)}
    kwargs = {}
    for key, value in values.items():
        full = f"{section_name}.{key}"
        if key not in known:
            raise ConfigError(f"unknown config key '{full}' (known: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(full, hints[key], value)
    return section_type(**kwargs)


def _coerce(key: str, expected: Any, value: Any) -> Any:
    tunable = key in ("model.hybrid_alpha", "model.recency_half_life_events")
    if tunable and value == "auto":
        return value
    if tunable:
        expected = float
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected is bool and isinstance(value, bool):
        return value
    if expected is str and isinstance(value, str):
        return value
    if expected in (dict, list) and isinstance(value, expected):
        return value
    name = "a number or \"auto\"" if tunable else expected.__name__
    raise ConfigError(f"config key '{key}' must be {name}, got {value!r}")


def _is_behavior(label: Any) -> bool:
    from pipeline.behavior import BehaviorSpec

    try:
        BehaviorSpec.parse(label)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _validate(settings: Settings) -> None:
    from pipeline.embeddings import EMBEDDING_BACKENDS

    model = settings.model
    evaluation = settings.evaluation
    checks = [
        ("model.hybrid_alpha", model.hybrid_alpha == "auto" or 0.0 <= model.hybrid_alpha <= 1.0,
         "must be between 0 and 1, or \"auto\""),
        ("evaluation.protocols", bool(evaluation.protocols)
         and set(evaluation.protocols) <= {"temporal", "leave_last_out"},
         "must list temporal and/or leave_last_out"),
        ("evaluation.valid_fraction", 0 < evaluation.valid_fraction < 0.5, "must be in (0, 0.5)"),
        ("evaluation.test_fraction", 0 < evaluation.test_fraction < 0.5, "must be in (0, 0.5)"),
        ("evaluation.target_events", bool(evaluation.target_events)
         and set(evaluation.target_events) <= {"view", "cart", "purchase", "rating"}, "must list event types"),
        ("model.exclude_events", set(model.exclude_events) <= {"view", "cart", "purchase", "rating"},
         "must list event types (view, cart, purchase, rating), or be empty"),
        ("evaluation.sampled_negatives", evaluation.sampled_negatives >= 1, "must be at least 1"),
        ("evaluation.bootstrap_resamples", evaluation.bootstrap_resamples >= 10, "must be at least 10"),
        ("evaluation.gate_max_ndcg_drop", 0 <= evaluation.gate_max_ndcg_drop <= 1, "must be in [0, 1]"),
        ("evaluation.gate_min_coverage_ratio", 0 <= evaluation.gate_min_coverage_ratio <= 1,
         "must be in [0, 1]"),
        ("model.top_k", model.top_k >= 1, "must be at least 1"),
        ("model.candidates", model.candidates >= model.top_k, "must be at least model.top_k"),
        ("model.faiss_index", model.faiss_index in {"flat", "hnsw", "ivf"}, "must be one of flat, hnsw, ivf"),
        ("model.embedding_backend", model.embedding_backend in EMBEDDING_BACKENDS,
         f"must be one of {', '.join(EMBEDDING_BACKENDS)}"),
        ("model.similar_products", model.similar_products >= 1, "must be at least 1"),
        ("model.recency_half_life_days", model.recency_half_life_days > 0, "must be positive"),
        ("model.recency_half_life_events",
         model.recency_half_life_events == "auto" or model.recency_half_life_events >= 0,
         "must be 0 (off), positive, or \"auto\""),
        ("evaluation.half_life_events_grid", bool(evaluation.half_life_events_grid) and all(
            isinstance(h, (int, float)) and h >= 0 for h in evaluation.half_life_events_grid),
         "must list half-lives >= 0"),
        ("model.neighbors_per_item", model.neighbors_per_item >= 1, "must be at least 1"),
        ("model.behavior_model", model.behavior_model == "auto" or _is_behavior(model.behavior_model),
         "must be \"auto\" or a behavioural model: cosine, rp3beta[:beta], ease[:lambda]"),
        ("evaluation.behavior_models", bool(evaluation.behavior_models)
         and all(_is_behavior(label) for label in evaluation.behavior_models),
         "must list behavioural models: cosine, rp3beta[:beta], ease[:lambda]"),
        ("model.encode_batch_size", model.encode_batch_size >= 1, "must be at least 1"),
        ("api.port", 1 <= settings.api.port <= 65535, "must be a TCP port"),
        ("scale.user_buckets", 1 <= settings.scale.user_buckets <= 4096, "must be between 1 and 4096"),
        ("scale.executor", settings.scale.executor in EXECUTORS, f"must be one of {', '.join(EXECUTORS)}"),
        ("quality.max_volume_drop", 0 <= settings.quality.max_volume_drop <= 1, "must be in [0, 1]"),
        ("quality.long_descriptions", settings.quality.long_descriptions in {"cut", "quarantine"},
         "must be one of cut, quarantine"),
        ("quality.max_description_length", settings.quality.max_description_length >= 100, "must be at least 100"),
        ("scale.cold_every_days", settings.scale.cold_every_days > 0, "must be more than 0"),
        ("scale.text_change_tolerance", 0 <= settings.scale.text_change_tolerance <= 2,
         "must be between 0 (every text change recomputes its listers) and 2"),
        ("api.max_k", 1 <= settings.api.max_k <= 1000, "must be between 1 and 1000"),
        ("explanations.provider", settings.explanations.provider in {"auto", "template", "openai"},
         "must be auto, template or openai"),
        ("explanations.concurrency", settings.explanations.concurrency >= 1, "must be at least 1"),
        ("explanations.max_retries", settings.explanations.max_retries >= 0, "must be 0 or more"),
        ("explanations.timeout_seconds", settings.explanations.timeout_seconds > 0, "must be positive"),
        ("explanations.max_calls", settings.explanations.max_calls >= 0, "must be 0 or more"),
        ("explanations.max_tokens", settings.explanations.max_tokens >= 0, "must be 0 or more"),
        ("explanations.breaker_failures", settings.explanations.breaker_failures >= 1, "must be at least 1"),
        ("explanations.llm_top_ranks", settings.explanations.llm_top_ranks >= 0, "must be 0 or more"),
        ("explanations.llm_active_days", settings.explanations.llm_active_days >= 0, "must be 0 or more"),
        ("frontend.items_per_page", settings.frontend.items_per_page >= 1, "must be at least 1"),
        ("quality.max_quarantine_share", 0 <= settings.quality.max_quarantine_share <= 1, "must be in [0, 1]"),
        ("quality.max_unknown_product_share", 0 <= settings.quality.max_unknown_product_share <= 1,
         "must be in [0, 1]"),
        ("quality.future_tolerance_minutes", settings.quality.future_tolerance_minutes >= 0, "must be 0 or more"),
        ("quality.max_title_length", settings.quality.max_title_length >= 1, "must be at least 1"),
        ("schedule.cron", len(settings.schedule.cron.split()) == 5, "must be a five-field cron expression"),
    ]
    for key, ok, message in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' {message}")
    from pipeline.ingest import EVENT_TYPES

    for event_type, weight in model.event_weights.items():
        if event_type not in EVENT_TYPES:
            raise ConfigError(f"config key 'model.event_weights.{event_type}': unknown event type "
                              f"(known: {', '.join(EVENT_TYPES)})")
        if not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f"config key 'model.event_weights.{event_type}' must be a non-negative number")
