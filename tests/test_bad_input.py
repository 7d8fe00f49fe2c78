"""Bad input, tried on purpose: each case is a real nightly run on the tiny shop's data with one thing wrong.
Input that cannot be used stops the run with a message naming the file, the column and the row, and the
results published before stay exactly as they were; input that can be used, quirks and all, is published
with every row accounted for (published, quarantined, or a counted exact repeat)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from conftest import TINY_PRODUCTS, materialize_all, metadata_value, published_state, rows_lost, tiny_events, \
    write_tiny_shop
from pipeline.config import load_settings
from pipeline.ingest import read_event_log
from pipeline.ids import ID_RULE, MAX_ID_LENGTH
from pipeline.warehouse import read_table
from serve.main import create_app

pytestmark = pytest.mark.faults

PRODUCT_HEADER = "product_id,title,category,attributes,description,price,in_stock,updated_at"
EVENT_HEADER = "user_id,product_id,event_type,value,timestamp"


def product_lines() -> list[str]:
    return [f'{p},"{t}",{c},"{a}","{d}",{price},{str(stock).lower()},2026-08-01T00:00:00Z'
            for p, t, c, a, d, price, stock in TINY_PRODUCTS]


def event_lines() -> list[str]:
    return [",".join(map(str, event)) for event in tiny_events()]


def csv_text(header: str, lines: list[str]) -> str:
    return "\n".join([header, *lines]) + "\n"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The tiny shop published once: what every failing case must leave as it was."""
    shop = write_tiny_shop(tmp_path_factory.mktemp("published"))
    assert materialize_all(shop.config_path).success
    return shop


def run_on(published, folder: Path, products: str | bytes | None = None, events: str | bytes | None = None,
           quality: dict | None = None):
    """A nightly run over inputs in `folder` (the tiny shop's, with the given file replaced), publishing to
    the already published warehouse. Returns the result, what it said, and the rows lost."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content, default in (("products.csv", products, csv_text(PRODUCT_HEADER, product_lines())),
                                   ("interactions.csv", events, csv_text(EVENT_HEADER, event_lines()))):
        content = default if content is None else content
        target = folder / name
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content, encoding="utf-8")
    config = folder / "config.json"
    config.write_text(json.dumps({
        "model": {"top_k": 5, "candidates": 20, "similar_products": 5, "hybrid_alpha": 0.2},
        "data": {"input_dir": str(folder), "warehouse": str(published.warehouse),
                 "cache_dir": str(published.root / "cache")},
        "quality": quality or {}}), encoding="utf-8")
    before = published_state(published.warehouse)
    result = materialize_all(config, raise_on_error=False)
    return result, said(result), rows_lost(before, published_state(published.warehouse))


def said(result) -> str:
    """What a failed run told the person: its failed checks' descriptions, else its step failure."""
    checks = [c.description for c in result.get_asset_check_evaluations() if not c.passed]
    if checks:
        return " | ".join(checks)
    failures = result.get_step_failure_events()
    if not failures:
        return ""
    error = failures[0].event_specific_data.error
    while error.cls_name.startswith("Dagster") and error.cause is not None:  # Dagster wraps the asset's own
        error = error.cause
    return error.message.strip()


