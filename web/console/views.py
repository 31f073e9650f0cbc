"""The console's routes: sign-in, the pages, the guarded actions."""

from __future__ import annotations

import hmac
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import psycopg
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from psycopg import sql

from ledger_py.client import Ledger
from ledger_py.errors import LedgerError, NotFound
from web.console import charts
from web.console.passwords import password_matches
from web.database import connection
from web.errors import status_for

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
# HTML pages, not part of the HTTP API: left out of the OpenAPI document
# (apiflask reads this attribute of every blueprint).
bp.enable_openapi = False  # type: ignore[attr-defined]

SESSION_COOKIE = "ledger_console"
PRE_SESSION_COOKIE = "ledger_console_pre"
SESSION_HOURS = 8
HISTORY_PAGE = 50
CHART_POINTS = 60
OVERVIEW_DAYS = 30

DEFAULT_ROLES = {
    "LEDGER_CONSOLE_READ_ROLE": "ledger_reader",
    "LEDGER_CONSOLE_WRITE_ROLE": "ledger_operator",
    "LEDGER_CONSOLE_AUTH_ROLE": "ledger_console",
}


class SessionEnded(Exception):
    """The session's user was removed or its role changed: sign in again."""


class Forbidden(Exception):
    """A viewer asked for a correction, or a form came without its CSRF token."""


@dataclass(frozen=True)
class ConsoleSession:
    name: str
    role: str
    csrf: str

    @property
    def may_correct(self) -> bool:
        return self.role == "operator"


def register(app: Flask) -> None:
    """Mount the console on the app (a few lines in web/app.py call this)."""
    for key, default in DEFAULT_ROLES.items():
        app.config.setdefault(key, os.environ.get(key, default))
    app.register_blueprint(bp)


# -- database access: one transaction, one role ----------------------------------


def _ledger() -> Ledger:
    ledger: Ledger = current_app.extensions["ledger_web"].ledger
    return ledger


def _set_role(conn: psycopg.Connection[Any], config_key: str) -> None:
    conn.execute(
        sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(current_app.config[config_key]))
    )


