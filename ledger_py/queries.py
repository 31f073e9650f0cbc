"""The SQL text both wrapper classes send: one statement per call.

Each SQL function of the API is described once: its required parameters
(always sent, so that a None reaches the function's own check), its
optional ones (sent only when given, so the function's DEFAULT applies
and Python never restates it), the SQL type of each (an explicit cast
picks the right overload and keeps prepared statements stable), and what
it returns. `Call.sql()` renders

    SELECT <fields of the result class> FROM ledger.<name>(p => %(p)s::type, ...)

with named parameters, rendered once per set of given optional parameters.

`ALL_CALLS` is the one list of the SQL API's functions that Python wraps:
their names, parameters and SQL types, which parameters are optional, what
they return and which roles may call them. `NOT_WRAPPED` names every other
function of schema ledger a role may call, or that has no leading
underscore, with the reason it has no method. tests/sql/test_catalog.py
checks both lists against PostgreSQL's catalog (pg_proc, the result
columns, has_function_privilege); the tests that need the API's names and
grants derive them from here.

`Call.params()` also checks each value's Python type against its SQL type
before anything is sent (InvalidArgument, field and reason "wrong type"): a
bool is no id or amount, a float id would be rounded by the cast to another
row, and a str where a timestamp or interval belongs would be parsed by
PostgreSQL's permissive input rules. Only types are checked here; whether a
value is acceptable (ranges, lengths, names) stays the database's to judge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg.rows import RowFactory, RowMaker, tuple_row

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
    "text[]": (list,),
    "bigint[]": (list,),
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
    "text[]": "a list of str",
    "bigint[]": "a list of int",
}


def _checked(name: str, sql_type: str, value: Any) -> Any:
    """value when its Python type suits sql_type (None always does: the SQL
    function judges a missing value); InvalidArgument otherwise."""
    if value is None:
        return value
    accepted = _ACCEPTED[sql_type]
    if sql_type.endswith("[]") and type(value) in accepted:
        # An array: each item of the element's type (None: the database judges it).
        for item in value:
            _checked(name, sql_type[:-2], item)
        return value
    if type(value) in accepted or (
        isinstance(value, accepted) and (type(value) is not bool or bool in accepted)
    ):
        return value
    raise InvalidArgument(
        f"invalid argument: {name} must be {_EXPECTED[sql_type]}, not {type(value).__name__}",
        detail={"field": name, "reason": "wrong type", "expected": _EXPECTED[sql_type]},
    )


def _positional_row(result: type[Any]) -> RowFactory[Any]:
    """Rows as `result` instances, built from their values in order: the
    statement selects exactly the result's fields, in its field order
    (`results.column_list`), so nothing needs the cursor's column names."""

    def make(values: Sequence[Any]) -> Any:
        return result(*values)

    def factory(cursor: Any) -> RowMaker[Any]:
        return make

    return factory


# The roles of migrations/0001 that are granted EXECUTE (sql/90_grants.sql).
APP = "ledger_app"  # services
READER = "ledger_reader"  # auditors and reports
OWNER = "ledger_owner"  # operators
DISPATCHER = "ledger_dispatcher"  # the webhook dispatcher (`ledger webhooks run`)
OPERATOR = "ledger_operator"  # people correcting the ledger (the console's operators)
CONSOLE = "ledger_console"  # the console's own users and session key
READERS = (APP, READER, OWNER)
CONSOLE_READERS = (APP, READER, OWNER, OPERATOR)


