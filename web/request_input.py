"""What a request may carry, checked before any view runs.

**Bodies.** Every JSON body is parsed by ``parse_json`` and nothing else:
the loader of apiflask's ``json`` location (``load_json_body``, installed by
``install``) and Flask's ``request.get_json()`` (``StrictJSONProvider``)
both go through it. It accepts JSON as RFC 8259 defines it and refuses what
Python's parser would otherwise take or choke on, as 400 ``malformed_json``
with a ``reason`` field:

- ``duplicate_key`` (and ``key``): an object names a key twice, at any
  depth. Python keeps the last one; a proxy, a log or another parser may
  keep the first, and would see another request than the ledger does;
- ``not_a_number`` (and ``token``): ``NaN``, ``Infinity``, ``-Infinity``
  (not JSON; PostgreSQL's jsonb refuses them too);
- ``number_out_of_range``: a number such as ``1e400`` that is infinite as
  a float;
- ``number_too_long`` (and ``max_digits``): an integer of more digits than
  Python converts (4,300 by default);
- ``too_deep`` (and ``max_depth``): arrays and objects nested more than
  ``MAX_DEPTH`` levels (deep nesting exhausts the parser's, the encoder's or
  the database's recursion long before it means anything to the ledger);
- ``not_utf8`` and ``syntax``: bytes that are not UTF-8, text that is not
  JSON (``line`` and ``column`` name where).

**Content types.** An endpoint that takes a JSON body accepts
``application/json`` and ``application/*+json`` (parameters such as
``charset=utf-8`` are ignored: JSON is UTF-8). Any other Content-Type is 415
``unsupported_media_type``, so that a form or text post is never read as an
empty body. A request with no Content-Type and an empty body has no body
(``POST /content/1/access?owner_id=bob``); with no Content-Type and a
non-empty body it is 415, since the API cannot know what was sent.

**URLs.** A path or query string whose percent-decoded bytes are not UTF-8
is 400 ``invalid_path`` / ``invalid_query``. Werkzeug would decode them with
replacement characters, so ``/balance/%FF`` and ``/balance/%FE`` would both
name the owner ``"\\ufffd"``: different byte strings must not alias one
owner. (A path that spells U+FFFD in UTF-8, ``%EF%BF%BD``, is that owner.)
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from apiflask import APIFlask
from apiflask.schema_adapters.marshmallow import parser
from flask import Request, request
from flask.json.provider import DefaultJSONProvider
from webargs import core as webargs_core
from werkzeug.sansio.response import Response

from web.errors import api_error

MAX_DEPTH = 64
JSON_MIMETYPE = "application/json"
_MULTI_FIELDS = tuple(parser.KNOWN_MULTI_FIELDS)


def _default_headers_loader(req: Request, schema: Any) -> Any:
    return parser.load_headers(req, schema)


class MalformedJSON(ValueError):
    """A body that is not the JSON this API takes; ``fields`` go into the 400 body."""

    def __init__(self, reason: str, detail: str, **fields: Any) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.fields = fields


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedJSON(
                    "duplicate_key", f'the key "{key}" appears twice in one object', key=key
                )
            seen.add(key)
    return obj


def _constant(token: str) -> Any:
    raise MalformedJSON("not_a_number", f"{token} is not a JSON value", token=token)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedJSON("number_out_of_range", f"the number {text[:40]} is out of range")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays/objects nest deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend(
                (child, depth + 1) for child in node.values() if isinstance(child, (dict, list))
            )
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return False


def _too_deep() -> MalformedJSON:
    return MalformedJSON(
        "too_deep",
        f"arrays and objects nest more than {MAX_DEPTH} levels",
        max_depth=MAX_DEPTH,
    )


def parse_json(data: str | bytes) -> Any:
    """The one JSON parser of request bodies: a value, or MalformedJSON."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedJSON(
                "not_utf8", "the body is not UTF-8 text", position=exc.start
            ) from None
    else:
        text = data
    try:
        value = json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float
        )
    except MalformedJSON:
        raise
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError as exc:
        raise MalformedJSON(
            "syntax", f"not JSON: {exc.msg}", line=exc.lineno, column=exc.colno
        ) from None
    except ValueError:
        # int() over its digit limit (the only other ValueError the parser raises).
        limit = sys.get_int_max_str_digits()
        raise MalformedJSON(
            "number_too_long", f"an integer has more than {limit} digits", max_digits=limit
        ) from None
    # Counting brackets is cheap; only a body with more of them than MAX_DEPTH
    # (a batch, say) needs the walk over what was parsed.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth_exceeds(value, MAX_DEPTH):
        raise _too_deep()
    return value


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, reading with ``parse_json`` (``request.get_json()``);
    writing as Flask does, in the order the views build (no key sorting)."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        # MalformedJSON is a ValueError: get_json() turns it into a 400.
        return parse_json(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """``jsonify``'s response: the bytes Flask's own encoder writes
        (compact, ASCII, a newline), made by orjson when it can, several
        times faster. orjson's output is taken only when it is ASCII (else
        Flask escapes the non-ASCII characters as ``\\uXXXX``); dates,
        dataclasses and subclasses of built-in types go through Flask's own
        ``default``; anything orjson refuses (an integer over 64 bits, a key
        that is not a string) is encoded by Flask's path."""
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        try:
            data = orjson.dumps(obj, default=self.default, option=_ORJSON_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError included
            return super().response(*args, **kwargs)
        if not data.isascii():
            return super().response(*args, **kwargs)
        response: Response = self._app.response_class(data + b"\n", mimetype=self.mimetype)  # type: ignore[arg-type]
        return response


_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _malformed(exc: MalformedJSON) -> Exception:
    return api_error(400, "malformed_json", exc.detail, reason=exc.reason, **exc.fields)


def load_json_body(req: Request, schema: Any) -> Any:
    """The ``json`` location of every ``@input``: Content-Type, then parse_json."""
    data = req.get_data(cache=True)
    if req.headers.get("Content-Type") is None:
        if not data:
            return webargs_core.missing
        raise _unsupported("no Content-Type was sent with the body")
    if not webargs_core.is_json(req.mimetype):
        raise _unsupported(f"the body is {req.mimetype or 'of no type'}")
    if not data:
        return webargs_core.missing
    try:
        return parse_json(data)
    except MalformedJSON as exc:
        raise _malformed(exc) from None


def load_declared_headers(req: Request, schema: Any) -> Any:
    """The ``headers`` location of every ``@input``: a dict of the headers the
    schema declares (each header's first value, as webargs' proxy reads a
    single-valued field), so that the schema's load reads a plain dict
    instead of the proxy; a schema with a multi-valued field gets the proxy."""
    if any(isinstance(f, _MULTI_FIELDS) for f in schema.fields.values()):
        return _default_headers_loader(req, schema)
    headers = req.headers
    found = {}
    for name, field in schema.load_fields.items():
        key = field.data_key if field.data_key is not None else name
        value = headers.get(key)
        if value is not None:
            found[key] = value
    return found


def _unsupported(what: str) -> Exception:
    return api_error(
        415,
        "unsupported_media_type",
        f"{what}; send Content-Type: {JSON_MIMETYPE}",
        expected=JSON_MIMETYPE,
    )


def _utf8(raw: str) -> bool:
    """Whether a WSGI string (bytes as latin-1) holds UTF-8."""
    try:
        raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return False
    return True


def refuse_undecodable_url() -> None:
    """``before_request``: the path and query string must be UTF-8 once percent-decoded."""
    environ = request.environ
    if not _utf8(environ.get("PATH_INFO", "")):
        raise api_error(
            400, "invalid_path", "the path is not UTF-8 once percent-decoded", reason="not_utf8"
        )
    query = environ.get("QUERY_STRING", "")
    if query and ("%" in query or not query.isascii()):
        try:
            unquote_to_bytes(query.encode("latin-1")).decode("utf-8")
        except UnicodeError:
            raise api_error(
                400,
                "invalid_query",
                "the query string is not UTF-8 once percent-decoded",
                reason="not_utf8",
            ) from None


def install(app: APIFlask) -> None:
    """Make ``parse_json`` the app's one JSON reader and check every URL."""
    app.json = StrictJSONProvider(app)
    # apiflask reads bodies through its webargs parser; this process's parser
    # (an instance-level map: other webargs parsers keep theirs) loads the
    # json location with load_json_body.
    parser.__location_map__ = {
        **parser.__location_map__,
        "json": load_json_body,
        "headers": load_declared_headers,
    }
    app.before_request(refuse_undecodable_url)
