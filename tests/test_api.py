"""The read-only API: every endpoint and error over a warehouse built from the tiny shop, the fallback, the
API key, and a real server process that keeps answering, from one run at a time, through a new publish."""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

import httpx
import polars as pl
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.core.parameters import EncodedPath  # a path value sent as given: ids encoded as browsers do
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conftest import AWKWARD_PRODUCTS, AWKWARD_USERS, add_awkward_ids, api_server, materialize_all, write_tiny_shop
from pipeline.config import load_settings
from pipeline.ids import MAX_ID_LENGTH
from pipeline.warehouse import read_table
from serve.main import create_app


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The tiny shop, plus users and products with ids as real shops emit them (e-mail, spaces, quotes, ...)."""
    shop = write_tiny_shop(tmp_path_factory.mktemp("api"))
    add_awkward_ids(shop)
    assert materialize_all(shop.config_path).success
    return shop


@pytest.fixture(scope="module")
def client(shop):
    with TestClient(create_app(load_settings(shop.config_path))) as client:
        yield client


def test_recommend_for_me_has_the_original_shape(client):
    body = client.get("/recommend_for_me", params={"user_id": "U_TRAIL", "k": 3}).json()
    assert body["user_id"] == "U_TRAIL" and body["total_recommendations"] == 3 and body["fallback"] is False
    first = body["top_recommendations"][0]
    for field in ("rank", "product_id", "title", "category", "score", "confidence", "semantic_similarity",
                  "description", "explanation", "reasoning_factors", "created_at"):
        assert field in first
    assert first["rank"] == 1 and first["confidence"] is None  # not computed yet: null, never invented
    assert first["explanation"] and first["reasoning_factors"]
    assert set(body["model_info"]) == {"model_type", "hybrid_alpha", "hit_at_10", "ndcg_at_10"}
    assert body["model_info"]["hybrid_alpha"] == 0.2
    assert body["performance_metrics"]["response_time_ms"] >= 0
    scores = [r["score"] for r in body["top_recommendations"]]
    assert scores == sorted(scores, reverse=True)


def test_unknown_user_gets_the_labelled_popular_fallback(client):
    body = client.get("/recommend_for_me", params={"user_id": "U_NEVER_SEEN"}).json()
    assert body["fallback"] is True and body["total_recommendations"] > 0
    assert body["top_recommendations"][0]["product_id"] == "C01"  # most bought in the window
    assert "popular" in body["top_recommendations"][0]["explanation"]
    # Any id the rule allows is only ever looked up, never run: SQL in it is just an unknown user.
    sql = client.get("/recommend_for_me", params={"user_id": "'; DROP TABLE recommendations; --"}).json()
    assert sql["fallback"] is True and sql["top_recommendations"] == body["top_recommendations"]


def test_user_recommendations_page(client):
    full = client.get("/users/U_TRAIL/recommendations", params={"k": 5}).json()
    page = client.get("/users/U_TRAIL/recommendations", params={"k": 2, "offset": 2}).json()
    assert [r["rank"] for r in page["recommendations"]] == [3, 4]
    assert page["recommendations"][0] == full["recommendations"][2]


def test_history_product_similar_search_model_and_run(client, shop):
    history = client.get("/users/U_TRAIL/history").json()
    assert history["known"] and {e["product_id"] for e in history["events"]} == {"T01", "T02", "T04"}
    assert client.get("/users/NOBODY/history").json() == {"user_id": "NOBODY", "known": False, "events": []}
    product = client.get("/products/T01").json()
    assert product["title"] == "Trail Running Shoe Alpine" and product["attributes"][0] == "trail running"
    similar = client.get("/products/T01/similar", params={"k": 3}).json()["similar"]
    assert len(similar) == 3 and similar[0]["product_id"] != "T01"
    found = client.get("/products", params={"search": "knife", "category": "Kitchen"}).json()
    assert {p["product_id"] for p in found["products"]} == {"K01", "K03", "K04", "K06"}  # title or description
    assert "Camping" in found["categories"]
    model = client.get("/model").json()
    assert model["model_info"]["hybrid_alpha"] == 0.2 and model["eval_metrics"]
    run = client.get("/runs/latest").json()
    assert run["status"] == "success" and run["top_k"] == 5
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["status"].startswith("serving run ")


@pytest.mark.parametrize("path, params", [
    ("/recommend_for_me", {"user_id": "U_TRAIL", "k": 0}),
    ("/recommend_for_me", {"user_id": "U_TRAIL", "k": 101}),
    ("/recommend_for_me", {"user_id": "U_TRAIL", "k": "ten"}),
    ("/recommend_for_me", {"user_id": "x" * (MAX_ID_LENGTH + 1)}),
    ("/recommend_for_me", {"user_id": "line\nbreak"}),
    ("/recommend_for_me", {"user_id": ".."}),
    ("/recommend_for_me", {}),
    ("/products", {"limit": 1000}),
])
def test_bad_parameters_get_a_clear_422(client, path, params):
    response = client.get(path, params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


def test_every_published_id_is_served_and_every_recommended_product_opens(client, shop):
    """The id round trip: whatever ingest accepted and the pipeline published, the API serves back, with the
    ids percent-encoded in paths as the dashboard (encodeURIComponent) and any HTTP client send them."""
    lists = read_table(shop.warehouse, "recommendations")
    users = lists["user_id"].unique().to_list()
    assert set(AWKWARD_USERS) <= set(users)  # every awkward user got a list
    recommended = set(lists["product_id"])
    assert recommended & {row[0] for row in AWKWARD_PRODUCTS}, "no awkward product was recommended"
    for user in users:
        listed = lists.filter(pl.col("user_id") == user).sort("rank")["product_id"].to_list()
        body = client.get("/recommend_for_me", params={"user_id": user, "k": 100}).json()
        assert body["user_id"] == user and body["fallback"] is False
        assert [r["product_id"] for r in body["top_recommendations"]] == listed
        page = client.get(f"/users/{quote(user, safe='')}/recommendations", params={"k": 100}).json()
        assert page["user_id"] == user and [r["product_id"] for r in page["recommendations"]] == listed
        history = client.get(f"/users/{quote(user, safe='')}/history").json()
        assert history["user_id"] == user and history["known"] is True
    for product in recommended | {row[0] for row in AWKWARD_PRODUCTS}:
        assert client.get(f"/products/{quote(product, safe='')}").json()["product_id"] == product
        similar = client.get(f"/products/{quote(product, safe='')}/similar")
        assert similar.status_code == 200 and similar.json()["product_id"] == product
    # A slash left unencoded is a path of more segments, which is no route: never another product's page.
    assert client.get("/products/SKU/42-A").status_code == 404


def test_unknown_product_is_404(client):
    assert client.get("/products/NOPE").status_code == 404
    assert client.get("/products/NOPE/similar").status_code == 404


def test_api_key_guards_every_route_that_reads_published_data(shop):
    settings = load_settings(shop.config_path, environ={"SHOPREC__API__API_KEY": "s3cret"})
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        # the dashboard learns that it needs a key, and no user id leaks to callers without one
        assert client.get("/frontend").json() == {"items_per_page": 12, "max_k": 100, "api_key_required": True,
                                                  "example_user_ids": []}
        assert client.get("/recommend_for_me", params={"user_id": "U_TRAIL"}).status_code == 401
        assert client.get("/model", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        # Public, as the README says: what holds no shop data (liveness, the dashboard's settings, the API's
        # own description). Every other route, as the schema lists them, answers 401 without the key.
        assert all(client.get(path).status_code == 200 for path in ("/health", "/frontend", "/docs", "/openapi.json"))
        paths = client.get("/openapi.json").json()["paths"]
        guarded = [path.replace("{user_id}", "U_TRAIL").replace("{product_id}", "T01") for path in paths
                   if path not in ("/health", "/frontend")]
        assert len(guarded) >= 8
        assert {path: client.get(path).status_code for path in guarded} == {path: 401 for path in guarded}
        assert all(client.get(path, headers={"X-API-Key": "s3cret"}).status_code in (200, 422) for path in guarded)


def test_the_dashboard_reads_its_settings_and_users_to_try(client, shop):
    body = client.get("/frontend").json()
    assert body["items_per_page"] == 12 and body["max_k"] == 100 and body["api_key_required"] is False
    examples = body["example_user_ids"]
    assert examples[0] == "U_TRAIL"  # the most events of anyone in the tiny shop
    for user in examples:
        assert client.get("/recommend_for_me", params={"user_id": user}).json()["fallback"] is False
    shop_settings = load_settings(shop.config_path, environ={"SHOPREC__FRONTEND__ITEMS_PER_PAGE": "4"})
    with TestClient(create_app(shop_settings)) as configured:
        assert configured.get("/frontend").json()["items_per_page"] == 4


def test_the_api_serves_the_dashboard_build_or_says_how_to_make_it(shop, tmp_path):
    build = tmp_path / "dist"
    (build / "assets").mkdir(parents=True)
    (build / "index.html").write_text("<div id='root'></div>")
    (build / "assets" / "app.js").write_text("console.log('hi')")
    with TestClient(create_app(load_settings(shop.config_path), dashboard=build)) as client:
        assert client.get("/").text == "<div id='root'></div>"
        assert client.get("/assets/app.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/products/T01").json()["product_id"] == "T01"  # API routes win over files
    with TestClient(create_app(load_settings(shop.config_path), dashboard=tmp_path / "never-built")) as client:
        page = client.get("/")
        assert page.status_code == 200 and "make dashboard" in page.text


def test_cors_allows_only_the_dashboard_origin(client):
    allowed = client.get("/health", headers={"Origin": "http://localhost:8000"})
    assert allowed.headers.get("access-control-allow-origin") == "http://localhost:8000"
    other = client.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_publishing_under_load_fails_no_request_and_mixes_no_runs(tmp_path):
    """A real server process answers a steady load while the nightly job publishes a new run."""
    shop = write_tiny_shop(tmp_path)
    assert materialize_all(shop.config_path).success
    with api_server(shop.config_path) as url:
        first_run = httpx.get(f"{url}/runs/latest").json()["run_id"]
        results: list[tuple[int, str | None, set]] = []
        stop = threading.Event()

        def load():
            with httpx.Client(base_url=url, timeout=5) as http:
                while not stop.is_set():
                    response = http.get("/recommend_for_me", params={"user_id": "U_TRAIL", "k": 5})
                    body = response.json() if response.status_code == 200 else {}
                    created = {r["created_at"] for r in body.get("top_recommendations", [])}
                    results.append((response.status_code, body.get("run_id"), created))

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(1)
        published = materialize_all(shop.config_path)  # the next night, while the load runs
        assert published.success
        deadline = time.time() + 10
        while time.time() < deadline and not any(r[1] == published.run_id for r in results[-5:]):
            time.sleep(0.2)
        stop.set()
        for worker in workers:
            worker.join()
    statuses = {status for status, _, _ in results}
    assert statuses == {200}, f"failed requests: {statuses}"
    runs_seen = [run for _, run, _ in results]
    assert runs_seen[0] == first_run and runs_seen[-1] == published.run_id
    assert set(runs_seen) == {first_run, published.run_id}
    assert all(len(created) == 1 for _, _, created in results), "a response mixed two runs' rows"
    assert len(results) > 20


ODD = st.one_of(st.text(max_size=300), st.sampled_from(["' OR 1=1 --", "%00", "../../etc/passwd", "𝔘𝔰𝔢𝔯",
                                                        "\u202eevil", "x" * 2_000, "-1", "1e309"]))


@hypothesis_settings(max_examples=60, deadline=None)
@given(user=ODD, product=ODD, k=st.one_of(st.integers(-10**12, 10**12), ODD), search=ODD)
def test_no_parameter_makes_the_api_fail(client, user, product, k, search):
    user, product = quote(user, safe=""), quote(product, safe="")  # as a browser would send them
    for path, params in [("/recommend_for_me", {"user_id": user, "k": k}),
                         (f"/users/{user}/recommendations", {"k": k, "offset": k}),
                         (f"/users/{user}/history", {}),
                         (f"/products/{product}", {}),
                         (f"/products/{product}/similar", {"k": k}),
                         ("/products", {"search": search, "category": product, "limit": k, "offset": k})]:
        response = client.get(path, params=params)
        assert response.status_code in {200, 404, 422}, (path, params, response.status_code)


@pytest.fixture(scope="module")
def api_schema(client):
    """The API's own OpenAPI schema, read by Schemathesis, calling the app in process."""
    return schemathesis.openapi.from_asgi("/openapi.json", client.app)


