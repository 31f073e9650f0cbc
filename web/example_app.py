"""The example content app: a real app of the monorepo on top of the ledger.

Its tables live in schema ``example_app`` (migrations/0007_example_app_content.sql),
its operations CONTENT_CREATION and CONTENT_ACCESS in migrations/0004. It
shows the pattern every app with slow or failing work follows:

1. hold the credits (``create_hold``): the owner cannot spend them meanwhile;
2. do the work, outside any transaction;
3. insert the app's row and capture the hold in ONE transaction
   (``capture_hold(conn=...)``), so content exists exactly when it was paid;
4. if the work failed, release the hold: nothing is charged (502).

Accessing content charges CONTENT_ACCESS once per reader and content: the
access row is written in the same transaction as the debit, and a recorded
access is answered from it (``"charged": false``). The debit's idempotency
key is an HMAC of the pair under a secret of this app (``_access_key``), so
the ledger itself makes a racing second access a replay, and no other
caller can take that key first.

These views act as app ``example_app`` whatever the API key's app, except
that only keys of ``example_app`` may call them (403 otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable
from typing import Any, cast

import psycopg
from apiflask import APIBlueprint, HTTPError
from flask import current_app

from ledger_py.client import Ledger
from ledger_py.errors import HoldNotActive, LedgerError, unstorable_text
from web import schemas as s
from web.auth import auth, current_app_name
from web.database import connection
from web.errors import api_error
from web.idempotency import IdempotencyHeaders, answer, idempotency_key, replay_doc

APP = "example_app"
_SECRET = "example_app_access_key_secret"  # app.extensions: read once per process
CREATION = "CONTENT_CREATION"
ACCESS = "CONTENT_ACCESS"

bp = APIBlueprint("example_app", __name__, tag="Example app (content)")

ContentWork = Callable[[str, str], str]


def default_work(title: str, body: str) -> str:
    """The 'work' of creating content (a stand-in for slow generation):
    returns the body to store. Apps replace it via config CONTENT_WORK."""
    return body.strip()


def _ledger() -> Ledger:
    return current_app.extensions["ledger_web"].ledger  # type: ignore[no-any-return]


def _require_example_app() -> None:
    app = current_app_name()
    if app != APP:
        raise api_error(
            403,
            "operation_not_allowed",
            f"the content resources belong to app {APP}; this API key is of app {app}",
            app=app,
            required_app=APP,
        )


def _require_text(field: str, value: str) -> None:
    """The example app's own data (checked before anything is held): text
    PostgreSQL can store (ledger_py's rule)."""
    reason = unstorable_text(value)
    if reason is not None:
        raise api_error(
            422,
            "invalid_argument",
            f"invalid argument: {field} is not storable text ({reason})",
            field=field,
            reason=reason,
        )


# The CHECK constraints of example_app.content (migrations/0007), by name:
# the field each judges. The database is the rule; this only names the field.
_FIELD_BY_CONSTRAINT = {
    "content_title_length": "title",
    "content_owner_id_length": "owner_id",
}


def _declared_constraint(exc: psycopg.errors.CheckViolation) -> str:
    """The constraint's name as migrations/0007 declares it. On Citus the row is
    checked on a shard, whose constraint carries the shard's id
    (content_title_length_102108), and an error relayed from another node
    names it only in its message (as ledger._declared_constraint does in SQL)."""
    name = exc.diag.constraint_name or ""
    if not name:
        found = re.search(r'constraint "([^"]+)"', exc.diag.message_primary or "")
        name = found.group(1) if found else ""
    return re.sub(r"_[0-9]+$", "", name)


def _refused_by_constraint(exc: psycopg.errors.CheckViolation) -> HTTPError | None:
    """The 422 for a row a CHECK constraint of the content table refused."""
    constraint = _declared_constraint(exc)
    field = _FIELD_BY_CONSTRAINT.get(constraint)
    if field is None:
        return None
    return api_error(
        422,
        "invalid_argument",
        f"invalid argument: {field} is refused by the content table's rule {constraint}",
        field=field,
        reason="constraint",
        constraint=constraint,
    )


_CONTENT_COLUMNS = "content_id, owner_id, title, body, created_at"


def _content_row(row: Any) -> dict[str, Any]:
    content_id, owner_id, title, body, created_at = row
    return {
        "content_id": content_id,
        "owner_id": owner_id,
        "title": title,
        "body": body,
        "created_at": created_at,
    }


def _entry_view(entry: Any) -> dict[str, Any]:
    """The fields of an entry_result, from an Entry or a JournalEntry alike."""
    return {
        "entry_id": entry.entry_id,
        "owner_id": entry.owner_id,
        "app": entry.app,
        "operation": entry.operation,
        "amount": entry.amount,
        "balance": entry.balance,
        "created_at": entry.created_at,
    }


CREATE_RESPONSES: dict[int, Any] = {
    200: replay_doc("ContentWriteOut"),
    400: "malformed JSON, or a path or query string that is not UTF-8",
    402: "insufficient credits",
    403: "the API key is not of example_app",
    409: "idempotency key reused for other content, or the hold is no longer active",
    502: "the content work failed: the hold was released, nothing charged",
    413: "request body larger than 4 MiB",
    415: "a body that is not application/json",
    503: "database unreachable",
}


@bp.post("/content")
@bp.auth_required(auth)
@bp.input(IdempotencyHeaders, location="headers", arg_name="headers")
@bp.input(s.ContentIn, arg_name="body")
@bp.output(s.ContentWriteOut, status_code=201, description="the content, paid by its owner")
@bp.doc(
    summary="Create content: hold CONTENT_CREATION, do the work, store it and capture the hold",
    responses=CREATE_RESPONSES,
)
def create_content(headers: dict[str, Any], body: dict[str, Any]) -> Any:
    """Send an Idempotency-Key (or nonce) to make retries safe: without one,
    each request is new content."""
    _require_example_app()
    _require_text("title", body["title"])
    _require_text("body", body["body"])
    ledger = _ledger()
    owner_id = body["owner_id"]
    key: str = idempotency_key(headers, body) or f"content-{uuid.uuid4()}"
    digest = _request_digest(owner_id, body["title"], body["body"])

    hold = ledger.create_hold(owner_id=owner_id, app=APP, operation=CREATION, idempotency_key=key)
    if hold.replayed:
        done = _content_of_hold(ledger, hold.hold_id, digest, key)
        if done is not None:
            return answer(done, replayed=True)

    work: ContentWork = current_app.config["CONTENT_WORK"]
    try:
        stored_body = work(body["title"], body["body"])
        _require_text("body", stored_body)
    except Exception as exc:
        _release_quietly(ledger, hold.hold_id, owner_id)
        current_app.logger.warning("content work failed for hold %s: %r", hold.hold_id, exc)
        raise api_error(
            502,
            "content_work_failed",
            "creating the content failed; its hold was released and nothing was charged",
            hold_id=hold.hold_id,
        ) from exc

    try:
        with connection(ledger, owner_id=owner_id, title=body["title"]) as conn:
            entry = ledger.capture_hold(hold_id=hold.hold_id, app=APP, owner_id=owner_id, conn=conn)
            # Identical requests racing (one key) all hold and capture the one
            # hold: the first capture writes, the others replay it. The first
            # insert wins; the others wait for it and then take its row.
            row = conn.execute(
                "INSERT INTO example_app.content"
                " (owner_id, title, body, hold_id, entry_id, request_digest)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (hold_id) DO NOTHING"
                f" RETURNING {_CONTENT_COLUMNS}",
                (owner_id, body["title"], stored_body, hold.hold_id, entry.entry_id, digest),
            ).fetchone()
    except LedgerError as exc:
        if not isinstance(exc, HoldNotActive):
            _release_quietly(ledger, hold.hold_id, owner_id)
        raise
    except psycopg.errors.CheckViolation as exc:
        # The transaction rolled back: no content, nothing captured.
        _release_quietly(ledger, hold.hold_id, owner_id)
        refused = _refused_by_constraint(exc)
        if refused is None:
            raise
        raise refused from exc
    if row is None:
        done = _content_of_hold(ledger, hold.hold_id, digest, key)
        if done is None:  # the conflicting row was committed before DO NOTHING
            raise RuntimeError(f"content of hold {hold.hold_id} conflicted but is not there")
        return answer(done, replayed=True)
    result = {
        "content": _content_row(row),
        "entry": _entry_view(entry),
        "balance": entry.balance,
        "charged": True,
    }
    return answer(result, replayed=False)


def _request_digest(owner_id: str, title: str, body: str) -> bytes:
    """What identifies a creation request beyond its key: owner, title and body as sent."""
    return hashlib.sha256(json.dumps([owner_id, title, body]).encode()).digest()


def _content_of_hold(
    ledger: Ledger, hold_id: int, digest: bytes, key: str
) -> dict[str, Any] | None:
    """The answer a completed creation gave, rebuilt from what it stored; 409
    when that creation was another request under the same key."""
    with connection(ledger) as conn:
        row = conn.execute(
            f"SELECT {_CONTENT_COLUMNS}, entry_id, request_digest"
            " FROM example_app.content WHERE hold_id = %s",
            (hold_id,),
        ).fetchone()
    if row is None:
        return None
    if row[6] is not None and bytes(row[6]) != digest:
        raise api_error(
            409,
            "idempotency_conflict",
            f"idempotency key {key} was already used for other content",
            idempotency_key=key,
        )
    entry = ledger.get_entry(entry_id=row[5], app=APP, owner_id=row[1])
    return {
        "content": _content_row(row[:5]),
        "entry": _entry_view(entry),
        "balance": entry.balance,
        "charged": True,
    }


def _release_quietly(ledger: Ledger, hold_id: int, owner_id: str) -> None:
    try:
        ledger.release_hold(hold_id=hold_id, app=APP, owner_id=owner_id)
    except LedgerError as exc:  # expired already, or the database is gone: it expires anyway
        current_app.logger.warning("could not release hold %s: %r", hold_id, exc)


ACCESS_RESPONSES: dict[int, Any] = {
    200: {
        "description": "a repeated access: not charged (charged: false)",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ContentWriteOut"}}
        },
    },
    400: "malformed JSON, or a path or query string that is not UTF-8",
    402: "insufficient credits",
    403: "the API key is not of example_app",
    404: "unknown content",
    413: "request body larger than 4 MiB",
    415: "a body that is not application/json",
    503: "database unreachable",
}


