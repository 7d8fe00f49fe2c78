"""Incremental nights: after a cold night, the next one reads the new inputs, encodes only changed products and
recomputes only the users whose lists can have changed; everyone else's published rows stay as they were. And
the schedule's choice between a cold and an incremental night."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import NamedTuple
from unittest import mock

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from checks import assert_valid_lists
from conftest import Shop, metadata_value, write_tiny_shop
from pipeline.incremental import COLD, INCREMENTAL, IncrementalError, LastNights, night_kind, plan_incremental
from pipeline.vector_index import build_index, similar_products
from pipeline.warehouse import current_snapshot, read_snapshot, read_table, unpublished_events

OUT_OF_STOCK = "T03"  # listed for the trail runner by the cold night
REWORDED = "K03"  # a new description: a new embedding
TOUCHED_UP = "C05"  # the same words in title case: a new text whose vector (an uncased model's) is the same
NEW_DAY = "2026-10-02T10:00:00Z"  # after every event of the tiny shop


class Nights(NamedTuple):
    shop: Shop
    cold: dg.ExecuteInProcessResult
    incremental: dg.ExecuteInProcessResult
    cold_lists: pl.DataFrame
    lists: pl.DataFrame
    instance: dg.DagsterInstance


def run_job(shop: Shop, job: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from assets.definitions import defs

    with mock.patch.dict(os.environ, {"SHOPREC_CONFIG": str(shop.config_path)}):
        return defs.resolve_job_def(job).execute_in_process(instance=instance)


@pytest.fixture(scope="module")
def nights(tmp_path_factory) -> Nights:
    """A cold night on the tiny shop, then a day's changes, then an incremental night (one Dagster instance,
    as on a deployment: the incremental run reads the cold night's models from its storage)."""
    shop = write_tiny_shop(tmp_path_factory.mktemp("nights"))
    instance = dg.DagsterInstance.ephemeral()
    cold = run_job(shop, "nightly", instance)
    cold_lists = read_table(shop.warehouse, "recommendations")

    products = pl.read_csv(shop.input_dir / "products.csv")
    products = products.with_columns(
        in_stock=pl.when(pl.col("product_id") == OUT_OF_STOCK).then(False).otherwise(pl.col("in_stock")),
        description=pl.when(pl.col("product_id") == REWORDED)
        .then(pl.lit("An end-grain walnut board, now with juice grooves on both sides."))
        .when(pl.col("product_id") == TOUCHED_UP).then(pl.col("description").str.to_titlecase())
        .otherwise(pl.col("description")))
    products.write_csv(shop.input_dir / "products.csv")
    events = pl.read_csv(shop.input_dir / "interactions.csv")
    new = pl.DataFrame({"user_id": ["U_ONE", "U_ONE", "U_NEW", "U_NEW"],
                        "product_id": ["K01", "K01", "C02", "C03"],
                        "event_type": ["view", "purchase", "view", "view"],
                        "value": [1.0, 1.0, 1.0, 1.0], "timestamp": [NEW_DAY] * 4}, schema=events.schema)
    pl.concat([events, new]).write_csv(shop.input_dir / "interactions.csv")

    incremental = run_job(shop, "nightly_incremental", instance)
    return Nights(shop, cold, incremental, cold_lists, read_table(shop.warehouse, "recommendations"), instance)


def listing(lists: pl.DataFrame, *products: str) -> set[str]:
    return set(lists.filter(pl.col("product_id").is_in(products))["user_id"])


