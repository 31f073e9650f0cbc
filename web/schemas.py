"""Request and response shapes of the HTTP API (marshmallow, read by apiflask
to generate the OpenAPI document).

Input schemas check JSON *shapes* only (a string here, an integer there):
whether an owner id, an amount or an operation is acceptable is decided by
the ledger's SQL functions. Integers that are passed to SQL ``bigint`` or
``integer`` parameters are bounded to those types, so that an impossible id
is a 422 rather than a type error inside the database.
"""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, DateTime, Dict, Integer, List, Nested, Raw, String
from apiflask.validators import Length, Range
from marshmallow import RAISE

BIGINT_MAX = 2**63 - 1
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def _bigint_id(strict: bool = True, **kwargs: object) -> Integer:
    return Integer(strict=strict, validate=Range(min=1, max=BIGINT_MAX), **kwargs)  # type: ignore[arg-type]


class StrictSchema(Schema):
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
    title = String(required=True, validate=Length(min=1, max=500))
    body = String(required=True)
    nonce = String(allow_none=True, load_default=None)


class AccessIn(StrictSchema):
    owner_id = String(load_default=None, allow_none=True)


class AccessQuery(StrictSchema):
    owner_id = String(load_default=None)


# ---- responses --------------------------------------------------------------------------


class EntryOut(Schema):
    entry_id = Integer(required=True)
    owner_id = String(required=True)
    app = String(required=True)
    operation = String(required=True)
    amount = Integer(required=True, metadata={"description": "signed: negative for a debit"})
    balance = Integer(required=True, metadata={"description": "the owner's balance after it"})
    created_at = DateTime(required=True)


class WriteOut(Schema):
    entry = Nested(EntryOut, required=True)
    balance = Integer(required=True)


class BalanceOut(Schema):
    owner_id = String(required=True)
    balance = Integer(required=True)
    held = Integer(required=True)
    available = Integer(required=True)
    updated_at = DateTime(required=True, allow_none=True)


class JournalEntryOut(Schema):
    entry_id = Integer(required=True)
    owner_id = String(required=True)
    app = String(required=True)
    operation = String(required=True)
    amount = Integer(required=True)
    balance = Integer(required=True)
    # Both null on an entry of another app: its metadata and key are that app's.
    idempotency_key = String(required=True, allow_none=True)
    metadata = Dict(required=True, allow_none=True)
    created_at = DateTime(required=True)
    created_by = String(required=True)
    transfer_id = Integer(required=True, allow_none=True)
    hold_id = Integer(required=True, allow_none=True)
    reverses_entry_id = Integer(required=True, allow_none=True)


class JournalEntryOne(Schema):
    entry = Nested(JournalEntryOut, required=True)


class HistoryOut(Schema):
    owner_id = String(required=True)
    entries = List(Nested(JournalEntryOut), required=True)
    next_after_id = Integer(
        required=True,
        allow_none=True,
        metadata={"description": "pass as after_id for the next page; null on the last page"},
    )


class HoldOut(Schema):
    hold_id = Integer(required=True)
    owner_id = String(required=True)
    app = String(required=True)
    operation = String(required=True)
    amount = Integer(required=True)
    status = String(required=True, metadata={"description": "active, captured, released, expired"})
    expires_at = DateTime(required=True)


class HoldWriteOut(Schema):
    hold = Nested(HoldOut, required=True)


class HoldRecordOut(HoldOut):
    created_at = DateTime(required=True)
    closed_at = DateTime(required=True, allow_none=True)
    captured_amount = Integer(required=True, allow_none=True)
    entry_id = Integer(required=True, allow_none=True)


class HoldRecordOne(Schema):
    hold = Nested(HoldRecordOut, required=True)


class HoldListOut(Schema):
    owner_id = String(required=True)
    holds = List(Nested(HoldRecordOut), required=True)


class TransferOut(Schema):
    transfer_id = Integer(required=True)
    from_entry_id = Integer(required=True)
    to_entry_id = Integer(required=True)
    amount = Integer(required=True)
    from_balance = Integer(required=True)
    to_balance = Integer(required=True)


class TransferWriteOut(Schema):
    transfer = Nested(TransferOut, required=True)


class EntriesOut(Schema):
    entries = List(Nested(EntryOut), required=True)


class OperationOut(Schema):
    app = String(required=True)
    operation = String(required=True)
    direction = String(required=True, allow_none=True)
    default_amount = Integer(required=True, allow_none=True)
    min_amount = Integer(required=True)
    max_amount = Integer(required=True, allow_none=True)
    caller_sets_amount = Boolean(required=True)
    limit_per = String(required=True, allow_none=True)
    description = String(required=True, allow_none=True)


class OperationsOut(Schema):
    app = String(required=True)
    operations = List(Nested(OperationOut), required=True)


class ReportRowOut(Schema):
    operation = String(required=True)
    entries = Integer(required=True)
    credited = Integer(required=True)
    debited = Integer(required=True)
    owners = Integer(required=True)


class ReportOut(Schema):
    app = String(required=True)
    from_time = DateTime(required=True, data_key="from")
    to_time = DateTime(required=True, data_key="to")
    rows = List(Nested(ReportRowOut), required=True)


class ContentOut(Schema):
    content_id = Integer(required=True)
    owner_id = String(required=True)
    title = String(required=True)
    body = String(required=True)
    created_at = DateTime(required=True)


class ContentWriteOut(Schema):
    content = Nested(ContentOut, required=True)
    entry = Nested(EntryOut, required=True)
    balance = Integer(required=True)
    charged = Boolean(required=True, metadata={"description": "false for a repeated access"})


class HealthOut(Schema):
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
