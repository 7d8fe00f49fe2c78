"""The read-only API over the published warehouse: every answer is a lookup in the current snapshot.
It also serves the built dashboard (dashboard/dist) at /, so one process shows everything.

    uvicorn serve.main:app --port 8000        (make run builds the dashboard and starts it beside the Dagster UI)
"""

import hmac
import json
import pathlib
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from pipeline.config import PROJECT_ROOT, Settings, load_settings
from pipeline.ids import ID_PATTERN, ID_RULE
from serve.paths import RouteIdsAsSent
from serve.schemas import (
    FrontendSettings, Health, HistoryEvent, ModelReport, Problem, Product, ProductPage, Recommendation,
    RecommendationsForMe, RunInfo, SimilarProduct, SimilarProducts, UserHistory, UserRecommendations,
)
from serve.snapshot import Snapshot, SnapshotStore

FALLBACK_REASON = "popular with shoppers in the last 30 days"
DASHBOARD_BUILD = PROJECT_ROOT / "dashboard" / "dist"
EXAMPLE_USERS = 6
READS_PUBLISHED = {401: {"model": Problem, "description": "missing or wrong X-API-Key, when one is configured"},
                   503: {"model": Problem, "description": "nothing published yet: the pipeline has not run"}}
"""The answers, besides 200 and 422, of every route that reads the published run (the OpenAPI schema lists them)."""
NAMES_A_PRODUCT = {**READS_PUBLISHED, 404: {"model": Problem, "description": "no such product in the published run"}}