def test_only_users_with_new_events_or_a_changed_listed_product_are_recomputed(nights):
    assert nights.cold.success and nights.incremental.success
    expected = {"U_ONE", "U_NEW"} | listing(nights.cold_lists, OUT_OF_STOCK, REWORDED)
    assert listing(nights.cold_lists, OUT_OF_STOCK), "the cold night should have listed the product"
    assert len(expected) < nights.cold_lists["user_id"].n_unique()  # the test means something

    recomputed = set(nights.lists.filter(pl.col("run_id") == nights.incremental.run_id)["user_id"])
    assert recomputed == expected
    assert metadata_value(nights.incremental, "night_plan", "users_recomputed") == len(expected)
    # A new text that leaves the product's vector where it was changes nobody's list.
    kept = listing(nights.cold_lists, TOUCHED_UP) - expected
    assert kept, "the cold night should have listed the touched-up product for someone else too"
    assert metadata_value(nights.incremental, "night_plan", "users_keeping_reworded_products") == len(kept)
    runs = read_table(nights.shop.warehouse, "runs").sort("finished_at")
    assert runs["night"].to_list() == [COLD, INCREMENTAL]
    assert runs["users_recomputed"][1] == len(expected)

    # Everyone else's rows are the cold night's, unchanged.
    columns = ["user_id", "rank", "product_id", "score", "run_id"]
    kept = nights.lists.filter(~pl.col("user_id").is_in(list(expected))).select(columns).sort("user_id", "rank")
    before = nights.cold_lists.filter(~pl.col("user_id").is_in(list(expected))).select(columns).sort("user_id", "rank")
    assert kept.height > 0 and kept.equals(before)


def test_the_new_lists_follow_the_new_inputs(nights):
    lists = assert_valid_lists(nights.shop.warehouse, k=5)
    assert OUT_OF_STOCK not in set(lists["product_id"])  # gone out of stock: gone from every list
    assert "K01" not in set(lists.filter(pl.col("user_id") == "U_ONE")["product_id"])  # bought today
    assert lists.filter(pl.col("user_id") == "U_NEW").height == 5  # a new user has a list
    explained = read_table(nights.shop.warehouse, "explanations").filter(pl.col("user_id") == "U_NEW")
    assert explained.height == 5 and explained["explanation"].str.len_chars().min() > 0
    events = read_table(nights.shop.warehouse, "interactions")
    assert events.height == pl.read_csv(nights.shop.input_dir / "interactions.csv").height
    profiles = read_table(nights.shop.warehouse, "user_profiles")
    assert profiles.filter(pl.col("user_id") == "U_ONE")["n_events"].to_list() == [3]


def test_only_the_changed_products_are_encoded_and_the_models_are_the_cold_nights(nights):
    assert metadata_value(nights.incremental, "product_embeddings", "encoded") == 2  # reworded, touched up
    assert metadata_value(nights.incremental, "faiss_index", "vectors_changed") == 2
    assert metadata_value(nights.incremental, "interactions", "rows_checked") == 4  # the new events only
    done = {m.asset_key.to_user_string() for m in nights.incremental.get_asset_materialization_events()}
    assert not done & {"evaluation", "alpha_sweep", "behavior_model"}
    # The API still shows the evaluation behind the lists: the cold night's.
    served = read_snapshot(current_snapshot(nights.shop.warehouse))
    assert served["run"]["run_id"][0] == nights.incremental.run_id
    assert served["model_info"]["run_id"].to_list() == [nights.cold.run_id]
    assert served["eval_metrics"].height > 0


def test_the_schedule_runs_incremental_nights_between_cold_ones(nights):
    from assets.definitions import defs

    schedule = defs.get_repository_def().get_schedule_def("nightly_schedule")

    def tonight(at: datetime) -> dg.RunRequest:
        with mock.patch.dict(os.environ, {"SHOPREC_CONFIG": str(nights.shop.config_path)}):
            context = dg.build_schedule_context(instance=nights.instance, scheduled_execution_time=at,
                                                repository_def=defs.get_repository_def())
            return schedule.evaluate_tick(context).run_requests[0]

    tomorrow = tonight(datetime.now(timezone.utc) + timedelta(days=1))
    assert tomorrow.tags["shoprec/night"] == INCREMENTAL
    assert {k.to_user_string() for k in tomorrow.asset_selection} == {
        "products", "interactions", "product_embeddings", "faiss_index", "night_plan", "user_profiles",
        "recommendations", "explanations", "warehouse"}
    in_a_week = tonight(datetime.now(timezone.utc) + timedelta(days=7))
    assert in_a_week.tags["shoprec/night"] == COLD and not in_a_week.asset_selection


