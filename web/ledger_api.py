"""The ledger's HTTP resources: one short view per ledger_py method.

Each view parses the JSON shape, takes the app from the API key, calls one
ledger_py method and renders its result. Every rule (amounts, owners,
operations, limits, holds, idempotency) is the SQL function's; its errors
become statuses in web/errors.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from apiflask import APIBlueprint
from flask import current_app

from ledger_py.client import Ledger
from web import schemas as s
from web.auth import auth, current_app_name, reading_app
from web.idempotency import IdempotencyHeaders, answer, idempotency_key, replay_doc

bp = APIBlueprint("ledger", __name__, tag="Ledger")

HTTP_PAGE_SIZE = 100  # history entries per page when the request names no limit
TTL_BOUND = 10**9  # seconds: far outside the ledger's 1 s .. 7 days, still a valid interval

WRITE_ERRORS: dict[int, Any] = {
    402: "insufficient credits (the owner's available credits do not cover it)",
    403: "an operation, hold or entry of another app",
    409: "idempotency key reused for another request, operation limit reached, hold not active,"
    " already reversed, or nothing left of a grant to void",
    413: "request body larger than 4 MiB",
    400: "malformed JSON (reason: duplicate_key, not_a_number, too_deep, ...),"
    " or a path or query string that is not UTF-8",
    415: "a body that is not application/json",
    503: "database unreachable",
}
READ_ERRORS: dict[int, Any] = {
    400: "a path or query string that is not UTF-8 once percent-decoded",
    422: "an argument the ledger refuses (e.g. an owner id over 255 characters)",
    503: "database unreachable",
}


def ledger() -> Ledger:
    return current_app.extensions["ledger_web"].ledger  # type: ignore[no-any-return]


def _write(entry: Any) -> dict[str, Any]:
    """The answer to a write: the entry and the owner's balance right after it."""
    return {"entry": entry, "balance": entry.balance}


# ---- balances and history -----------------------------------------------------------------


@bp.get("/balance/<path:owner_id>")
@bp.get("/ledger/<path:owner_id>/balance")
@bp.auth_required(auth)
@bp.output(s.BalanceOut)
@bp.doc(summary="An owner's balance, held and available credits", responses=READ_ERRORS)
def get_balance(owner_id: str) -> Any:
    """GET /ledger/{owner_id}/balance is an older alias of GET /balance/{owner_id},
    kept for its callers."""
    return ledger().get_balance(owner_id=owner_id)


@bp.get("/owners/<path:owner_id>/entries")
@bp.auth_required(auth)
@bp.input(s.HistoryQuery, location="query", arg_name="query")
@bp.output(s.HistoryOut)
@bp.doc(summary="An owner's history, newest first (keyset pagination)", responses=READ_ERRORS)
def list_entries(owner_id: str, query: dict[str, Any]) -> Any:
    """Pass the answer's next_after_id as after_id to read the next page."""
    # The HTTP page size is always sent, so a full page is known here; the
    # ledger judges the value (1 to 1000).
    limit = HTTP_PAGE_SIZE if query["limit"] is None else query["limit"]
    entries = ledger().list_entries(
        owner_id=owner_id, after_id=query["after_id"], max_rows=limit, app=reading_app()
    )
    full = bool(entries) and len(entries) == limit
    return {
        "owner_id": owner_id,
        "entries": entries,
        "next_after_id": entries[-1].entry_id if full else None,
    }


@bp.get("/entries/<int:entry_id>")
@bp.auth_required(auth)
@bp.input(s.OwnerQuery, location="query", arg_name="query")
@bp.output(s.JournalEntryOne)
@bp.doc(summary="One journal entry", responses=READ_ERRORS)
def get_entry(entry_id: int, query: dict[str, Any]) -> Any:
    entry = ledger().get_entry(entry_id=entry_id, app=reading_app(), owner_id=query["owner_id"])
    return {"entry": entry}


# ---- entries ----------------------------------------------------------------------------------


