"""What the ledger's functions return, as frozen dataclasses.

Each class mirrors one result type or table of the SQL API; the wrapper
selects exactly these fields (by name, in field order) and builds each
row from its values in that order, so a column added to a table later does
not break callers.
The columns a class leaves out are named in `NOT_READ`, with the reason
(tests/sql/test_catalog.py compares each class with its function's result
columns, so an added or renamed column is a failing test, not a surprise).
Amounts and balances are ints (bigint); times are aware datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Entry:
    """An `entry_result`: what a write produced. `amount` is signed, `balance`
    is the owner's balance after it, `replayed` says an earlier identical
    request was returned and nothing was written."""

    entry_id: int
    owner_id: str
    app: str
    operation: str
    amount: int
    balance: int
    created_at: datetime
    replayed: bool


@dataclass(frozen=True)
class JournalEntry:
    """A row of `ledger.entries` (the journal)."""

    entry_id: int
    owner_id: str
    app: str
    operation: str
    amount: int
    balance: int
    idempotency_key: str | None  # None too when another app wrote it (read with app=)
    metadata: dict[str, Any] | None  # None when another app wrote it (read with app=)
    created_at: datetime
    created_by: str
    transfer_id: int | None
    hold_id: int | None
    reverses_entry_id: int | None
    seq: int  # the owner's order: 1, 2, 3, ... (ids of one owner need not follow time)


@dataclass(frozen=True)
class Balance:
    """An owner's balance, the credits active holds reserve, and what is
    available. An unknown owner has zeros and `updated_at` None."""

    owner_id: str
    balance: int
    held: int
    available: int
    updated_at: datetime | None


@dataclass(frozen=True)
class Hold:
    """A `hold_result`: the hold after create_hold or release_hold."""

    hold_id: int
    owner_id: str
    app: str
    operation: str
    amount: int
    status: str
    expires_at: datetime
    replayed: bool


@dataclass(frozen=True)
class HoldRecord:
    """A row of `ledger.holds` (status `active`, `captured`, `released` or `expired`)."""

    hold_id: int
    owner_id: str
    app: str
    operation: str
    amount: int
    status: str
    idempotency_key: str | None  # None when another app made it (read with app=)
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    captured_amount: int | None
    capture_request: int | None
    entry_id: int | None
    created_by: str


@dataclass(frozen=True)
class Transfer:
    """A `transfer_result`: both legs of a transfer and the balances after it."""

    transfer_id: int
    from_entry_id: int
    to_entry_id: int
    amount: int
    from_balance: int
    to_balance: int
    replayed: bool


@dataclass(frozen=True)
class ReportRow:
    """One operation of an app's report: entries, credits issued, credits
    consumed (positive), distinct owners, and the credits of the app's
    grants of that operation that expired or were voided in the window
    (positive)."""

    app: str
    operation: str
    entries: int
    credited: int
    debited: int
    owners: int
    expired: int
    voided: int


@dataclass(frozen=True)
class Discrepancy:
    """One finding of `verify()`; none means the ledger is consistent."""

    check_name: str
    owner_id: str | None
    detail: str


@dataclass(frozen=True)
class MetricsSnapshot:
    """The figures of `metrics_snapshot()` a monitoring system scrapes: the
    event and webhook backlogs, and what finished within its `recent` window."""

    events_unrelayed: int
    feed_position: int
    fan_out_lag: int
    deliveries_pending: int
    deliveries_delivered_recent: int
    deliveries_failed_recent: int
    grants_expired_recent: int
    expiry_due_owners: int
    measured_at: datetime


@dataclass(frozen=True)
class App:
    """A row of `ledger.apps`."""

    app: str
    description: str | None
    created_at: datetime


@dataclass(frozen=True)
class Operation:
    """A row of `ledger.operations`: the rules of one kind of entry."""

    app: str
    operation: str
    direction: str | None
    default_amount: int | None
    min_amount: int
    max_amount: int | None
    caller_sets_amount: bool
    limit_per: str | None
    is_system: bool
    description: str | None
    expires_after: timedelta | None  # how long a credit's grant lasts; None: it never expires
    grant_priority: int  # the priority of its grants: lower is spent first


@dataclass(frozen=True)
class Grant:
    """A `grant_row`: credits one entry granted an owner, and what is left of them.

    Debits spend an owner's active grants by `priority` (lower first), then
    soonest `expires_at` (None: never, spent last), then oldest. `status` is
    `active`, `spent`, `expired` or `voided`; a closed grant has `remaining`
    0. A grant's credits are gone from the instant `expires_at` passes.
    `entry_id` is None only for the opening grant of a balance that predates
    grants."""

    grant_id: int
    entry_id: int | None
    owner_id: str
    app: str
    operation: str
    amount: int
    remaining: int
    priority: int
    expires_at: datetime | None
    status: str
    created_at: datetime


@dataclass(frozen=True)
class Spending:
    """A `spending_row`: one movement of credits between an entry and a grant.

    `amount` is signed: negative when the entry took credits from the grant
    (a debit, a capture, a transfer out, an expiry, a void), positive when it
    gave them back (the reversal of a debit). `operation` is the entry's."""

    owner_id: str
    entry_id: int
    grant_id: int
    seq: int  # the entry's place in the owner's order
    operation: str
    amount: int
    created_at: datetime


@dataclass(frozen=True)
class Event:
    """An `event_row`: one event of the feed, in the order readers follow.

    `cursor` is opaque: pass the last one read as `after` for the next page.
    `seq` is the owner's seq the event follows (a receiver can order one
    owner's events by it). Another app's metadata and idempotency keys are
    left out of `payload`."""

    cursor: str
    event_id: int
    type: str
    owner_id: str
    seq: int
    entry_id: int | None
    hold_id: int | None
    grant_id: int | None
    payload: dict[str, Any]
    occurred_at: datetime