def test_night_kind_goes_cold_when_it_must():
    now = datetime(2026, 11, 26, 2, tzinfo=timezone.utc)
    config = {"model": {"top_k": 10}, "scale": {"executor": "in_process"}, "api": {"port": 8000}}
    recent = LastNights(published=True, last_cold_at=now - timedelta(days=1), last_cold_config=config)
    assert night_kind(config, True, 7, recent, now)[0] == INCREMENTAL
    # Settings that do not shape the lists may change between nights.
    assert night_kind({**config, "api": {"port": 9000}, "scale": {"executor": "dask"}}, True, 7, recent,
                      now)[0] == INCREMENTAL
    kind, why = night_kind({**config, "model": {"top_k": 20}}, True, 7, recent, now)
    assert kind == COLD and "model.top_k" in why
    assert night_kind(config, False, 7, recent, now)[0] == COLD
    assert night_kind(config, True, 7, LastNights(False, None, None), now)[0] == COLD
    old = LastNights(published=True, last_cold_at=now - timedelta(days=8), last_cold_config=config)
    assert night_kind(config, True, 7, old, now)[0] == COLD


def test_an_incremental_night_before_any_cold_one_says_what_to_run():
    products = pl.DataFrame({"product_id": ["P1"], "in_stock": [True]})
    events = pl.DataFrame({"user_id": ["U1"], "product_id": ["P1"], "event_type": ["view"],
                           "timestamp": [datetime(2026, 11, 1, tzinfo=timezone.utc)]})
    with pytest.raises(IncrementalError, match="run the cold `nightly` job"):
        plan_incremental(products, ["h"], events, None, lambda ids: ids, lambda ids: ids, 0.01)


def test_checking_only_unpublished_events_finds_what_the_full_check_finds(tiny_shop):
    """An incremental night's event check (only rows the warehouse lacks, and rows naming products no longer
    sold) keeps, drops and quarantines the same rows as checking the whole log."""
    from pipeline.config import QualityConfig
    from pipeline.ingest import read_event_log

    catalog = pl.read_csv(tiny_shop.input_dir / "products.csv")["product_id"]
    quality = QualityConfig(max_quarantine_share=0.5, max_unknown_product_share=0.5)
    warehouse = duckdb.connect(str(tiny_shop.root / "published.duckdb"))
    published = read_event_log(tiny_shop.input_dir, catalog, quality).interactions  # noqa: F841 (read by SQL)
    warehouse.execute("CREATE TABLE interactions AS SELECT * FROM published")
    warehouse.execute("CREATE TABLE runs AS SELECT 'cold' AS run_id, 'success' AS status, now() AS finished_at")
    warehouse.close()

    events = pl.read_csv(tiny_shop.input_dir / "interactions.csv")
    new = pl.DataFrame({"user_id": ["U_ONE", "U_ONE"], "product_id": ["K02", "K03"],
                        "event_type": ["view", "teleport"], "value": [1.0, 1.0], "timestamp": [NEW_DAY] * 2},
                       schema=events.schema)
    pl.concat([events, new]).write_csv(tiny_shop.input_dir / "interactions.csv")
    still_sold = catalog.filter(catalog != "C01")  # the tent left the catalog: its old events must go too

    full = read_event_log(tiny_shop.input_dir, still_sold, quality, strict=False)
    incremental = read_event_log(tiny_shop.input_dir, still_sold, quality, strict=False,
                                 unpublished=partial(unpublished_events, tiny_shop.root / "published.duckdb"))
    tent_events = events.filter(pl.col("product_id") == "C01").height
    assert incremental.rows_checked == 2 + tent_events < full.rows_checked
    assert incremental.interactions.equals(full.interactions)
    assert incremental.report.quarantine.select("row", "rule").equals(full.report.quarantine.select("row", "rule"))
    teleport = incremental.report.quarantine.filter(pl.col("column") == "event_type")
    assert teleport["row"].to_list() == [events.height + 2]  # 1-based data rows: the second new one
    assert incremental.unknown_products_dropped == tent_events


