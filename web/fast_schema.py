"""A cheaper path through the same marshmallow declarations.

The API's shapes are declared once, as marshmallow schemas (web/schemas.py):
apiflask reads them to generate the OpenAPI document, and validates and
serializes with them. marshmallow's general machinery (field dispatch,
error accumulation, hooks, partial loading) costs tens of microseconds per
request, most of it for cases these schemas never have. ``FastSchema``
reads each schema's own fields once and compiles a plan for the plain
cases; ``load`` and ``dump`` take that plan and hand anything else to
marshmallow itself:

- **load** (request bodies and headers): a ``dict`` whose keys are all
  declared (or, for an ``EXCLUDE`` schema, whatever the extra keys), each
  value of exactly the declared kind (a ``str`` for ``String``, an ``int``
  that is not a ``bool`` for a strict ``Integer`` and within its ``Range``,
  anything for ``Raw``, ``None`` where ``allow_none``), missing fields
  taking their ``load_default``. Anything else (a wrong type, a missing
  required field, an unknown key, a value out of range, a field kind not
  compiled) goes to marshmallow, which then produces the one 422 it always
  did: the fast path only ever *accepts* what marshmallow accepts, with the
  same result;
- **dump** (responses): ``Integer``, ``String``, ``Boolean``, ``DateTime``
  (ISO 8601), ``Dict``, ``Raw``, ``Nested`` and ``List`` of those, read from
  a dataclass or a dict as marshmallow reads them. A value of another type
  makes the whole dump go through marshmallow.

A schema with a field kind or option not compiled here (a ``TimeDelta``, a
non-strict ``Integer``, a validator other than ``Range``, a hook) has no
plan and always goes through marshmallow. tests/web/test_fast_schema.py
checks, for every schema of the API, that both paths give the same result.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from apiflask import Schema
from marshmallow import EXCLUDE, RAISE, fields, missing
from marshmallow.validate import Range


class _Decline(Exception):
    """The fast path does not handle this value: marshmallow does."""


# ---- load -------------------------------------------------------------------------------

_STR, _INT, _RAW = "str", "int", "raw"


def _load_kind(field: Any) -> tuple[str, tuple[int | None, int | None]] | None:
    """(kind, (min, max)) of a field the fast load handles, or None."""
    bounds: tuple[int | None, int | None] = (None, None)
    validators = list(field.validators)
    if type(field) in (fields.String, fields.Str) and not validators:
        return _STR, bounds
    if type(field) in (fields.Raw,) and not validators:
        return _RAW, bounds
    if type(field) in (fields.Integer, fields.Int) and field.strict and not field.as_string:
        for validator in validators:
            # Only inclusive bounds without a custom message (its text is marshmallow's).
            if type(validator) is not Range or not (
                validator.min_inclusive and validator.max_inclusive
            ):
                return None
            low, high = bounds
            if validator.min is not None:
                low = validator.min if low is None else max(low, validator.min)
            if validator.max is not None:
                high = validator.max if high is None else min(high, validator.max)
            bounds = (low, high)
        return _INT, bounds
    return None


class _LoadPlan:
    __slots__ = ("fields", "keys", "unknown")

    def __init__(self, schema: Schema) -> None:
        self.unknown = schema.unknown
        self.fields: list[tuple[str, str, str, bool, bool, Any, int | None, int | None]] = []
        for name, field in schema.load_fields.items():
            kind = _load_kind(field)
            if kind is None or field.attribute not in (None, name) or callable(field.load_default):
                raise _Decline(name)
            data_key = field.data_key if field.data_key is not None else name
            (low, high) = kind[1]
            self.fields.append(
                (
                    data_key,
                    name,
                    kind[0],
                    field.required,
                    field.allow_none,
                    field.load_default,
                    low,
                    high,
                )
            )
        self.keys = frozenset(f[0] for f in self.fields)

    def load(self, data: Any, unknown: str) -> dict[str, Any]:
        if type(data) is not dict:
            raise _Decline
        if unknown != EXCLUDE and not self.keys.issuperset(data):
            raise _Decline  # RAISE: marshmallow names the unknown field
        out: dict[str, Any] = {}
        for data_key, name, kind, required, allow_none, default, low, high in self.fields:
            value = data.get(data_key, missing)
            if value is missing:
                if required:
                    raise _Decline
                if default is not missing:
                    out[name] = default
                continue
            if value is None:
                if not allow_none:
                    raise _Decline
            elif kind is _STR:
                if type(value) is not str:
                    raise _Decline
            elif kind is _INT:
                if type(value) is not int:
                    raise _Decline
                if (low is not None and value < low) or (high is not None and value > high):
                    raise _Decline
            out[name] = value
        return out


# ---- dump -------------------------------------------------------------------------------


def _dump_value(field: Any) -> Any:
    """A function value -> JSON value for a field the fast dump handles (None: unhandled)."""
    kind = type(field)
    if kind in (fields.Integer, fields.Int) and not field.as_string:
        return _int
    if kind in (fields.String, fields.Str):
        return _str
    if kind in (fields.Boolean, fields.Bool):
        return _bool
    if kind is fields.DateTime and field.format in (None, "iso"):
        return _datetime
    if kind is fields.Dict and field.key_field is None and field.value_field is None:
        return _dict
    if kind is fields.Raw:
        return _raw
    if kind is fields.Nested and not field.only and not field.exclude:
        nested = field.schema
        plan = _dump_plan(type(nested)) if isinstance(nested, FastSchema) else None
        if plan is None or bool(nested.many) != bool(field.many):
            return None
        if field.many:
            return lambda value: None if value is None else [plan.dump(v) for v in _list(value)]
        return lambda value: None if value is None else plan.dump(value)
    if kind is fields.List:
        inner = _dump_value(field.inner)
        if inner is None:
            return None
        return lambda value: None if value is None else [inner(v) for v in _list(value)]
    return None


def _int(value: Any) -> Any:
    if value is None or type(value) is int:
        return value
    raise _Decline


def _str(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    raise _Decline


def _bool(value: Any) -> Any:
    if value is None or type(value) is bool:
        return value
    raise _Decline


def _datetime(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is dt.datetime:
        return value.isoformat()
    raise _Decline


def _dict(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is dict:
        return dict(value)
    raise _Decline


def _raw(value: Any) -> Any:
    return value


def _list(value: Any) -> Any:
    if type(value) in (list, tuple):
        return value
    raise _Decline


class _DumpPlan:
    __slots__ = ("fields",)

    def __init__(self, schema: Schema) -> None:
        self.fields: list[tuple[str, str, Any]] = []
        for name, field in schema.dump_fields.items():
            convert = _dump_value(field)
            if (
                convert is None
                or field.attribute not in (None, name)
                or field.dump_default is not missing
            ):
                raise _Decline(name)
            key = field.data_key if field.data_key is not None else name
            self.fields.append((name, key, convert))

    def dump(self, obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if type(obj) is dict:
            for name, key, convert in self.fields:
                value = obj.get(name, missing)
                if value is missing:
                    value = getattr(obj, name, missing)  # as marshmallow reads a Mapping
                    if value is missing:
                        continue
                out[key] = convert(value)
        elif hasattr(type(obj), "__getitem__"):
            raise _Decline  # marshmallow would try obj[name] first
        else:
            for name, key, convert in self.fields:
                value = getattr(obj, name, missing)
                if value is missing:
                    continue
                out[key] = convert(value)
        return out


# ---- the schema base class -----------------------------------------------------------------

_LOAD_PLANS: dict[type, _LoadPlan | None] = {}
_DUMP_PLANS: dict[type, _DumpPlan | None] = {}


def _load_plan(cls: type[Schema]) -> _LoadPlan | None:
    try:
        return _LOAD_PLANS[cls]
    except KeyError:
        pass
    schema = cls()
    plan: _LoadPlan | None = None
    if not _has_hooks(schema):
        try:
            plan = _LoadPlan(schema)
        except _Decline:
            plan = None
    _LOAD_PLANS[cls] = plan
    return plan


def _dump_plan(cls: type[Schema]) -> _DumpPlan | None:
    try:
        return _DUMP_PLANS[cls]
    except KeyError:
        pass
    schema = cls()
    plan: _DumpPlan | None = None
    if not _has_hooks(schema):
        try:
            plan = _DumpPlan(schema)
        except _Decline:
            plan = None
    _DUMP_PLANS[cls] = plan
    return plan


def _has_hooks(schema: Schema) -> bool:
    return any(schema._hooks.values())


def _plain(schema: Schema) -> bool:
    """Built without options that change what load/dump do."""
    return not (schema.only or schema.exclude or schema.partial or getattr(schema, "context", None))


class FastSchema(Schema):
    """An apiflask Schema whose load and dump take the compiled path when they can."""

    def load(
        self,
        data: Any,
        *,
        many: bool | None = None,
        partial: Any = None,
        unknown: str | None = None,
    ) -> Any:
        if not many and not self.many and partial is None and _plain(self):
            plan = _load_plan(type(self))
            if plan is not None:
                try:
                    return plan.load(data, unknown or self.unknown or RAISE)
                except _Decline:
                    pass
        return super().load(data, many=many, partial=partial, unknown=unknown)  # type: ignore[arg-type]

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        plan = _dump_plan(type(self)) if _plain(self) else None
        if plan is not None:
            try:
                if many if many is not None else self.many:
                    return [plan.dump(item) for item in _list(obj)]
                return plan.dump(obj)
            except _Decline:
                pass
        return super().dump(obj, many=many)

    def slow_load(self, data: Any, **kwargs: Any) -> Any:
        """marshmallow's own load (tests compare the two paths)."""
        return super().load(data, **kwargs)

    def slow_dump(self, obj: Any, **kwargs: Any) -> Any:
        """marshmallow's own dump (tests compare the two paths)."""
        return super().dump(obj, **kwargs)
