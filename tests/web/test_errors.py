"""The one error -> status table agrees with ledger_py and the README's error table."""

from __future__ import annotations

import inspect

from ledger_py import errors as ledger_errors
from web.errors import STATUS_BY_EXCEPTION, retry_after, status_for


def ledger_exception_classes() -> set[type[ledger_errors.LedgerError]]:
    return {
        cls
        for _, cls in inspect.getmembers(ledger_errors, inspect.isclass)
        if issubclass(cls, ledger_errors.LedgerError) and cls is not ledger_errors.LedgerError
    }


def test_status_table_covers_exactly_the_ledger_exceptions() -> None:
    assert set(STATUS_BY_EXCEPTION) == ledger_exception_classes()


def test_status_table_agrees_with_the_exceptions_and_the_design() -> None:
    design = {
        "insufficient_credits": 402,
        "operation_not_allowed": 403,
        "not_found": 404,
        "idempotency_conflict": 409,
        "operation_limit_reached": 409,
        "hold_not_active": 409,
        "already_reversed": 409,
        "grant_not_active": 409,
        "unknown_operation": 422,
        "invalid_amount": 422,
        "invalid_argument": 422,
        "ledger_unavailable": 503,
        "ledger_busy": 503,
        "lock_timeout": 503,
        "statement_timeout": 503,
    }
    for cls, status in STATUS_BY_EXCEPTION.items():
        if cls.code in design:
            assert status == design[cls.code], cls


def test_a_subclass_takes_its_nearest_mapped_status() -> None:
    class Narrower(ledger_errors.InsufficientCredits):
        pass

    assert status_for(Narrower("x")) == 402


def test_every_503_carries_retry_after() -> None:
    for cls, status in STATUS_BY_EXCEPTION.items():
        if status == 503:
            assert retry_after(cls("x")) is not None, cls