class Call:
    """One SQL function of the ledger API.

    `required` and `optional`: (name, SQL type) in the function's order; the
    optional ones are those with a DEFAULT. `result`: the dataclass a row
    becomes, or None for a scalar of SQL type `returns`. `callers`: the
    roles granted EXECUTE on it.
    """

    __slots__ = (
        "_sql",
        "callers",
        "name",
        "optional",
        "required",
        "result",
        "returns",
        "row_factory",
    )

    def __init__(
        self,
        name: str,
        required: tuple[tuple[str, str], ...],
        optional: tuple[tuple[str, str], ...] = (),
        result: type[Any] | None = None,
        *,
        returns: str | None = None,
        callers: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.required = required
        self.optional = optional
        self.result = result  # None: a scalar result
        self.returns = returns
        self.callers = callers
        self.row_factory: RowFactory[Any] = (
            _positional_row(result) if result is not None else tuple_row
        )
        self._sql: dict[tuple[str, ...], str] = {}

    def __repr__(self) -> str:
        return f"Call({self.name!r})"

    @property
    def types(self) -> dict[str, str]:
        return dict(self.required + self.optional)

    @property
    def signature(self) -> str:
        """name(type, ...): the function's identity, as in GRANT and DROP."""
        return f"{self.name}({', '.join(t for _, t in self.required + self.optional)})"

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


DEFINE_APP = Call(
    "define_app", (("app", "text"),), (("description", "text"),), results.App, callers=(OWNER,)
)
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
        ("expires_after", "interval"),
        ("grant_priority", "integer"),
    ),
    results.Operation,
    callers=(OWNER,),
)
LIST_OPERATIONS = Call(
    "list_operations", (("app", "text"),), (), results.Operation, callers=READERS
)
POST_ENTRY = Call(
    "post_entry",
    (("owner_id", "text"), ("app", "text"), ("operation", "text"), ("idempotency_key", "text")),
    (("amount", "numeric"), ("metadata", "text")),
    results.Entry,
    callers=(APP,),
)
POST_ENTRIES = Call(
    "post_entries",
    (("entries", "text"),),
    (("idempotency_key", "text"),),
    results.Entry,
    callers=(APP,),
)
GET_BALANCE = Call("get_balance", (("owner_id", "text"),), (), results.Balance, callers=READERS)
GET_ENTRY = Call(
    "get_entry",
    (("entry_id", "bigint"),),
    (("app", "text"), ("owner_id", "text")),
    results.JournalEntry,
    callers=READERS,
)
LIST_ENTRIES = Call(
    "list_entries",
    (("owner_id", "text"),),
    (("after_id", "bigint"), ("max_rows", "integer"), ("app", "text")),
    results.JournalEntry,
    callers=READERS,
)
BALANCE_AT = Call(
    "balance_at",
    (("owner_id", "text"), ("at", "timestamptz")),
    returns="bigint",
    callers=READERS,
)
CREATE_HOLD = Call(
    "create_hold",
    (("owner_id", "text"), ("app", "text"), ("operation", "text"), ("idempotency_key", "text")),
    (("amount", "numeric"), ("ttl", "interval")),
    results.Hold,
    callers=(APP,),
)
CAPTURE_HOLD = Call(
    "capture_hold",
    (("hold_id", "bigint"), ("app", "text")),
    (("amount", "numeric"), ("owner_id", "text")),
    results.Entry,
    callers=(APP,),
)
RELEASE_HOLD = Call(
    "release_hold",
    (("hold_id", "bigint"), ("app", "text")),
    (("owner_id", "text"),),
    results.Hold,
    callers=(APP,),
)
GET_HOLD = Call(
    "get_hold",
    (("hold_id", "bigint"),),
    (("app", "text"), ("owner_id", "text")),
    results.HoldRecord,
    callers=READERS,
)
LIST_HOLDS = Call(
    "list_holds", (("owner_id", "text"),), (("app", "text"),), results.HoldRecord, callers=READERS
)
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
    callers=(APP,),
)
REVERSE_ENTRY = Call(
    "reverse_entry",
    (("entry_id", "bigint"), ("app", "text"), ("idempotency_key", "text")),
    (("reason", "text"), ("owner_id", "text")),
    results.Entry,
    callers=(APP,),
)
GRANT_CREDITS = Call(
    "grant_credits",
    (("owner_id", "text"), ("app", "text"), ("operation", "text"), ("idempotency_key", "text")),
    (
        ("amount", "numeric"),
        ("expires_at", "timestamptz"),
        ("priority", "integer"),
        ("metadata", "text"),
    ),
    results.Entry,
    callers=(APP,),
)
LIST_GRANTS = Call(
    "list_grants",
    (("owner_id", "text"),),
    (("include_closed", "boolean"),),
    results.Grant,
    callers=READERS,
)
VOID_GRANT = Call(
    "void_grant",
    (("grant_id", "bigint"), ("app", "text"), ("idempotency_key", "text")),
    (("reason", "text"), ("owner_id", "text")),
    results.Entry,
    callers=(APP,),
)
EXPIRE_GRANTS = Call(
    "expire_grants",
    (),
    (("max_rows", "integer"), ("warn_before", "interval")),
    returns="integer",
    callers=(APP, OWNER),
)
LIST_EVENTS = Call(
    "list_events",
    (("app", "text"),),
    (("after", "text"), ("max_rows", "integer")),
    results.Event,
    callers=(APP,),
)
RELAY_EVENTS = Call(
    "relay_events",
    (),
    (("max_rows", "integer"),),
    returns="integer",
    callers=(APP, DISPATCHER),
)
SET_BALANCE_ALERT = Call(
    "set_balance_alert",
    (("app", "text"), ("threshold", "bigint")),
    returns="bigint[]",
    callers=(APP,),
)
REMOVE_BALANCE_ALERT = Call(
    "remove_balance_alert",
    (("app", "text"), ("threshold", "bigint")),
    returns="bigint[]",
    callers=(APP,),
)
LIST_BALANCE_ALERTS = Call(
    "list_balance_alerts", (("app", "text"),), returns="bigint[]", callers=READERS
)
LIST_SPENDING = Call(
    "list_spending",
    (("owner_id", "text"),),
    (("entry_id", "bigint"), ("grant_id", "bigint"), ("max_rows", "integer")),
    results.Spending,
    callers=READERS,
)
APP_REPORT = Call(
    "app_report",
    (("app", "text"), ("from_time", "timestamptz"), ("to_time", "timestamptz")),
    (),
    results.ReportRow,
    callers=READERS,
)
VERIFY = Call("verify", (), (), results.Discrepancy, callers=READERS)
METRICS_SNAPSHOT = Call(
    "metrics_snapshot", (), (("recent", "interval"),), results.MetricsSnapshot, callers=READERS
)
CREATE_API_KEY = Call(
    "create_api_key",
    (("app", "text"), ("token_sha256", "bytea")),
    (("label", "text"), ("scope", "text")),
    results.ApiKey,
    callers=(OWNER,),
)
LIST_API_KEYS = Call("list_api_keys", (), (), results.ApiKey, callers=(OWNER,))
REVOKE_API_KEY = Call("revoke_api_key", (("key_id", "text"),), returns="boolean", callers=(OWNER,))
API_KEY_LOOKUP = Call(
    "api_key_lookup", (("token_sha256", "bytea"),), (), results.KeyHolder, callers=(APP,)
)

