"""The console in a real browser: headless Chromium (Debian's package, driven
by Playwright) against the app served on a free port, one server and one
database for the module.

What a support person does: sign in, find an owner, read the balance chart
and the history ("where did the credits go?"), void a mistaken grant and
reverse a mistaken charge, each with a reason. Any error the page logs to
the browser console fails the test. A screenshot of each page is written to
test-artifacts/console/ (LEDGER_TEST_ARTIFACTS overrides the folder; never
committed).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from ledger_py.client import Ledger
from tests.conftest import drop_database, new_database
from tests.web.helpers import free_port
from web import close_app, create_app
from web.console.passwords import hash_password

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "support team password"
OWNER = "customer-42"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
    reason=f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)",
)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("LEDGER_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def live(server_url: str, template_url: str) -> Iterator[dict[str, Any]]:
    """The app on a free loopback port (a thread), its Ledger, and what was seeded."""
    url = new_database(server_url)
    ledger = Ledger(url, min_size=1, max_size=6)
    ledger.open()
    app = create_app({"LEDGER": ledger})
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ledger.set_console_user(name="sam", role="operator", password_hash=hash_password(PASSWORD))
        promo = ledger.grant_credits(
            owner_id=OWNER,
            app="core",
            operation="PROMO_CREDIT",
            idempotency_key="promo",
            amount=300,
        )
        ledger.post_entry(
            owner_id=OWNER, app="core", operation="CREDIT_ADD", idempotency_key="buy", amount=100
        )
        for i in range(12):
            ledger.post_entry(
                owner_id=OWNER,
                app="example_app",
                operation="CONTENT_ACCESS",
                idempotency_key=f"read-{i}",
                metadata={"content_id": i},
            )
        charge = ledger.post_entry(
            owner_id=OWNER,
            app="example_app",
            operation="CONTENT_ACCESS",
            idempotency_key="read-twice",
            metadata={"content_id": 3},
        )
        ledger.create_hold(
            owner_id=OWNER, app="example_app", operation="CONTENT_CREATION", idempotency_key="h1"
        )
        ledger.create_webhook_endpoint(app="example_app", url="http://127.0.0.1:9/hook")
        yield {
            "base": f"http://127.0.0.1:{port}",
            "ledger": ledger,
            "promo": promo,
            "charge": charge,
        }
    finally:
        server.shutdown()
        thread.join(timeout=10)
        close_app(app)
        ledger.close()
        drop_database(server_url, url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning")
            else None
        ),
    )
    opened.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    opened.set_default_timeout(10_000)
    yield opened
    context.close()
    assert problems == [], problems


def sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/console/")
    assert "/console/sign-in" in page.url
    page.fill("input[name=name]", "sam")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Overview')")


def test_where_did_the_credits_go_and_undo_a_mistake(page, live, artifacts):
    base, ledger = live["base"], live["ledger"]
    sign_in(page, base)
    assert page.locator("svg.daily-chart").count() == 2  # core and example_app
    assert page.locator("section[data-app=example_app] rect.bar").count() == 30 * 4
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)

    # Find the owner from the search box.
    page.fill("#owner-search", OWNER)
    page.click("form.search button")
    page.wait_for_selector(f"h1:has-text('{OWNER}')")
    assert page.inner_text("#balance") == "387"  # 300 + 100 - 13
    assert page.inner_text("#held") == "5"
    chart = page.locator("svg.balance-chart")
    assert chart.get_attribute("data-points") == "60"
    assert chart.locator("circle.point").count() == 60
    assert "387" in chart.locator("circle.point").last.inner_html()
    # The history says where they went: 13 content reads by example_app.
    page.fill("#history input[name=app]", "example_app")
    page.click("#history button")
    page.wait_for_url("**app=example_app**")
    assert page.locator("table.history tbody tr").count() == 13
    page.goto(f"{base}/console/owners/{OWNER}")
    page.screenshot(path=str(artifacts / "owner.png"), full_page=True)

    # Reverse the double charge from its entry page.
    charge = live["charge"]
    page.click(f"table.history a:text-is('{charge.entry_id}')")
    page.wait_for_selector("h1:has-text('Entry')")
    assert '"content_id": 3' in page.inner_text("pre.json")
    page.screenshot(path=str(artifacts / "entry.png"), full_page=True)
    page.fill("#reversal input[name=reason]", "content 3 was charged twice")
    page.click("#reversal button:has-text('Reverse this entry')")
    page.wait_for_selector(".flash-ok")
    assert "Reversed by entry" in page.inner_text("#reversal")
    assert "content 3 was charged twice" in page.inner_text("#reversal")
    page.click(f"main a:text-is('{OWNER}')")
    page.wait_for_selector(f"h1:has-text('{OWNER}')")
    assert page.inner_text("#balance") == "388"
    assert "by sam: content 3 was charged twice" in page.inner_text("table.history")

    # Void the promo grant (given by mistake): what is left of it goes.
    promo_grant = next(
        g for g in ledger.list_grants(owner_id=OWNER) if g.entry_id == live["promo"].entry_id
    )
    assert promo_grant.remaining == 288  # the 13 reads spent it first (priority 10), 1 given back
    row = page.locator(f"tr.grant[data-grant-id='{promo_grant.grant_id}']")
    row.locator("input[name=reason]").fill("promo credited to the wrong customer")
    row.locator("button:has-text('Void')").click()
    page.wait_for_selector(".flash-ok")
    assert "Voided grant" in page.inner_text(".flash-ok")
    assert page.inner_text("#balance") == "100"
    assert page.locator(f"tr.grant[data-grant-id='{promo_grant.grant_id}']").count() == 0
    assert "by sam: promo credited to the wrong customer" in page.inner_text("table.history")

    # The other pages.
    page.click("header nav a:text-is('Holds')")
    page.wait_for_selector("h1:has-text('Holds')")
    assert page.locator("#holds-expiring tbody tr").count() == 1  # the default ttl is short
    page.screenshot(path=str(artifacts / "holds.png"), full_page=True)
    page.click("header nav a:text-is('Webhooks')")
    page.wait_for_selector("h1:has-text('Webhooks')")
    assert page.locator("section.endpoint").count() == 1
    page.screenshot(path=str(artifacts / "webhooks.png"), full_page=True)


def test_a_phone_sized_screen_and_a_wrong_password(page, live, artifacts):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live['base']}/console/sign-in")
    page.fill("input[name=name]", "sam")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "Wrong name or password" in page.inner_text("[role=alert]")
    page.screenshot(path=str(artifacts / "sign-in-phone.png"), full_page=True)
    sign_in(page, live["base"])
    page.goto(f"{live['base']}/console/owners/{OWNER}")
    # Nothing wider than the screen but the tables' own scrolling boxes.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    page.screenshot(path=str(artifacts / "owner-phone.png"), full_page=True)
