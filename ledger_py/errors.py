"""The ledger's exceptions and the one boundary that produces them.

Every business error of the SQL API has its own SQLSTATE (class LG); each
maps to exactly one exception class here, and each class knows the `code`
(a stable name shared with HTTP) and its SQLSTATE; which HTTP status it
becomes is the web layer's business (web/errors.py). `translate_errors()`
is the only place where psycopg errors become ledger errors: the wrapper's
methods run every statement inside it. Besides the LG SQLSTATEs it translates what fails before a
ledger function could judge the input (a NUL character or lone surrogate
psycopg cannot send, an integer beyond its parameter's SQL type) into
InvalidArgument, PostgreSQL's own bounded waits (lock_timeout,
statement_timeout) into LedgerBusy, and connection trouble into
LedgerUnavailable. Nothing here decides a business rule: the database does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg

from . import conninfo

__all__ = [
    "EXCEPTIONS_BY_SQLSTATE",
    "SERVER_EXCEPTIONS_BY_SQLSTATE",
    "AlreadyReversed",
    "AppendOnly",
    "GrantNotActive",
    "HoldNotActive",
    "IdempotencyConflict",
    "InsufficientCredits",
    "InvalidAmount",
    "InvalidArgument",
    "LedgerBusy",
    "LedgerError",
    "LedgerUnavailable",
    "LockTimeout",
    "NotFound",
    "OperationInUse",
    "OperationLimitReached",
    "OperationNotAllowed",
    "StatementTimeout",
    "UnknownApp",
    "UnknownOperation",
    "Where",
    "translate_error",
    "translate_errors",
    "unstorable_text",
]


class LedgerError(Exception):
    """Base of every ledger error.

    Attributes: `code` (stable name, also the HTTP error body's `code`),
    `sqlstate` (None for errors that do not come from the SQL API),
    `message` (for a person), `detail` (the error's DETAIL JSON object as a
    dict) and `hint` (or None).
    """

    code: ClassVar[str] = "ledger_error"
    sqlstate: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        detail: Mapping[str, Any] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = dict(detail or {})
        self.hint = hint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, detail={self.detail!r})"


class InsufficientCredits(LedgerError):
    """The owner's available credits (balance minus active holds) do not cover a debit."""

    code = "insufficient_credits"
    sqlstate = "LG001"

    def __init__(
        self,
        message: str,
        *,
        detail: Mapping[str, Any] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, detail=detail, hint=hint)
        self.owner_id: str | None = self.detail.get("owner_id")
        self.needed: int | None = self.detail.get("needed")
        self.available: int | None = self.detail.get("available")


class UnknownOperation(LedgerError):
    """No operation of that name is registered."""

    code = "unknown_operation"
    sqlstate = "LG002"


class OperationNotAllowed(LedgerError):
    """Another app's operation, a system operation, or another app's hold or entry."""

    code = "operation_not_allowed"
    sqlstate = "LG003"


class OperationLimitReached(LedgerError):
    """The operation is granted once per owner (ever, or per UTC day) and was."""

    code = "operation_limit_reached"
    sqlstate = "LG004"


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used by the app for a different request."""

    code = "idempotency_conflict"
    sqlstate = "LG005"


class InvalidAmount(LedgerError):
    """Zero, negative, fractional, out of the operation's bounds, or an overflow."""

    code = "invalid_amount"
    sqlstate = "LG006"


class InvalidArgument(LedgerError):
    """A missing, empty, over-long or malformed argument (NUL characters included)."""

    code = "invalid_argument"
    sqlstate = "LG007"


class NotFound(LedgerError):
    """No entry or hold with that id."""

    code = "not_found"
    sqlstate = "LG008"


class HoldNotActive(LedgerError):
    """The hold was captured, released or has expired."""

    code = "hold_not_active"
    sqlstate = "LG009"


class AlreadyReversed(LedgerError):
    """The entry was reversed before: an entry is reversed once."""

    code = "already_reversed"
    sqlstate = "LG010"


class UnknownApp(LedgerError):
    """The app is not registered."""

    code = "unknown_app"
    sqlstate = "LG011"


class OperationInUse(LedgerError):
    """The operation has entries: its direction cannot change."""

    code = "operation_in_use"
    sqlstate = "LG012"


class AppendOnly(LedgerError):
    """Journal entries are never updated or deleted."""

    code = "append_only"
    sqlstate = "LG013"


class GrantNotActive(LedgerError):
    """Nothing is left of the grant to void: it was spent, has expired or was voided."""

    code = "grant_not_active"
    sqlstate = "LG014"


class LedgerUnavailable(LedgerError):
    """The database cannot be reached (down, refusing, pool exhausted or timed out).

    `host` and `port` name the server; the password never appears.
    """

    code = "ledger_unavailable"

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        port: str | None = None,
        detail: Mapping[str, Any] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, detail=detail, hint=hint)
        self.host = host
        self.port = port