# Webhooks (sql/80_webhooks.sql): endpoints, the delivery log and resend for
# services and operators; fan-out, claims and outcomes for the dispatcher.
CREATE_WEBHOOK_ENDPOINT = Call(
    "create_webhook_endpoint",
    (("app", "text"), ("url", "text")),
    (("event_types", "text[]"), ("description", "text")),
    results.NewWebhookEndpoint,
    callers=(APP, OWNER),
)
LIST_WEBHOOK_ENDPOINTS = Call(
    "list_webhook_endpoints", (), (("app", "text"),), results.WebhookEndpoint, callers=READERS
)
GET_WEBHOOK_ENDPOINT = Call(
    "get_webhook_endpoint",
    (("endpoint_id", "bigint"),),
    (("app", "text"),),
    results.WebhookEndpoint,
    callers=READERS,
)
SET_WEBHOOK_ENDPOINT_ACTIVE = Call(
    "set_webhook_endpoint_active",
    (("endpoint_id", "bigint"), ("app", "text"), ("active", "boolean")),
    (),
    results.WebhookEndpoint,
    callers=(APP, OWNER),
)
DELETE_WEBHOOK_ENDPOINT = Call(
    "delete_webhook_endpoint",
    (("endpoint_id", "bigint"), ("app", "text")),
    (),
    results.WebhookEndpoint,
    callers=(APP, OWNER),
)
LIST_WEBHOOK_DELIVERIES = Call(
    "list_webhook_deliveries",
    (("endpoint_id", "bigint"),),
    (("app", "text"), ("status", "text"), ("before_id", "bigint"), ("max_rows", "integer")),
    results.WebhookDelivery,
    callers=READERS,
)
LIST_WEBHOOK_ATTEMPTS = Call(
    "list_webhook_attempts",
    (("endpoint_id", "bigint"),),
    (("app", "text"), ("event_id", "bigint"), ("max_rows", "integer")),
    results.WebhookAttempt,
    callers=READERS,
)
RESEND_WEBHOOK_EVENT = Call(
    "resend_webhook_event",
    (("event_id", "bigint"), ("app", "text")),
    (("endpoint_id", "bigint"),),
    results.WebhookDelivery,
    callers=(APP, OWNER, OPERATOR),
)
FAN_OUT_WEBHOOKS = Call(
    "fan_out_webhooks", (), (("max_rows", "integer"),), returns="integer", callers=(DISPATCHER,)
)
CLAIM_WEBHOOK_DELIVERIES = Call(
    "claim_webhook_deliveries",
    (("max_rows", "integer"), ("lease", "interval")),
    (("per_endpoint", "integer"), ("skip_endpoints", "bigint[]")),
    results.WebhookClaim,
    callers=(DISPATCHER,),
)
RECORD_WEBHOOK_ATTEMPTS = Call(
    "record_webhook_attempts",
    (("outcomes", "text"),),
    (("horizon", "interval"),),
    returns="integer",
    callers=(DISPATCHER,),
)
PRUNE_EVENTS = Call(
    "prune_events",
    (),
    (("older_than", "interval"), ("max_rows", "integer")),
    returns="integer",
    callers=(OWNER, DISPATCHER),
)
PRUNE_WEBHOOK_DELIVERIES = Call(
    "prune_webhook_deliveries",
    (),
    (("older_than", "interval"), ("max_rows", "integer")),
    returns="integer",
    callers=(OWNER, DISPATCHER),
)

