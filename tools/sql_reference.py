"""Generate docs/SQL.md, the reference of the ledger's SQL API, from the catalog.

    python -m tools.sql_reference            # rewrite docs/SQL.md (make docs)
    python -m tools.sql_reference --check    # exit 1 when docs/SQL.md is out of date

Both start a throwaway PostgreSQL, migrate a database and read everything from
it: the public functions (schema ledger, no leading underscore, EXECUTE
granted to ledger_app, ledger_reader, ledger_owner, ledger_dispatcher, ledger_operator or
ledger_console), their parameters with
types and defaults, their result columns, their COMMENT (the function's
guarantees, written beside it in sql/), the SQLSTATEs of class LG their body
and the bodies of the ledger functions they call can raise (named by
ledger_py/errors.py), and the output of one example call each, run against
that database. Timestamps, the key ids create_api_key makes at random and
webhook secrets, which differ on every run, print as <timestamp>, <key_id>
and <secret>.
tests/sql/test_sql_reference.py renders the document again and fails when the
file differs.

This module is a development tool: it is not part of the shipped packages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from ledger_py.errors import EXCEPTIONS_BY_SQLSTATE

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "SQL.md"
COMMAND = "make docs"
ROLES = (
    "ledger_app",
    "ledger_reader",
    "ledger_owner",
    "ledger_dispatcher",
    "ledger_operator",
    "ledger_console",
)


@dataclass(frozen=True)
class Example:
    """One call shown in the reference, run as `role` (None: setup, not shown)."""

    signature: str  # the function's regprocedure text, e.g. ledger.get_balance(text)
    sql: str
    role: str = "ledger_app"


# The sections of the document, in order, each with its functions' examples in
# the order they run: later calls see what earlier ones wrote (a fresh database).
SECTIONS: list[tuple[str, str, list[Example]]] = [
    (
        "Apps and operations",
        "How an app registers itself and the operations it posts (run by "
        "`ledger_owner`, usually in a migration of the app's own).",
        [
            Example(
                "ledger.define_app(text,text)",
                "SELECT * FROM ledger.define_app(app => 'shop', description => 'The shop');",
                "ledger_owner",
            ),
            Example(
                "ledger.define_operation(text,text,text,bigint,bigint,bigint,boolean,text,text,interval,"
                "integer)",
                "SELECT * FROM ledger.define_operation(app => 'shop', operation => 'SHOP_PURCHASE',"
                " direction => 'debit', default_amount => 5, max_amount => 100,"
                " caller_sets_amount => true, description => 'Buying an item');",
                "ledger_owner",
            ),
            Example(
                "ledger.list_operations(text)",
                "SELECT operation, app, direction, default_amount, min_amount, max_amount,"
                " caller_sets_amount, limit_per FROM ledger.list_operations('shop');",
            ),
        ],
    ),
    (
        "Entries and balances",
        "Credits and debits of an owner's account, and the reads of balances and history.",
        [
            Example(
                "ledger.post_entry(text,text,text,text,numeric,text)",
                "SELECT * FROM ledger.post_entry(owner_id => 'user-42', app => 'shop',"
                " operation => 'CREDIT_ADD', idempotency_key => 'purchase-1001', amount => 50);",
            ),
            Example(
                "ledger.post_entry(text,text,text,text,numeric,text)",
                "SELECT * FROM ledger.post_entry(owner_id => 'user-42', app => 'shop',"
                " operation => 'SHOP_PURCHASE', idempotency_key => 'order-7', amount => 80);",
            ),
            Example(
                "ledger.post_entry(jsonb,text,text,text,text,numeric)",
                "SELECT * FROM ledger.post_entry(metadata => '{\"order\": 8}'::jsonb,"
                " owner_id => 'user-42', app => 'shop', operation => 'SHOP_PURCHASE',"
                " idempotency_key => 'order-8', amount => 12);",
            ),
            Example(
                "ledger.get_balance(text)",
                "SELECT * FROM ledger.get_balance('user-42');",
            ),
            Example(
                "ledger.get_entry(bigint,text,text)",
                "SELECT entry_id, owner_id, app, operation, amount, balance, idempotency_key,"
                " metadata FROM ledger.get_entry(entry_id => 2, app => 'shop',"
                " owner_id => 'user-42');",
            ),
            Example(
                "ledger.list_entries(text,bigint,integer,text)",
                "SELECT entry_id, operation, amount, balance, idempotency_key"
                " FROM ledger.list_entries(owner_id => 'user-42', max_rows => 10);",
            ),
            Example(
                "ledger.balance_at(text,timestamp with time zone)",
                "SELECT ledger.balance_at(owner_id => 'user-42',"
                " at => now() + interval '1 minute');",
            ),
        ],
    ),
    (
        "Holds",
        "Credits reserved for a pending action, then captured (charged) or released.",
        [
            Example(
                "ledger.create_hold(text,text,text,text,numeric,interval)",
                "SELECT * FROM ledger.create_hold(owner_id => 'user-42', app => 'shop',"
                " operation => 'SHOP_PURCHASE', idempotency_key => 'order-9', amount => 20,"
                " ttl => interval '10 minutes');",
            ),
            Example(
                "ledger.create_hold(text,text,text,text,numeric,interval)",
                "SELECT hold_id, amount, status FROM ledger.create_hold(owner_id => 'user-42',"
                " app => 'shop', operation => 'SHOP_PURCHASE', idempotency_key => 'order-10',"
                " amount => 5);",
            ),
            Example(
                "ledger.capture_hold(bigint,text,numeric,text)",
                "SELECT * FROM ledger.capture_hold(hold_id => 1, app => 'shop', amount => 15,"
                " owner_id => 'user-42');",
            ),
            Example(
                "ledger.release_hold(bigint,text,text)",
                "SELECT * FROM ledger.release_hold(hold_id => 2, app => 'shop');",
            ),
            Example(
                "ledger.get_hold(bigint,text,text)",
                "SELECT hold_id, owner_id, amount, status, captured_amount, entry_id"
                " FROM ledger.get_hold(hold_id => 1, app => 'shop');",
            ),
            Example(
                "ledger.list_holds(text,text)",
                "SELECT hold_id, operation, amount, status, idempotency_key"
                " FROM ledger.list_holds(owner_id => 'user-42', app => 'shop');",
            ),
        ],
    ),
    (
        "Transfers and reversals",
        "Work on two accounts in one transaction; accounts are locked in owner_id order.",
        [
            Example(
                "ledger.transfer(text,text,numeric,text,text,text)",
                "SELECT * FROM ledger.transfer(from_owner => 'user-42', to_owner => 'user-7',"
                " amount => 10, app => 'shop', idempotency_key => 'gift-1');",
            ),
            Example(
                "ledger.transfer(jsonb,text,text,numeric,text,text)",
                "SELECT * FROM ledger.transfer(metadata => '{\"note\": \"thanks\"}'::jsonb,"
                " from_owner => 'user-7', to_owner => 'user-42', amount => 1, app => 'shop',"
                " idempotency_key => 'gift-2');",
            ),
            Example(
                "ledger.reverse_entry(bigint,text,text,text,text)",
                "SELECT * FROM ledger.reverse_entry(entry_id => 2, app => 'shop',"
                " idempotency_key => 'refund-order-7', reason => 'order cancelled');",
            ),
        ],
    ),
    (
        "Credit grants",
        "Every credit is a grant with a priority that may expire; debits spend grants in order "
        "(priority, soonest expiry, oldest) and record what they took.",
        [
            Example(
                "ledger.grant_credits(text,text,text,text,numeric,"
                "timestamp with time zone,integer,text)",
                "SELECT * FROM ledger.grant_credits(owner_id => 'user-7', app => 'shop',"
                " operation => 'PROMO_CREDIT', idempotency_key => 'welcome-7', amount => 20,"
                " expires_at => now() + interval '7 days');",
            ),
            Example(
                "ledger.post_entry(text,text,text,text,numeric,text)",
                "SELECT entry_id, operation, amount, balance FROM ledger.post_entry("
                "owner_id => 'user-7', app => 'shop', operation => 'SHOP_PURCHASE',"
                " idempotency_key => 'order-20', amount => 15);",
            ),
            Example(
                "ledger.list_grants(text,boolean)",
                "SELECT grant_id, operation, amount, remaining, priority,"
                " expires_at IS NOT NULL AS expires, status"
                " FROM ledger.list_grants(owner_id => 'user-7');",
            ),
            Example(
                "ledger.list_spending(text,bigint,bigint,integer)",
                "SELECT entry_id, grant_id, operation, amount"
                " FROM ledger.list_spending(owner_id => 'user-7');",
            ),
            Example(
                "ledger.void_grant(bigint,text,text,text,text)",
                "SELECT * FROM ledger.void_grant(grant_id => (SELECT grant_id FROM"
                " ledger.list_grants('user-7') WHERE operation = 'PROMO_CREDIT'), app => 'shop',"
                " idempotency_key => 'void-welcome-7', reason => 'campaign withdrawn',"
                " owner_id => 'user-7');",
            ),
            Example(
                "ledger.expire_grants(integer,interval)",
                "SELECT ledger.expire_grants(max_rows => 1000, warn_before => interval '1 day');",
            ),
        ],
    ),
    (
        "Events",
        "Every change writes its events in its own transaction; apps read them in order from a "
        "cursor that never skips, or receive them as webhooks.",
        [
            Example(
                "ledger.set_balance_alert(text,bigint)",
                "SELECT * FROM ledger.set_balance_alert(app => 'shop', threshold => 10);",
            ),
            Example(
                "ledger.list_balance_alerts(text)",
                "SELECT * FROM ledger.list_balance_alerts(app => 'shop');",
            ),
            Example(
                "ledger.post_entry(text,text,text,text,numeric,text)",
                "SELECT entry_id, amount, balance FROM ledger.post_entry(owner_id => 'user-7',"
                " app => 'shop', operation => 'SHOP_PURCHASE', idempotency_key => 'order-21',"
                " amount => 5);",
            ),
            Example(
                "ledger.relay_events(integer)",
                "SELECT ledger.relay_events(max_rows => 10000);",
            ),
            Example(
                "ledger.list_events(text,text,integer)",
                "SELECT type, owner_id, seq, entry_id, payload ->> 'amount' AS amount"
                " FROM ledger.list_events(app => 'shop', after => NULL, max_rows => 1000)"
                " WHERE owner_id = 'user-7' ORDER BY seq DESC, event_id DESC LIMIT 4;",
            ),
            Example(
                "ledger.remove_balance_alert(text,bigint)",
                "SELECT * FROM ledger.remove_balance_alert(app => 'shop', threshold => 10);",
            ),
        ],
    ),
    (
        "Webhooks",
        "An app's endpoints receive its events as signed HTTP requests (Standard Webhooks), "
        "sent by the dispatcher (`ledger webhooks run`, a login of role `ledger_dispatcher`): "
        "it fans the feed out into one delivery per endpoint and event, claims due deliveries, "
        "and records each attempt.",
        [
            Example(
                "ledger.create_webhook_endpoint(text,text,text[],text)",
                "SELECT endpoint_id, app, url, event_types, active, secret"
                " FROM ledger.create_webhook_endpoint(app => 'shop',"
                " url => 'https://shop.example/hooks/ledger',"
                " event_types => ARRAY['entry.posted', 'balance.depleted'],"
                " description => 'order service');",
            ),
            Example(
                "ledger.list_webhook_endpoints(text)",
                "SELECT endpoint_id, url, event_types, description, active"
                " FROM ledger.list_webhook_endpoints(app => 'shop');",
            ),
            Example(
                "ledger.get_webhook_endpoint(bigint,text)",
                "SELECT endpoint_id, app, url, active"
                " FROM ledger.get_webhook_endpoint(endpoint_id => 1, app => 'shop');",
            ),
            Example(
                "ledger.post_entry(text,text,text,text,numeric,text)",
                "SELECT entry_id, amount, balance FROM ledger.post_entry(owner_id => 'user-7',"
                " app => 'shop', operation => 'SHOP_PURCHASE', idempotency_key => 'order-31',"
                " amount => 2);",
            ),
            Example(
                "ledger.fan_out_webhooks(integer)",
                "SELECT ledger.fan_out_webhooks(max_rows => 1000);",
                "ledger_dispatcher",
            ),
            Example(
                "ledger.claim_webhook_deliveries(integer,interval,integer,bigint[])",
                "SELECT delivery_id, attempt, endpoint_id, url, secret, webhook_id"
                " FROM ledger.claim_webhook_deliveries(max_rows => 100, lease => '60 seconds',"
                " per_endpoint => 8);",
                "ledger_dispatcher",
            ),
            Example(
                "ledger.record_webhook_attempts(text,interval)",
                "SELECT ledger.record_webhook_attempts(outcomes => '[{\"delivery_id\": 1,"
                " \"attempt\": 1, \"ok\": false, \"status_code\": 503, \"error\": \"HTTP 503\","
                " \"duration_ms\": 41, \"retry_in\": 5}]');",
                "ledger_dispatcher",
            ),
            Example(
                "ledger.list_webhook_deliveries(bigint,text,text,bigint,integer)",
                "SELECT delivery_id, event_id, event_type, webhook_id, status, attempts,"
                " last_status_code, last_error"
                " FROM ledger.list_webhook_deliveries(endpoint_id => 1, app => 'shop');",
            ),
            Example(
                "ledger.list_webhook_attempts(bigint,text,bigint,integer)",
                "SELECT delivery_id, attempt, event_id, status_code, error, duration_ms, outcome"
                " FROM ledger.list_webhook_attempts(endpoint_id => 1, app => 'shop');",
            ),
            Example(
                "ledger.resend_webhook_event(bigint,text,bigint)",
                "SELECT delivery_id, event_id, status, attempts FROM ledger.resend_webhook_event("
                "event_id => (SELECT event_id FROM ledger.list_webhook_deliveries(1, 'shop')"
                " LIMIT 1), app => 'shop');",
            ),
            Example(
                "ledger.set_webhook_endpoint_active(bigint,text,boolean)",
                "SELECT endpoint_id, active FROM ledger.set_webhook_endpoint_active("
                "endpoint_id => 1, app => 'shop', active => false);",
            ),
            Example(
                "ledger.delete_webhook_endpoint(bigint,text)",
                "SELECT endpoint_id, url FROM ledger.delete_webhook_endpoint(endpoint_id => 1,"
                " app => 'shop');",
            ),
            Example(
                "ledger.prune_events(interval,integer)",
                "SELECT ledger.prune_events(older_than => '30 days', max_rows => 1000);",
                "ledger_owner",
            ),
            Example(
                "ledger.prune_webhook_deliveries(interval,integer)",
                "SELECT ledger.prune_webhook_deliveries(older_than => '30 days',"
                " max_rows => 1000);",
                "ledger_owner",
            ),
        ],
    ),
    (
        "Batches",
        "Many entries in one call and one transaction, all or nothing.",
        [
            Example(
                "ledger.post_entries(text,text)",
                "SELECT * FROM ledger.post_entries(entries => '["
                '{"owner_id": "user-1", "app": "shop", "operation": "CREDIT_ADD", "amount": 3},'
                ' {"owner_id": "user-2", "app": "shop", "operation": "CREDIT_ADD", "amount": 4}'
                "]', idempotency_key => 'payroll-2024-05');",
            ),
            Example(
                "ledger.post_entries(jsonb,text)",
                "SELECT entry_id, owner_id, amount, replayed FROM ledger.post_entries(entries => '["
                '{"owner_id": "user-1", "app": "shop", "operation": "CREDIT_ADD", "amount": 3},'
                ' {"owner_id": "user-2", "app": "shop", "operation": "CREDIT_ADD", "amount": 4}'
                "]'::jsonb, idempotency_key => 'payroll-2024-05');",
            ),
        ],
    ),
    (
        "Audits and reports",
        "Read-only; callable by `ledger_reader` as well.",
        [
            Example(
                "ledger.app_report(text,timestamp with time zone,timestamp with time zone)",
                "SELECT * FROM ledger.app_report(app => 'shop',"
                " from_time => now() - interval '1 day', to_time => now() + interval '1 day');",
                "ledger_reader",
            ),
            Example("ledger.verify()", "SELECT * FROM ledger.verify();", "ledger_reader"),
            Example(
                "ledger.metrics_snapshot(interval)",
                "SELECT * FROM ledger.metrics_snapshot(recent => interval '5 minutes');",
                "ledger_reader",
            ),
        ],
    ),
    (
        "HTTP API keys",
        "Keys of the HTTP service: made, listed and revoked by `ledger_owner` (the "
        "`ledger keys` command); the service itself only resolves a token's SHA-256.",
        [
            Example(
                "ledger.create_api_key(text,bytea,text,text)",
                "SELECT * FROM ledger.create_api_key(app => 'shop',"
                " token_sha256 => sha256('example-token'::bytea), label => 'checkout service');",
                "ledger_owner",
            ),
            Example(
                "ledger.api_key_lookup(bytea)",
                "SELECT * FROM ledger.api_key_lookup(sha256('example-token'::bytea));",
            ),
            Example(
                "ledger.api_key_app(bytea)",
                "SELECT ledger.api_key_app(sha256('example-token'::bytea));",
            ),
            Example(
                "ledger.list_api_keys()",
                "SELECT * FROM ledger.list_api_keys();",
                "ledger_owner",
            ),
            Example(
                "ledger.revoke_api_key(text)",
                "SELECT ledger.revoke_api_key(key_id) FROM ledger.list_api_keys()"
                " WHERE label = 'checkout service';",
                "ledger_owner",
            ),
        ],
    ),
    (
        "Operators and the console",
        "Corrections by people, as members of `ledger_operator`: each acts on any app's rows "
        "through that app's own function and records who and why; the reads of the operators' "
        "console (`/console`); its users and sign-ins (`ledger console add-user`).",
        [
            Example(
                "ledger.operator_reverse_entry(text,text,bigint,text,text)",
                "SELECT entry_id, app, operation, amount, balance, replayed"
                " FROM ledger.operator_reverse_entry(operator => 'sam',"
                " reason => 'charged twice for order 9', entry_id => 3,"
                " idempotency_key => 'ticket-4711', owner_id => 'user-42');",
                "ledger_operator",
            ),
            Example(
                "ledger.operator_grant_credits(text,text,text,text,text,text,numeric,"
                "timestamp with time zone,integer)",
                "SELECT entry_id, app, operation, amount, balance"
                " FROM ledger.operator_grant_credits(operator => 'sam',"
                " reason => 'goodwill after the outage', owner_id => 'user-42', app => 'shop',"
                " operation => 'CREDIT_ADD', idempotency_key => 'ticket-4712', amount => 5);",
                "ledger_operator",
            ),
            Example(
                "ledger.list_operator_actions(text,bigint,bigint,integer)",
                "SELECT action, operator, reason, app, entry_id, grant_id"
                " FROM ledger.list_operator_actions(owner_id => 'user-42');",
                "ledger_reader",
            ),
            Example(
                "ledger.operator_void_grant(text,text,bigint,text,text)",
                "SELECT entry_id, operation, amount, balance FROM ledger.operator_void_grant("
                "operator => 'sam', reason => 'granted to the wrong customer',"
                " grant_id => (SELECT grant_id FROM ledger.list_operator_actions('user-42')"
                " WHERE action = 'grant_credits'), idempotency_key => 'ticket-4713',"
                " owner_id => 'user-42');",
                "ledger_operator",
            ),
            Example(
                "ledger.operator_release_hold(text,text,bigint,text,text)",
                "SELECT hold_id, status, replayed FROM ledger.operator_release_hold("
                "operator => 'sam', reason => 'stuck checkout', hold_id => 2,"
                " idempotency_key => 'ticket-4714', owner_id => 'user-42');",
                "ledger_operator",
            ),
            Example(
                "ledger.owner_history(text,bigint,integer,text,text)",
                "SELECT seq, entry_id, app, operation, amount, balance, reversed_by, operator,"
                " reason FROM ledger.owner_history(owner_id => 'user-42', max_rows => 5);",
                "ledger_reader",
            ),
            Example(
                "ledger.balance_series(text,integer)",
                "SELECT * FROM ledger.balance_series(owner_id => 'user-42', points => 2);",
                "ledger_reader",
            ),
            Example(
                "ledger.find_owners(text,integer)",
                "SELECT owner_id, entries, balance FROM ledger.find_owners(owner_id => 'user');",
                "ledger_reader",
            ),
            Example(
                "ledger.daily_activity(integer)",
                "SELECT app, issued, spent, expired, held FROM ledger.daily_activity(days => 1);",
                "ledger_reader",
            ),
            Example(
                "ledger.busiest_owners(interval,integer)",
                "SELECT owner_id, entries, balance"
                " FROM ledger.busiest_owners(since => interval '1 day', max_rows => 10);",
                "ledger_reader",
            ),
            Example(
                "ledger.list_open_holds(interval,interval,integer)",
                "SELECT hold_id, owner_id, app, amount, state FROM ledger.list_open_holds();",
                "ledger_reader",
            ),
            Example(
                "ledger.record_verify()",
                "SELECT findings, sample, ran_by FROM ledger.record_verify();",
                "ledger_operator",
            ),
            Example(
                "ledger.latest_verify()",
                "SELECT findings, ran_by FROM ledger.latest_verify();",
                "ledger_reader",
            ),
            Example(
                "ledger.set_console_user(text,text,text)",
                "SELECT * FROM ledger.set_console_user(name => 'sam', role => 'operator',"
                " password_hash => 'scrypt:32768:8:1$example-salt$0123456789abcdef');",
                "ledger_owner",
            ),
            Example(
                "ledger.list_console_users()",
                "SELECT name, role, failed_count FROM ledger.list_console_users();",
                "ledger_owner",
            ),
            Example(
                "ledger.console_sign_in(text)",
                "SELECT name, role, password_hash IS NOT NULL AS check_password, wait_seconds"
                " FROM ledger.console_sign_in(name => 'sam');",
                "ledger_console",
            ),
            Example(
                "ledger.console_signed_in(text)",
                "SELECT ledger.console_signed_in(name => 'sam');",
                "ledger_console",
            ),
            Example(
                "ledger.console_user(text)",
                "SELECT name, role, failed_count FROM ledger.console_user(name => 'sam');",
                "ledger_console",
            ),
            Example(
                "ledger.console_secret()",
                "SELECT length(ledger.console_secret()) AS secret_length;",
                "ledger_console",
            ),
            Example(
                "ledger.remove_console_user(text)",
                "SELECT ledger.remove_console_user(name => 'sam');",
                "ledger_owner",
            ),
        ],
    ),
]


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: str | None


@dataclass(frozen=True)
class Function:
    signature: str  # regprocedure text: the identity of the function
    name: str
    call: str  # pg_get_function_arguments: names, types and defaults
    parameters: tuple[Parameter, ...]
    returns: str
    columns: tuple[tuple[str, str], ...]  # empty for a scalar result
    comment: str | None
    roles: tuple[str, ...]
    errors: tuple[str, ...]


_PUBLIC = """
SELECT p.oid, p.oid::pg_catalog.regprocedure::text, p.proname,
       pg_catalog.pg_get_function_arguments(p.oid),
       pg_catalog.pg_get_function_result(p.oid),
       pg_catalog.obj_description(p.oid, 'pg_proc'),
       ARRAY(SELECT r FROM pg_catalog.unnest(%(roles)s::text[]) r
             WHERE pg_catalog.has_function_privilege(r, p.oid, 'EXECUTE')),
       t.typrelid
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_type t ON t.oid = p.prorettype
WHERE n.nspname = 'ledger' AND p.proname !~ '^_'
  AND EXISTS (SELECT FROM pg_catalog.unnest(%(roles)s::text[]) r
              WHERE pg_catalog.has_function_privilege(r, p.oid, 'EXECUTE'))
