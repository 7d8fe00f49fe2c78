"""Shared fixtures: a tiny hand-made shop whose right answers are known, and helpers to run the assets."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import dagster as dg
import httpx
import polars as pl
import pytest
from playwright.sync_api import Browser, sync_playwright

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = PROJECT_ROOT / "data" / "sample"

# (product_id, title, category, attributes, description, price, in_stock)
TINY_PRODUCTS = [
    ("T01", "Trail Running Shoe Alpine", "Running", "trail running|grip|waterproof",
     "A rugged trail running shoe with deep lugs for muddy mountain trails.", 120.0, True),
    ("T02", "Trail Running Shoe Ridge", "Running", "trail running|grip|lightweight",
     "Lightweight trail runner with a rock plate for technical singletrack.", 130.0, True),
    ("T03", "Trail Running Shoe Summit", "Running", "trail running|cushioned",
     "Cushioned trail running shoe for long mountain ultramarathons.", 140.0, True),
    ("T04", "Merino Trail Running Socks", "Running", "trail running|merino wool",
     "Merino wool socks for trail running, blister-free on long runs.", 18.0, True),
    ("T05", "Trail Running Hydration Vest", "Running", "trail running|hydration",
     "A hydration vest with soft flasks for long trail runs.", 90.0, True),
    ("T06", "Road Racing Flat Tempo", "Running", "road running|racing",
     "A featherweight racing flat for fast road marathons.", 150.0, True),
    ("T07", "Trail Running Gaiters", "Running", "trail running|protection",
     "Ankle gaiters that keep gravel out of your trail running shoes.", 25.0, False),
    ("T08", "Running Cap Breeze", "Running", "road running|sun protection",
     "A breathable running cap that keeps sun and sweat off your face.", 22.0, True),
    ("K01", "Chef's Knife Santoku", "Kitchen", "stainless steel|precision cutting",
     "A razor-sharp santoku chef's knife for precise slicing of vegetables.", 80.0, True),
    ("K02", "Cast Iron Skillet 12 inch", "Kitchen", "cast iron|oven-safe",
     "A pre-seasoned cast iron skillet for searing steaks and baking cornbread.", 45.0, True),
    ("K03", "Walnut Cutting Board", "Kitchen", "walnut wood|knife friendly",
     "An end-grain walnut cutting board that is gentle on knife edges.", 60.0, True),
    ("K04", "Knife Sharpening Whetstone", "Kitchen", "precision cutting|knife care",
     "A dual-grit whetstone to keep chef's knives razor sharp.", 35.0, True),
    ("K05", "Dutch Oven Enameled", "Kitchen", "cast iron|oven-safe|slow cooking",
     "An enameled cast iron dutch oven for braises, stews and bread.", 110.0, True),
    ("K06", "Paring Knife Petty", "Kitchen", "stainless steel|precision cutting",
     "A small paring knife for peeling and detailed kitchen knife work.", 30.0, True),
    ("K07", "French Press Coffee Maker", "Kitchen", "glass|coffee",
     "A borosilicate glass french press for rich, full-bodied coffee.", 35.0, True),
    ("K08", "Salad Spinner", "Kitchen", "plastic|vegetables",
     "A salad spinner that dries washed lettuce and herbs in seconds.", 28.0, True),
    ("C01", "Backpacking Tent Two Person", "Camping", "ultralight|waterproof|shelter",
     "An ultralight two-person backpacking tent with a waterproof rainfly.", 320.0, True),
    ("C02", "Headlamp 400 Lumen", "Camping", "lighting|rechargeable",
     "A rechargeable headlamp with a red night mode for camp chores.", 40.0, True),
    ("C03", "Down Sleeping Bag", "Camping", "goose down|insulated",
     "A warm goose down sleeping bag rated to minus five degrees.", 280.0, True),
    ("C04", "Camping Stove Compact", "Camping", "cooking|compact",
     "A compact canister stove that boils water in three minutes.", 55.0, True),
    ("C05", "Trekking Poles Carbon", "Camping", "carbon|hiking",
     "Collapsible carbon trekking poles for steep hiking descents.", 120.0, True),
    ("C06", "Water Filter Squeeze", "Camping", "water treatment|ultralight",
     "A squeeze water filter that makes stream water safe to drink.", 38.0, True),
    ("C07", "Camp Chair Folding", "Camping", "furniture|compact",
     "A folding camp chair that packs down to the size of a water bottle.", 70.0, True),
    ("C08", "Sleeping Pad Inflatable", "Camping", "insulated|ultralight",
     "An inflatable insulated sleeping pad for cold nights outside.", 130.0, True),
]


def tiny_events() -> list[tuple[str, str, str, float, str]]:
    """Events whose right answers are known: tastes for the content side, a strong
    tent -> headlamp pattern for the behavioural side."""
    events = []
    day = iter(range(1, 10_000))

    def add(user, product, kind, value=1.0):
        d = next(day)
        events.append((user, product, kind, value, f"2026-09-{1 + d % 28:02d}T{d % 24:02d}:{d % 60:02d}:00Z"))

    for product in ("T01", "T02"):  # the trail runner bought two trail shoes and looked at socks
        add("U_TRAIL", product, "view"); add("U_TRAIL", product, "cart"); add("U_TRAIL", product, "purchase")
    add("U_TRAIL", "T04", "view")
    for product in ("K01", "K02"):  # the cook
        add("U_COOK", product, "view"); add("U_COOK", product, "purchase")
    add("U_COOK", "K01", "rating", 5.0)
    for n in range(6):  # tent buyers almost always buy the headlamp too
        user = f"U_CAMP{n}"
        add(user, "C01", "view"); add(user, "C01", "purchase")
        add(user, "C02", "view"); add(user, "C02", "purchase")
        add(user, ("K07", "T08", "K08")[n % 3], "view")
    add("U_TENT", "C01", "view"); add("U_TENT", "C01", "purchase")  # bought a tent, nothing else yet
    add("U_ONE", "T06", "view")  # a user with one event
    return events


@dataclass(frozen=True)
class Shop:
    root: Path
    input_dir: Path
    config_path: Path
    warehouse: Path

    def write_config(self, sections: dict | None = None, **model) -> None:
        """The shop's config.json: `model` settings as keywords, whole other sections in `sections`."""
        config = {
            "model": {"top_k": 5, "candidates": 20, "similar_products": 5, "hybrid_alpha": 0.2, **model},
            "data": {"input_dir": str(self.input_dir), "warehouse": str(self.warehouse),
                     "cache_dir": str(self.root / "cache")},
            **(sections or {}),
        }
        self.config_path.write_text(json.dumps(config), encoding="utf-8")