def create_app(settings: Settings | None = None, dashboard: pathlib.Path = DASHBOARD_BUILD) -> FastAPI:
    settings = settings or load_settings()
    store = SnapshotStore(settings.warehouse_path)
    max_k = settings.api.max_k

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        store.current()
        yield

    app = FastAPI(title="shoprec", summary="Precomputed, explained product recommendations (read-only).",
                  lifespan=lifespan)
    app.add_middleware(RouteIdsAsSent)
    app.add_middleware(CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["GET"],
                       allow_headers=["X-API-Key"])

    expected_key = settings.api.api_key.encode()

    async def published(request: Request) -> Snapshot:
        """The current snapshot, for a caller with the right API key (when one is configured)."""
        if expected_key and not hmac.compare_digest(request.headers.get("x-api-key", "").encode(), expected_key):
            raise HTTPException(status_code=401, detail="missing or wrong X-API-Key")
        snapshot = store.current()
        if snapshot is None:
            raise HTTPException(status_code=503, detail="nothing published yet: run the pipeline first")
        return snapshot

    Published = Annotated[Snapshot, Depends(published)]
    UserId = Annotated[str, Query(pattern=ID_PATTERN, description=f"a user id ({ID_RULE})")]
    UserPath = Annotated[str, Path(pattern=ID_PATTERN, description=f"a user id, percent-encoded ({ID_RULE})")]
    ProductPath = Annotated[str, Path(pattern=ID_PATTERN,
                                      description=f"a product id, percent-encoded ({ID_RULE})")]
    K = Annotated[int, Query(ge=1, le=max_k, description=f"how many, 1 to {max_k}")]

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/frontend", response_model=FrontendSettings)
    async def frontend() -> FrontendSettings:
        """What the dashboard needs before its first request (open, like /health: it holds no shop data
        beyond a few user ids, and only when no API key is required)."""
        snapshot = store.current()
        examples = snapshot.example_users[:EXAMPLE_USERS] if snapshot and not expected_key else []
        return FrontendSettings(items_per_page=settings.frontend.items_per_page, max_k=max_k,
                                api_key_required=bool(expected_key), example_user_ids=examples)

    @app.get("/ready", response_model=Health, responses=READS_PUBLISHED)
    async def ready(snapshot: Published) -> Health:
        return Health(status=f"serving run {snapshot.run['run_id']}")

    @app.get("/recommend_for_me", response_model=RecommendationsForMe, responses=READS_PUBLISHED)
    async def recommend_for_me(snapshot: Published, user_id: UserId, k: K = 10) -> Response:
        # The hot path: cards are rendered to JSON once per snapshot and user, then only joined.
        started = time.perf_counter()
        cards, fallback = _rendered(snapshot, user_id)
        chosen = cards[:k]
        head = json.dumps({"user_id": user_id, "total_recommendations": len(chosen), "fallback": fallback})
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        tail = json.dumps({"model_info": snapshot.summary,
                           "performance_metrics": {"response_time_ms": elapsed, "model_inference_time_ms": None,
                                                   "db_query_time_ms": None},
                           "run_id": snapshot.run["run_id"]})
        body = b"".join([head[:-1].encode(), b', "top_recommendations": [', b", ".join(chosen), b"], ",
                         tail[1:].encode()])
        return Response(content=body, media_type="application/json")

    @app.get("/users/{user_id:id}/recommendations", response_model=UserRecommendations, responses=READS_PUBLISHED)
    async def user_recommendations(snapshot: Published, user_id: UserPath, k: K = 10,
                             offset: Annotated[int, Query(ge=0, le=10_000)] = 0) -> UserRecommendations:
        rows, fallback = _lists(snapshot, user_id)
        return UserRecommendations(user_id=user_id, fallback=fallback, total=len(rows), offset=offset,
                                   recommendations=rows[offset:offset + k], run_id=snapshot.run["run_id"])

    @app.get("/users/{user_id:id}/history", response_model=UserHistory, responses=READS_PUBLISHED)
    async def user_history(snapshot: Published, user_id: UserPath) -> UserHistory:
        events = snapshot.history.get(user_id, [])
        return UserHistory(user_id=user_id, known=bool(events), events=[
            HistoryEvent(product_id=e["product_id"], title=snapshot.products.get(e["product_id"], {}).get("title"),
                         event_type=e["event_type"], value=e["value"], timestamp=e["timestamp"]) for e in events])

    @app.get("/products", response_model=ProductPage, responses=READS_PUBLISHED)
    async def products(snapshot: Published,
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

    @app.get("/products/{product_id:id}", response_model=Product, responses=NAMES_A_PRODUCT)
    async def product(snapshot: Published, product_id: ProductPath) -> Product:
        return Product(**_product(snapshot, product_id))

    @app.get("/products/{product_id:id}/similar", response_model=SimilarProducts, responses=NAMES_A_PRODUCT)
    async def similar(snapshot: Published, product_id: ProductPath, k: K = 10) -> SimilarProducts:
        _product(snapshot, product_id)
        rows = snapshot.similar.get(product_id, [])[:k]
        return SimilarProducts(product_id=product_id, similar=[
            SimilarProduct(rank=r["rank"], product_id=r["similar_product_id"],
                           title=snapshot.products[r["similar_product_id"]]["title"],
                           category=snapshot.products[r["similar_product_id"]]["category"],
                           similarity=r["similarity"]) for r in rows])

    @app.get("/model", response_model=ModelReport, responses=READS_PUBLISHED)
    async def model(snapshot: Published) -> ModelReport:
        return ModelReport(model_info=snapshot.model_info, eval_metrics=snapshot.eval_metrics,
                           alpha_sweep=snapshot.alpha_sweep)

    @app.get("/runs/latest", response_model=RunInfo, responses=READS_PUBLISHED)
    async def latest_run(snapshot: Published) -> RunInfo:
        run = snapshot.run
        return RunInfo(run_id=run["run_id"], started_at=run["started_at"], finished_at=run["finished_at"],
                       status=run["status"], hybrid_alpha=run["hybrid_alpha"], top_k=run["top_k"])

    # Last, so every API route above wins over a file of the same name.
    if (dashboard / "index.html").is_file():
        app.mount("/", StaticFiles(directory=dashboard, html=True), name="dashboard")
    else:
        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def dashboard_missing() -> str:
            return ("<p>The dashboard is not built yet: run <code>make dashboard</code> (make run does it), "
                    "then reload. The API itself is up: see <a href='/docs'>/docs</a>.</p>")

    return app


def _rendered(snapshot: Snapshot, user_id: str) -> tuple[list[bytes], bool]:
    """The user's cards as JSON, rendered on first use and kept with the snapshot (it dies with it)."""
    key = user_id if user_id in snapshot.recommendations else None  # everyone else shares the fallback
    found = snapshot.rendered.get(key)
    if found is None:
        rows, fallback = _lists(snapshot, user_id)
        found = snapshot.rendered[key] = ([row.model_dump_json().encode() for row in rows], fallback)
    return found


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
        description=p["excerpt"], blurb=None, explanation=f"Recommended because it is {FALLBACK_REASON}.",
        reasoning_factors=[f"{FALLBACK_REASON}: {p['buyers']} buyers"], evidence_product_ids=[],
        created_at=created) for i, p in enumerate(snapshot.popular)], True


def _card(snapshot: Snapshot, row: dict) -> Recommendation:
    product = snapshot.products[row["product_id"]]
    return Recommendation(
        rank=row["rank"], product_id=row["product_id"], title=product["title"], category=product["category"],
        price=product["price"], score=row["score"], semantic_similarity=row["content_similarity"],
        content_score=row["content_score"], behavior_score=row["behavior_score"],
        description=product["excerpt"], blurb=row["blurb"], explanation=row["explanation"],
        reasoning_factors=row["reasoning_factors"] or [], evidence_product_ids=row["evidence_product_ids"] or [],
        created_at=row["computed_at"])


app = create_app() if __name__ != "__main__" else None
