"""The SQL text both wrapper classes send: one statement per call.

Each SQL function of the API is described once: its required parameters
(always sent, so that a None reaches the function's own check), its
optional ones (sent only when given, so the function's DEFAULT applies
and Python never restates it), the SQL type of each (an explicit cast
picks the right overload and keeps prepared statements stable), and what
it returns. `Call.sql()` renders

    SELECT <fields of the result class> FROM ledger.<name>(p => %(p)s::type, ...)

with named parameters, rendered once per set of given optional parameters.

`Call.params()` also checks each value's Python type against its SQL type
before anything is sent (InvalidArgument, field and reason "wrong type"): a
bool is no id or amount, a float id would be rounded by the cast to another
row, and a str where a timestamp or interval belongs would be parsed by
PostgreSQL's permissive input rules. Only types are checked here; whether a
value is acceptable (ranges, lengths, names) stays the database's to judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg.rows import RowFactory, class_row, tuple_row

from . import results
from .errors import InvalidArgument

# The Python types each SQL parameter type takes (bool is an int subclass,
# refused apart). numeric (amounts) also takes Decimal: an exact number whose
# fraction or NaN the database judges (LG006); a float is not exact.
_ACCEPTED: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "bigint": (int,),
    "integer": (int,),
    "numeric": (int, Decimal),
    "boolean": (bool,),
    "timestamptz": (datetime,),
    "interval": (timedelta,),
    "bytea": (bytes,),
}
_EXPECTED: dict[str, str] = {
    "text": "a str",
    "bigint": "an int",
    "integer": "an int",
    "numeric": "an int",
    "boolean": "a bool",
    "timestamptz": "a datetime",
    "interval": "a timedelta",
    "bytea": "bytes",
}


def _checked(name: str, sql_type: str, value: Any) -> Any:
    """value when its Python type suits sql_type (None always does: the SQL
    function judges a missing value); InvalidArgument otherwise."""
    if value is None:
        return value
    accepted = _ACCEPTED[sql_type]
    if type(value) in accepted or (
        isinstance(value, accepted) and (type(value) is not bool or bool in accepted)
    ):
        return value
    raise InvalidArgument(
        f"invalid argument: {name} must be {_EXPECTED[sql_type]}, not {type(value).__name__}",
        detail={"field": name, "reason": "wrong type", "expected": _EXPECTED[sql_type]},
    )


class Call:
    """One SQL function of the ledger API."""

    __slots__ = ("_sql", "name", "optional", "required", "result", "row_factory")

    def __init__(
        self,
        name: str,
        required: tuple[tuple[str, str], ...],
        optional: tuple[tuple[str, str], ...] = (),
        result: type[Any] | None = None,
    ) -> None:
        self.name = name
        self.required = required
        self.optional = optional
        self.result = result  # None: a scalar result
        self.row_factory: RowFactory[Any] = class_row(result) if result is not None else tuple_row
        self._sql: dict[tuple[str, ...], str] = {}

    def __repr__(self) -> str:
        return f"Call({self.name!r})"

    @property
    def types(self) -> dict[str, str]:
        return dict(self.required + self.optional)

    def params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters to send: every required one, the optional ones not
        None, each of a Python type its SQL type takes (InvalidArgument if not)."""
        sent = {name: _checked(name, sql_type, given[name]) for name, sql_type in self.required}
        for name, sql_type in self.optional:
            value = given.get(name)
            if value is not None:
                sent[name] = _checked(name, sql_type, value)
        return sent

    def sql(self, params: Mapping[str, Any]) -> str:
        """The statement for these parameters (rendered once per set of names)."""
        names = tuple(params)
        text = self._sql.get(names)
        if text is None:
            text = self._sql[names] = self._render(names)
        return text

    def _render(self, names: tuple[str, ...]) -> str:
        types = self.types
        args = ", ".join(f"{name} => %({name})s::{types[name]}" for name in names)
        if self.result is None:
            return f"SELECT ledger.{self.name}({args})"
        return f"SELECT {results.column_list(self.result)} FROM ledger.{self.name}({args})"