# Operators and the console (sql/85_operators.sql).
OPERATOR_GRANT_CREDITS = Call(
    "operator_grant_credits",
    (
        ("operator", "text"),
        ("reason", "text"),
        ("owner_id", "text"),
        ("app", "text"),
        ("operation", "text"),
        ("idempotency_key", "text"),
    ),
    (("amount", "numeric"), ("expires_at", "timestamptz"), ("priority", "integer")),
    results.Entry,
    callers=(OPERATOR,),
)
OPERATOR_VOID_GRANT = Call(
    "operator_void_grant",
    (("operator", "text"), ("reason", "text"), ("grant_id", "bigint"), ("idempotency_key", "text")),
    (("owner_id", "text"),),
    results.Entry,
    callers=(OPERATOR,),
)
OPERATOR_REVERSE_ENTRY = Call(
    "operator_reverse_entry",
    (("operator", "text"), ("reason", "text"), ("entry_id", "bigint"), ("idempotency_key", "text")),
    (("owner_id", "text"),),
    results.Entry,
    callers=(OPERATOR,),
)
OPERATOR_RELEASE_HOLD = Call(
    "operator_release_hold",
    (("operator", "text"), ("reason", "text"), ("hold_id", "bigint"), ("idempotency_key", "text")),
    (("owner_id", "text"),),
    results.Hold,
    callers=(OPERATOR,),
)
LIST_OPERATOR_ACTIONS = Call(
    "list_operator_actions",
    (("owner_id", "text"),),
    (("entry_id", "bigint"), ("hold_id", "bigint"), ("max_rows", "integer")),
    results.OperatorAction,
    callers=CONSOLE_READERS,
)
OWNER_HISTORY = Call(
    "owner_history",
    (("owner_id", "text"),),
    (("before_seq", "bigint"), ("max_rows", "integer"), ("app", "text"), ("operation", "text")),
    results.HistoryEntry,
    callers=CONSOLE_READERS,
)
FIND_OWNERS = Call(
    "find_owners",
    (("owner_id", "text"),),
    (("max_rows", "integer"),),
    results.BusyOwner,
    callers=CONSOLE_READERS,
)
BALANCE_SERIES = Call(
    "balance_series",
    (("owner_id", "text"),),
    (("points", "integer"),),
    results.BalancePoint,
    callers=CONSOLE_READERS,
)
DAILY_ACTIVITY = Call(
    "daily_activity", (), (("days", "integer"),), results.DailyActivity, callers=CONSOLE_READERS
)
BUSIEST_OWNERS = Call(
    "busiest_owners",
    (),
    (("since", "interval"), ("max_rows", "integer")),
    results.BusyOwner,
    callers=CONSOLE_READERS,
)
LIST_OPEN_HOLDS = Call(
    "list_open_holds",
    (),
    (("expiring_within", "interval"), ("stale_after", "interval"), ("max_rows", "integer")),
    results.OpenHold,
    callers=CONSOLE_READERS,
)
LATEST_VERIFY = Call("latest_verify", (), (), results.VerifyRun, callers=CONSOLE_READERS)
RECORD_VERIFY = Call("record_verify", (), (), results.VerifyRun, callers=(OWNER, OPERATOR))
SET_CONSOLE_USER = Call(
    "set_console_user",
    (("name", "text"), ("role", "text"), ("password_hash", "text")),
    (),
    results.ConsoleUser,
    callers=(OWNER,),
)
REMOVE_CONSOLE_USER = Call(
    "remove_console_user", (("name", "text"),), returns="boolean", callers=(OWNER,)
)
LIST_CONSOLE_USERS = Call("list_console_users", (), (), results.ConsoleUser, callers=(OWNER,))
CONSOLE_SIGN_IN = Call(
    "console_sign_in", (("name", "text"),), (), results.SignInAttempt, callers=(CONSOLE,)
)
CONSOLE_SIGNED_IN = Call(
    "console_signed_in", (("name", "text"),), returns="boolean", callers=(CONSOLE,)
)
CONSOLE_USER = Call(
    "console_user", (("name", "text"),), (), results.ConsoleUser, callers=(CONSOLE,)
)
CONSOLE_SECRET = Call("console_secret", (), returns="text", callers=(CONSOLE,))

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
    GRANT_CREDITS,
    LIST_GRANTS,
    VOID_GRANT,
    EXPIRE_GRANTS,
    LIST_SPENDING,
    LIST_EVENTS,
    RELAY_EVENTS,
    SET_BALANCE_ALERT,
    REMOVE_BALANCE_ALERT,
    LIST_BALANCE_ALERTS,
    LIST_OPERATIONS,
    APP_REPORT,
    VERIFY,
    METRICS_SNAPSHOT,
    CREATE_API_KEY,
    LIST_API_KEYS,
    REVOKE_API_KEY,
    API_KEY_LOOKUP,
    CREATE_WEBHOOK_ENDPOINT,
    LIST_WEBHOOK_ENDPOINTS,
    GET_WEBHOOK_ENDPOINT,
    SET_WEBHOOK_ENDPOINT_ACTIVE,
    DELETE_WEBHOOK_ENDPOINT,
    LIST_WEBHOOK_DELIVERIES,
    LIST_WEBHOOK_ATTEMPTS,
    RESEND_WEBHOOK_EVENT,
    FAN_OUT_WEBHOOKS,
    CLAIM_WEBHOOK_DELIVERIES,
    RECORD_WEBHOOK_ATTEMPTS,
    PRUNE_EVENTS,
    PRUNE_WEBHOOK_DELIVERIES,
    OPERATOR_GRANT_CREDITS,
    OPERATOR_VOID_GRANT,
    OPERATOR_REVERSE_ENTRY,
    OPERATOR_RELEASE_HOLD,
    LIST_OPERATOR_ACTIONS,
    OWNER_HISTORY,
    FIND_OWNERS,
    BALANCE_SERIES,
    DAILY_ACTIVITY,
    BUSIEST_OWNERS,
    LIST_OPEN_HOLDS,
    LATEST_VERIFY,
    RECORD_VERIFY,
    SET_CONSOLE_USER,
    REMOVE_CONSOLE_USER,
    LIST_CONSOLE_USERS,
    CONSOLE_SIGN_IN,
    CONSOLE_SIGNED_IN,
    CONSOLE_USER,
    CONSOLE_SECRET,
)
"""Every function the wrapper calls: Ledger and AsyncLedger have one method
of each name, with exactly these parameters (and conn)."""