@bp.post("/content/<int:content_id>/access")
@bp.auth_required(auth)
@bp.input(s.AccessQuery, location="query", arg_name="query")
@bp.input(s.AccessIn, arg_name="body")
@bp.output(s.ContentWriteOut, status_code=201, description="first access: charged")
@bp.doc(
    summary="Access content: CONTENT_ACCESS is charged once per reader and content",
    responses=ACCESS_RESPONSES,
)
def access_content(content_id: int, query: dict[str, Any], body: dict[str, Any]) -> Any:
    """owner_id (the reader) in the JSON body, or, as the first version of this
    API had it, ?owner_id= (both: they must name the same reader)."""
    _require_example_app()
    owner_id = _reader(query, body)
    ledger = _ledger()
    with connection(ledger, owner_id=owner_id) as conn:
        # The content, and the reader's access if one is recorded: that is
        # answered from its row, whatever key its debit was posted with
        # (earlier versions derived the key otherwise).
        found = conn.execute(
            "SELECT c.content_id, c.owner_id, c.title, c.body, c.created_at, a.entry_id"
            " FROM example_app.content c LEFT JOIN example_app.content_access a"
            " ON a.content_id = c.content_id AND a.owner_id = %s"
            " WHERE c.content_id = %s",
            (owner_id, content_id),
        ).fetchone()
        if found is None:
            raise api_error(
                404,
                "not_found",
                f"content {content_id} not found",
                content_id=content_id,
                kind="content",
            )
        row, done = found[:5], found[5]
        if done is None:
            # The key names the (reader, content) pair: the ledger makes a
            # racing second access a replay.
            entry = ledger.post_entry(
                owner_id=owner_id,
                app=APP,
                operation=ACCESS,
                idempotency_key=_access_key(conn, content_id, owner_id),
                metadata={"content_id": content_id},
                conn=conn,
            )
            if not entry.replayed:
                conn.execute(
                    "INSERT INTO example_app.content_access (content_id, owner_id, entry_id)"
                    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (content_id, owner_id, entry.entry_id),
                )
    charged = done is None and not entry.replayed
    shown: Any = entry if done is None else ledger.get_entry(entry_id=done, owner_id=owner_id)
    balance = entry.balance if charged else ledger.get_balance(owner_id=owner_id).balance
    result = {
        "content": _content_row(row),
        "entry": _entry_view(shown),
        "balance": balance,
        "charged": charged,
    }
    return result, 201 if charged else 200