class LedgerBusy(LedgerError):
    """A wait the ledger bounds ran out (a lock held by another transaction,
    or a statement running too long): the statement was canceled, so this
    call wrote nothing. Retry later with the same idempotency key. Inside a
    caller's own transaction (`conn=`), the error aborts that transaction.
    """

    code = "ledger_busy"


class LockTimeout(LedgerBusy):
    """A row or lock the call needs stayed held by another transaction longer
    than lock_timeout (PostgreSQL's 55P03, lock_not_available)."""

    code = "lock_timeout"
    sqlstate = "55P03"


class StatementTimeout(LedgerBusy):
    """The statement ran longer than statement_timeout, or was canceled
    (PostgreSQL's 57014, query_canceled)."""

    code = "statement_timeout"
    sqlstate = "57014"


EXCEPTIONS_BY_SQLSTATE: dict[str, type[LedgerError]] = {
    cls.sqlstate: cls
    for cls in (
        InsufficientCredits,
        UnknownOperation,
        OperationNotAllowed,
        OperationLimitReached,
        IdempotencyConflict,
        InvalidAmount,
        InvalidArgument,
        NotFound,
        HoldNotActive,
        AlreadyReversed,
        UnknownApp,
        OperationInUse,
        AppendOnly,
        GrantNotActive,
    )
    if cls.sqlstate is not None
}
"""The ledger's own SQLSTATEs (class LG), raised by its SQL functions."""

SERVER_EXCEPTIONS_BY_SQLSTATE: dict[str, type[LedgerError]] = {
    cls.sqlstate: cls for cls in (LockTimeout, StatementTimeout) if cls.sqlstate is not None
}
"""PostgreSQL's own SQLSTATEs of a bounded wait that ran out."""

_BUSY_MESSAGES = {
    "55P03": "the ledger gave up waiting for a lock another transaction holds (lock_timeout): "
    "nothing was written by this call; retry later",
    "57014": "the ledger's statement was canceled (statement_timeout or a cancel request): "
    "nothing was written by this call; retry later",
}