@dataclass(frozen=True)
class NotWrapped:
    """A function of schema ledger that has no wrapper method, and why.

    `signature` as `Call.signature` writes it; `callers` the roles granted
    EXECUTE on it."""

    signature: str
    callers: tuple[str, ...]
    reason: str


_JSONB_OVERLOAD = (
    "the same call with metadata as a jsonb value, for SQL callers that hold one; the wrapper "
    "sends text, which lets the database refuse duplicate keys"
)

NOT_WRAPPED: tuple[NotWrapped, ...] = (
    NotWrapped("post_entry(jsonb, text, text, text, text, numeric)", (APP,), _JSONB_OVERLOAD),
    NotWrapped("transfer(jsonb, text, text, numeric, text, text)", (APP,), _JSONB_OVERLOAD),
    NotWrapped(
        "post_entries(jsonb, text)",
        (APP,),
        "the batch as a jsonb value, for SQL callers that hold one; the wrapper sends text, "
        "which lets the database refuse duplicate keys",
    ),
    NotWrapped(
        "api_key_app(bytea)",
        (APP,),
        "the app of a token hash, for SQL callers; the wrapper asks api_key_lookup, "
        "which also gives the key's scope",
    ),
    NotWrapped(
        "refuse_entry_change()",
        (),
        "the trigger that keeps the journal append-only (migrations/0002): not called",
    ),
    NotWrapped(
        "_require_id(text, text)",
        READERS,
        "internal; granted because get_balance (not SECURITY DEFINER, the cheapest read) "
        "runs it as the caller",
    ),
    NotWrapped(
        "_invalid_id(text, text)",
        READERS,
        "internal; _require_id inlines a call of it (checked when the query starts)",
    ),
    NotWrapped(
        "_active_holds(text, bigint, timestamptz)",
        READERS,
        "internal; granted because get_balance (not SECURITY DEFINER, the cheapest read) "
        "runs it as the caller",
    ),
    NotWrapped(
        "_expired_unwritten(text, timestamptz)",
        READERS,
        "internal; granted because get_balance (not SECURITY DEFINER, the cheapest read) "
        "runs it as the caller",
    ),
)
"""The rest of schema ledger that a role may call or that has no leading
underscore (an underscore marks an internal function, callable by its owner
alone unless listed here)."""
