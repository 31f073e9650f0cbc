"""ledger_py.conninfo: the one place where database URLs are read, rewritten and masked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ledger_py import conninfo
from ledger_py.errors import Where

ROOT = Path(__file__).resolve().parents[2]
URL = "postgresql://ann:s3cr%40t@db.example:6543/ledger"


def test_a_url_and_a_conninfo_string_name_the_same_server() -> None:
    keywords = "host=db.example port=6543 user=ann password=s3cr@t dbname=ledger"
    assert conninfo.target(URL) == conninfo.target(keywords)
    assert conninfo.target(URL) == conninfo.Target("db.example", "6543", "s3cr@t")
    assert conninfo.target("postgresql+psycopg://db.example/x") == conninfo.Target(
        "db.example", None, None
    )
    assert conninfo.target("postgresql://") == conninfo.Target(None, None, None)
    assert conninfo.target("not a conninfo") is None


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        (URL, "postgresql://ann:***@db.example:6543/ledger"),
        ("postgresql://db.example/ledger", "postgresql://db.example/ledger"),
        ("host=db.example password=s3cret", "password=*** host=db.example"),
        ("host=db.example", "host=db.example"),
        ("postgresql://ann:pw@[::1/x", "<unparsable database URL>"),
    ],
)
def test_mask_url_never_shows_a_password(given: str, shown: str) -> None:
    assert conninfo.mask_url(given) == shown


def test_redact_masks_the_url_and_its_password_anywhere_in_a_text() -> None:
    text = f"could not connect to {URL}: password s3cr@t refused"
    assert conninfo.redact(text, URL) == (
        "could not connect to postgresql://ann:***@db.example:6543/ledger: password *** refused"
    )
    assert conninfo.redact(text, None) == text


def test_the_error_boundary_names_the_server_through_it() -> None:
    where = Where.from_conninfo(URL)
    assert (where.host, where.port) == ("db.example", "6543")
    assert where.mask("auth failed for s3cr@t") == "auth failed for ***"
    default = Where.from_conninfo("dbname=ledger")
    assert (default.host, default.port) == ("localhost (default)", "5432 (default)")


def test_url_helpers() -> None:
    assert conninfo.yoyo_url("postgresql://u:p@h:1/d") == "postgresql+psycopg://u:p@h:1/d"
    assert conninfo.yoyo_url("postgres://h/d") == "postgresql+psycopg://h/d"
    assert conninfo.libpq_url("postgresql+psycopg://h/d") == "postgresql://h/d"
    assert conninfo.libpq_url("host=h") == "host=h"


def test_with_timeouts_adds_options_after_the_urls_own() -> None:
    with_options = conninfo.with_timeouts("postgresql://h/d?options=-c%20work_mem%3D4MB", 0.0001, 2)
    assert "options='-c work_mem=4MB -c lock_timeout=1 -c statement_timeout=2000'" in with_options
    with pytest.raises(ValueError):
        conninfo.with_timeouts("host=h", 0, None)


# Reading or rewriting a connection string anywhere else would be a second copy.
_PARSING = re.compile(r"\b(urlsplit|urlparse|conninfo_to_dict|make_conninfo)\(")


def test_no_other_module_parses_connection_strings() -> None:
    others = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("ledger_py", "web", "ledger_cli")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "ledger_py" / "conninfo.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _PARSING.search(line)
    ]
    assert others == []