REJECTED = [
    # case, which file, how to spoil it, what the message must name
    ("an empty file", "products", lambda: b"", ["products.csv", "the file is empty"]),
    ("a missing column", "products",
     lambda: csv_text("product_id,title,attributes,description,price,in_stock,updated_at",
                      [line.split(",", 3)[0] + "," + line.split(",", 3)[1] + "," + line.split(",", 3)[3]
                       for line in product_lines()]),
     ["products.csv", "column 'category'", "missing required column"]),
    ("wrong types beyond the tolerance", "products",
     lambda: csv_text(PRODUCT_HEADER, [line.replace(",120.0,", ",one-twenty,") for line in product_lines()]),
     ["products.csv", "column 'price'", "row 1", "'one-twenty'", "price must be a number"]),
    ("a CSV with a broken quote", "interactions",
     lambda: csv_text(EVENT_HEADER, [*event_lines()[:3], 'U_X,"T01,view,1,2026-09-03T10:00:00Z', *event_lines()[3:]]),
     ["interactions.csv", "column 'product_id'", "row 4", "quot"]),
    ("non-UTF-8 bytes", "products",
     lambda: csv_text(PRODUCT_HEADER, product_lines()).replace("Headlamp", "Headl\u00e4mp").encode("latin-1"),
     ["products.csv", "column 'title'", "row 18", "not UTF-8"]),
    ("zero interactions at all", "interactions", lambda: EVENT_HEADER + "\n",
     ["interactions.csv", "no usable interactions"]),
    ("interactions for unknown products beyond the tolerance", "interactions",
     lambda: csv_text(EVENT_HEADER, [line.replace(",C01,", ",GONE1,") for line in event_lines()]),
     ["interactions.csv", "column 'product_id'", "not in the catalog", "'GONE1'"]),
]


@pytest.mark.parametrize("case, which, spoil, named", REJECTED, ids=[c[0] for c in REJECTED])
def test_unusable_input_stops_the_run_and_names_file_column_and_row(published, tmp_path, fault_report, case,
                                                                     which, spoil, named):
    result, message, lost = run_on(published, tmp_path / "in", **{"products" if which == "products" else "events": spoil()})
    assert not result.success
    for part in named:
        assert part in message, f"{part!r} not in: {message}"
    assert lost == 0
    runs = read_table(published.warehouse, "runs")
    assert runs.filter(pl.col("run_id") == result.run_id)["status"].to_list() == ["failed"]
    fault_report(case, "run stops, message names file/column/row, old results kept", message, lost)


@pytest.fixture(scope="module")
def messy(published, tmp_path_factory):
    """One run over inputs with every usable quirk at once; each test below looks at one of them."""
    products = product_lines()
    products[0] = products[0] + ",ignored"  # an unknown extra column, filled on the first row only
    products = [line + ("" if i == 0 else ",") for i, line in enumerate(products)]
    products.append('T01,"Trail Running Shoe Alpine v2",Running,"trail running|grip","Second edition, '
                    'stiffer sole.",125.0,true,2026-09-01T00:00:00Z,')  # a newer version: it wins
    products.append('K01,"Chef\'s Knife Santoku (old)",Kitchen,"steel","An old listing.",70.0,true,'
                    '2026-01-01T00:00:00Z,')  # an older version: quarantined
    products = [line.replace('"Down Sleeping Bag"', '"Down Sleeping Bag 🛏️ שק שינה"') for line in products]
    products = [line.replace("A salad spinner that dries washed lettuce and herbs in seconds.", "x" * 1_000_000)
                for line in products]
    products.append('K09,"Mystery Kettle",Kitchen,"steel","A kettle.",cheap,true,2026-08-01T00:00:00Z,')
    products.append('K10,"   ",Kitchen,"steel","A title of spaces.",9.0,true,2026-08-01T00:00:00Z,')
    products.append('..,"Dot Dot",Kitchen,"steel","An id no URL can hold.",9.0,true,2026-08-01T00:00:00Z,')
    events = event_lines()
    events.append("U_\x07BELL,K07,view,1,2026-09-20T10:00:00Z")  # ids the API could not serve: quarantined
    events.append(f"{'U' * (MAX_ID_LENGTH + 1)},K07,view,1,2026-09-20T10:00:00Z")
    events.append("U_CAMP0,NOT_A_PRODUCT,view,1,2026-09-20T10:00:00Z")  # unknown product: dropped, counted
    events.append("U_TZ,K07,view,1,2026-09-20T12:00:00+02:00")  # three formats and time zones
    events.append("U_TZ,K07,view,1,2026-09-20 11:00:00")
    events.append("U_TZ,K07,purchase,1,1789898400")
    folder = tmp_path_factory.mktemp("messy")
    result, message, _ = run_on(published, folder,
                                products=csv_text(PRODUCT_HEADER + ",supplier_notes", products),
                                events=csv_text(EVENT_HEADER, events), quality={"max_quarantine_share": 0.15})
    assert result.success, message
    return result


