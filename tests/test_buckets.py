"""User buckets: a stable hash that depends on the id alone, and per-user results that do not depend on how
the users were split."""

from __future__ import annotations

import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PROJECT_ROOT
from checks import assert_same_lists
from pipeline.behavior import ItemCooccurrence
from pipeline.buckets import bucket_by_bucket, split_by_bucket, user_buckets
from pipeline.profiles import InterestWeighting, build_user_profiles, interaction_matrix
from pipeline.recommend import RecommendationSettings, recommend
from pipeline.vector_index import build_index

IDS = ["U0000001", "U_TRAIL", "ü-ser 42", "", "U" * 300]


def test_a_users_bucket_is_crc32_of_its_utf8_id_modulo_the_bucket_count():
    for buckets in (1, 2, 4, 7, 64):
        assert user_buckets(IDS, buckets).tolist() == [zlib.crc32(i.encode("utf-8")) % buckets for i in IDS]
    assert user_buckets(pl.Series(IDS), 4).tolist() == user_buckets(IDS, 4).tolist()
    with pytest.raises(ValueError):
        user_buckets(IDS, 0)


def test_buckets_are_the_same_in_another_python_process_with_another_hash_seed():
    script = "import sys; from pipeline.buckets import user_buckets; print(user_buckets(sys.argv[1:], 16).tolist())"
    outputs = {subprocess.run([sys.executable, "-c", script, *IDS], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, env={"PYTHONHASHSEED": seed}, check=True).stdout
               for seed in ("1", "2")}
    assert outputs == {f"{user_buckets(IDS, 16).tolist()}\n"}


@settings(max_examples=50, deadline=None)
@given(ids=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30), buckets=st.integers(1, 40))
def test_a_users_bucket_does_not_depend_on_the_other_users(ids, buckets):
    together = user_buckets(ids, buckets)
    assert ((together >= 0) & (together < buckets)).all()
    assert together.tolist() == [user_buckets([i], buckets)[0] for i in ids]


def test_split_by_bucket_keeps_every_row_once_in_order_and_names_empty_buckets():
    frame = pl.DataFrame({"user_id": ["a", "b", "a", "c", "d", "b"], "n": range(6)})
    parts = split_by_bucket(frame, 16)
    assert sorted(parts) == list(range(16))
    assert sum(part.height for part in parts.values()) == frame.height
    assert any(part.is_empty() for part in parts.values())
    for bucket, part in parts.items():
        assert (user_buckets(part["user_id"], 16) == bucket).all()
        assert part["n"].is_sorted()  # row order kept
        assert part.columns == frame.columns
    wanted = split_by_bucket(frame, 16, wanted=[int(user_buckets(["a"], 16)[0])])
    assert list(wanted.values())[0].filter(pl.col("user_id") == "a").height == 2


@settings(max_examples=25, deadline=None)
@given(users=st.lists(st.text(min_size=1, max_size=6), min_size=0, max_size=60), buckets=st.integers(1, 7))
def test_buckets_one_at_a_time_are_the_buckets_split_at_once(users, buckets):
    frame = pl.DataFrame({"user_id": users, "n": range(len(users))}, schema={"user_id": pl.String, "n": pl.Int64})
    one_at_a_time, at_once = list(bucket_by_bucket(frame, buckets)), split_by_bucket(frame, buckets)
    assert [bucket for bucket, _ in one_at_a_time] == list(range(buckets))
    for bucket, part in one_at_a_time:
        assert part.equals(at_once[bucket])


EVENT_TYPES = ["view", "cart", "purchase", "rating"]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_users=st.integers(1, 25), n_items=st.integers(3, 30),
       buckets=st.integers(2, 9), half_life_events=st.sampled_from([None, 2.0]))
