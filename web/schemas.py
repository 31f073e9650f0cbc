"""Request and response shapes of the HTTP API (marshmallow, read by apiflask
to generate the OpenAPI document).

Input schemas check JSON *shapes* only (a string here, an integer there):
whether an owner id, an amount or an operation is acceptable is decided by
the ledger's SQL functions. Integers that are passed to SQL ``bigint`` or
``integer`` parameters are bounded to those types, so that an impossible id
is a 422 rather than a type error inside the database.

Response schemas of ledger results are built from the result dataclasses
of ``ledger_py.results`` (``output_schema``): a field per dataclass field,
of the matching type, null allowed where the dataclass allows None. Only
what the HTTP shape changes is written here: the fields it leaves out and
the descriptions it adds.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from apiflask.fields import (
    AwareDateTime,
    Boolean,
    DateTime,
    Dict,
    Field,
    Integer,
    List,
    Nested,
    Raw,
    String,
    TimeDelta,
)
from apiflask.validators import Range
from marshmallow import RAISE

from ledger_py import results
from web.fast_schema import FastSchema

BIGINT_MAX = 2**63 - 1
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def _bigint_id(strict: bool = True, **kwargs: object) -> Integer:
    return Integer(strict=strict, validate=Range(min=1, max=BIGINT_MAX), **kwargs)  # type: ignore[arg-type]


class StrictSchema(FastSchema):
    class Meta:
        unknown = RAISE


# ---- requests ---------------------------------------------------------------------------


class EntryIn(StrictSchema):
    owner_id = String(required=True, metadata={"description": "the owner (1 to 255 characters)"})
    operation = String(required=True, metadata={"description": "e.g. CREDIT_ADD, CREDIT_SPEND"})
    amount = Integer(
        strict=True,
        allow_none=True,
        load_default=None,
        metadata={"description": "a positive magnitude; omit for the operation's default"},
    )
    metadata = Raw(allow_none=True, load_default=None, metadata={"description": "a JSON object"})
    nonce = String(
        allow_none=True,
        load_default=None,
        metadata={"description": "the idempotency key, if no Idempotency-Key header is sent"},
    )


class HoldIn(StrictSchema):
    owner_id = String(required=True)
    operation = String(required=True, metadata={"description": "a debit operation"})
    amount = Integer(strict=True, allow_none=True, load_default=None)
    ttl_seconds = Integer(
        strict=True,
        allow_none=True,
        load_default=None,
        metadata={"description": "1 second to 7 days; default 15 minutes"},
    )
    nonce = String(allow_none=True, load_default=None)


class CaptureIn(StrictSchema):
    amount = Integer(
        strict=True,
        allow_none=True,
        load_default=None,
        metadata={"description": "1 to the hold's amount; omit to capture it whole"},
    )
    owner_id = String(
        allow_none=True,
        load_default=None,
        metadata={
            "description": "the hold's owner, when known: the call goes straight to its rows"
        },
    )


class TransferIn(StrictSchema):
    from_owner = String(required=True)
    to_owner = String(required=True)
    amount = Integer(strict=True, allow_none=True, load_default=None)
    metadata = Raw(allow_none=True, load_default=None)
    nonce = String(allow_none=True, load_default=None)


class ReversalIn(StrictSchema):
    entry_id = _bigint_id(required=True)
    reason = String(allow_none=True, load_default=None)
    nonce = String(allow_none=True, load_default=None)
    owner_id = String(
        allow_none=True,
        load_default=None,
        metadata={
            "description": "the entry's owner, when known: the call goes straight to its rows"
        },
    )


class GrantIn(StrictSchema):
    owner_id = String(required=True, metadata={"description": "the owner (1 to 255 characters)"})
    operation = String(
        required=True, metadata={"description": "a credit operation, e.g. PROMO_CREDIT"}
    )
    amount = Integer(
        strict=True,
        allow_none=True,
        load_default=None,
        metadata={"description": "a positive magnitude; omit for the operation's default"},
    )
    expires_at = AwareDateTime(
        allow_none=True,
        load_default=None,
        metadata={
            "description": "RFC 3339 with an offset, in the future; omit for the operation's"
            " expiry. Never later than the operation's expires_after from now: a caller may"
            " shorten a grant's life, not extend it"
        },
    )
    priority = Integer(
        strict=True,
        allow_none=True,
        load_default=None,
        validate=Range(min=INT_MIN, max=INT_MAX),
        metadata={"description": "0 to 1000, lower is spent first; omit for the operation's"},
    )
    metadata = Raw(allow_none=True, load_default=None, metadata={"description": "a JSON object"})
    nonce = String(
        allow_none=True,
        load_default=None,
        metadata={"description": "the idempotency key, if no Idempotency-Key header is sent"},
    )


class VoidIn(StrictSchema):
    reason = String(allow_none=True, load_default=None, metadata={"description": "kept with it"})
    nonce = String(allow_none=True, load_default=None)
    owner_id = String(
        allow_none=True,
        load_default=None,
        metadata={
            "description": "the grant's owner, when known: the call goes straight to its rows"
        },
    )


class GrantsQuery(StrictSchema):
    include_closed = Boolean(
        load_default=None,
        metadata={"description": "true: also the spent, expired and voided grants (default false)"},
    )


class SpendingQuery(StrictSchema):
    entry_id = _bigint_id(
        strict=False,
        load_default=None,
        metadata={"description": "only what this entry took from or gave back to grants"},
    )
    grant_id = _bigint_id(
        strict=False,
        load_default=None,
        metadata={"description": "only the movements of this grant"},
    )
    limit = Integer(
        strict=False,
        load_default=None,
        validate=Range(min=INT_MIN, max=INT_MAX),
        metadata={"description": "1 to 1000 (default 100)"},
    )


class OwnerQuery(StrictSchema):
    owner_id = String(
        load_default=None,
        metadata={
            "description": "the owner, when known: the call goes straight to its rows "
            "(404 for another owner's)"
        },
    )


class BatchItemIn(StrictSchema):
    owner_id = String(required=True)
    operation = String(required=True)
    amount = Integer(strict=True, allow_none=True, load_default=None)
    metadata = Raw(allow_none=True, load_default=None)
    idempotency_key = String(
        allow_none=True,
        load_default=None,
        metadata={"description": "omit to use '<Idempotency-Key header>:<index>'"},
    )


class BatchIn(StrictSchema):
    entries = List(Nested(BatchItemIn), required=True, metadata={"description": "up to 10,000"})
    nonce = String(allow_none=True, load_default=None)


class HistoryQuery(StrictSchema):
    after_id = _bigint_id(
        strict=False,
        load_default=None,
        metadata={"description": "next_after_id of the previous page"},
    )
    limit = Integer(
        strict=False,
        load_default=None,
        validate=Range(min=INT_MIN, max=INT_MAX),
        metadata={"description": "1 to 1000 (default 100)"},
    )


class ReportQuery(StrictSchema):
    from_time = DateTime(required=True, data_key="from", metadata={"description": "ISO 8601"})
    to_time = DateTime(
        required=True, data_key="to", metadata={"description": "ISO 8601, exclusive"}
    )


class ContentIn(StrictSchema):
    owner_id = String(required=True)
    title = String(required=True, metadata={"description": "1 to 500 characters"})
    body = String(required=True)
    nonce = String(allow_none=True, load_default=None)


class AccessIn(StrictSchema):
    owner_id = String(load_default=None, allow_none=True)


class AccessQuery(StrictSchema):
    owner_id = String(load_default=None)


# ---- responses --------------------------------------------------------------------------


# The response field for each Python type of a result dataclass field.
_FIELD_BY_TYPE: dict[type, type[Field[Any]]] = {
    int: Integer,
    str: String,
    bool: Boolean,
    datetime: DateTime,
    dict: Dict,
    timedelta: TimeDelta,  # seconds, a JSON number
}


def output_schema(
    result: type[Any],
    name: str,
    *,
    exclude: Collection[str] = (),
    descriptions: Mapping[str, str] | None = None,
) -> type[FastSchema]:
    """The response schema `name` of a result dataclass: every field but
    `exclude`, each required, null allowed where the dataclass allows None,
    with the `descriptions` given."""
    descriptions = descriptions or {}
    hints = typing.get_type_hints(result)
    names = [field.name for field in dataclasses.fields(result)]
    unknown = (set(exclude) | set(descriptions)) - set(names)
    if unknown:
        raise ValueError(f"{result.__name__} has no fields {sorted(unknown)}")
    fields: dict[str, Field[Any]] = {}
    for field_name in names:
        if field_name in exclude:
            continue
        hint = hints[field_name]
        nullable = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
        if nullable:
            [hint] = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        options: dict[str, Any] = {"required": True}
        if nullable:
            options["allow_none"] = True
        if field_name in descriptions:
            options["metadata"] = {"description": descriptions[field_name]}
        if typing.get_origin(hint) is list:  # list[str] and the like
            [item] = typing.get_args(hint)
            fields[field_name] = List(_FIELD_BY_TYPE[item](), **options)
        else:
            fields[field_name] = _FIELD_BY_TYPE[typing.get_origin(hint) or hint](**options)
    return type(name, (FastSchema,), {**fields, "__module__": __name__})


# A replay is told by the status (200, not 201), so no result carries `replayed`.
EntryOut = output_schema(
    results.Entry,
    "EntryOut",
    exclude={"replayed"},
    descriptions={
        "amount": "signed: negative for a debit",
        "balance": "the owner's balance after it",
    },
)


class WriteOut(FastSchema):
    entry = Nested(EntryOut, required=True)
    balance = Integer(required=True)


BalanceOut = output_schema(results.Balance, "BalanceOut")

# idempotency_key and metadata are null on an entry of another app: they are that app's.
JournalEntryOut = output_schema(results.JournalEntry, "JournalEntryOut")


class JournalEntryOne(FastSchema):
    entry = Nested(JournalEntryOut, required=True)


class HistoryOut(FastSchema):
    owner_id = String(required=True)
    entries = List(Nested(JournalEntryOut), required=True)
    next_after_id = Integer(
        required=True,
        allow_none=True,
        metadata={"description": "pass as after_id for the next page; null on the last page"},
    )


_HOLD_STATUS = {"status": "active, captured, released, expired"}

HoldOut = output_schema(results.Hold, "HoldOut", exclude={"replayed"}, descriptions=_HOLD_STATUS)


class HoldWriteOut(FastSchema):
    hold = Nested(HoldOut, required=True)


# A hold over HTTP: its key, the capture's request id and the writing role stay in SQL.
HoldRecordOut = output_schema(
    results.HoldRecord,
    "HoldRecordOut",
    exclude={"idempotency_key", "capture_request", "created_by"},
    descriptions=_HOLD_STATUS,
)


class HoldRecordOne(FastSchema):
    hold = Nested(HoldRecordOut, required=True)


class HoldListOut(FastSchema):
    owner_id = String(required=True)
    holds = List(Nested(HoldRecordOut), required=True)


TransferOut = output_schema(results.Transfer, "TransferOut", exclude={"replayed"})


class TransferWriteOut(FastSchema):
    transfer = Nested(TransferOut, required=True)


class EntriesOut(FastSchema):
    entries = List(Nested(EntryOut), required=True)


OperationOut = output_schema(
    results.Operation,
    "OperationOut",
    exclude={"is_system"},
    descriptions={
        "expires_after": "seconds each grant of the operation lasts; null: its grants never expire",
        "grant_priority": "the priority of its grants (0 to 1000): lower is spent first",
    },
)


class OperationsOut(FastSchema):
    app = String(required=True)
    operations = List(Nested(OperationOut), required=True)


GrantOut = output_schema(
    results.Grant,
    "GrantOut",
    descriptions={
        "entry_id": "the entry that made it; null for the opening grant of an older balance",
        "remaining": "what is left to spend (0 once closed; nothing after expires_at)",
        "priority": "lower is spent first",
        "expires_at": "its credits are gone from this instant; null: never",
        "status": "active, spent, expired, voided",
    },
)


class GrantListOut(FastSchema):
    owner_id = String(required=True)
    grants = List(
        Nested(GrantOut),
        required=True,
        metadata={"description": "active grants in spending order, then closed ones newest first"},
    )


SpendingOut = output_schema(
    results.Spending,
    "SpendingOut",
    descriptions={
        "amount": "signed: negative when the entry took credits from the grant, positive when "
        "a reversal gave them back",
        "operation": "the entry's operation",
        "seq": "the entry's place in the owner's order",
    },
)


class SpendingListOut(FastSchema):
    owner_id = String(required=True)
    spending = List(Nested(SpendingOut), required=True, metadata={"description": "newest first"})


# The report names its app once, beside the rows.
ReportRowOut = output_schema(results.ReportRow, "ReportRowOut", exclude={"app"})


class ReportOut(FastSchema):
    app = String(required=True)
    from_time = DateTime(required=True, data_key="from")
    to_time = DateTime(required=True, data_key="to")
    rows = List(Nested(ReportRowOut), required=True)


class ContentOut(FastSchema):
    content_id = Integer(required=True)
    owner_id = String(required=True)
    title = String(required=True)
    body = String(required=True)
    created_at = DateTime(required=True)


class ContentWriteOut(FastSchema):
    content = Nested(ContentOut, required=True)
    entry = Nested(EntryOut, required=True)
    balance = Integer(required=True)
    charged = Boolean(required=True, metadata={"description": "false for a repeated access"})


# ---- events and webhooks ----------------------------------------------------------------


class EventsQuery(StrictSchema):
    after = String(
        load_default=None,
        metadata={"description": "next_cursor of the previous page; omit to start at the oldest"},
    )
    limit = Integer(
        strict=False,
        load_default=None,
        validate=Range(min=INT_MIN, max=INT_MAX),
        metadata={"description": "1 to 1000 (default 100)"},
    )


EventOut = output_schema(
    results.Event,
    "EventOut",
    descriptions={
        "cursor": "opaque: this event's place in the feed",
        "seq": "the owner's seq it follows: one owner's events in order",
        "payload": "what happened; another app's metadata and idempotency_key are left out",
    },
)


class EventsOut(FastSchema):
    events = List(Nested(EventOut), required=True)
    next_cursor = String(
        required=True,
        allow_none=True,
        metadata={
            "description": "pass as after for the next page (the same cursor when nothing new "
            "came: poll again with it); null only before the first event"
        },
    )


class WebhookIn(StrictSchema):
    url = String(required=True, metadata={"description": "http:// or https://, at most 2048"})
    event_types = List(
        String(),
        allow_none=True,
        load_default=None,
        metadata={"description": "the event types to send (1 to 100); null or absent: every type"},
    )
    description = String(allow_none=True, load_default=None)


class ResendIn(StrictSchema):
    event_id = _bigint_id(required=True)
    endpoint_id = _bigint_id(
        allow_none=True,
        load_default=None,
        metadata={"description": "only to this endpoint; absent: every endpoint it was sent to"},
    )


class DeliveriesQuery(StrictSchema):
    status = String(load_default=None, metadata={"description": "pending, delivered or failed"})
    before_id = _bigint_id(
        strict=False, load_default=None, metadata={"description": "next_before_id of a page"}
    )
    limit = Integer(
        strict=False,
        load_default=None,
        validate=Range(min=INT_MIN, max=INT_MAX),
        metadata={"description": "1 to 1000 (default 100)"},
    )


class AttemptsQuery(StrictSchema):
    event_id = _bigint_id(strict=False, load_default=None)
    limit = Integer(
        strict=False,
        load_default=None,
        validate=Range(min=INT_MIN, max=INT_MAX),
        metadata={"description": "1 to 1000 (default 100)"},
    )


WebhookEndpointOut = output_schema(
    results.WebhookEndpoint,
    "WebhookEndpointOut",
    descriptions={"event_types": "null: every type", "active": "false once disabled"},
)


class WebhookEndpointOne(FastSchema):
    endpoint = Nested(WebhookEndpointOut, required=True)


class WebhookEndpointCreated(FastSchema):
    endpoint = Nested(WebhookEndpointOut, required=True)
    secret = String(
        required=True,
        metadata={
            "description": "whsec_...: the signing secret, shown only in this answer; the "
            "receiver checks each request's webhook-signature with it"
        },
    )


class WebhookEndpointsOut(FastSchema):
    endpoints = List(Nested(WebhookEndpointOut), required=True)


WebhookDeliveryOut = output_schema(
    results.WebhookDelivery,
    "WebhookDeliveryOut",
    descriptions={
        "status": "pending, delivered or failed",
        "webhook_id": "the webhook-id header of every attempt",
        "leased_until": "set while an attempt is in flight",
    },
)


class WebhookDeliveriesOut(FastSchema):
    endpoint_id = Integer(required=True)
    deliveries = List(Nested(WebhookDeliveryOut), required=True)
    next_before_id = Integer(
        required=True,
        allow_none=True,
        metadata={"description": "pass as before_id for the next page; null on the last page"},
    )


WebhookAttemptOut = output_schema(
    results.WebhookAttempt,
    "WebhookAttemptOut",
    descriptions={"outcome": "delivered, retry or failed"},
)


class WebhookAttemptsOut(FastSchema):
    endpoint_id = Integer(required=True)
    attempts = List(Nested(WebhookAttemptOut), required=True)


class WebhookDeliveriesResent(FastSchema):
    deliveries = List(Nested(WebhookDeliveryOut), required=True)


class HealthOut(FastSchema):
    status = String(required=True, metadata={"description": "healthy or unhealthy"})
    database = String(required=True, metadata={"description": "ok or unreachable"})


# The one error shape (also used for apiflask's validation and auth errors).
ERROR_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["code", "detail"],
    "properties": {
        "code": {"type": "string", "description": "stable error name, e.g. insufficient_credits"},
        "detail": {"type": "string", "description": "for a person"},
        "errors": {"type": "object", "description": "validation messages by location and field"},
    },
    "additionalProperties": True,
}
