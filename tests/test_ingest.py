"""Reading inputs: every supported format, and bad input stopped with file, column and row named."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.config import QualityConfig
from pipeline.ingest import InputError, read_catalog, read_event_log

PRODUCTS = (
    "product_id,title,description,category,attributes,price,in_stock,updated_at\n"
    "P1,Trail Shoe,Grippy shoe,Running,trail|grip,120.5,true,2026-01-01T00:00:00Z\n"
    "P2,Yoga Mat,Cork mat,Yoga,cork,40,false,2026-01-02 08:00:00\n"
    "P1,Trail Shoe v2,Grippier shoe,Running,trail|grip|waterproof,125,yes,2026-03-01T00:00:00+01:00\n"
)
EVENTS = (
    "user_id,product_id,event_type,value,timestamp\n"
    "U1,P1,view,1,2026-02-01T10:00:00Z\n"
    "U1,P1,purchase,1,2026-02-01T10:05:00Z\n"
    "U2,P9,view,1,2026-02-02T10:00:00Z\n"
    "U2,P2,Rating,4,1769940000\n"
    "U1,P1,view,1,2026-02-01T10:00:00Z\n"
)


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "products.csv").write_text(PRODUCTS, encoding="utf-8")
    (tmp_path / "interactions.csv").write_text(EVENTS, encoding="utf-8")
    return tmp_path


def test_catalog_is_typed_and_the_newest_duplicate_wins(inputs):
    catalog = read_catalog(inputs)
    products = catalog.products
    assert products["product_id"].to_list() == ["P1", "P2"]
    assert catalog.duplicates_dropped == 1
    p1 = products.row(0, named=True)
    assert p1["title"] == "Trail Shoe v2" and p1["attributes"] == ["trail", "grip", "waterproof"]
    assert p1["price"] == 125.0 and p1["in_stock"] is True
    assert products["in_stock"].to_list() == [True, False]


def test_unknown_products_and_duplicate_events_are_counted_and_dropped(inputs):
    tolerant = QualityConfig(max_unknown_product_share=0.5)
    log = read_event_log(inputs, read_catalog(inputs).products["product_id"], tolerant)
    assert log.rows_read == 5
    assert log.unknown_products_dropped == 1
    assert log.duplicates_dropped == 1
    assert log.interactions.height == 3
    assert "P9" not in log.interactions["product_id"].to_list()
    assert sorted(log.interactions["event_type"].unique()) == ["purchase", "rating", "view"]


def test_parquet_and_jsonl_read_like_csv(inputs, tmp_path_factory):
    expected = read_catalog(inputs).products
    for suffix in ("parquet", "jsonl"):
        other = tmp_path_factory.mktemp(suffix)
        frame = pl.read_csv(inputs / "products.csv", infer_schema=False).with_columns(
            pl.col("attributes").str.split("|"))
        frame.write_parquet(other / "products.parquet") if suffix == "parquet" else frame.write_ndjson(
            other / "products.jsonl")
        assert read_catalog(other).products.equals(expected), suffix


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"products\.csv.*missing input"):
        read_catalog(tmp_path)


def test_missing_required_column_is_named(inputs):
    (inputs / "products.csv").write_text("product_id,title,category\nP1,Shoe,Running\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"products\.csv, column 'description'.*missing required column"):
        read_catalog(inputs)


@pytest.mark.parametrize("column, bad, row", [("price", "cheap", 2), ("in_stock", "maybe", 1),
                                              ("updated_at", "last tuesday", 3)])
def test_wrong_type_names_file_column_and_row(inputs, column, bad, row):
    frame = pl.read_csv(inputs / "products.csv", infer_schema=False)
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == row - 1).then(pl.lit(bad))
                               .otherwise(pl.col(column)).alias(column))
    frame.write_csv(inputs / "products.csv")
    with pytest.raises(InputError) as error:
        read_catalog(inputs)
    assert error.value.column == column and error.value.row == row
    assert "products.csv" in str(error.value) and repr(bad) in str(error.value)


def test_unknown_event_type_names_the_row(inputs):
    (inputs / "interactions.csv").write_text(EVENTS.replace("purchase", "wishlist"), encoding="utf-8")
    with pytest.raises(InputError, match=r"interactions\.csv, column 'event_type', row 2: value 'wishlist'"):
        read_event_log(inputs, read_catalog(inputs).products["product_id"], QualityConfig(max_unknown_product_share=1))


def test_no_usable_interactions_is_an_error(inputs):
    (inputs / "interactions.csv").write_text("user_id,product_id,event_type,value,timestamp\n", encoding="utf-8")
    with pytest.raises(InputError, match="no usable interactions"):
        read_event_log(inputs, read_catalog(inputs).products["product_id"])


def test_every_timestamp_format_reads_the_instant_it_names(tmp_path):
    """Whole and fractional seconds, offsets, naive times (UTC) and Unix seconds, mixed in one log."""
    written = ["2026-02-01T10:00:00Z", "2026-02-01T10:00:00.250Z", "2026-02-01T12:00:00+02:00",
               "2026-02-01T12:00:00.250+02:00", "2026-02-01 10:00:00", "2026-02-01 10:00:00.250",
               "2026-02-01T10:00:00", "1769940000"]
    (tmp_path / "products.csv").write_text(PRODUCTS, encoding="utf-8")
    (tmp_path / "interactions.csv").write_text(
        "user_id,product_id,event_type,value,timestamp\n"
        + "".join(f"U{n},P1,view,1,{stamp}\n" for n, stamp in enumerate(written)), encoding="utf-8")
    events = read_event_log(tmp_path, pl.Series(["P1"])).interactions.sort("user_id")
    read = dict(zip(events["user_id"], events["timestamp"].dt.epoch("ms")))
    whole, quarter = 1769940000000, 1769940000250
    assert [read[f"U{n}"] for n in range(len(written))] == [whole, quarter, whole, quarter, whole, quarter, whole,
                                                             whole]