def id_corpus(shop) -> dict[str, list[str]]:
    """The round-trip corpus: every user with a published list, every published product (the awkward ids
    among them)."""
    return {"user_id": read_table(shop.warehouse, "recommendations")["user_id"].unique().sort().to_list(),
            "product_id": read_table(shop.warehouse, "products")["product_id"].sort().to_list()}


def test_every_endpoint_answers_every_published_id_within_its_schema(api_schema, shop):
    """Each published id through each route that takes one, as Schemathesis sends it: 200, and a body
    that matches the documented schema (`call_and_validate` runs every Schemathesis check)."""
    corpus = id_corpus(shop)
    answered = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        taking = [p.name for p in operation.path_parameters] or (
            ["user_id"] if operation.path == "/recommend_for_me" else [])
        for name in taking:
            for value in corpus[name]:
                case = (operation.Case(path_parameters={name: EncodedPath(quote(value, safe=""))})
                        if operation.path_parameters else operation.Case(query={name: value}))
                response = case.call_and_validate()
                assert response.status_code == 200, (operation.label, value)
                assert response.json().get(name, value) == value
                answered += 1
    assert answered == 3 * len(corpus["user_id"]) + 2 * len(corpus["product_id"])  # 3 routes take a user, 2 a product


@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzing_every_endpoint_finds_no_server_error_and_no_schema_violation(api_schema, shop, data):
    """Schemathesis over the whole schema, valid and invalid requests alike, half of the ids drawn from the
    round-trip corpus: never a 5xx, never an answer outside the documented codes and shapes."""
    corpus = id_corpus(shop)
    operation = data.draw(st.sampled_from([result.ok() for result in api_schema.get_all_operations()]))
    mode = data.draw(st.sampled_from(list(schemathesis.GenerationMode)))
    fixed = {p.name: EncodedPath(quote(data.draw(st.sampled_from(corpus[p.name])), safe=""))
             for p in operation.path_parameters if mode.is_positive and data.draw(st.booleans())}
    case = data.draw(operation.as_strategy(generation_mode=mode, path_parameters=fixed or None))
    case.call_and_validate()