def write_tiny_shop(root: Path) -> Shop:
    input_dir = root / "input"
    input_dir.mkdir(parents=True)
    pl.DataFrame(
        TINY_PRODUCTS,
        schema=["product_id", "title", "category", "attributes", "description", "price", "in_stock"],
        orient="row",
    ).with_columns(updated_at=pl.lit("2026-08-01T00:00:00Z")).write_csv(input_dir / "products.csv")
    pl.DataFrame(tiny_events(), schema=["user_id", "product_id", "event_type", "value", "timestamp"],
                 orient="row").write_csv(input_dir / "interactions.csv")
    shop = Shop(root=root, input_dir=input_dir, config_path=root / "config.json",
                warehouse=root / "out" / "warehouse.duckdb")
    shop.write_config()
    return shop


# Ids as real shops emit them (e-mail, display names, non-Latin letters, quotes, slashes, URL syntax): the id
# rule (pipeline.ids) accepts every one, so the API must serve every one.
AWKWARD_PRODUCTS = [
    ("SKU/42-A", "Trail Gaiters", "Trail", "scree|waterproof", "Low trail gaiters that keep scree out of shoes."),
    ('tent "2p" \'ultra\'', "Ultralight Tarp Tent", "Camping", "ultralight|shelter",
     "A two-person tarp tent pitched with trekking poles."),
    ("Küche ß 雨", "Rice Cooker", "Kitchen", "rice|electric", "A small rice cooker with a keep-warm setting."),
    ("50% off?#x&y=z+1", "Camp Mug Titanium", "Camping", "titanium|cooking", "A titanium mug that boils water."),
    ("...", "Trail Socks Wool", "Trail", "wool|cushioned", "Cushioned merino wool socks for long runs."),
]
AWKWARD_USERS = ["alice@example.com", "Bob Smith", "üser-ß", 'o\'brien "quoted"', "team/42", "100%?#&=+ sure"]


def add_awkward_ids(shop: Shop) -> None:
    """Adds `AWKWARD_PRODUCTS` to the shop's catalog and events of `AWKWARD_USERS` with them (each user fewer
    events than U_TRAIL, so the tiny shop's known answers stand)."""
    products = pl.read_csv(shop.input_dir / "products.csv", infer_schema=False)
    added = pl.DataFrame([(*row, "30.0", "true", "2026-08-01T00:00:00Z") for row in AWKWARD_PRODUCTS],
                         schema=["product_id", "title", "category", "attributes", "description", "price",
                                 "in_stock", "updated_at"], orient="row").select(products.columns)
    pl.concat([products, added]).write_csv(shop.input_dir / "products.csv")
    ids = [row[0] for row in AWKWARD_PRODUCTS]
    events = pl.read_csv(shop.input_dir / "interactions.csv", infer_schema=False)
    rows = []
    for n, user in enumerate(AWKWARD_USERS):
        for m, product in enumerate([ids[n % len(ids)], ids[(n + 1) % len(ids)], "C01"]):
            rows.append((user, product, "purchase", "1.0", f"2026-09-2{n % 8}T1{m}:00:00Z"))
    pl.concat([events, pl.DataFrame(rows, schema=events.columns, orient="row")]).write_csv(
        shop.input_dir / "interactions.csv")