@bp.post("/ledger")
@bp.post("/ledger/entry")
@bp.auth_required(auth)
@bp.input(IdempotencyHeaders, location="headers", arg_name="headers")
@bp.input(s.EntryIn, arg_name="body")
@bp.output(s.WriteOut, status_code=201, description="the entry written")
@bp.doc(
    summary="Post one entry (POST /ledger/entry is an older alias)",
    responses={200: replay_doc("WriteOut"), **WRITE_ERRORS},
)
def post_entry(headers: dict[str, Any], body: dict[str, Any]) -> Any:
    """The operation decides credit or debit and the amount rules; amount is a magnitude."""
    entry = ledger().post_entry(
        owner_id=body["owner_id"],
        app=current_app_name(),
        operation=body["operation"],
        idempotency_key=idempotency_key(headers, body),
        amount=body["amount"],
        metadata=body["metadata"],
    )
    return answer(_write(entry), entry.replayed)


@bp.post("/ledger/batch")
@bp.auth_required(auth)
@bp.input(IdempotencyHeaders, location="headers", arg_name="headers")
@bp.input(s.BatchIn, arg_name="body")
@bp.output(s.EntriesOut, status_code=201, description="the entries, in input order")
@bp.doc(
    summary="Post up to 10,000 entries in one transaction (all or nothing)",
    responses={200: replay_doc("EntriesOut"), **WRITE_ERRORS},
)
def post_entries(headers: dict[str, Any], body: dict[str, Any]) -> Any:
    """Each item needs an idempotency_key, or the request an Idempotency-Key header,
    which keys the request as a whole: an item without a key then uses
    '<header>:<index>', and the same header with another batch is 409. An error
    names the failing index."""
    app = current_app_name()
    items = []
    for item in body["entries"]:
        sent = {
            "owner_id": item["owner_id"],
            "app": app,
            "operation": item["operation"],
            "idempotency_key": item["idempotency_key"],
        }
        # Absent optional values are left out so that the SQL defaults apply.
        sent.update({k: item[k] for k in ("amount", "metadata") if item[k] is not None})
        items.append(sent)
    entries = ledger().post_entries(entries=items, idempotency_key=idempotency_key(headers, body))
    replayed = bool(entries) and all(e.replayed for e in entries)
    return answer({"entries": entries}, replayed)


# ---- holds ------------------------------------------------------------------------------------


@bp.post("/holds")
@bp.auth_required(auth)
@bp.input(IdempotencyHeaders, location="headers", arg_name="headers")
@bp.input(s.HoldIn, arg_name="body")
@bp.output(s.HoldWriteOut, status_code=201, description="the hold")
@bp.doc(
    summary="Reserve what a debit operation would take, until captured, released or expired",
    responses={200: replay_doc("HoldWriteOut"), **WRITE_ERRORS},
)
def create_hold(headers: dict[str, Any], body: dict[str, Any]) -> Any:
    """A replay answers the hold as it is now."""
    ttl = body["ttl_seconds"]
    hold = ledger().create_hold(
        owner_id=body["owner_id"],
        app=current_app_name(),
        operation=body["operation"],
        idempotency_key=idempotency_key(headers, body),
        amount=body["amount"],
        ttl=None if ttl is None else timedelta(seconds=max(-TTL_BOUND, min(TTL_BOUND, ttl))),
    )
    return answer({"hold": hold}, hold.replayed)


@bp.get("/holds/<int:hold_id>")
@bp.auth_required(auth)
@bp.input(s.OwnerQuery, location="query", arg_name="query")
@bp.output(s.HoldRecordOne)
@bp.doc(summary="One hold (status active, captured, released or expired)", responses=READ_ERRORS)
def get_hold(hold_id: int, query: dict[str, Any]) -> Any:
    hold = ledger().get_hold(hold_id=hold_id, app=reading_app(), owner_id=query["owner_id"])
    return {"hold": hold}


@bp.get("/owners/<path:owner_id>/holds")
@bp.auth_required(auth)
@bp.output(s.HoldListOut)
@bp.doc(summary="An owner's holds, newest first", responses=READ_ERRORS)
def list_holds(owner_id: str) -> Any:
    holds = ledger().list_holds(owner_id=owner_id, app=reading_app())
    return {"owner_id": owner_id, "holds": holds}