class Where:
    """Where statements go, for naming the server in LedgerUnavailable.

    Built from a conninfo string or URL; the password is kept only to be
    masked out of messages.
    """

    __slots__ = ("host", "password", "port")

    def __init__(self, host: str | None, port: str | None, password: str | None = None) -> None:
        self.host = host
        self.port = port
        self.password = password

    @classmethod
    def from_conninfo(cls, dsn: str) -> Where:
        found = conninfo.target(dsn)
        if found is None:
            return cls(None, None)
        return cls(
            found.host or "localhost (default)", found.port or "5432 (default)", found.password
        )

    @classmethod
    def from_connection(cls, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> Where:
        try:
            return cls(conn.info.host, str(conn.info.port))
        except psycopg.Error:  # a closed connection can no longer tell
            return cls(None, None)

    def describe(self) -> str:
        if self.host is None:
            return "the ledger database"
        return f"the ledger database at host {self.host}, port {self.port}"

    def mask(self, text: str) -> str:
        return conninfo.hide_password(text, self.password)


NUL_CHARACTER = "nul character"
NOT_ENCODABLE = "not encodable"


def _not_encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# What PostgreSQL text cannot store: no \u0000 (psycopg refuses to send one),
# and no lone surrogate (e.g. from a JSON "\ud800" escape), which UTF-8, the
# database's encoding, cannot encode.
_UNSTORABLE: dict[str, Callable[[str], bool]] = {
    NUL_CHARACTER: lambda value: "\x00" in value,
    NOT_ENCODABLE: _not_encodable,
}


def unstorable_text(value: str) -> str | None:
    """Why PostgreSQL text cannot store `value` (NUL_CHARACTER or
    NOT_ENCODABLE), or None when it can. The one statement of this rule:
    the error boundary below and the web layer's own tables both ask here."""
    return next((reason for reason, found in _UNSTORABLE.items() if found(value)), None)


def _unstorable_field(params: Mapping[str, Any] | None, reason: str) -> str | None:
    """The first parameter holding a string PostgreSQL cannot store for `reason`."""
    found = _UNSTORABLE[reason]
    for name, value in (params or {}).items():
        if isinstance(value, str) and found(value):
            return name
    return None


# The integer SQL types parameters are cast to, by the words of PostgreSQL's 22003 message.
_INT_RANGES = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}


def _out_of_range_field(exc: psycopg.Error, params: Mapping[str, Any] | None) -> str | None:
    """The integer parameter that failed its cast to the SQL type (22003
    "bigint out of range" before any ledger function ran), if one did."""
    text = exc.diag.message_primary or ""
    for sql_type, bound in _INT_RANGES.items():
        if text == f"{sql_type} out of range":
            for name, value in (params or {}).items():
                wide = isinstance(value, int) and not -bound <= value < bound
                if wide and not isinstance(value, bool):
                    return name
    return None


# What PostgreSQL raises when a value cannot become its parameter's SQL type:
# bad text for the type, a date or interval out of range, an unknown time
# zone, a character the encoding lacks, a type with no cast at all.
_CONVERSION_SQLSTATES = frozenset(
    {"22007", "22008", "22009", "22015", "22021", "22023", "22P02", "42846"}
)


def _refused_by_a_parameter_cast(exc: psycopg.Error, params: Mapping[str, Any] | None) -> bool:
    """A conversion error of a statement with parameters, raised while they
    were converted, not inside a ledger function (whose own errors, and
    defects, keep their SQLSTATE)."""
    if not params or exc.sqlstate not in _CONVERSION_SQLSTATES:
        return False
    context = exc.diag.context or ""
    return "function" not in context


def _field_of_parameter(exc: psycopg.Error, params: Mapping[str, Any] | None) -> str | None:
    """The parameter named by PostgreSQL's context line ("... parameter $2 = ...").

    Both wrapper classes render the parameters in the order of `params`, so
    $n is the n-th name."""
    match = re.search(r"parameter \$(\d+)", exc.diag.context or "")
    names = list(params or {})
    if match and 0 < int(match.group(1)) <= len(names):
        return names[int(match.group(1)) - 1]
    return None


WhereLike = Where | Callable[[], Where] | None