@contextmanager
def _db(write: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """A transaction for the signed-in user: the user re-read (as the console's
    auth role), then the read role, or for an operator's correction the write
    role."""
    user: ConsoleSession = g.console_user
    with connection(_ledger()) as conn:
        _set_role(conn, "LEDGER_CONSOLE_AUTH_ROLE")
        current = _ledger().console_user(name=user.name, conn=conn)
        if current is None or current.role != user.role:
            raise SessionEnded
        # The role follows the console role alone: a viewer's request never
        # runs as the write role, whatever the code above decided.
        if write and user.role == "operator":
            _set_role(conn, "LEDGER_CONSOLE_WRITE_ROLE")
        else:
            _set_role(conn, "LEDGER_CONSOLE_READ_ROLE")
        yield conn


def _serializer(salt: str) -> URLSafeTimedSerializer:
    state = current_app.extensions.setdefault("ledger_console", {})
    secret = state.get("secret")
    if secret is None:
        with connection(_ledger()) as conn:
            _set_role(conn, "LEDGER_CONSOLE_AUTH_ROLE")
            secret = state["secret"] = _ledger().console_secret(conn=conn)
    return URLSafeTimedSerializer(secret, salt=salt)


def _cookie_args() -> dict[str, Any]:
    secure = current_app.config.get("LEDGER_CONSOLE_SECURE_COOKIE")
    return {
        "httponly": True,
        "samesite": "Strict",
        "secure": bool(secure) if secure is not None else request.is_secure,
        "path": "/console",
    }


# -- sessions -----------------------------------------------------------------------


def _read_session() -> ConsoleSession | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = _serializer("session").loads(raw, max_age=SESSION_HOURS * 3600)
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(data, dict) or not {"name", "role", "csrf"} <= data.keys():
        return None
    return ConsoleSession(name=str(data["name"]), role=str(data["role"]), csrf=str(data["csrf"]))


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this console only."""
    # A path starting /console has no scheme and no host of its own.
    if target and target.startswith("/console"):
        return target
    return url_for(".overview")


@bp.before_request
def _require_session() -> Any:
    g.console_user = None
    if request.endpoint in ("console.sign_in", "console.static"):
        return None
    user = _read_session()
    if user is None:
        return redirect(url_for(".sign_in", next=request.full_path.rstrip("?")))
    g.console_user = user
    if request.method == "POST":
        _check_csrf(user.csrf)
    return None


def _check_csrf(expected: str) -> None:
    """Every POST carries the session's token; a cross-site page cannot read it.
    A request whose Origin names another site is refused as well."""
    given = request.form.get("csrf_token", "")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("the form is missing its CSRF token or it does not match your session")
    origin = request.headers.get("Origin")
    # An Origin is scheme://host[:port]: its host part must be ours.
    if origin and origin != "null" and origin.partition("://")[2] != request.host:
        raise Forbidden("cross-site request refused")


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.errorhandler(SessionEnded)
def _session_ended(_exc: SessionEnded) -> Any:
    response = redirect(url_for(".sign_in", ended="1"))
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@bp.errorhandler(Forbidden)
def _forbidden(exc: Forbidden) -> Any:
    return render_template("console/error.html", title="Not allowed", message=str(exc)), 403


@bp.errorhandler(psycopg.errors.InsufficientPrivilege)
def _refused_by_database(exc: psycopg.Error) -> Any:
    message = (
        "The database refused this for your role: "
        + (exc.diag.message_primary or "permission denied")
        + ". (Check that the web service's database login is a member of ledger_reader,"
        " ledger_operator and ledger_console.)"
    )
    return render_template("console/error.html", title="Not allowed", message=message), 403


@bp.errorhandler(NotFound)
def _not_found(exc: NotFound) -> Any:
    return render_template("console/error.html", title="Not found", message=exc.message), 404


@bp.errorhandler(LedgerError)
def _ledger_error(exc: LedgerError) -> Any:
    """A page's read refused by the ledger (a malformed owner id, say), or the
    database unreachable: the ledger's message, with the API's status."""
    message = exc.message if status_for(exc) < 500 else "The ledger's database is unavailable."
    return render_template("console/error.html", title="Refused", message=message), status_for(exc)


# -- sign-in ------------------------------------------------------------------------


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    if request.method == "GET":
        token = secrets.token_urlsafe(24)
        html = render_template(
            "console/sign_in.html",
            title="Sign in",
            pre_token=token,
            next=request.args.get("next", ""),
            ended=request.args.get("ended") == "1",
            error=None,
        )
        response = Response(html)
        response.set_cookie(
            PRE_SESSION_COOKIE, _serializer("pre").dumps(token), max_age=3600, **_cookie_args()
        )
        return response
    # The sign-in form carries a token of its own (login CSRF: no site can sign
    # a browser in as someone else).
    try:
        expected = _serializer("pre").loads(
            request.cookies.get(PRE_SESSION_COOKIE, ""), max_age=3600
        )
    except (SignatureExpired, BadSignature):
        expected = None
    given = request.form.get("pre_token", "")
    if not expected or not hmac.compare_digest(given.encode(), str(expected).encode()):
        raise Forbidden("the sign-in form expired or came from elsewhere: reload the page")
    name = request.form.get("name", "").strip()
    password = request.form.get("password", "")
    next_url = _safe_next(request.form.get("next"))
    error = _authenticate(name, password)
    if error is not None:
        html = render_template(
            "console/sign_in.html",
            title="Sign in",
            pre_token=given,
            next=request.form.get("next", ""),
            ended=False,
            error=error,
            name=name,
        )
        # 200: the form again, with what went wrong (a 4xx status would be
        # logged by the browser as a failed resource load).
        return Response(html)
    role = g.console_signed_in_role
    data = {"name": name, "role": role, "csrf": secrets.token_urlsafe(32)}
    signed_in = redirect(next_url)
    signed_in.set_cookie(
        SESSION_COOKIE,
        _serializer("session").dumps(data),
        max_age=SESSION_HOURS * 3600,
        **_cookie_args(),
    )
    signed_in.delete_cookie(PRE_SESSION_COOKIE, path="/console")
    return signed_in


def _authenticate(name: str, password: str) -> str | None:
    """None when the password is right (g.console_signed_in_role set), else
    what to tell the person. The database decides whether an attempt may be
    made now and counts it; the password is checked here against the hash."""
    ledger = _ledger()
    generic = "Wrong name or password."
    if not name or not password or len(name) > 100:
        password_matches(None, password)
        return generic
    with connection(ledger) as conn:
        _set_role(conn, "LEDGER_CONSOLE_AUTH_ROLE")
        attempt = ledger.console_sign_in(name=name, conn=conn)
    if attempt is None:
        password_matches(None, password)
        return generic
    if attempt.password_hash is None:
        return f"Too many failed attempts: wait {attempt.wait_seconds} s before the next one."
    if not password_matches(attempt.password_hash, password):
        return generic
    with connection(ledger) as conn:
        _set_role(conn, "LEDGER_CONSOLE_AUTH_ROLE")
        ledger.console_signed_in(name=name, conn=conn)
    g.console_signed_in_role = attempt.role
    return None


@bp.post("/sign-out")
def sign_out() -> Any:
    response = redirect(url_for(".sign_in"))
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


# -- helpers of the pages -------------------------------------------------------------


def _key() -> str:
    """An idempotency key made when a form is drawn: submitting it twice replays."""
    return uuid.uuid4().hex


def _page(template: str, **values: Any) -> str:
    return render_template(
        template,
        user=g.console_user,
        new_key=_key,
        message=request.args.get("msg"),
        level=request.args.get("level", "ok"),
        **values,
    )


def _back(target: str, message: str, level: str = "ok") -> Any:
    sep = "&" if "?" in target else "?"
    return redirect(f"{target}{sep}{urlencode({'msg': message, 'level': level})}")


def _positive_int(name: str) -> int | None:
    raw = request.args.get(name, "")
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 2**63 else None


def _may_correct(user: ConsoleSession) -> bool:
    return user.may_correct


def _correction(action: Any, back: str, done: str) -> Any:
    """Run one correction as the write role; a refusal by the ledger comes back
    to the page as a message."""
    user: ConsoleSession = g.console_user
    if not _may_correct(user):
        raise Forbidden("viewers see everything and change nothing: sign in as an operator")
    try:
        with _db(write=True) as conn:
            result = action(conn)
    except LedgerError as exc:
        return _back(back, f"Refused: {exc.message} ({exc.code})", "error")
    return _back(back, done.format(result=result))


def _reason() -> str:
    return request.form.get("reason", "")


# -- pages ------------------------------------------------------------------------------


@bp.get("/")
def overview() -> Any:
    ledger = _ledger()
    with _db() as conn:
        activity = ledger.daily_activity(days=OVERVIEW_DAYS, conn=conn)
        busiest = ledger.busiest_owners(since=timedelta(days=1), max_rows=10, conn=conn)
        backlog = ledger.metrics_snapshot(recent=timedelta(days=1), conn=conn)
        verify_run = ledger.latest_verify(conn=conn)
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=OVERVIEW_DAYS - 1 - i) for i in range(OVERVIEW_DAYS)]
    apps = sorted({row.app for row in activity})
    per_app = []
    for app_name in apps:
        rows = {row.day: row for row in activity if row.app == app_name}
        series = [
            charts.Series(label, css, [getattr(rows[d], field) if d in rows else 0 for d in days])
            for label, css, field in (
                ("issued", "issued", "issued"),
                ("spent", "spent", "spent"),
                ("expired", "expired", "expired"),
                ("held", "held", "held"),
            )
        ]
        totals = {s.name: sum(s.values) for s in series}
        chart = charts.daily_bars(
            days, series, f"{app_name}: credits per day, last {OVERVIEW_DAYS} days"
        )
        per_app.append({"app": app_name, "chart": chart, "totals": totals})
    return _page(
        "console/overview.html",
        title="Overview",
        per_app=per_app,
        busiest=busiest,
        backlog=backlog,
        verify_run=verify_run,
        days=OVERVIEW_DAYS,
    )


@bp.post("/verify")
def run_verify() -> Any:
    return _correction(
        lambda conn: _ledger().record_verify(conn=conn),
        url_for(".overview"),
        "verify() ran: {result.findings} findings.",
    )


@bp.get("/owners")
def find_owner() -> Any:
    wanted = request.args.get("owner_id", "").strip()
    found: list[Any] = []
    if wanted:
        try:
            with _db() as conn:
                found = _ledger().find_owners(owner_id=wanted, max_rows=20, conn=conn)
        except LedgerError as exc:
            return _page(
                "console/owners.html", title="Owners", wanted=wanted, found=[], error=exc.message
            )
        if found and found[0].owner_id == wanted:
            return redirect(url_for(".owner", owner_id=wanted))
    return _page("console/owners.html", title="Owners", wanted=wanted, found=found, error=None)


@bp.get("/owners/<path:owner_id>")
def owner(owner_id: str) -> Any:
    ledger = _ledger()
    app_filter = request.args.get("app") or None
    operation_filter = request.args.get("operation") or None
    before_seq = _positive_int("before_seq")
    with _db() as conn:
        balance = ledger.get_balance(owner_id=owner_id, conn=conn)
        grants = ledger.list_grants(owner_id=owner_id, conn=conn)
        holds = [h for h in ledger.list_holds(owner_id=owner_id, conn=conn) if h.status == "active"]
        history = ledger.owner_history(
            owner_id=owner_id,
            before_seq=before_seq,
            max_rows=HISTORY_PAGE + 1,
            app=app_filter,
            operation=operation_filter,
            conn=conn,
        )
        points = ledger.balance_series(owner_id=owner_id, points=CHART_POINTS, conn=conn)
        corrections = ledger.list_operator_actions(owner_id=owner_id, max_rows=10, conn=conn)
    more = len(history) > HISTORY_PAGE
    history = history[:HISTORY_PAGE]
    next_url = None
    if more:
        args: dict[str, Any] = {"before_seq": history[-1].seq}
        if app_filter:
            args["app"] = app_filter
        if operation_filter:
            args["operation"] = operation_filter
        next_url = url_for(".owner", owner_id=owner_id, **args)
    now = datetime.now(timezone.utc)
    chart = charts.balance_chart(
        [(p.at, p.balance) for p in points], f"Balance of {owner_id} over time"
    )
    return _page(
        "console/owner.html",
        title=f"Owner {owner_id}",
        owner_id=owner_id,
        balance=balance,
        grants=grants,
        holds=holds,
        history=history,
        next_url=next_url,
        first_url=url_for(".owner", owner_id=owner_id) if before_seq else None,
        app_filter=app_filter or "",
        operation_filter=operation_filter or "",
        chart=chart,
        corrections=corrections,
        now=now,
    )


@bp.post("/owners/<path:owner_id>/grant")
def grant_credits(owner_id: str) -> Any:
    form = request.form
    back = url_for(".owner", owner_id=owner_id)
    amount_raw = form.get("amount", "").strip()
    if amount_raw and not (amount_raw.isascii() and amount_raw.isdigit()):
        return _back(back, "Refused: the amount must be a whole number.", "error")
    amount = int(amount_raw) if amount_raw else None
    user: ConsoleSession = g.console_user
    return _correction(
        lambda conn: _ledger().operator_grant_credits(
            operator=user.name,
            reason=_reason(),
            owner_id=owner_id,
            app=form.get("app", ""),
            operation=form.get("operation", ""),
            idempotency_key=form.get("idempotency_key", ""),
            amount=amount,
            conn=conn,
        ),
        back,
        "Granted {result.amount} credits (entry {result.entry_id}).",
    )


@bp.post("/grants/<int:grant_id>/void")
def void_grant(grant_id: int) -> Any:
    owner_id = request.form.get("owner_id", "")
    user: ConsoleSession = g.console_user
    return _correction(
        lambda conn: _ledger().operator_void_grant(
            operator=user.name,
            reason=_reason(),
            grant_id=grant_id,
            idempotency_key=request.form.get("idempotency_key", ""),
            owner_id=owner_id or None,
            conn=conn,
        ),
        url_for(".owner", owner_id=owner_id) if owner_id else url_for(".overview"),
        "Voided grant " + str(grant_id) + ": {result.amount} credits (entry {result.entry_id}).",
    )


@bp.get("/entries/<int:entry_id>")
def entry(entry_id: int) -> Any:
    ledger = _ledger()
    owner_id = request.args.get("owner_id") or None
    with _db() as conn:
        found = ledger.get_entry(entry_id=entry_id, owner_id=owner_id, conn=conn)
        spending = ledger.list_spending(owner_id=found.owner_id, entry_id=entry_id, conn=conn)
        [row] = ledger.owner_history(
            owner_id=found.owner_id, before_seq=found.seq + 1, max_rows=1, conn=conn
        )
        actions = ledger.list_operator_actions(
            owner_id=found.owner_id, entry_id=entry_id, conn=conn
        )
        reversal = None
        if row.reversed_by is not None:
            reversal = ledger.get_entry(
                entry_id=row.reversed_by, owner_id=found.owner_id, conn=conn
            )
    return _page(
        "console/entry.html",
        title=f"Entry {entry_id}",
        entry=found,
        spending=spending,
        row=row,
        reversal=reversal,
        actions=actions,
    )


@bp.post("/entries/<int:entry_id>/reverse")
def reverse_entry(entry_id: int) -> Any:
    owner_id = request.form.get("owner_id") or None
    user: ConsoleSession = g.console_user
    back = url_for(".entry", entry_id=entry_id, owner_id=owner_id)
    return _correction(
        lambda conn: _ledger().operator_reverse_entry(
            operator=user.name,
            reason=_reason(),
            entry_id=entry_id,
            idempotency_key=request.form.get("idempotency_key", ""),
            owner_id=owner_id,
            conn=conn,
        ),
        back,
        "Reversed: entry {result[0].entry_id} gives back {result[0].amount}.",
    )


@bp.get("/holds")
def holds() -> Any:
    with _db() as conn:
        found = _ledger().list_open_holds(max_rows=500, conn=conn)
    now = datetime.now(timezone.utc)
    groups = {
        state: [h for h in found if h.state == state]
        for state in ("expiring", "stale", "open", "expired")
    }
    return _page("console/holds.html", title="Holds", groups=groups, now=now)


@bp.post("/holds/<int:hold_id>/release")
def release_hold(hold_id: int) -> Any:
    owner_id = request.form.get("owner_id") or None
    user: ConsoleSession = g.console_user
    back = request.form.get("back") or url_for(".holds")
    return _correction(
        lambda conn: _ledger().operator_release_hold(
            operator=user.name,
            reason=_reason(),
            hold_id=hold_id,
            idempotency_key=request.form.get("idempotency_key", ""),
            owner_id=owner_id,
            conn=conn,
        ),
        _safe_next(back),
        "Released hold " + str(hold_id) + ".",
    )


@bp.get("/webhooks")
def webhooks() -> Any:
    ledger = _ledger()
    with _db() as conn:
        endpoints = ledger.list_webhook_endpoints(conn=conn)
        deliveries = {
            e.endpoint_id: ledger.list_webhook_deliveries(
                endpoint_id=e.endpoint_id, max_rows=20, conn=conn
            )
            for e in endpoints
        }
        backlog = ledger.metrics_snapshot(recent=timedelta(days=1), conn=conn)
    return _page(
        "console/webhooks.html",
        title="Webhooks",
        endpoints=endpoints,
        deliveries=deliveries,
        backlog=backlog,
    )


@bp.post("/webhooks/<int:endpoint_id>/resend/<int:event_id>")
def resend(endpoint_id: int, event_id: int) -> Any:
    app_name = request.form.get("app", "")
    return _correction(
        lambda conn: _ledger().resend_webhook_event(
            event_id=event_id, app=app_name, endpoint_id=endpoint_id, conn=conn
        ),
        url_for(".webhooks"),
        "Event " + str(event_id) + " will be sent again.",
    )


@bp.app_template_filter("when")
def _when(value: datetime | date | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return value.isoformat()


@bp.app_template_filter("left")
def _left(value: datetime | None) -> str:
    """Time left until an instant, as a person reads it."""
    if value is None:
        return "never"
    seconds = int((value - datetime.now(timezone.utc)).total_seconds())
    if seconds <= 0:
        return "passed"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"