DEFINE_APP = Call("define_app", (("app", "text"),), (("description", "text"),), results.App)
DEFINE_OPERATION = Call(
    "define_operation",
    (("app", "text"), ("operation", "text"), ("direction", "text")),
    (
        ("default_amount", "bigint"),
        ("min_amount", "bigint"),
        ("max_amount", "bigint"),
        ("caller_sets_amount", "boolean"),
        ("limit_per", "text"),
        ("description", "text"),
    ),
    results.Operation,
)
LIST_OPERATIONS = Call("list_operations", (("app", "text"),), (), results.Operation)
POST_ENTRY = Call(
    "post_entry",
    (("owner_id", "text"), ("app", "text"), ("operation", "text"), ("idempotency_key", "text")),
    (("amount", "numeric"), ("metadata", "text")),
    results.Entry,
)
POST_ENTRIES = Call(
    "post_entries", (("entries", "text"),), (("idempotency_key", "text"),), results.Entry
)
GET_BALANCE = Call("get_balance", (("owner_id", "text"),), (), results.Balance)
GET_ENTRY = Call("get_entry", (("entry_id", "bigint"),), (("app", "text"),), results.JournalEntry)
LIST_ENTRIES = Call(
    "list_entries",
    (("owner_id", "text"),),
    (("after_id", "bigint"), ("max_rows", "integer"), ("app", "text")),
    results.JournalEntry,
)
BALANCE_AT = Call("balance_at", (("owner_id", "text"), ("at", "timestamptz")))
CREATE_HOLD = Call(
    "create_hold",
    (("owner_id", "text"), ("app", "text"), ("operation", "text"), ("idempotency_key", "text")),
    (("amount", "numeric"), ("ttl", "interval")),
    results.Hold,
)
CAPTURE_HOLD = Call(
    "capture_hold",
    (("hold_id", "bigint"), ("app", "text")),
    (("amount", "numeric"),),
    results.Entry,
)
RELEASE_HOLD = Call("release_hold", (("hold_id", "bigint"), ("app", "text")), (), results.Hold)
GET_HOLD = Call("get_hold", (("hold_id", "bigint"),), (("app", "text"),), results.HoldRecord)
LIST_HOLDS = Call("list_holds", (("owner_id", "text"),), (("app", "text"),), results.HoldRecord)
TRANSFER = Call(
    "transfer",
    (
        ("from_owner", "text"),
        ("to_owner", "text"),
        ("amount", "numeric"),
        ("app", "text"),
        ("idempotency_key", "text"),
    ),
    (("metadata", "text"),),
    results.Transfer,
)
REVERSE_ENTRY = Call(
    "reverse_entry",
    (("entry_id", "bigint"), ("app", "text"), ("idempotency_key", "text")),
    (("reason", "text"),),
    results.Entry,
)
APP_REPORT = Call(
    "app_report",
    (("app", "text"), ("from_time", "timestamptz"), ("to_time", "timestamptz")),
    (),
    results.ReportRow,
)
VERIFY = Call("verify", (), (), results.Discrepancy)
CREATE_API_KEY = Call(
    "create_api_key",
    (("app", "text"), ("token_sha256", "bytea")),
    (("label", "text"), ("scope", "text")),
    results.ApiKey,
)
LIST_API_KEYS = Call("list_api_keys", (), (), results.ApiKey)
REVOKE_API_KEY = Call("revoke_api_key", (("key_id", "text"),))
API_KEY_LOOKUP = Call("api_key_lookup", (("token_sha256", "bytea"),), (), results.KeyHolder)

ALL_CALLS: tuple[Call, ...] = (
    DEFINE_APP,
    DEFINE_OPERATION,
    POST_ENTRY,
    GET_BALANCE,
    GET_ENTRY,
    LIST_ENTRIES,
    BALANCE_AT,
    CREATE_HOLD,
    CAPTURE_HOLD,
    RELEASE_HOLD,
    GET_HOLD,
    LIST_HOLDS,
    TRANSFER,
    REVERSE_ENTRY,
    POST_ENTRIES,
    LIST_OPERATIONS,
    APP_REPORT,
    VERIFY,
    CREATE_API_KEY,
    LIST_API_KEYS,
    REVOKE_API_KEY,
    API_KEY_LOOKUP,
)