def translate_error(
    exc: psycopg.Error, where: WhereLike = None, params: Mapping[str, Any] | None = None
) -> LedgerError | None:
    """The ledger error for a psycopg error, or None when it is not one.

    Errors that are not the ledger's (a missing privilege, a defect) are
    left alone: the caller re-raises them unchanged.
    """
    sqlstate = exc.sqlstate
    if sqlstate is not None and sqlstate in EXCEPTIONS_BY_SQLSTATE:
        diag = exc.diag
        detail: dict[str, Any] = {}
        raw_detail = diag.message_detail
        if raw_detail:
            try:
                parsed = json.loads(raw_detail)
            except ValueError:
                parsed = {"text": raw_detail}
            detail = parsed if isinstance(parsed, dict) else {"value": parsed}
        message = diag.message_primary or str(exc)
        return EXCEPTIONS_BY_SQLSTATE[sqlstate](message, detail=detail, hint=diag.message_hint)
    if sqlstate is not None and sqlstate in SERVER_EXCEPTIONS_BY_SQLSTATE:
        # Checked before OperationalError (both SQLSTATEs are of that class):
        # the server answered, it only refused to wait longer.
        return SERVER_EXCEPTIONS_BY_SQLSTATE[sqlstate](_BUSY_MESSAGES[sqlstate])
    if isinstance(exc, psycopg.OperationalError):
        if callable(where):
            where = where()
        where = where or Where(None, None)
        text = str(exc).strip()
        reason = where.mask(text.splitlines()[0] if text else type(exc).__name__)
        return LedgerUnavailable(
            f"{where.describe()} is unavailable: {reason}",
            host=where.host,
            port=where.port,
            detail={"host": where.host, "port": where.port},
        )
    if sqlstate == "22003":
        wide = _out_of_range_field(exc, params)
        if wide is not None:
            # The caller's value does not fit the parameter's SQL type: the
            # cast refused it before the function could (an id beyond bigint).
            return InvalidArgument(
                f"invalid argument: {wide} is out of range",
                detail={"field": wide, "reason": "out of range"},
            )
    if _refused_by_a_parameter_cast(exc, params):
        # A value the parameter's SQL type does not take (a date that does not
        # exist, a time zone PostgreSQL does not know): the cast refused it
        # before any ledger function ran. The wrapper's own type check stops
        # wrong Python types first; this is the backstop for the values.
        field = _field_of_parameter(exc, params)
        return InvalidArgument(
            f"invalid argument: {field or 'an argument'} is not a valid value of its type",
            detail={"field": field, "reason": "invalid", "sqlstate": sqlstate},
            hint=exc.diag.message_primary,
        )
    field = _unstorable_field(params, NUL_CHARACTER)
    if sqlstate is None and isinstance(exc, psycopg.DataError) and (field or "NUL" in str(exc)):
        # Raised by psycopg before sending: PostgreSQL text cannot hold NUL.
        # The database's rule (LG007) would say the same; this translates it.
        return InvalidArgument(
            f"invalid argument: {field or 'a text argument'} contains a NUL character",
            detail={"field": field, "reason": NUL_CHARACTER},
            hint="PostgreSQL text cannot store \\u0000.",
        )
    return None


def ledger_error(
    exc: psycopg.Error | UnicodeEncodeError,
    where: WhereLike = None,
    params: Mapping[str, Any] | None = None,
) -> LedgerError | None:
    """What the boundary raises (`from exc`) for an error caught around a
    statement, or None when it is not the ledger's (it then passes unchanged).
    Called only once something failed: the successful path pays nothing."""
    if isinstance(exc, psycopg.Error):
        return translate_error(exc, where, params)
    # Raised by psycopg while encoding a parameter, before sending: a
    # string with a lone surrogate is no text PostgreSQL could store.
    field = _unstorable_field(params, NOT_ENCODABLE)
    if field is None:
        return None
    return InvalidArgument(
        f"invalid argument: {field} is not valid Unicode text (a lone surrogate)",
        detail={"field": field, "reason": NOT_ENCODABLE},
        hint="Text must be encodable as UTF-8; a JSON \\ud800 escape alone is not.",
    )


@contextmanager
def translate_errors(
    where: WhereLike = None, params: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """The error boundary: psycopg errors raised inside become ledger errors
    (``ledger_error``; the wrapper's own calls catch them inline, which
    costs less than this context manager on every call).

    `raise ... from` keeps the psycopg error as `__cause__`; errors that are
    not the ledger's pass through unchanged.
    """
    try:
        yield
    except (psycopg.Error, UnicodeEncodeError) as exc:
        translated = ledger_error(exc, where, params)
        if translated is None:
            raise
        raise translated from exc