ORDER BY 2
"""

# Every argument (in, out, table) in order, with its type and its default text.
_ARGUMENTS = """
SELECT x.name, x.mode, pg_catalog.format_type(x.typ, NULL), ip.parameter_default
FROM pg_catalog.pg_proc p
CROSS JOIN LATERAL unnest(
    coalesce(p.proallargtypes, p.proargtypes::oid[]),
    p.proargnames,
    coalesce(p.proargmodes::text[],
             pg_catalog.array_fill('i'::text, ARRAY[pg_catalog.cardinality(p.proargtypes::oid[])])))
    WITH ORDINALITY AS x(typ, name, mode, ord)
LEFT JOIN information_schema.parameters ip
       ON ip.specific_schema = 'ledger'
      AND ip.specific_name = p.proname || '_' || p.oid
      AND ip.ordinal_position = x.ord
WHERE p.oid = %s
ORDER BY x.ord
"""

_COLUMNS = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# Schema ledger_shard holds what post_entry, create_hold and grant_credits run
# on the owner's shard, under the same names: their bodies count as their
# entry points'.
_BODIES = """
SELECT p.proname, p.prosrc FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('ledger', 'ledger_shard')
"""

_CALL = re.compile(r"\bledger(?:_shard)?\.([a-z_][a-z0-9_]*)\s*\(")
_SQLSTATE = re.compile(r"'(LG[0-9A-Z]{3})'")


def _raised(bodies: dict[str, list[str]], name: str) -> set[str]:
    """The LG SQLSTATEs in the bodies of `name` (every overload) and of the ledger
    functions they call, transitively."""
    seen: set[str] = set()
    todo = [name]
    states: set[str] = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for body in bodies.get(current, []):
            states.update(_SQLSTATE.findall(body))
            todo.extend(_CALL.findall(body))
    return states


def read_functions(conn: psycopg.Connection[Any]) -> list[Function]:
    bodies: dict[str, list[str]] = {}
    for name, body in conn.execute(_BODIES):
        bodies.setdefault(name, []).append(body)
    functions = []
    for oid, signature, name, call, returns, comment, roles, typrelid in conn.execute(
        _PUBLIC, {"roles": list(ROLES)}
    ).fetchall():
        arguments = conn.execute(_ARGUMENTS, (oid,)).fetchall()
        parameters = tuple(
            Parameter(str(n), str(t), d) for n, mode, t, d in arguments if mode in ("i", "b")
        )
        columns: tuple[tuple[str, str], ...] = tuple(
            (str(n), str(t)) for n, mode, t, _ in arguments if mode in ("o", "b", "t")
        )
        if not columns and typrelid:
            columns = tuple((str(n), str(t)) for n, t in conn.execute(_COLUMNS, (typrelid,)))
        functions.append(
            Function(
                signature=signature,
                name=name,
                call=call,
                parameters=parameters,
                returns=returns,
                columns=columns,
                comment=comment,
                roles=tuple(roles),
                errors=tuple(sorted(_raised(bodies, name))),
            )
        )
    return functions


# A key id as create_api_key makes it, a webhook secret: random on every run.
_KEY_ID = re.compile(r"key_[0-9a-f]{16}")
_SECRET = re.compile(r"whsec_[A-Za-z0-9+/]+=*")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime):
        return "<timestamp>"
    if isinstance(value, str) and _KEY_ID.fullmatch(value):
        return "<key_id>"
    if isinstance(value, str) and _SECRET.fullmatch(value):
        return "<secret>"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows printed the way psql prints them (numbers right-aligned)."""
    cells = [[_cell(v) for v in row] for row in rows]
    right = [
        bool(rows) and all(isinstance(r[i], (int, Decimal)) and not isinstance(r[i], bool)
                           for r in rows if r[i] is not None)
        for i in range(len(names))
    ]
    widths = [max([len(n), *(len(c[i]) for c in cells)]) for i, n in enumerate(names)]
    header = " " + " | ".join(n.center(w) for n, w in zip(names, widths, strict=True)).rstrip()
    rule = "-" + "-+-".join("-" * w for w in widths) + "-"
    lines = [header, rule]
    for row in cells:
        aligned = zip(row, widths, right, strict=True)
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in aligned]
        lines.append((" " + " | ".join(parts)).rstrip())
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines)