def quarantined(published, result) -> pl.DataFrame:
    return read_table(published.warehouse, "quarantine").filter(pl.col("run_id") == result.run_id)


def test_an_extra_unknown_column_is_accepted_ignored_and_said(messy, fault_report):
    assert metadata_value(messy, "products", "ignored_columns") == "supplier_notes"
    # The run's closing summary says it too, with what was quarantined by rule.
    summary = metadata_value(messy, "warehouse", "inputs_set_aside")
    assert "products: ignored columns supplier_notes" in summary and "price must be a number" in summary
    assert "interactions.csv: 1 quarantined" in summary
    fault_report("an extra unknown column", "accepted, ignored, logged", "published; ignored_columns: supplier_notes", 0)


def test_a_wrong_type_within_the_tolerance_is_quarantined_and_the_run_goes_on(messy, published, fault_report):
    rows = quarantined(published, messy).filter(pl.col("column") == "price")
    assert rows.select("row", "value", "rule").rows() == [(27, "cheap", "price must be a number")]
    assert json.loads(rows["record"][0])["title"] == "Mystery Kettle"
    assert "K09" not in read_table(published.warehouse, "products")["product_id"].to_list()
    check, = [c for c in messy.get_asset_check_evaluations() if c.asset_key.to_user_string() == "products"]
    shown = check.metadata["expectations"].value  # what the Dagster UI shows for the check
    assert check.passed and "| `price must be a number` | **no** | 1 of 29 rows | cheap |" in shown
    fault_report("wrong types within the tolerance", "row quarantined, run goes on",
                 "row 27 quarantined: price must be a number; published", 0)


def test_duplicate_product_ids_the_newest_wins_the_others_are_quarantined(messy, published, fault_report):
    products = read_table(published.warehouse, "products")
    assert products.filter(pl.col("product_id") == "T01")["title"].to_list() == ["Trail Running Shoe Alpine v2"]
    assert products.filter(pl.col("product_id") == "K01")["title"].to_list() == ["Chef's Knife Santoku"]
    older = quarantined(published, messy).filter(pl.col("rule").str.starts_with("duplicate product_id"))
    assert sorted(json.loads(r)["title"] for r in older["record"]) == ["Chef's Knife Santoku (old)",
                                                                      "Trail Running Shoe Alpine"]
    fault_report("duplicate product ids, different content", "newest updated_at wins, others quarantined",
                 "T01 v2 published; 2 older versions quarantined", 0)


def test_interactions_for_unknown_products_are_counted_quarantined_and_dropped(messy, published, fault_report):
    assert metadata_value(messy, "interactions", "unknown_products_dropped") == 1
    unknown = quarantined(published, messy).filter(pl.col("value") == "NOT_A_PRODUCT")
    assert unknown.height == 1 and unknown["column"][0] == "product_id"
    assert "NOT_A_PRODUCT" not in read_table(published.warehouse, "interactions")["product_id"].to_list()
    fault_report("interactions for unknown products (within tolerance)", "counted, quarantined, dropped",
                 "1 counted in metadata, quarantined, not published", 0)


def test_timestamps_in_three_formats_and_time_zones_mean_the_same_instant(messy, published, fault_report):
    times = read_table(published.warehouse, "interactions").filter(pl.col("user_id") == "U_TZ")["timestamp"]
    assert set(times.to_list()) == {datetime(2026, 9, 20, 10, 0, tzinfo=timezone.utc),
                                    datetime(2026, 9, 20, 11, 0, tzinfo=timezone.utc)}
    # ISO with an offset, naive (read as UTC) and Unix seconds: 10:00 UTC, 11:00 UTC and 10:00 UTC
    assert sorted(times.to_list())[0] == datetime(2026, 9, 20, 10, 0, tzinfo=timezone.utc)
    fault_report("timestamps in three formats and time zones", "all parsed to UTC instants",
                 "+02:00, naive and Unix seconds agree", 0)


