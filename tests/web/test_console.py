"""The operators' console through Flask's test client: who may open it, what
its pages show, and the guarded corrections (the browser tests drive the
same pages in Chromium: tests/web/test_console_browser.py)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner

from ledger_py.client import Ledger
from web.console import views
from web.console.passwords import hash_password

PASSWORD = "correct horse battery"


@pytest.fixture
def people(ledger: Ledger) -> None:
    ledger.set_console_user(name="olga", role="operator", password_hash=hash_password(PASSWORD))
    ledger.set_console_user(name="vic", role="viewer", password_hash=hash_password(PASSWORD))


def sign_in(client: FlaskClient, name: str, password: str = PASSWORD) -> Any:
    page = client.get("/console/sign-in")
    token = re.search(r'name="pre_token" value="([^"]+)"', page.text)
    assert token, page.text
    return client.post(
        "/console/sign-in",
        data={"name": name, "password": password, "pre_token": token.group(1), "next": ""},
    )


def csrf(client: FlaskClient, path: str = "/console/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def test_the_console_needs_a_console_sign_in(client, people, tokens):
    answer = client.get("/console/")
    assert answer.status_code == 302 and "/console/sign-in" in answer.headers["Location"]
    # An app's API key does not open it, in any header.
    for headers in (
        {"Authorization": f"Bearer {tokens['example_app']}"},
        {"Authorization": f"Bearer {tokens['core']}", "X-Api-Key": tokens["core"]},
    ):
        answer = client.get("/console/owners/ann", headers=headers)
        assert answer.status_code == 302 and "/console/sign-in" in answer.headers["Location"]
    # Nor is the token a password.
    refused = sign_in(client, "example_app", tokens["example_app"])
    assert "Wrong name or password" in refused.text and "Set-Cookie" not in refused.headers
    signed = sign_in(client, "olga")
    assert signed.status_code == 302
    cookie = next(
        h for h in signed.headers.getlist("Set-Cookie") if h.startswith("ledger_console=")
    )
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert client.get("/console/").status_code == 200


def test_wrong_passwords_are_slowed_down(client, people):
    for _ in range(3):
        answer = sign_in(client, "vic", "wrong password!")
        assert answer.status_code == 200 and "Wrong name or password" in answer.text
    blocked = sign_in(client, "vic")  # even the right password waits now
    assert "Too many failed attempts" in blocked.text
    assert client.get("/console/").status_code == 302
    # Unknown names answer as a wrong password does.
    assert "Wrong name or password" in sign_in(client, "nobody").text


def test_sessions_expire_and_end_with_their_user(client, people, ledger, monkeypatch):
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 9 * 3600)
    assert sign_in(client, "olga").status_code == 302
    monkeypatch.setattr(TimestampSigner, "get_timestamp", real)
    answer = client.get("/console/")
    assert answer.status_code == 302 and "sign-in" in answer.headers["Location"]
    assert sign_in(client, "olga").status_code == 302
    assert client.get("/console/").status_code == 200
    ledger.remove_console_user(name="olga")
    answer = client.get("/console/")
    assert answer.status_code == 302 and "ended=1" in answer.headers["Location"]


def test_a_viewer_sees_everything_and_changes_nothing(client, people, ledger, monkeypatch):
    made = ledger.post_entry(
        owner_id="ann", app="core", operation="CREDIT_ADD", idempotency_key="c", amount=10
    )
    assert sign_in(client, "vic").status_code == 302
    page = client.get("/console/owners/ann")
    assert page.status_code == 200 and 'id="balance">10<' in page.text
    assert "Void" not in page.text and "Grant credits" not in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    form = {"csrf_token": token.group(1), "reason": "r", "idempotency_key": "k", "owner_id": "ann"}
    answer = client.post(f"/console/entries/{made.entry_id}/reverse", data=form)
    assert answer.status_code == 403
    # Past the Python check, the database refuses: the viewer's transaction
    # runs as the read role, which may not call the operator functions.
    monkeypatch.setattr(views, "_may_correct", lambda user: True)
    answer = client.post(f"/console/entries/{made.entry_id}/reverse", data=form)
    assert answer.status_code == 403 and "database refused" in answer.text
    assert ledger.get_balance(owner_id="ann").balance == 10


def test_every_post_needs_the_session_csrf_token(client, people, ledger):
    made = ledger.post_entry(
        owner_id="bo", app="core", operation="CREDIT_ADD", idempotency_key="c", amount=10
    )
    assert sign_in(client, "olga").status_code == 302
    token = csrf(client)
    form = {"reason": "r", "idempotency_key": "k", "owner_id": "bo"}
    path = f"/console/entries/{made.entry_id}/reverse"
    assert client.post(path, data=form).status_code == 403
    assert client.post(path, data={**form, "csrf_token": "forged"}).status_code == 403
    assert client.post(path, data={**form, "csrf_token": "f\u00f6rged"}).status_code == 403
    answer = client.post(
        path, data={**form, "csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert answer.status_code == 403
    assert ledger.get_balance(owner_id="bo").balance == 10
    answer = client.post(path, data={**form, "csrf_token": token})
    assert answer.status_code == 302 and "Reversed" in answer.headers["Location"]
    assert ledger.get_balance(owner_id="bo").balance == 0


def test_owner_page_history_chart_and_corrections(client, people, ledger):
    grant = ledger.grant_credits(
        owner_id="cy", app="core", operation="PROMO_CREDIT", idempotency_key="p", amount=500
    )
    ledger.post_entry(
        owner_id="cy", app="core", operation="CREDIT_ADD", idempotency_key="c", amount=100
    )
    for i in range(55):
        ledger.post_entry(
            owner_id="cy", app="core", operation="CREDIT_SPEND", idempotency_key=f"d{i}", amount=1
        )
    charge = ledger.post_entry(
        owner_id="cy", app="example_app", operation="CONTENT_ACCESS", idempotency_key="a"
    )
    assert sign_in(client, "olga").status_code == 302
    page = client.get("/console/owners/cy")
    assert page.status_code == 200
    assert 'data-points="60"' in page.text
    assert page.text.count("<circle") == 60
    assert page.text.count("data-entry-id=") == 50
    older = re.search(r'href="([^"]+before_seq=(\d+))"', page.text)
    assert older and older.group(2) == "9"
    second = client.get(older.group(1).replace("&amp;", "&"))
    assert second.text.count("data-entry-id=") == 8
    only = client.get("/console/owners/cy?app=example_app")
    assert only.text.count("data-entry-id=") == 1
    # Reverse the example app's charge as an operator, with a reason.
    token = csrf(client, "/console/owners/cy")
    answer = client.post(
        f"/console/entries/{charge.entry_id}/reverse",
        data={"csrf_token": token, "reason": "", "idempotency_key": "k1", "owner_id": "cy"},
    )
    assert "reason+is+required" in answer.headers["Location"]
    answer = client.post(
        f"/console/entries/{charge.entry_id}/reverse",
        data={
            "csrf_token": token,
            "reason": "double charge",
            "idempotency_key": "k1",
            "owner_id": "cy",
        },
    )
    assert answer.status_code == 302
    shown = client.get(answer.headers["Location"])
    assert "Reversed by entry" in shown.text and "double charge" in shown.text
    # Void the promo grant.
    [promo] = [g for g in ledger.list_grants(owner_id="cy") if g.entry_id == grant.entry_id]
    answer = client.post(
        f"/console/grants/{promo.grant_id}/void",
        data={
            "csrf_token": token,
            "reason": "promo by mistake",
            "idempotency_key": "k2",
            "owner_id": "cy",
        },
    )
    assert "Voided" in answer.headers["Location"]
    actions = ledger.list_operator_actions(owner_id="cy")
    assert [(a.action, a.operator) for a in actions] == [
        ("void_grant", "olga"),
        ("reverse_entry", "olga"),
    ]
    page = client.get("/console/owners/cy")
    assert "by olga: promo by mistake" in page.text


def test_the_other_pages_render(client, people, ledger):
    ledger.post_entry(
        owner_id="di", app="core", operation="CREDIT_ADD", idempotency_key="c", amount=10
    )
    hold = ledger.create_hold(
        owner_id="di", app="example_app", operation="CONTENT_CREATION", idempotency_key="h"
    )
    assert sign_in(client, "olga").status_code == 302
    overview = client.get("/console/")
    assert overview.status_code == 200 and 'data-days="30"' in overview.text
    endpoint = ledger.create_webhook_endpoint(app="core", url="http://127.0.0.1:9/hook")
    ledger.post_entry(
        owner_id="di", app="core", operation="CREDIT_ADD", idempotency_key="c2", amount=1
    )
    ledger.fan_out_webhooks()
    webhooks = client.get("/console/webhooks")
    assert (
        webhooks.status_code == 200
        and f'data-endpoint-id="{endpoint.endpoint_id}"' in webhooks.text
    )
    [delivery, *_] = ledger.list_webhook_deliveries(endpoint_id=endpoint.endpoint_id)
    holds = client.get("/console/holds")
    assert holds.status_code == 200 and f"<td>{hold.hold_id}</td>" in holds.text
    token = csrf(client, "/console/holds")
    answer = client.post(
        f"/console/holds/{hold.hold_id}/release",
        data={"csrf_token": token, "reason": "stuck", "idempotency_key": "k", "owner_id": "di"},
    )
    assert "Released" in answer.headers["Location"]
    corrections = client.get("/console/owners/di").text
    assert "Corrections by operators" in corrections and f"hold {hold.hold_id}" in corrections
    assert ledger.get_balance(owner_id="di").available == 11
    found = client.get("/console/owners?owner_id=di")
    assert found.status_code == 302 and found.headers["Location"].endswith("/console/owners/di")
    assert client.get("/console/owners?owner_id=d").status_code == 200
    assert client.get("/console/entries/999999").status_code == 404
    refused = client.get("/console/owners/" + "x" * 300)
    assert refused.status_code == 422 and "owner_id" in refused.text
    assert client.get("/console/owners/di?before_seq=%C2%B2").status_code == 200
    resent = client.post(
        f"/console/webhooks/{endpoint.endpoint_id}/resend/{delivery.event_id}",
        data={"csrf_token": token, "app": "core"},
    )
    assert "will+be+sent+again" in resent.headers["Location"]
    verify = client.post("/console/verify", data={"csrf_token": token})
    assert "findings" in verify.headers["Location"]
    assert "healthy" in client.get("/console/").text
    # HTML pages for people: not in the API's OpenAPI document.
    assert not [p for p in client.get("/openapi.json").json["paths"] if p.startswith("/console")]
    css = client.get("/console/static/console.css")
    assert css.status_code == 200 and "svg.chart" in css.text
    css.close()