def _run(conn: psycopg.Connection[Any], example: Example) -> str:
    conn.execute(f"SET ROLE {example.role}")
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(example.sql)
            except psycopg.Error as exc:
                lines = [f"ERROR:  {exc.diag.message_primary}"]
                if exc.diag.message_detail:
                    lines.append(f"DETAIL:  {exc.diag.message_detail}")
                if exc.diag.message_hint:
                    lines.append(f"HINT:  {exc.diag.message_hint}")
                return "\n".join(lines)
            names = [d.name for d in cur.description or []]
            return _table(names, cur.fetchall())
    finally:
        conn.execute("RESET ROLE")


def _paragraphs(comment: str) -> str:
    return "\n\n".join(" ".join(p.split()) for p in comment.strip().split("\n\n"))


def render(url: str) -> str:
    """The reference of the database at `url` (a freshly migrated one: the
    examples write to it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        functions = {f.signature: f for f in read_functions(conn)}
        documented = {e.signature for _, _, examples in SECTIONS for e in examples}
        uncommented = sorted(s for s, f in functions.items() if not f.comment)
        if uncommented:
            raise SystemExit(
                "tools/sql_reference.py: public functions without a COMMENT ON FUNCTION "
                f"(their guarantees, written after the function in sql/): {uncommented}"
            )
        missing = sorted(set(functions) - documented)
        unknown = sorted(documented - set(functions))
        if missing or unknown:
            raise SystemExit(
                "tools/sql_reference.py: SECTIONS and the catalog disagree: "
                f"public functions without an example: {missing}; "
                f"examples of functions that are not public: {unknown}"
            )
        for _, _, examples in SECTIONS:
            signatures = [e.signature for e in examples]
            groups = [s for i, s in enumerate(signatures) if i == 0 or signatures[i - 1] != s]
            if len(groups) != len(set(groups)):
                raise SystemExit(
                    "tools/sql_reference.py: a function's examples must be consecutive"
                )
        runs = [[(e, _run(conn, e)) for e in examples] for _, _, examples in SECTIONS]

    out = [
        "# SQL reference",
        "",
        "<!-- Generated by tools/sql_reference.py from the catalog of a freshly migrated",
        f"     database: do not edit by hand, run `{COMMAND}`. -->",
        "",
        "Every rule of the ledger lives in the functions of schema `ledger`: this is",
        "the API, callable from any language with named parameters",
        "(`ledger.f(name => value)`). Each function below is listed with its",
        "guarantees (its `COMMENT ON FUNCTION`, kept beside it in `sql/`), the roles",
        "that may call it, its parameters and result columns, the errors it can raise",
        "(the SQLSTATEs of class `LG` in its body and the bodies of the functions it",
        "calls; DETAIL is a JSON object, see [Errors](../README.md#errors)), and a",
        "call with its output, run against a fresh database as the role shown, each",
        "example after the ones above it. Timestamps, the key ids `create_api_key`",
        "makes and webhook secrets, which differ on every run, print as `<timestamp>`,",
        "`<key_id>` and `<secret>`.",
        "",
    ]
    for title, _, examples in SECTIONS:
        names = dict.fromkeys(functions[e.signature].name for e in examples)
        out.append(f"- {title}: " + ", ".join(f"[`{n}`](#{n})" for n in names))
    out.append("")

    overloads: dict[str, int] = {}
    for (title, intro, _), run in zip(SECTIONS, runs, strict=True):
        out += [f"## {title}", "", intro, ""]
        for signature in dict.fromkeys(e.signature for e, _ in run):
            function = functions[signature]
            index = overloads.get(function.name, 0)
            overloads[function.name] = index + 1
            out += _function(function, index, [(e, r) for e, r in run if e.signature == signature])
    return "\n".join(out).rstrip() + "\n"


def _function(function: Function, index: int, examples: list[tuple[Example, str]]) -> list[str]:
    name = function.name
    heading = f"### {name}" if index == 0 else f"### {name} (overload {index + 1})"
    out = [heading, "", "```sql", f"ledger.{name}({function.call})"]
    out += [f"RETURNS {function.returns}", "```", ""]
    out += [_paragraphs(function.comment or ""), ""]
    out += ["Callable by: " + ", ".join(f"`{r}`" for r in function.roles), ""]
    if function.parameters:
        out += ["| parameter | type | default |", "|---|---|---|"]
        for p in function.parameters:
            default = f"`{p.default}`" if p.default is not None else "required"
            out.append(f"| `{p.name}` | `{p.type}` | {default} |")
        out.append("")
    if function.columns:
        out += ["| result column | type |", "|---|---|"]
        out += [f"| `{c}` | `{t}` |" for c, t in function.columns]
        out.append("")
    if function.errors:
        out += ["| error | SQLSTATE |", "|---|---|"]
        for state in function.errors:
            exc = EXCEPTIONS_BY_SQLSTATE.get(state)
            out.append(f"| `{exc.code if exc else '?'}` | `{state}` |")
        out.append("")
    else:
        out += ["Errors: none of its own.", ""]
    out += ["Example" + ("s" if len(examples) > 1 else "") + ":", ""]
    for example, result in examples:
        out += ["```psql", f"{example.role}=> {example.sql}", result, "```", ""]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when docs/SQL.md differs from the catalog")
    args = parser.parse_args(argv)

    from ledger_cli.pgserver import throwaway_server
    from ledger_py.migrate import migrate

    server = throwaway_server()
    try:
        url = server.url(database="postgres")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE ledger_sql_reference")
        url = server.url(database="ledger_sql_reference")
        migrate(url)
        text = render(url)
    finally:
        server.stop()
    if args.check:
        if DOCUMENT.exists() and DOCUMENT.read_text() == text:
            return 0
        print(f"docs/SQL.md is out of date with the SQL API: run `{COMMAND}`", file=sys.stderr)
        return 1
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