def test_emoji_and_right_to_left_titles_come_back_intact(messy, published, fault_report):
    title = "Down Sleeping Bag 🛏️ שק שינה"
    products = read_table(published.warehouse, "products")
    assert products.filter(pl.col("product_id") == "C03")["title"].to_list() == [title]
    with TestClient(create_app(load_settings(published.config_path))) as client:
        assert client.get("/products/C03").json()["title"] == title
    fault_report("emoji and right-to-left text in titles", "published and served intact", title, 0)


def test_a_one_megabyte_description_is_cut_and_no_list_carries_it(messy, published, fault_report):
    products = read_table(published.warehouse, "products")
    limit = load_settings(published.config_path).quality.max_description_length
    kept = products.filter(pl.col("product_id") == "K08")["description"].to_list()
    assert len(kept) == 1 and len(kept[0]) <= limit and kept[0].endswith("…") and kept[0].startswith("xxx")
    assert metadata_value(messy, "products", "descriptions_cut") == 1
    assert read_table(published.warehouse, "product_embeddings").height == products.height
    recommended = read_table(published.warehouse, "recommendations").filter(pl.col("product_id") == "K08")
    assert recommended.height
    max_k = load_settings(published.config_path).api.max_k
    with TestClient(create_app(load_settings(published.config_path))) as client:
        for user in [recommended["user_id"][0], "a-visitor-never-seen"]:  # a list, and the fallback list
            response = client.get("/recommend_for_me", params={"user_id": user, "k": max_k})
            cards = response.json()["top_recommendations"]
            assert response.status_code == 200 and len(response.content) < 512 * 1024
            assert all(len(card["description"]) <= 300 for card in cards)
        assert client.get("/products/K08").json()["description"] == kept[0]  # the product page: all of it
    fault_report("a 1 MB description", f"cut at a word to {limit} characters, counted; cards carry 300",
                 f"{len(kept[0]):,} characters published, descriptions_cut 1; /recommend_for_me at k={max_k}: "
                 f"{len(response.content):,} bytes", 0)


def test_a_title_of_spaces_is_no_title(messy, published, fault_report):
    rows = quarantined(published, messy).filter(pl.col("source").str.ends_with("products.csv"))
    blank = rows.filter(pl.col("value").str.strip_chars() == "")
    assert "title" in " ".join(blank["rule"].to_list()) and not read_table(
        published.warehouse, "products").filter(pl.col("product_id") == "K10").height
    fault_report("a title of spaces", "quarantined by the title rule", blank["rule"].to_list()[0], 0)


def test_ids_the_api_could_not_serve_are_quarantined_with_the_id_rule(messy, published, fault_report):
    rows = quarantined(published, messy).filter(pl.col("rule").str.contains(ID_RULE, literal=True))
    assert sorted(zip(rows["column"], rows["value"])) == sorted(
        [("product_id", ".."), ("user_id", "U_\x07BELL"), ("user_id", "U" * (MAX_ID_LENGTH + 1))])
    served = set(read_table(published.warehouse, "products")["product_id"]) | set(
        read_table(published.warehouse, "interactions")["user_id"])
    assert not {"..", "U_\x07BELL"} & served
    fault_report("ids with a control character, over 128 characters, or '..'", "quarantined by the id rule",
                 f"{rows.height} rows: {rows['rule'][0]}", 0)


def test_a_user_with_one_event_gets_a_full_list(messy, published, fault_report):
    recs = read_table(published.warehouse, "recommendations").filter(pl.col("user_id") == "U_ONE")
    assert recs.height == 5
    fault_report("a user with one event", "gets a full list", "U_ONE: 5 recommendations", 0)