@bp.post("/holds/<int:hold_id>/capture")
@bp.auth_required(auth)
@bp.input(s.CaptureIn, arg_name="body")
@bp.output(s.WriteOut, status_code=201, description="the debit entry")
@bp.doc(
    summary="Capture a hold (whole, or part of it): one debit entry; the rest is freed",
    responses={200: replay_doc("WriteOut"), **WRITE_ERRORS},
)
def capture_hold(hold_id: int, body: dict[str, Any]) -> Any:
    """Idempotent by hold id: the same capture again is a replay."""
    entry = ledger().capture_hold(
        hold_id=hold_id, app=current_app_name(), amount=body["amount"], owner_id=body["owner_id"]
    )
    return answer(_write(entry), entry.replayed)


@bp.post("/holds/<int:hold_id>/release")
@bp.auth_required(auth)
@bp.input(s.OwnerQuery, location="query", arg_name="query")
@bp.output(s.HoldWriteOut, description="the released hold (a repeated release: a replay)")
@bp.doc(summary="Release a hold: nothing is charged", responses={**WRITE_ERRORS})
def release_hold(hold_id: int, query: dict[str, Any]) -> Any:
    hold = ledger().release_hold(
        hold_id=hold_id, app=current_app_name(), owner_id=query["owner_id"]
    )
    return answer({"hold": hold}, hold.replayed, first_status=200)


# ---- transfers and reversals ------------------------------------------------------------------


@bp.post("/transfers")
@bp.auth_required(auth)
@bp.input(IdempotencyHeaders, location="headers", arg_name="headers")
@bp.input(s.TransferIn, arg_name="body")
@bp.output(s.TransferWriteOut, status_code=201, description="both legs of the transfer")
@bp.doc(
    summary="Move credits from one owner to another",
    responses={200: replay_doc("TransferWriteOut"), **WRITE_ERRORS},
)
def transfer(headers: dict[str, Any], body: dict[str, Any]) -> Any:
    result = ledger().transfer(
        from_owner=body["from_owner"],
        to_owner=body["to_owner"],
        amount=body["amount"],
        app=current_app_name(),
        idempotency_key=idempotency_key(headers, body),
        metadata=body["metadata"],
    )
    return answer({"transfer": result}, result.replayed)


@bp.post("/reversals")
@bp.auth_required(auth)
@bp.input(IdempotencyHeaders, location="headers", arg_name="headers")
@bp.input(s.ReversalIn, arg_name="body")
@bp.output(s.EntriesOut, status_code=201, description="the compensating entries")
@bp.doc(
    summary="Reverse an entry the app wrote (both legs of a transfer)",
    responses={200: replay_doc("EntriesOut"), 404: "unknown entry", **WRITE_ERRORS},
)
def reverse_entry(headers: dict[str, Any], body: dict[str, Any]) -> Any:
    entries = ledger().reverse_entry(
        entry_id=body["entry_id"],
        app=current_app_name(),
        idempotency_key=idempotency_key(headers, body),
        reason=body["reason"],
        owner_id=body["owner_id"],
    )
    return answer({"entries": entries}, bool(entries) and all(e.replayed for e in entries))


# ---- grants ------------------------------------------------------------------------------------


@bp.get("/owners/<path:owner_id>/grants")
@bp.auth_required(auth)
@bp.input(s.GrantsQuery, location="query", arg_name="query")
@bp.output(s.GrantListOut)
@bp.doc(
    summary="An owner's grants: what is left of each, in the order debits spend them",
    responses=READ_ERRORS,
)
def list_grants(owner_id: str, query: dict[str, Any]) -> Any:
    """Active grants by priority, then soonest expiry (never-expiring last), then
    oldest; with include_closed=true, then the spent, expired and voided ones,
    newest first. A grant past its expires_at counts nothing, even before its
    EXPIRE entry is written."""
    grants = ledger().list_grants(owner_id=owner_id, include_closed=query["include_closed"])
    return {"owner_id": owner_id, "grants": grants}