@dataclass(frozen=True)
class ApiKey:
    """An `api_key_info`: an HTTP API key as listed, never its token nor its hash.
    `scope` is "app" (acts for its app) or "audit" (reads everything, writes nothing)."""

    key_id: str
    app: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None
    scope: str

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewApiKey:
    """A key just made by `create_api_key`: the key, and its token. Only the
    token's hash is stored, so this is the one time the token exists; it is
    left out of the repr so that a log line cannot carry it."""

    key: ApiKey
    token: str = field(repr=False)

    @property
    def key_id(self) -> str:
        return self.key.key_id


@dataclass(frozen=True)
class KeyHolder:
    """What `api_key_lookup` finds for an active key's token: its app and scope."""

    app: str
    scope: str

    @property
    def reads_as(self) -> str | None:
        """The app to pass to the read functions (which then hide other apps'
        metadata and idempotency keys), or None for an audit key, which reads everything."""
        return None if self.scope == "audit" else self.app


@dataclass(frozen=True)
class WebhookEndpoint:
    """A `webhook_endpoint`: where an app's events are sent, never its secret.
    `event_types` None means every type; a disabled endpoint (`active` False)
    gets no new deliveries and none is attempted."""

    endpoint_id: int
    app: str
    url: str
    event_types: list[str] | None
    description: str | None
    active: bool
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True)
class NewWebhookEndpoint:
    """An endpoint just registered, with its signing secret (`whsec_...`): the
    one time the secret is shown, left out of the repr so that a log line
    cannot carry it."""

    endpoint_id: int
    app: str
    url: str
    event_types: list[str] | None
    description: str | None
    active: bool
    created_at: datetime
    disabled_at: datetime | None
    secret: str = field(repr=False)


@dataclass(frozen=True)
class WebhookDelivery:
    """One event to one endpoint: `status` pending, delivered or failed,
    `attempts` claimed so far, when it is next tried (`leased_until`: an
    attempt in flight), and the last attempt's HTTP status or error."""

    delivery_id: int
    endpoint_id: int
    event_id: int
    event_type: str
    webhook_id: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    leased_until: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    finished_at: datetime | None


@dataclass(frozen=True)
class WebhookAttempt:
    """One recorded attempt of the delivery log: `outcome` delivered, retry or failed."""

    delivery_id: int
    attempt: int
    endpoint_id: int
    event_id: int
    attempted_at: datetime
    duration_ms: int | None
    status_code: int | None
    error: str | None
    outcome: str


@dataclass(frozen=True)
class WebhookClaim:
    """A delivery leased to a dispatcher, with what its attempt needs; `attempt`
    identifies the claim when its outcome is recorded."""

    delivery_id: int
    attempt: int
    endpoint_id: int
    url: str
    secret: str = field(repr=False)
    webhook_id: str
    body: str = field(repr=False)


# -- operators and the console (sql/85_operators.sql) ---------------------------


@dataclass(frozen=True)
class OperatorAction:
    """What a person did through an operator function: the action, who, why,
    the app it acted as, and the entry it wrote or the hold it released."""

    action_id: int
    owner_id: str
    action: str
    operator: str
    reason: str
    app: str
    entry_id: int | None
    hold_id: int | None
    grant_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class HistoryEntry:
    """One row of an owner's history as the console lists it: the entry,
    the entry that reversed it (`reversed_by`), and who wrote it and why when
    an operator did (`operator`, `reason`)."""

    entry_id: int
    seq: int
    owner_id: str
    app: str
    operation: str
    amount: int
    balance: int
    created_at: datetime
    created_by: str
    transfer_id: int | None
    hold_id: int | None
    reverses_entry_id: int | None
    reversed_by: int | None
    operator: str | None
    reason: str | None


@dataclass(frozen=True)
class BalancePoint:
    """The owner's balance at an instant (`balance_series`)."""

    at: datetime
    balance: int


@dataclass(frozen=True)
class DailyActivity:
    """One app's credits on one UTC day: issued, spent, expired, held."""

    day: date
    app: str
    issued: int
    spent: int
    expired: int
    held: int


@dataclass(frozen=True)
class BusyOwner:
    """An owner with many recent entries: how many, the last one's time, its balance."""

    owner_id: str
    entries: int
    last_entry_at: datetime
    balance: int


@dataclass(frozen=True)
class OpenHold:
    """A hold neither captured nor released; `state` is open, expiring, stale or expired."""

    hold_id: int
    owner_id: str
    app: str
    operation: str
    amount: int
    created_at: datetime
    expires_at: datetime
    state: str


@dataclass(frozen=True)
class VerifyRun:
    """A recorded run of verify(): when, how long, how many findings, the first ones."""

    run_id: int
    ran_at: datetime
    duration_ms: int
    findings: int
    sample: list[dict[str, Any]]
    ran_by: str


@dataclass(frozen=True)
class ConsoleUser:
    """A console user (never its password hash): role operator or viewer."""

    name: str
    role: str
    failed_count: int
    last_failed_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class SignInAttempt:
    """The start of a sign-in: the hash to check the password against, or
    None and how many seconds to wait before the next attempt."""

    name: str
    role: str
    password_hash: str | None = field(repr=False)
    wait_seconds: int


_FINGERPRINT = "the digest of the request, used only to tell a replay from a conflict"

NOT_READ: dict[type[Any], dict[str, str]] = {
    JournalEntry: {"fingerprint": _FINGERPRINT},
    HoldRecord: {"fingerprint": _FINGERPRINT},
}
"""Result columns a class does not read, by class, with the reason."""


def column_list(cls: type[Any]) -> str:
    """The select list for a result class: its field names, in order."""
    return ", ".join(f.name for f in fields(cls))
