"""The id rule is one rule: the pattern the API declares (read by Python's `re` and by pydantic's Rust regex)
and the check ingest runs (polars) accept exactly the same ids."""

from __future__ import annotations

import re
from typing import Annotated

import polars as pl
import pydantic
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipeline.ids import ID_PATTERN, MAX_ID_LENGTH, unservable_ids

EDGES = ["alice@example.com", "team/42", "üser-ß", "...", ".a", ".", "..", "a\tb", "a\x85b", "\x7f",
         "x" * MAX_ID_LENGTH, "x" * (MAX_ID_LENGTH + 1), ".." + "x" * (MAX_ID_LENGTH - 2)]
API_ID = pydantic.TypeAdapter(Annotated[str, pydantic.StringConstraints(pattern=ID_PATTERN)])


def api_accepts(value: str) -> bool:
    try:
        API_ID.validate_python(value)
        return True
    except pydantic.ValidationError:
        return False


@hypothesis_settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(min_size=1, max_size=MAX_ID_LENGTH + 3), st.sampled_from(EDGES)))
def test_ingest_and_the_api_accept_the_same_ids(value):
    ingest_accepts = not unservable_ids(pl.Series([value]))
    assert (re.fullmatch(ID_PATTERN, value) is not None) == ingest_accepts == api_accepts(value)


def test_the_ids_real_shops_use_are_accepted_and_unreachable_ones_are_not():
    assert unservable_ids(pl.Series(["alice@example.com", "Bob Smith", "üser-ß", 'o\'brien "q"', "a/b",
                                     "50% off?#x&y=z+1", "..."])) == []
    assert unservable_ids(pl.Series([".", "..", "line\nbreak", "x" * (MAX_ID_LENGTH + 1), "ok", None])) == [
        ".", "..", "line\nbreak", "x" * (MAX_ID_LENGTH + 1)]
