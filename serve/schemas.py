"""Response models: what each endpoint returns, named for what it is."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class Problem(BaseModel):
    """Why a request was not answered (401, 404, 503); a 422 lists each bad parameter instead."""

    detail: str


class Recommendation(BaseModel):
    rank: int
    product_id: str
    title: str
    category: str
    price: float | None
    score: float | None
    confidence: float | None = None
    """No calibrated probability is computed yet, so this stays null rather than invented."""
    semantic_similarity: float | None
    content_score: float | None
    behavior_score: float | None
    description: str
    blurb: str | None
    explanation: str | None
    reasoning_factors: list[str]
    evidence_product_ids: list[str]
    created_at: datetime | None


class ModelSummary(BaseModel):
    model_type: str | None = None
    hybrid_alpha: float | None = None
    hit_at_10: float | None = None
    ndcg_at_10: float | None = None


class PerformanceMetrics(BaseModel):
    response_time_ms: float
    model_inference_time_ms: float | None = None
    """Nothing is inferred per request: the lists are precomputed."""
    db_query_time_ms: float | None = None


class RecommendationsForMe(BaseModel):
    """The original design's response shape."""

    user_id: str
    total_recommendations: int
    fallback: bool
    top_recommendations: list[Recommendation]
    model_info: ModelSummary
    performance_metrics: PerformanceMetrics
    run_id: str


class UserRecommendations(BaseModel):
    user_id: str
    fallback: bool
    total: int
    offset: int
    recommendations: list[Recommendation]
    run_id: str


class HistoryEvent(BaseModel):
    product_id: str
    title: str | None
    event_type: str
    value: float
    timestamp: datetime


class UserHistory(BaseModel):
    user_id: str
    known: bool
    events: list[HistoryEvent]


class Product(BaseModel):
    product_id: str
    title: str
    description: str
    category: str
    attributes: list[str]
    price: float | None
    in_stock: bool
    updated_at: datetime | None


class SimilarProduct(BaseModel):
    rank: int
    product_id: str
    title: str
    category: str
    similarity: float


class SimilarProducts(BaseModel):
    product_id: str
    similar: list[SimilarProduct]


class ProductPage(BaseModel):
    total: int
    offset: int
    products: list[Product]
    categories: list[str]


class ModelReport(BaseModel):
    model_info: dict
    eval_metrics: list[dict]
    alpha_sweep: list[dict]


class RunInfo(BaseModel):
    run_id: str
    started_at: datetime | None
    finished_at: datetime | None
    status: str
    hybrid_alpha: float | None
    top_k: int | None


class FrontendSettings(BaseModel):
    """What the dashboard reads before anything else."""

    items_per_page: int
    max_k: int
    api_key_required: bool
    example_user_ids: list[str]
    """A few users with published lists, most active first, to try (empty when a key is required)."""


class Health(BaseModel):
    status: str
