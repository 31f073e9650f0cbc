"""create_app: its own pool from a URL (config or environment), closed by close_app."""

from __future__ import annotations

import pytest

from web import close_app, create_app


def test_app_opens_and_closes_its_own_pool(db_url: str) -> None:
    app = create_app({"LEDGER_DATABASE_URL": db_url, "LEDGER_POOL_SIZE": 3})
    state = app.extensions["ledger_web"]
    assert state.owns_ledger and state.ledger.pool.max_size == 3
    assert app.test_client().get("/health").json == {"status": "healthy", "database": "ok"}
    close_app(app)
    assert state.ledger.pool.closed


def test_url_from_the_environment(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", db_url)
    app = create_app()
    try:
        assert app.test_client().get("/health").status_code == 200
        assert app.config["MAX_CONTENT_LENGTH"] == 4 * 1024 * 1024
    finally:
        close_app(app)


def test_a_url_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="LEDGER_DATABASE_URL"):
        create_app({})