@pytest.fixture
def tiny_shop(tmp_path: Path) -> Shop:
    return write_tiny_shop(tmp_path)


def materialize_all(config_path: Path, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Run the nightly job in process, as the schedule does, with $SHOPREC_CONFIG naming the config file."""
    from assets.definitions import defs

    with mock.patch.dict(os.environ, {"SHOPREC_CONFIG": str(config_path)}):
        return defs.resolve_job_def("nightly").execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), raise_on_error=raise_on_error)


class SampleRun(NamedTuple):
    warehouse: Path
    result: dg.ExecuteInProcessResult
    config_path: Path


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> SampleRun:
    """The whole nightly job on the embedded sample with the real model, once per test session (about a
    minute and a half): the pipeline's and the dashboard's tests both read it."""
    root = tmp_path_factory.mktemp("sample")
    config = root / "config.json"
    config.write_text(json.dumps({"data": {"input_dir": str(SAMPLE), "warehouse": str(root / "warehouse.duckdb"),
                                           "cache_dir": str(root / "cache")}}), encoding="utf-8")
    return SampleRun(root / "warehouse.duckdb", materialize_all(config), config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def api_server(config_path: Path) -> Iterator[str]:
    """A real API process (uvicorn, as `make api` runs it) on a free loopback port, serving the warehouse
    and dashboard build of `config_path`; yields its base URL once it serves a published run."""
    port = free_port()
    env = {**os.environ, "SHOPREC_CONFIG": str(config_path)}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "serve.main:app", "--host", "127.0.0.1",
                               "--port", str(port), "--log-level", "warning"], env=env, cwd=PROJECT_ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if server.poll() is not None:
                    raise RuntimeError(f"the API exited with {server.returncode}")
                time.sleep(0.2)
        yield url
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium, driven by Playwright (a Playwright browser download fails on these machines)."""
    assert CHROMIUM.exists(), "the browser tests need Debian's chromium: `make chromium` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def metadata_value(result: dg.ExecuteInProcessResult, asset: str, key: str):
    """A metadata value of the asset's materialization; of a per-user asset, its sum over the run's buckets."""
    materializations = result.asset_materializations_for_node(asset)
    if materializations[0].partition is None:
        return materializations[0].metadata[key].value
    return sum(m.metadata[key].value for m in materializations)


# The fault report: bad-input and fault tests record what they saw; the table prints after the run
# (`pytest -m faults` runs just them).
FAULT_REPORT: list[tuple[str, str, str, int]] = []


@pytest.fixture
def fault_report():
    def record(case: str, expected: str, observed: str, rows_lost: int) -> None:
        FAULT_REPORT.append((case, expected, observed, rows_lost))
    return record


def pytest_terminal_summary(terminalreporter):
    if not FAULT_REPORT:
        return
    terminalreporter.section("fault report")
    terminalreporter.write_line("| case | expected | observed | rows lost |")
    terminalreporter.write_line("|---|---|---|---|")
    for case, expected, observed, lost in FAULT_REPORT:
        observed = re.sub(r"\S*/([\w.]+\.(csv|duckdb))", r"\1", observed).replace("\n", " ")  # no temp folders
        terminalreporter.write_line(f"| {case} | {expected} | {observed[:200]} | {lost} |")


def published_state(warehouse: Path) -> dict[str, tuple[int, int]]:
    """Every published table's row count and content hash, and the snapshot the API serves: what a fault
    must leave exactly as it was."""
    from pipeline.warehouse import TABLES, current_snapshot

    import duckdb

    state: dict = {"snapshot": str(current_snapshot(warehouse))}
    if not warehouse.exists():
        return state
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for table in TABLES:
            state[table] = con.execute(f'SELECT count(*), coalesce(sum(hash(t)), 0) FROM "{table}" t').fetchone()
    return state


def rows_lost(before: dict, after: dict) -> int:
    """Published rows that a fault took away or changed (0 when the state is exactly as before)."""
    return sum(before[t][0] for t in before if t != "snapshot" and after.get(t) != before[t])
