"""The compiled path of the API's schemas (web/fast_schema.py) gives what
marshmallow gives, for every schema of the API: the same loaded dict or the
same 422 messages, the same dumped document. No database: pure functions."""

from __future__ import annotations

import datetime as dt
import types
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import EXCLUDE, ValidationError, fields

import web.example_app
import web.webhooks  # noqa: F401  (its schemas)
from web import schemas
from web.fast_schema import FastSchema, _dump_plan, _load_plan
from web.idempotency import IdempotencyHeaders


def _all(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all(sub))
    return out


SCHEMAS = sorted(set(_all(FastSchema)), key=lambda c: c.__name__)
# A schema without a compiled path takes marshmallow's on both sides.
LOADING = [cls for cls in SCHEMAS if _load_plan(cls) is not None]
DUMPING = [cls for cls in SCHEMAS if _dump_plan(cls) is not None]

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63])
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def _data_keys(schema: Any) -> list[str]:
    return [f.data_key or name for name, f in schema.load_fields.items()]


def test_the_hot_schemas_have_a_compiled_path() -> None:
    """Without it every request would take marshmallow's path (this test
    fails if a declaration change made them lose it)."""
    for cls in (schemas.EntryIn, IdempotencyHeaders, schemas.HoldIn, schemas.TransferIn):
        assert _load_plan(cls) is not None, cls
    for cls in (schemas.WriteOut, schemas.EntryOut, schemas.BalanceOut, schemas.HoldWriteOut):
        assert _dump_plan(cls) is not None, cls


def _load_both(schema: Any, data: Any, **kwargs: Any) -> tuple[Any, Any]:
    outcomes = []
    for load in (schema.load, schema.slow_load):
        try:
            outcomes.append(("ok", load(data, **kwargs)))
        except ValidationError as exc:
            outcomes.append(("error", exc.messages))
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize("cls", LOADING, ids=lambda c: c.__name__)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_load_gives_what_marshmallow_gives(cls: type, data: st.DataObject) -> None:
    schema = cls()
    keys = _data_keys(schema)
    body = data.draw(
        st.dictionaries(st.sampled_from([*keys, "extra", "amount", "nonce"]), JSON, max_size=7)
        | JSON
    )
    fast, slow = _load_both(schema, body)
    assert fast == slow
    if isinstance(body, dict):  # as the headers location loads (unknown keys excluded)
        fast, slow = _load_both(schema, body, unknown=EXCLUDE)
        assert fast == slow


def _value(field: fields.Field[Any], depth: int = 0) -> st.SearchStrategy[Any]:
    if isinstance(field, fields.Nested):
        nested = field.schema
        one = _document(type(nested), depth + 1) if depth < 3 else st.none()
        return st.none() | (st.lists(one, max_size=2) if field.many else one)
    if isinstance(field, fields.List):
        return st.none() | st.lists(_value(field.inner, depth + 1), max_size=2)
    if isinstance(field, fields.Boolean):
        return st.none() | st.booleans() | st.sampled_from([0, 1])
    if isinstance(field, fields.DateTime):
        return st.none() | st.datetimes(timezones=st.none() | st.timezones())
    if isinstance(field, fields.TimeDelta):
        return st.none() | st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=9))
    if isinstance(field, fields.Integer):
        return st.none() | st.integers() | st.sampled_from([True, 1.0])
    if isinstance(field, fields.String):
        return st.none() | st.text(max_size=6) | st.sampled_from([1, b"x"])
    return JSON


@st.composite
def _object(draw: st.DrawFn, cls: type, depth: int) -> Any:
    schema = cls()
    values = {}
    for name, field in schema.dump_fields.items():
        if draw(st.integers(0, 9)) == 0:
            continue  # an attribute the object lacks
        values[name] = draw(_value(field, depth))
    # Read as a dict (the views' wrappers) or as an object (the result dataclasses).
    return values if draw(st.booleans()) else types.SimpleNamespace(**values)


def _document(cls: type, depth: int = 0) -> st.SearchStrategy[Any]:
    return _object(cls, depth)


def _dump_both(schema: Any, obj: Any, **kwargs: Any) -> tuple[Any, Any]:
    outcomes = []
    for dump in (schema.dump, schema.slow_dump):
        try:
            outcomes.append(("ok", dump(obj, **kwargs)))
        except Exception as exc:
            outcomes.append(("error", type(exc)))
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize("cls", DUMPING, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_dump_gives_what_marshmallow_gives(cls: type, data: st.DataObject) -> None:
    schema = cls()
    obj = data.draw(_document(cls))
    fast, slow = _dump_both(schema, obj)
    assert fast == slow
    fast, slow = _dump_both(schema, [obj, obj], many=True)
    assert fast == slow
