"""ledger_py: the Python wrapper of the shared credit ledger.

    from ledger_py import Ledger, InsufficientCredits
    with Ledger("postgresql://...") as ledger:
        ledger.post_entry(owner_id="user-1", app="core", operation="CREDIT_ADD",
                          idempotency_key="purchase-1", amount=10)

The rules live in PostgreSQL (sql/); this package calls them, one statement
per method, and turns their SQLSTATEs into the exceptions below.
"""

from .client import DEFAULT_PREPARE_THRESHOLD, AsyncLedger, Ledger
from .errors import (
    EXCEPTIONS_BY_SQLSTATE,
    AlreadyReversed,
    AppendOnly,
    GrantNotActive,
    HoldNotActive,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    InvalidArgument,
    LedgerBusy,
    LedgerError,
    LedgerUnavailable,
    LockTimeout,
    NotFound,
    OperationInUse,
    OperationLimitReached,
    OperationNotAllowed,
    StatementTimeout,
    UnknownApp,
    UnknownOperation,
    translate_errors,
)
from .migrate import migrate
from .results import (
    ApiKey,
    App,
    Balance,
    Discrepancy,
    Entry,
    Grant,
    Hold,
    HoldRecord,
    JournalEntry,
    KeyHolder,
    NewApiKey,
    Operation,
    ReportRow,
    Spending,
    Transfer,
)

__all__ = [
    "DEFAULT_PREPARE_THRESHOLD",
    "EXCEPTIONS_BY_SQLSTATE",
    "AlreadyReversed",
    "ApiKey",
    "App",
    "AppendOnly",
    "AsyncLedger",
    "Balance",
    "Discrepancy",
    "Entry",
    "Grant",
    "GrantNotActive",
    "Hold",
    "HoldNotActive",
    "HoldRecord",
    "IdempotencyConflict",
    "InsufficientCredits",
    "InvalidAmount",
    "InvalidArgument",
    "JournalEntry",
    "KeyHolder",
    "Ledger",
    "LedgerBusy",
    "LedgerError",
    "LedgerUnavailable",
    "LockTimeout",
    "NewApiKey",
    "NotFound",
    "Operation",
    "OperationInUse",
    "OperationLimitReached",
    "OperationNotAllowed",
    "ReportRow",
    "Spending",
    "StatementTimeout",
    "Transfer",
    "UnknownApp",
    "UnknownOperation",
    "migrate",
    "translate_errors",
]