def test_similar_products_after_an_incremental_night_equal_a_full_search(nights):
    embeddings = read_table(nights.shop.warehouse, "product_embeddings")
    vectors = np.stack(embeddings["embedding"].to_list()).astype(np.float32)
    full = similar_products(build_index(vectors), vectors, embeddings["product_id"].to_list(), 5)
    published = read_table(nights.shop.warehouse, "similar_products")
    columns = ["product_id", "rank", "similar_product_id"]
    assert published.select(columns).sort(columns).equals(full.select(columns).sort(columns))



def test_a_quiet_night_recomputes_nobody_and_keeps_every_row(tiny_shop):
    instance = dg.DagsterInstance.ephemeral()
    cold = run_job(tiny_shop, "nightly", instance)
    before = read_table(tiny_shop.warehouse, "recommendations")
    quiet = run_job(tiny_shop, "nightly_incremental", instance)
    assert quiet.success
    assert metadata_value(quiet, "night_plan", "users_recomputed") == 0
    after = read_table(tiny_shop.warehouse, "recommendations")
    assert after.sort("user_id", "rank").equals(before.sort("user_id", "rank"))
    assert set(after["run_id"]) == {cold.run_id}
    runs = read_table(tiny_shop.warehouse, "runs").sort("finished_at")
    assert runs["night"].to_list() == [COLD, INCREMENTAL] and runs["users_recomputed"][1] == 0


def test_a_log_that_only_grew_is_read_on_from_the_published_rows(nights):
    """The tiny shop's log got four rows appended: the incremental night reads those, and what it publishes
    is what reading the whole log gives."""
    from pipeline.ingest import read_event_log

    assert metadata_value(nights.incremental, "interactions", "read") == "new rows"
    assert metadata_value(nights.incremental, "interactions", "rows_skipped") == \
        metadata_value(nights.cold, "interactions", "rows_read")
    catalog = pl.read_csv(nights.shop.input_dir / "products.csv")["product_id"]
    whole = read_event_log(nights.shop.input_dir, catalog).interactions
    columns = ["user_id", "product_id", "event_type", "value", "timestamp"]
    published = read_table(nights.shop.warehouse, "interactions").select(columns).with_columns(
        pl.col("timestamp").dt.convert_time_zone("UTC"))
    assert published.sort(columns).equals(whole.sort(columns))


