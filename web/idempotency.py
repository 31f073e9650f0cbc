"""Idempotency over HTTP: which key a write carries, and how its answer reads.

The ledger keeps every key with a fingerprint of its request and replays an
identical request (its result says ``replayed``) or refuses a different one
(IdempotencyConflict -> 409). This module only carries the key there and
turns ``replayed`` into ``200`` + ``Idempotent-Replayed: true``; a first
write answers 201. A replay's body is built from what the ledger returned
for the original write (the entry, and the balance right after it), so it
equals the original answer.
"""

from __future__ import annotations

from typing import Any, cast

from apiflask.fields import String
from marshmallow import EXCLUDE

from web.errors import api_error
from web.fast_schema import FastSchema

REPLAY_HEADER = "Idempotent-Replayed"


class IdempotencyHeaders(FastSchema):
    class Meta:
        unknown = EXCLUDE

    idempotency_key = String(
        data_key="Idempotency-Key",
        metadata={"description": "unique per app and request; a `nonce` body field also works"},
    )


def idempotency_key(headers: dict[str, Any], body: dict[str, Any]) -> str:
    """The request's key: the Idempotency-Key header, else the body's nonce.

    A missing key is passed on as None: the ledger refuses it (422), Python
    does not restate that rule (hence the cast).
    """
    header = headers.get("idempotency_key")
    nonce = body.get("nonce")
    if header is not None and nonce is not None and header != nonce:
        raise api_error(
            422,
            "invalid_argument",
            "the Idempotency-Key header and the nonce field differ: send one, or the same",
            field="nonce",
            reason="differs from Idempotency-Key",
        )
    return cast(str, header if header is not None else nonce)


def answer(body: Any, replayed: bool, first_status: int = 201) -> tuple[Any, int, dict[str, str]]:
    if replayed:
        return body, 200, {REPLAY_HEADER: "true"}
    return body, first_status, {}


def replay_doc(schema_name: str) -> dict[str, Any]:
    """The OpenAPI description of a write's replay answer."""
    return {
        "description": "a replay of an earlier identical write: its original body, nothing written",
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
        },
        "headers": {
            REPLAY_HEADER: {
                "description": "true on a replay",
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
    }