def test_lists_made_bucket_by_bucket_are_the_lists_made_in_one_piece(seed, n_users, n_items, buckets,
                                                                      half_life_events):
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    n_events = int(rng.integers(n_users, 6 * n_users + 1))
    events = pl.DataFrame({
        "user_id": [f"u{u}" for u in np.r_[np.arange(n_users), rng.integers(0, n_users, n_events - n_users)]],
        "product_id": [f"p{i}" for i in rng.integers(0, n_items, n_events)],
        "event_type": [EVENT_TYPES[t] for t in rng.integers(0, 4, n_events)],
        "value": rng.integers(1, 6, n_events).astype(float),
        "timestamp": [start + timedelta(hours=int(h)) for h in rng.integers(0, 2000, n_events)],
    })
    product_ids = [f"p{i}" for i in range(n_items)]
    vectors = rng.normal(size=(n_items, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    in_stock = rng.random(n_items) > 0.2
    weighting = InterestWeighting({"view": 1.0, "cart": 3.0, "purchase": 5.0, "rating": 1.0},
                                  half_life_days=30.0, half_life_events=half_life_events)
    # Shared by every bucket, as in the pipeline: the index and the behavioural model over all users.
    index = build_index(vectors)
    behavior = ItemCooccurrence(neighbors_per_item=10).fit(
        interaction_matrix(events, product_ids, weighting).weights, product_ids)
    options = RecommendationSettings(alpha=0.3, top_k=5, candidates=n_items)

    def lists(part: pl.DataFrame) -> pl.DataFrame:
        profiles = build_user_profiles(part, product_ids, vectors, weighting)
        return recommend(profiles.matrix, profiles.vectors, vectors, index, behavior, in_stock, options,
                         progress=False)

    whole = lists(events)
    merged = pl.concat([lists(part) for part in split_by_bucket(events, buckets).values()])
    assert_same_lists(merged, whole)


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "ab", ""]), st.integers(0, 3)), max_size=12))
def test_a_bucket_is_published_unsorted_only_when_sorting_would_not_change_it(rows):
    from assets.buckets import in_order, sorted_parts

    frame = pl.DataFrame(rows, schema={"user_id": pl.String, "rank": pl.Int64}, orient="row")
    assert in_order(frame, ["user_id", "rank"]) == frame.equals(frame.sort("user_id", "rank"))
    published = list(sorted_parts([frame], ["user_id", "rank"]))
    assert [part.equals(frame.sort("user_id", "rank")) for part in published] == ([True] if frame.height else [])


def test_a_buckets_explanations_are_stored_as_tables_and_replaced_whole(tmp_path):
    """An `ExplanationBatch` is stored as a folder (texts, claims and audit as Arrow IPC, each read back only
    when asked for, so publishing holds one table at a time), and storing a bucket again replaces it whole."""
    from assets.resources import load_value, store_value
    from pipeline.explain import ExplanationBatch

    def batch(texts: list[str]) -> ExplanationBatch:
        return ExplanationBatch(frame=pl.DataFrame({"user_id": ["U1"] * len(texts), "explanation": texts}),
                                claims=pl.DataFrame({"kind": ["attribute"], "value": [len(texts)]}),
                                audit=pl.DataFrame({"kind": ["attribute"], "checked": [1], "false": [0]}),
                                llm_calls=len(texts), llm_tokens=7, cache_hits=0, fallbacks={"timeout": 1})

    path = tmp_path / "explanations" / "bucket-0"
    store_value(path, batch(["first", "night"]))
    store_value(path, batch(["second"]))
    back = load_value(path)
    assert sorted(p.name for p in path.iterdir()) == ["audit.arrow", "claims.arrow", "frame.arrow", "rest.pickle"]
    assert back.frame["explanation"].to_list() == ["second"] and back.claims["value"].to_list() == [1]
    assert (back.llm_calls, back.llm_tokens, back.fallbacks) == (1, 7, {"timeout": 1})
    assert [p.name for p in path.parent.iterdir()] == ["bucket-0"]  # nothing of the first night left beside it


def test_a_bucket_written_a_slice_at_a_time_reads_back_whole(tmp_path):
    """The explanations step appends each slice's texts and claims to its bucket's files as it makes them
    (`SpilledBuckets.filling`), so it never holds a whole bucket: read back, the bucket has every slice in
    order and the value's other fields, and a step that fails midway leaves no bucket and no file behind."""
    from assets.resources import SpilledBuckets
    from pipeline.explain import ExplanationBatch

    buckets = SpilledBuckets(tmp_path / "spill")
    with buckets.filling("bucket-0") as stored:
        for texts, reason in ((["first", "second"], [None, None]), (["third"], ["audit: a category claim did not hold"])):
            stored.append(frame=pl.DataFrame({"explanation": texts, "fallback_reason": pl.Series(reason, dtype=pl.String)}),
                          claims=pl.DataFrame({"kind": ["attribute"] * len(texts)}))
        stored.finish(ExplanationBatch(frame=None, claims=None, audit=pl.DataFrame({"kind": ["attribute"], "false": [0]}),
                                       llm_calls=2, llm_tokens=9, cache_hits=1, fallbacks={}))
    back = buckets["bucket-0"]
    assert back.frame["explanation"].to_list() == ["first", "second", "third"]
    assert back.frame["fallback_reason"].to_list() == [None, None, "audit: a category claim did not hold"]
    assert back.claims.height == 3 and back.audit["false"].to_list() == [0]
    assert (back.llm_calls, back.llm_tokens, back.cache_hits) == (2, 9, 1)

    with pytest.raises(RuntimeError, match="the step failed"), buckets.filling("bucket-1") as stored:
        stored.append(frame=pl.DataFrame({"explanation": ["half"]}))
        raise RuntimeError("the step failed")
    assert "bucket-1" not in buckets
    assert [p.name for p in (tmp_path / "spill").iterdir()] == ["bucket-0"]
