"""The one place where errors become HTTP responses.

Every error body has the same shape: ``{"code": ..., "detail": ..., ...}``
where ``code`` is stable (the ledger's error name, or one of the HTTP-level
codes below), ``detail`` is for a person, and the other keys are the useful
fields (for a ledger error: the fields of its SQL DETAIL, e.g. ``owner_id``,
``needed``, ``available``).

The ledger decides every business error (SQLSTATE -> ``ledger_py``
exception); this module only maps each exception class to its HTTP status,
and ``STATUS_BY_EXCEPTION`` is the one table of them (``ledger_py`` knows
nothing of HTTP). ``tests/web/test_errors.py`` keeps it equal to the
exception set of ``ledger_py.errors``.
"""

from __future__ import annotations

from typing import Any

from apiflask import HTTPError
from flask import Flask, current_app
from werkzeug.exceptions import HTTPException

from ledger_py import errors as ledger_errors

# One HTTP status per ledger exception (the README's error table).
STATUS_BY_EXCEPTION: dict[type[ledger_errors.LedgerError], int] = {
    ledger_errors.InsufficientCredits: 402,
    ledger_errors.UnknownOperation: 422,
    ledger_errors.OperationNotAllowed: 403,
    ledger_errors.OperationLimitReached: 409,
    ledger_errors.IdempotencyConflict: 409,
    ledger_errors.InvalidAmount: 422,
    ledger_errors.InvalidArgument: 422,
    ledger_errors.NotFound: 404,
    ledger_errors.HoldNotActive: 409,
    ledger_errors.AlreadyReversed: 409,
    ledger_errors.UnknownApp: 422,
    ledger_errors.OperationInUse: 409,
    ledger_errors.AppendOnly: 409,
    ledger_errors.GrantNotActive: 409,
    ledger_errors.LedgerUnavailable: 503,
    ledger_errors.LedgerBusy: 503,
    ledger_errors.LockTimeout: 503,
    ledger_errors.StatementTimeout: 503,
}

# Seconds a client should wait before retrying a 503 (the Retry-After header):
# a lock is usually free again soon; a database restart takes longer.
RETRY_AFTER_SECONDS: dict[type[ledger_errors.LedgerError], int] = {
    ledger_errors.LedgerBusy: 1,
    ledger_errors.LedgerUnavailable: 5,
}

# What a client reads when the database cannot be reached: never its host,
# port or PostgreSQL's own words (those go to the log).
UNAVAILABLE_DETAIL = "the ledger's database is unreachable; retry later"

# Codes of the errors the HTTP layer itself detects (no ledger call made).
CODE_BY_STATUS: dict[int, str] = {
    400: "malformed_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    502: "upstream_failed",
    503: "ledger_unavailable",
}

DETAIL_BY_STATUS: dict[int, str] = {
    400: "the request body is not valid JSON",
    401: "missing or invalid API key: send Authorization: Bearer <token>",
    404: "no such resource",
    405: "method not allowed on this resource",
    413: "the request body is larger than the limit",
    422: "the request does not have the expected shape",
    500: "internal error",
}


def status_for(exc: ledger_errors.LedgerError) -> int:
    """The status of a ledger exception (its class, or the nearest mapped base)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_EXCEPTION:
            return STATUS_BY_EXCEPTION[cls]
    return 500


def retry_after(exc: ledger_errors.LedgerError) -> int | None:
    """Retry-After seconds for a 503 error (its class, or the nearest mapped base)."""
    for cls in type(exc).__mro__:
        if cls in RETRY_AFTER_SECONDS:
            return RETRY_AFTER_SECONDS[cls]
    return None


def unavailable_body() -> dict[str, Any]:
    return {"code": ledger_errors.LedgerUnavailable.code, "detail": UNAVAILABLE_DETAIL}


def ledger_error_body(exc: ledger_errors.LedgerError) -> dict[str, Any]:
    if isinstance(exc, ledger_errors.LedgerUnavailable):
        return unavailable_body()
    body: dict[str, Any] = {}
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict):
        body.update(detail)
    hint = getattr(exc, "hint", None)
    if hint:
        body["hint"] = hint
    # code and detail always win over a same-named field of the SQL DETAIL.
    body["code"] = exc.code
    body["detail"] = getattr(exc, "message", None) or str(exc)
    return body


def api_error(status: int, code: str, detail: str, **fields: Any) -> HTTPError:
    """An error of the HTTP layer (raise it): rendered in the common shape."""
    return HTTPError(status, message=detail, extra_data={"code": code, **fields})


def _http_error_body(error: HTTPError) -> dict[str, Any]:
    extra = dict(error.extra_data)
    code = extra.pop("code", None) or CODE_BY_STATUS.get(error.status_code, "http_error")
    body: dict[str, Any] = {"code": code}
    if error.status_code == 422 and error.detail:
        # A validation error: the webargs messages by location and field.
        body["detail"] = DETAIL_BY_STATUS[422]
        body["errors"] = error.detail
    elif error.status_code == 400 and error.detail:
        body["detail"] = DETAIL_BY_STATUS[400]
        body["errors"] = error.detail
    else:
        body["detail"] = (
            error.message
            if error.message and error.message != _reason(error.status_code)
            else DETAIL_BY_STATUS.get(error.status_code, error.message or "error")
        )
    if error.status_code == 413:
        body["max_bytes"] = current_app.config.get("MAX_CONTENT_LENGTH")
    body.update(extra)
    return body


def _reason(status: int) -> str:
    from werkzeug.http import HTTP_STATUS_CODES

    return HTTP_STATUS_CODES.get(status, "")


def register_error_handlers(app: Flask) -> None:
    def handle_ledger_error(exc: ledger_errors.LedgerError) -> Any:
        status = status_for(exc)
        headers = {}
        seconds = retry_after(exc)
        if seconds is not None:
            headers["Retry-After"] = str(seconds)
        if status == 503:
            # The details (host, port, PostgreSQL's text) are for the operator.
            app.logger.warning("%s: %s (caused by %r)", exc.code, exc.message, exc.__cause__)
        return ledger_error_body(exc), status, headers

    def handle_http_error(error: HTTPError) -> Any:
        return _http_error_body(error), error.status_code, error.headers

    def handle_unexpected(exc: Exception) -> Any:
        if isinstance(exc, HTTPException):  # routed through apiflask's processor
            return app.error_callback(HTTPError(exc.code or 500, message=exc.name))  # type: ignore[attr-defined]
        app.logger.exception("unhandled error")
        return {"code": "internal_error", "detail": "internal error"}, 500

    app.register_error_handler(ledger_errors.LedgerError, handle_ledger_error)
    app.error_processor(handle_http_error)  # type: ignore[attr-defined]
    app.register_error_handler(Exception, handle_unexpected)
