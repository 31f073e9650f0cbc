"""The error boundary: one SQLSTATE, one exception, one HTTP status.

The table in ledger_py.errors, the SQLSTATEs the SQL raises, the README's
error table must name the same errors.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import ledger_py
from ledger_py import (
    EXCEPTIONS_BY_SQLSTATE,
    AppendOnly,
    InvalidAmount,
    InvalidArgument,
    LedgerBusy,
    LedgerError,
    LedgerUnavailable,
    NotFound,
    OperationInUse,
    OperationLimitReached,
    OperationNotAllowed,
    UnknownApp,
    UnknownOperation,
    translate_errors,
)
from ledger_py.errors import SERVER_EXCEPTIONS_BY_SQLSTATE

from .conftest import make_ledger

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server_conn(server_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the server's postgres database: enough for DO blocks."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        yield connection


def raised_by_sql() -> set[str]:
    """Every SQLSTATE of class LG the SQL raises (functions and the migrations' trigger)."""
    codes: set[str] = set()
    for path in [*ROOT.glob("sql/*.sql"), *ROOT.glob("migrations/*.sql")]:
        codes.update(re.findall(r"ERRCODE\s*=\s*'(LG\d{3})'", path.read_text(encoding="utf-8")))
    return codes


def markdown_error_rows(text: str) -> dict[str, tuple[str, str, str]]:
    """{sqlstate or '(connection)': (code, exception, http status)} of a markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and (
            re.fullmatch(r"LG\d{3}|55P03|57014", cells[0]) or cells[0] == "(connection)"
        ):
            rows[cells[0]] = (cells[1], cells[2], cells[3])
    return rows


def python_rows() -> dict[str, tuple[str, str, str]]:
    """The documented table as the code has it: code and class from
    ledger_py, the HTTP status from the web layer's one table."""
    from web.errors import STATUS_BY_EXCEPTION

    rows = {
        state: (cls.code, cls.__name__, str(STATUS_BY_EXCEPTION[cls]))
        for state, cls in {**EXCEPTIONS_BY_SQLSTATE, **SERVER_EXCEPTIONS_BY_SQLSTATE}.items()
    }
    rows["(connection)"] = (
        LedgerUnavailable.code,
        "LedgerUnavailable",
        str(STATUS_BY_EXCEPTION[LedgerUnavailable]),
    )
    return rows


def readme_errors_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- section: errors -->(.*?)<!-- /section: errors -->", text, re.S)
    assert match, "README.md has no errors section"
    return match.group(1)


def test_sql_and_python_tables_name_the_same_sqlstates() -> None:
    assert raised_by_sql() == set(EXCEPTIONS_BY_SQLSTATE)


def test_readme_error_table_matches_python() -> None:
    assert markdown_error_rows(readme_errors_section()) == python_rows()



def test_every_exception_is_exported_and_distinct() -> None:
    classes = list(EXCEPTIONS_BY_SQLSTATE.values())
    assert len({c.code for c in classes}) == len(classes)
    for cls in [*classes, LedgerUnavailable, LedgerBusy, *SERVER_EXCEPTIONS_BY_SQLSTATE.values()]:
        assert issubclass(cls, LedgerError)
        assert getattr(ledger_py, cls.__name__) is cls
    busy = list(SERVER_EXCEPTIONS_BY_SQLSTATE.values())
    assert all(issubclass(cls, LedgerBusy) for cls in busy)
    assert not set(SERVER_EXCEPTIONS_BY_SQLSTATE) & set(EXCEPTIONS_BY_SQLSTATE)


@pytest.mark.parametrize("sqlstate", sorted(SERVER_EXCEPTIONS_BY_SQLSTATE))
def test_boundary_maps_each_bounded_wait(
    server_conn: psycopg.Connection[Any], sqlstate: str
) -> None:
    with pytest.raises(LedgerBusy) as caught, translate_errors():
        server_conn.execute(
            f"DO $$ BEGIN RAISE EXCEPTION 'waited' USING ERRCODE = '{sqlstate}'; END $$"
        )
    assert type(caught.value) is SERVER_EXCEPTIONS_BY_SQLSTATE[sqlstate]
    assert "retry later" in caught.value.message


@pytest.mark.parametrize("sqlstate", sorted(EXCEPTIONS_BY_SQLSTATE))
def test_boundary_maps_each_sqlstate(server_conn: psycopg.Connection[Any], sqlstate: str) -> None:
    detail = '{"owner_id": "o", "needed": 2, "available": 1}'
    with pytest.raises(LedgerError) as caught, translate_errors():
        server_conn.execute(
            f"DO $$ BEGIN RAISE EXCEPTION 'boom %', 1 USING ERRCODE = '{sqlstate}',"
            f" DETAIL = '{detail}', HINT = 'try again'; END $$"
        )
    error = caught.value
    assert type(error) is EXCEPTIONS_BY_SQLSTATE[sqlstate]
    assert error.sqlstate == sqlstate
    assert error.message == "boom 1"
    assert error.detail == {"owner_id": "o", "needed": 2, "available": 1}
    assert error.hint == "try again"
    assert isinstance(error.__cause__, psycopg.Error) and error.__cause__.sqlstate == sqlstate


def test_boundary_keeps_a_detail_that_is_not_json(server_conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(NotFound) as caught, translate_errors():
        server_conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = 'LG008', DETAIL = 'plain'; END $$"
        )
    assert caught.value.detail == {"text": "plain"}
    assert caught.value.hint is None


def test_errors_that_are_not_the_ledgers_pass_unchanged(
    server_conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero), translate_errors():
        server_conn.execute("SELECT 1 / 0")


def test_append_only_through_the_boundary(ledger: Any, conn: psycopg.Connection[Any]) -> None:
    ledger.post_entry(
        owner_id="a", app="core", operation="CREDIT_ADD", idempotency_key="k", amount=1
    )
    with pytest.raises(AppendOnly), translate_errors():
        conn.execute("DELETE FROM ledger.entries")


def test_business_errors_of_both_classes(ledger: Any) -> None:
    post = ledger.post_entry
    with pytest.raises(UnknownOperation):
        post(owner_id="a", app="core", operation="NO_SUCH", idempotency_key="k1")
    with pytest.raises(OperationNotAllowed):
        post(owner_id="a", app="core", operation="CONTENT_ACCESS", idempotency_key="k1")
    with pytest.raises(UnknownApp):
        post(owner_id="a", app="no_such_app", operation="CREDIT_ADD", idempotency_key="k1")
    post(owner_id="a", app="core", operation="SIGNUP_CREDIT", idempotency_key="k1")
    with pytest.raises(OperationLimitReached) as limit:
        post(owner_id="a", app="core", operation="SIGNUP_CREDIT", idempotency_key="k2")
    assert limit.value.detail["limit_per"] == "ever"
    for amount in (0, -1, 10**7):
        with pytest.raises(InvalidAmount):
            post(
                owner_id="a",
                app="core",
                operation="CREDIT_ADD",
                idempotency_key="k3",
                amount=amount,
            )
    with pytest.raises(NotFound):
        ledger.get_entry(entry_id=123456)
    with pytest.raises(NotFound):
        ledger.get_hold(hold_id=123456)
    with pytest.raises(OperationInUse):
        ledger.define_operation(app="core", operation="SIGNUP_CREDIT", direction="debit")
    with pytest.raises(InvalidArgument) as empty:
        post(owner_id="", app="core", operation="CREDIT_ADD", idempotency_key="k4")
    assert empty.value.detail == {"field": "owner_id", "reason": "required"}
    with pytest.raises(InvalidArgument):
        post(owner_id=None, app="core", operation="CREDIT_ADD", idempotency_key="k4")  # reaches SQL
    with pytest.raises(InvalidArgument):
        ledger.list_entries(owner_id="a", max_rows=0)


def test_metadata_is_judged_by_the_database(ledger: Any) -> None:
    post = ledger.post_entry
    with pytest.raises(InvalidArgument) as nul:
        post(
            owner_id="a",
            app="core",
            operation="CREDIT_ADD",
            idempotency_key="k",
            metadata={"x": "\u0000"},
        )
    assert nul.value.detail["reason"] == "not storable"
    assert nul.value.__cause__ is not None and nul.value.__cause__.sqlstate == "LG007"
    with pytest.raises(InvalidArgument) as array:
        post(owner_id="a", app="core", operation="CREDIT_ADD", idempotency_key="k", metadata=[1, 2])
    assert array.value.detail["reason"] == "not an object"
    assert ledger.get_balance(owner_id="a").balance == 0


def test_nul_in_a_text_argument_is_an_invalid_argument(ledger: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ledger.post_entry(
            owner_id="a\x00b", app="core", operation="CREDIT_ADD", idempotency_key="k"
        )
    assert caught.value.detail == {"field": "owner_id", "reason": "nul character"}
    assert isinstance(caught.value.__cause__, psycopg.DataError)
    # The connection is still fine for the next call.
    assert ledger.get_balance(owner_id="a").balance == 0


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_unreachable_database_is_ledger_unavailable(kind: str) -> None:
    port = unused_port()
    url = f"postgresql://ledger:s3cret-pw@127.0.0.1:{port}/ledger"
    instance = make_ledger(kind, url, timeout=0.5)
    try:
        with pytest.raises(LedgerUnavailable) as caught:
            instance.get_balance(owner_id="a")
    finally:
        instance.close()
    error = caught.value
    assert "127.0.0.1" in str(error) and str(port) in str(error)
    assert "s3cret-pw" not in str(error) and "s3cret-pw" not in repr(error)
    assert (error.host, error.port) == ("127.0.0.1", str(port))
    assert (error.code, error.sqlstate) == ("ledger_unavailable", None)
    assert isinstance(error.__cause__, psycopg.OperationalError)


def test_password_is_masked_in_the_message() -> None:
    from ledger_py.errors import Where, translate_error

    where = Where.from_conninfo("postgresql://u:hunter2@db.example:6543/x")
    error = translate_error(psycopg.OperationalError("failed for hunter2"), where)
    assert isinstance(error, LedgerUnavailable)
    assert "hunter2" not in str(error)
    assert "db.example" in str(error) and "6543" in str(error)