@bp.post("/grants")
@bp.auth_required(auth)
@bp.input(IdempotencyHeaders, location="headers", arg_name="headers")
@bp.input(s.GrantIn, arg_name="body")
@bp.output(s.WriteOut, status_code=201, description="the credit entry that made the grant")
@bp.doc(
    summary="Grant credits: a credit entry whose grant may expire and has a priority",
    responses={200: replay_doc("WriteOut"), **WRITE_ERRORS},
)
def grant_credits(headers: dict[str, Any], body: dict[str, Any]) -> Any:
    """Like POST /ledger for a credit operation, with the grant's expires_at and
    priority (each omitted: the operation's). The grant is listed by
    GET /owners/{owner_id}/grants under the entry's entry_id."""
    entry = ledger().grant_credits(
        owner_id=body["owner_id"],
        app=current_app_name(),
        operation=body["operation"],
        idempotency_key=idempotency_key(headers, body),
        amount=body["amount"],
        expires_at=body["expires_at"],
        priority=body["priority"],
        metadata=body["metadata"],
    )
    return answer(_write(entry), entry.replayed)


@bp.post("/grants/<int:grant_id>/void")
@bp.auth_required(auth)
@bp.input(IdempotencyHeaders, location="headers", arg_name="headers")
@bp.input(s.VoidIn, arg_name="body")
@bp.output(s.WriteOut, status_code=201, description="the VOID entry (a negative amount)")
@bp.doc(
    summary="Void what is left of a grant the key's app made (what was spent stays spent)",
    responses={200: replay_doc("WriteOut"), 404: "unknown grant", **WRITE_ERRORS},
)
def void_grant(grant_id: int, headers: dict[str, Any], body: dict[str, Any]) -> Any:
    """Idempotent by key (the key belongs to the grant's owner). 409
    grant_not_active when nothing is left: spent, expired or voided before."""
    entry = ledger().void_grant(
        grant_id=grant_id,
        app=current_app_name(),
        idempotency_key=idempotency_key(headers, body),
        reason=body["reason"],
        owner_id=body["owner_id"],
    )
    return answer(_write(entry), entry.replayed)


@bp.get("/owners/<path:owner_id>/spending")
@bp.auth_required(auth)
@bp.input(s.SpendingQuery, location="query", arg_name="query")
@bp.output(s.SpendingListOut)
@bp.doc(
    summary="Where an owner's credits went: entry by entry, grant by grant", responses=READ_ERRORS
)
def list_spending(owner_id: str, query: dict[str, Any]) -> Any:
    """Newest first. entry_id: what that entry took from (or gave back to) which
    grants; grant_id: every movement of that grant."""
    limit = HTTP_PAGE_SIZE if query["limit"] is None else query["limit"]
    rows = ledger().list_spending(
        owner_id=owner_id, entry_id=query["entry_id"], grant_id=query["grant_id"], max_rows=limit
    )
    return {"owner_id": owner_id, "spending": rows}


# ---- the app's operations and reports ---------------------------------------------------------


@bp.get("/operations")
@bp.auth_required(auth)
@bp.output(s.OperationsOut)
@bp.doc(summary="The operations the key's app may post (core's and its own)", responses=READ_ERRORS)
def list_operations() -> Any:
    app = current_app_name()
    return {"app": app, "operations": ledger().list_operations(app=app)}


@bp.get("/reports")
@bp.auth_required(auth)
@bp.input(s.ReportQuery, location="query", arg_name="query")
@bp.output(s.ReportOut)
@bp.doc(
    summary="The key's app, per operation: entries, credited, debited, owners, expired, voided",
    responses=READ_ERRORS,
)
def app_report(query: dict[str, Any]) -> Any:
    """Entries created in [from, to)."""
    app = current_app_name()
    rows = ledger().app_report(app=app, from_time=query["from_time"], to_time=query["to_time"])
    return {"app": app, "from_time": query["from_time"], "to_time": query["to_time"], "rows": rows}