def _reader(query: dict[str, Any], body: dict[str, Any]) -> str:
    """The reader named by the body or the query string; both must agree."""
    in_body, in_query = body.get("owner_id"), query.get("owner_id")
    if in_body is not None and in_query is not None and in_body != in_query:
        raise api_error(
            422,
            "invalid_argument",
            "the body and the query string name different owners: send one, or the same",
            field="owner_id",
            reason="body and query differ",
        )
    # None reaches the ledger, which refuses it (422).
    return cast(str, in_body if in_body is not None else in_query)


def _access_key(conn: Any, content_id: int, owner_id: str) -> str:
    """The idempotency key of a reader's access: HMAC-SHA256 of "content:reader"
    under the example app's secret (migrations/0011): 79 characters whatever the
    reader id, and no caller without the secret can compute it, so none can
    post under it first and block the access with a conflict."""
    secret: bytes | None = current_app.extensions.get(_SECRET)
    if secret is None:
        found = conn.execute("SELECT secret FROM example_app.access_key_secret").fetchone()
        secret = current_app.extensions[_SECRET] = bytes(found[0])
    # surrogatepass: a lone surrogate still gives a key; the ledger refuses the owner.
    message = f"{content_id}:{owner_id}".encode("utf-8", "surrogatepass")
    return "content-access:" + hmac.new(secret, message, hashlib.sha256).hexdigest()
