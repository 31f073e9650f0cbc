"""Responses encoded by orjson (web.request_input.StrictJSONProvider) are
the bytes Flask's own encoder writes, whatever the value: orjson's output is
taken only when it is, Flask's path is taken for the rest."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from hypothesis import given, settings
from hypothesis import strategies as st

from web.request_input import StrictJSONProvider


@dataclasses.dataclass
class Point:
    x: int
    label: str


class Flags(int):
    pass


def _providers() -> tuple[Any, Any]:
    ours, theirs = Flask("ours"), Flask("theirs")
    ours.json = StrictJSONProvider(ours)
    theirs.json = DefaultJSONProvider(theirs)
    theirs.json.sort_keys = False  # the API writes keys in the order the views build
    return ours, theirs


def _both(value: Any) -> tuple[bytes, bytes]:
    ours, theirs = _providers()
    with ours.app_context():
        mine = ours.json.response(value).get_data()
    with theirs.app_context():
        flask = theirs.json.response(value).get_data()
    return mine, flask


VALUES = {
    "entry": {"entry": {"entry_id": 1, "owner_id": "o1", "amount": -5}, "balance": 0},
    "non-ascii": {"owner_id": "héllo ✓ 🙂", "detail": 'a "quote" \\ and \n'},
    "lone surrogate": {"key": "\ud800"},
    "big int": {"n": 2**70, "m": -(2**64)},
    "datetime": {"at": dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC), "d": dt.date(2026, 1, 2)},
    "decimal and uuid": {"x": decimal.Decimal("1.50"), "u": uuid.UUID(int=7)},
    "dataclass": [Point(1, "a"), Point(2, "b")],
    "int subclass": {"f": Flags(3), "t": True, "none": None},
    "float": {"f": 0.1, "e": 1e16, "tiny": 5e-324},
    "non-string key": {1: "a"},
}


@pytest.mark.parametrize("name", VALUES)
def test_the_same_bytes_as_flask(name: str) -> None:
    mine, flask = _both(VALUES[name])
    assert mine == flask


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_any_json_value_gives_the_same_bytes(value: Any) -> None:
    mine, flask = _both(value)
    assert mine == flask
