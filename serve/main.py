"""The read-only API over the published warehouse: every answer is a lookup in the current snapshot.

    uvicorn serve.main:app --port 8000        (make run starts it beside the Dagster UI)
"""


import hmac
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.middleware.cors import CORSMiddleware

from pipeline.config import Settings, load_settings
from serve.schemas import (
    Health, HistoryEvent, ModelReport, ModelSummary, PerformanceMetrics, Product, ProductPage, Recommendation,
    RecommendationsForMe, RunInfo, SimilarProduct, SimilarProducts, UserHistory, UserRecommendations,
)
from serve.snapshot import Snapshot, SnapshotStore

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
FALLBACK_REASON = "popular with shoppers in the last 30 days"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    store = SnapshotStore(settings.warehouse_path)
    max_k = settings.api.max_k

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        store.current()
        yield

    app = FastAPI(title="shoprec", summary="Precomputed, explained product recommendations (read-only).",
                  lifespan=lifespan)
    app.add_middleware(CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["GET"],
                       allow_headers=["X-API-Key"])

    def require_key(request: Request) -> None:
        expected = settings.api.api_key
        if expected and not hmac.compare_digest(request.headers.get("x-api-key", "").encode(), expected.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong X-API-Key")

    def published() -> Snapshot:
        snapshot = store.current()
        if snapshot is None:
            raise HTTPException(status_code=503, detail="nothing published yet: run the pipeline first")
        return snapshot

    Secured = Annotated[None, Depends(require_key)]
    Published = Annotated[Snapshot, Depends(published)]
    UserId = Annotated[str, Query(pattern=ID_PATTERN, description="a user id")]
    UserPath = Annotated[str, Path(pattern=ID_PATTERN)]
    ProductPath = Annotated[str, Path(pattern=ID_PATTERN)]
    K = Annotated[int, Query(ge=1, le=max_k, description=f"how many, 1 to {max_k}")]

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok")

    @app.get("/ready", response_model=Health)
    def ready(_: Secured, snapshot: Published) -> Health:
        return Health(status=f"serving run {snapshot.run['run_id']}")

    @app.get("/recommend_for_me", response_model=RecommendationsForMe)
    def recommend_for_me(_: Secured, snapshot: Published, user_id: UserId, k: K = 10) -> RecommendationsForMe:
        started = time.perf_counter()
        rows, fallback = _lists(snapshot, user_id)
        info = snapshot.model_info
        return RecommendationsForMe(
            user_id=user_id, total_recommendations=min(k, len(rows)), fallback=fallback,
            top_recommendations=rows[:k],
            model_info=ModelSummary(model_type=info.get("model_type"), hybrid_alpha=info.get("hybrid_alpha"),
                                    hit_at_10=info.get("hit_at_10"), ndcg_at_10=info.get("ndcg_at_10")),
            performance_metrics=PerformanceMetrics(response_time_ms=round((time.perf_counter() - started) * 1000, 3)),
            run_id=snapshot.run["run_id"])

    @app.get("/users/{user_id}/recommendations", response_model=UserRecommendations)
    def user_recommendations(_: Secured, snapshot: Published, user_id: UserPath, k: K = 10,
                             offset: Annotated[int, Query(ge=0, le=10_000)] = 0) -> UserRecommendations:
        rows, fallback = _lists(snapshot, user_id)
        return UserRecommendations(user_id=user_id, fallback=fallback, total=len(rows), offset=offset,
                                   recommendations=rows[offset:offset + k], run_id=snapshot.run["run_id"])

    @app.get("/users/{user_id}/history", response_model=UserHistory)
    def user_history(_: Secured, snapshot: Published, user_id: UserPath) -> UserHistory:
        events = snapshot.history.get(user_id, [])
        return UserHistory(user_id=user_id, known=bool(events), events=[
            HistoryEvent(product_id=e["product_id"], title=snapshot.products.get(e["product_id"], {}).get("title"),
                         event_type=e["event_type"], value=e["value"], timestamp=e["timestamp"]) for e in events])

    @app.get("/products", response_model=ProductPage)
    def products(_: Secured, snapshot: Published,
                 search: Annotated[str | None, Query(max_length=100)] = None,
                 category: Annotated[str | None, Query(max_length=100)] = None,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20,
                 offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> ProductPage:
        needle = (search or "").casefold()
        found = [p for p in snapshot.products.values()
                 if (not category or p["category"] == category)
                 and (not needle or needle in p["title"].casefold() or needle in p["description"].casefold())]
        return ProductPage(total=len(found), offset=offset, categories=snapshot.categories,
                           products=[Product(**p) for p in found[offset:offset + limit]])

    @app.get("/products/{product_id}", response_model=Product)
    def product(_: Secured, snapshot: Published, product_id: ProductPath) -> Product:
        return Product(**_product(snapshot, product_id))

    @app.get("/products/{product_id}/similar", response_model=SimilarProducts)
    def similar(_: Secured, snapshot: Published, product_id: ProductPath, k: K = 10) -> SimilarProducts:
        _product(snapshot, product_id)
        rows = snapshot.similar.get(product_id, [])[:k]
        return SimilarProducts(product_id=product_id, similar=[
            SimilarProduct(rank=r["rank"], product_id=r["similar_product_id"],
                           title=snapshot.products[r["similar_product_id"]]["title"],
                           category=snapshot.products[r["similar_product_id"]]["category"],
                           similarity=r["similarity"]) for r in rows])

    @app.get("/model", response_model=ModelReport)
    def model(_: Secured, snapshot: Published) -> ModelReport:
        return ModelReport(model_info=snapshot.model_info, eval_metrics=snapshot.eval_metrics,
                           alpha_sweep=snapshot.alpha_sweep)

    @app.get("/runs/latest", response_model=RunInfo)
    def latest_run(_: Secured, snapshot: Published) -> RunInfo:
        run = snapshot.run
        return RunInfo(run_id=run["run_id"], started_at=run["started_at"], finished_at=run["finished_at"],
                       status=run["status"], hybrid_alpha=run["hybrid_alpha"], top_k=run["top_k"])

    return app


def _product(snapshot: Snapshot, product_id: str) -> dict:
    found = snapshot.products.get(product_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"unknown product {product_id!r}")
    return found


def _lists(snapshot: Snapshot, user_id: str) -> tuple[list[Recommendation], bool]:
    """The user's published list, or the popular fallback (for users never seen or without a list)."""
    rows = snapshot.recommendations.get(user_id)
    if rows:
        return [_card(snapshot, r) for r in rows], False
    created = snapshot.run.get("finished_at")
    return [Recommendation(
        rank=i + 1, product_id=p["product_id"], title=p["title"], category=p["category"], price=p["price"],
        score=None, semantic_similarity=None, content_score=None, behavior_score=None,
        description=p["description"], blurb=None, explanation=f"Recommended because it is {FALLBACK_REASON}.",
        reasoning_factors=[f"{FALLBACK_REASON}: {p['buyers']} buyers"], evidence_product_ids=[],
        created_at=created) for i, p in enumerate(snapshot.popular)], True


def _card(snapshot: Snapshot, row: dict) -> Recommendation:
    product = snapshot.products[row["product_id"]]
    return Recommendation(
        rank=row["rank"], product_id=row["product_id"], title=product["title"], category=product["category"],
        price=product["price"], score=row["score"], semantic_similarity=row["content_similarity"],
        content_score=row["content_score"], behavior_score=row["behavior_score"],
        description=product["description"], blurb=row["blurb"], explanation=row["explanation"],
        reasoning_factors=row["reasoning_factors"] or [], evidence_product_ids=row["evidence_product_ids"] or [],
        created_at=row["computed_at"])


app = create_app() if __name__ != "__main__" else None