def test_every_row_read_is_published_quarantined_or_a_counted_repeat(messy, published, fault_report):
    meta = {asset: {k: metadata_value(messy, asset, k) for k in ("rows_read", "duplicates_dropped", "quarantined")}
            for asset in ("products", "interactions")}
    products = read_table(published.warehouse, "products").height
    events = read_table(published.warehouse, "interactions").height
    lost = (meta["products"]["rows_read"] - products - meta["products"]["quarantined"]
            - (meta["products"]["duplicates_dropped"] - 2))  # the 2 older versions are also quarantined
    lost += meta["interactions"]["rows_read"] - events - meta["interactions"]["quarantined"] \
        - meta["interactions"]["duplicates_dropped"]
    assert lost == 0
    fault_report("every usable quirk at once", "rows read = published + quarantined + counted repeats",
                 f"products {meta['products']}, interactions {meta['interactions']}", lost)


def test_a_catalog_of_one_product_runs_through(tmp_path, fault_report):
    shop = write_tiny_shop(tmp_path)
    shutil.rmtree(shop.input_dir)
    result, message, _ = run_on(shop, shop.input_dir, products=csv_text(PRODUCT_HEADER, product_lines()[16:17]),
                                events=csv_text(EVENT_HEADER, [e for e in event_lines() if ",C01," in e]))
    assert result.success, message
    recs = read_table(shop.warehouse, "recommendations")
    assert recs.is_empty()  # everyone who saw the only product bought it: nothing left to recommend
    assert read_table(shop.warehouse, "products")["product_id"].to_list() == ["C01"]
    fault_report("a catalog with one product", "runs through; nothing recommendable is recommended",
                 "published: 1 product, 0 recommendations (all buyers own it)", 0)


def test_a_shop_that_shrinks_overnight_is_stopped_by_the_volume_gate(tmp_path, fault_report):
    """An export gone wrong: tonight's catalog is 2 of the 24 products, the log only their events (26 of 45). Every
    input rule holds, so only the volume gate can tell; with the gate raised for one run, it publishes."""
    shop = write_tiny_shop(tmp_path)
    assert materialize_all(shop.config_path).success
    users_before = read_table(shop.warehouse, "recommendations")["user_id"].n_unique()
    kept = [line for line in product_lines() if line.startswith(("C01,", "C02,"))]
    events = [e for e in event_lines() if ",C01," in e or ",C02," in e]
    result, message, lost = run_on(shop, tmp_path / "shrunk", products=csv_text(PRODUCT_HEADER, kept),
                                   events=csv_text(EVENT_HEADER, events))
    assert not result.success and lost == 0
    assert "publishing stopped by the volume gate: " in message
    assert f"the catalog's products fell from {len(TINY_PRODUCTS)} to 2 (-92%" in message
    assert len(events) > len(tiny_events()) / 2 and "the events fell" not in message  # within the 50% allowed
    assert "the previous run's results are unchanged and still served" in message
    assert read_table(shop.warehouse, "products").height == len(TINY_PRODUCTS)
    runs = read_table(shop.warehouse, "runs").sort("started_at")
    assert runs["status"].to_list() == ["success", "failed"] and "volume gate" in runs["error"][-1]
    fault_report("the catalog falls from 24 products to 2 (and the log with it)",
                 "publishing stops at the volume gate, old results kept",
                 message.split("gate: ")[1].split(". Nothing")[0], lost)

    result, message, _ = run_on(shop, tmp_path / "shrunk", products=csv_text(PRODUCT_HEADER, kept),
                                events=csv_text(EVENT_HEADER, events), quality={"max_volume_drop": 1.0})
    assert result.success, message
    assert read_table(shop.warehouse, "products").height == 2
    assert read_table(shop.warehouse, "recommendations")["user_id"].n_unique() < users_before


def test_event_timestamps_far_in_the_future_are_quarantined(tmp_path):
    (tmp_path / "interactions.csv").write_text(csv_text(EVENT_HEADER, [
        "U1,T01,view,1,2026-09-01T10:00:00Z", "U1,T02,view,1,2099-01-01T00:00:00Z"]), encoding="utf-8")
    log = read_event_log(tmp_path, pl.Series(["T01", "T02"]), strict=False,
                         now=datetime(2026, 11, 26, tzinfo=timezone.utc))
    assert log.interactions["product_id"].to_list() == ["T01"]
    assert log.report.quarantine.select("row", "column").rows() == [(2, "timestamp")]