def test_reading_on_from_the_published_rows_finds_what_a_whole_read_finds(tiny_shop):
    """Appended rows (a bad one, a repeat of a published event, a new user's) read on from the published
    run's bytes give those users the histories, quarantine and counts a whole read gives; a bad row the
    published run quarantined stays out. A log changed anywhere in its published bytes, or a catalog that
    lost a product, is read whole."""
    from pipeline.config import QualityConfig
    from pipeline.incremental import PublishedLog
    from pipeline.ingest import read_event_log, read_new_events

    log_path = tiny_shop.input_dir / "interactions.csv"
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"U_ONE,T06,view,not-a-number,{NEW_DAY}\n")  # quarantined by the published run
    catalog = pl.read_csv(tiny_shop.input_dir / "products.csv")["product_id"]
    quality = QualityConfig(max_quarantine_share=0.5)
    cold = read_event_log(tiny_shop.input_dir, catalog, quality)
    assert cold.report.quarantine.height == 1
    published = PublishedLog(read=cold.read, products=catalog,
                             histories=lambda users: cold.interactions.filter(pl.col("user_id").is_in(users.implode())))
    repeat = cold.interactions.filter(pl.col("user_id") == "U_COOK").row(0, named=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"U_COOK,K03,view,1.0,{NEW_DAY}\n")
        log.write(f"U_COOK,{repeat['product_id']},{repeat['event_type']},{repeat['value']},"
                  f"{repeat['timestamp']:%Y-%m-%dT%H:%M:%SZ}\n")
        log.write(f"U_NEW,K03,teleport,1.0,{NEW_DAY}\n")
        log.write(f"U_NEW,K04,view,1.0,{NEW_DAY}\n")

    grown = read_new_events(tiny_shop.input_dir, catalog, published, quality)
    whole = read_event_log(tiny_shop.input_dir, catalog, quality)
    assert grown.read.from_row == cold.rows_read and grown.rows_checked == 4
    assert (grown.rows_read, grown.read.bytes, grown.read.sha256) == \
        (whole.rows_read, whole.read.bytes, whole.read.sha256)  # the next night reads on from here
    users = ["U_COOK", "U_NEW"]
    assert grown.interactions.equals(whole.interactions.filter(pl.col("user_id").is_in(users)))
    assert grown.duplicates_dropped == 1
    teleport = grown.report.quarantine.filter(pl.col("column") == "event_type")
    assert teleport["row"].to_list() == whole.report.quarantine.filter(pl.col("column") == "event_type")["row"].to_list()
    assert grown.report.quarantine.height == 1  # the published run's bad row is not reported again

    text = log_path.read_text(encoding="utf-8")
    log_path.write_text(text.replace("U_TRAIL", "U_TRAIN", 1), encoding="utf-8")
    assert read_new_events(tiny_shop.input_dir, catalog, published, quality) is None
    log_path.write_text(text, encoding="utf-8")
    assert read_new_events(tiny_shop.input_dir, catalog.filter(catalog != "C01"), published, quality) is None


def test_only_the_changed_products_rows_are_replaced(nights):
    """The catalog tables after an incremental night hold tonight's catalog, and only the products whose rows
    changed carry the incremental run's id; the rest keep the cold night's rows."""
    from pipeline.ingest import read_catalog

    products = read_table(nights.shop.warehouse, "products")
    tonight = read_catalog(nights.shop.input_dir).products
    assert products.drop("run_id", "computed_at").sort("product_id").with_columns(
        pl.col("updated_at").dt.convert_time_zone("UTC")).equals(tonight.sort("product_id"))
    changed = {OUT_OF_STOCK, REWORDED, TOUCHED_UP}
    by_run = products.group_by("run_id").agg("product_id")
    replaced = dict(zip(by_run["run_id"], by_run["product_id"].to_list()))
    assert set(replaced[nights.incremental.run_id]) == changed
    assert set(replaced[nights.cold.run_id]) == set(tonight["product_id"]) - changed
    embeddings = read_table(nights.shop.warehouse, "product_embeddings")
    assert set(embeddings.filter(pl.col("run_id") == nights.incremental.run_id)["product_id"]) == {REWORDED, TOUCHED_UP}
    assert embeddings.height == tonight.height


def test_a_cold_step_refuses_the_events_an_incremental_night_read_on(nights):
    """After an incremental night the stored `interactions` hold only the users with new events: fitting the
    behavioural model on them alone (as materializing it by hand in the UI would) is refused, saying why."""
    from assets.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    with mock.patch.dict(os.environ, {"SHOPREC_CONFIG": str(nights.shop.config_path)}):
        alone = job.execute_in_process(instance=nights.instance, raise_on_error=False,
                                       asset_selection=[dg.AssetKey("behavior_model")])
    assert not alone.success
    failure = next(e for e in alone.all_events if e.is_step_failure)
    assert "only the users with new events" in failure.step_failure_data.error.to_string()
