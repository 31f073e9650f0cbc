"""`python -m bench --console [--quick]`: how long the server takes to render
the console's owner page of an owner with 100,000 entries.

Server-side time: the app runs in this process and each request goes
through Flask's test client (no socket, no browser), so a figure is the
time from the request entering the app to the response body being complete:
routing, the session check, every ledger call of the page (balance, grants,
holds, a page of 50 history rows read by seq, the 60-point balance chart),
and Jinja. Side by side in the same rounds:

* **baseline** `GET /balance/<owner>` of the HTTP API with an app's key: one
  ledger call through the same app and client;
* the owner page of a small owner (a few entries), the same page of the big
  owner, and its history 50,000 entries deep (`?before_seq=`): keyset
  pagination and the sampled chart cost the same whatever the history's
  length.

Renders interleave round by round (each kind once per round) so that drift
hits all of them. Results: bench/results/console.md and .json (quick:
bench/results/tmp/, 2,000 entries and fewer renders).
"""

from __future__ import annotations

import json
import re
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

from bench import dataset
from bench.server import load_average, machine_info, server_settings, start_server
from ledger_py.client import Ledger
from ledger_py.migrate import migrate
from ledger_py.tokens import create_api_key
from web import close_app, create_app
from web.console.passwords import hash_password

BIG = "big-owner"
SMALL = "small-owner"
PASSWORD = "benchmark password"
BATCH = 10_000


def say(text: str) -> None:
    print(text, flush=True)


def load_owner(url: str, entries: int) -> float:
    """BIG gets `entries` entries (a purchase, a promo grant, then debits in
    batches of ledger.post_entries, every tenth by example_app); SMALL a
    handful. Seconds taken."""
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT ledger.post_entry(%s, 'core', 'CREDIT_ADD', 'buy', %s)", (BIG, entries * 2)
        )
        conn.execute(
            "SELECT ledger.grant_credits(%s, 'core', 'PROMO_CREDIT', 'promo', 1000)", (BIG,)
        )
        done = 2
        while done < entries:
            upto = min(done + BATCH, entries)
            conn.execute(
                "SELECT count(*) FROM ledger.post_entries((SELECT jsonb_agg(CASE WHEN g %% 10 = 0"
                " THEN jsonb_build_object('owner_id', %(o)s::text, 'app', 'example_app',"
                " 'operation', 'CONTENT_ACCESS', 'idempotency_key', 'read-' || g)"
                " ELSE jsonb_build_object('owner_id', %(o)s::text, 'app', 'core',"
                " 'operation', 'CREDIT_SPEND', 'idempotency_key', 'spend-' || g, 'amount', 1) END"
                " ORDER BY g) FROM generate_series(%(a)s::integer, %(b)s::integer) g))",
                {"o": BIG, "a": done + 1, "b": upto},
            )
            done = upto
        conn.execute("SELECT ledger.post_entry(%s, 'core', 'CREDIT_ADD', 'buy', 50)", (SMALL,))
        conn.execute(
            "SELECT count(ledger.post_entry(%s, 'core', 'CREDIT_SPEND', 'spend-' || g, 1))"
            " FROM generate_series(1, 9) g",
            (SMALL,),
        )
        conn.execute("VACUUM ANALYZE")
    return time.monotonic() - started


def _signed_in_client(app: Any) -> Any:
    client = app.test_client()
    page = client.get("/console/sign-in")
    token = re.search(r'name="pre_token" value="([^"]+)"', page.text)
    assert token, "no sign-in form"
    answer = client.post(
        "/console/sign-in",
        data={"name": "bench", "password": PASSWORD, "pre_token": token.group(1), "next": ""},
    )
    assert answer.status_code == 302, answer.text
    return client


def measure(url: str, renders: int, warmup: int, entries: int) -> dict[str, Any]:
    with Ledger(url, min_size=1, max_size=4) as ledger:
        ledger.set_console_user(name="bench", role="viewer", password_hash=hash_password(PASSWORD))
        token = create_api_key(ledger, app="core").token
        app = create_app({"LEDGER": ledger})
        try:
            client = _signed_in_client(app)
            api = app.test_client()
            deep = max(entries // 2, 1)
            kinds: dict[str, tuple[Any, str, dict[str, str]]] = {
                "balance_api": (api, f"/balance/{BIG}", {"Authorization": f"Bearer {token}"}),
                "owner_small": (client, f"/console/owners/{SMALL}", {}),
                "owner_big": (client, f"/console/owners/{BIG}", {}),
                "owner_big_deep": (client, f"/console/owners/{BIG}?before_seq={deep}", {}),
            }
            times: dict[str, list[float]] = {k: [] for k in kinds}
            sizes: dict[str, int] = {}
            for r in range(warmup + renders):
                for key, (c, path, headers) in kinds.items():
                    started = time.perf_counter()
                    answer = c.get(path, headers=headers)
                    body = answer.get_data()
                    elapsed = (time.perf_counter() - started) * 1000
                    assert answer.status_code == 200, (key, answer.status_code)
                    if key.startswith("owner"):
                        assert b'data-points="60"' in body, key
                        assert body.count(b"data-entry-id=") == (10 if key == "owner_small" else 50)
                    sizes[key] = len(body)
                    if r >= warmup:
                        times[key].append(elapsed)
        finally:
            close_app(app)
    figures = {
        key: {
            "median_ms": round(statistics.median(values), 2),
            "p90_ms": round(sorted(values)[max(int(len(values) * 0.9) - 1, 0)], 2),
            "min_ms": round(min(values), 2),
            "bytes": sizes[key],
        }
        for key, values in times.items()
    }
    base = figures["balance_api"]["median_ms"]
    for values in figures.values():
        values["to_baseline"] = round(values["median_ms"] / base, 1)
    return figures


def report(results: dict[str, Any]) -> str:
    plan, f = results["plan"], results["figures"]
    titles = {
        "balance_api": "GET /balance/{owner} with an API key (baseline)",
        "owner_small": "/console/owners/{owner}, 10 entries",
        "owner_big": f"/console/owners/{{owner}}, {plan['entries']:,} entries",
        "owner_big_deep": f"the same, history {plan['entries'] // 2:,} entries deep (?before_seq=)",
    }
    lines = [
        f"# Console: server-side render time ({plan['mode']}, {results['when']})",
        "",
        f"`python -m bench --console{' --quick' if plan['mode'] == 'quick' else ''}`: "
        f"{plan['renders']} renders of each (after {plan['warmup']} unmeasured), interleaved, "
        "in-process through Flask's test client (no network); "
        f"{str(results['settings'].get('version', '?')).split(' on ')[0]}, "
        "a durable throwaway server on the same machine "
        f"({results['machine'].get('cores', '?')} cores, load {results['load']['before']} before, "
        f"{results['load']['after']} after). Loading the owner took {plan['load_seconds']:.0f} s "
        "(setup, not measured).",
        "",
        "| request | median ms | p90 ms | min ms | x baseline | bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, title in titles.items():
        v = f[key]
        lines.append(
            f"| {title} | {v['median_ms']:.2f} | {v['p90_ms']:.2f} | {v['min_ms']:.2f} "
            f"| {v['to_baseline']:.1f} | {v['bytes']:,} |"
        )
    big = f["owner_big"]["median_ms"]
    lines += [
        "",
        f"The owner page of an owner with {plan['entries']:,} entries renders in a median "
        f"{big:.1f} ms on the server ({'under' if big < 100 else 'over'} the 100 ms target), "
        f"{f['owner_big']['median_ms'] / f['owner_small']['median_ms']:.2f}x the page of an owner "
        "with 10 entries: a page of history is 51 rows read backwards from a seq by the "
        "(owner_id, seq) index, and the chart is 60 balance_at lookups, whatever the history's "
        "length.",
        "",
    ]
    return "\n".join(lines)


def main(mode: str, out: Path) -> int:
    quick = mode == "quick"
    entries = 2_000 if quick else 100_000
    renders, warmup = (5, 2) if quick else (31, 5)
    load_before = load_average()
    server = start_server()
    try:
        server_url = server.url(database="postgres")
        settings = server_settings(server_url)
        url = dataset.create_database(server_url, "bench_console")
        migrate(url)
        say(f"console: loading an owner with {entries:,} entries through ledger.post_entries")
        loaded = load_owner(url, entries)
        say(f"  loaded in {loaded:.0f} s; {renders} renders of each page, interleaved")
        figures = measure(url, renders, warmup, entries)
    finally:
        server.stop()
    results = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "plan": {
            "mode": mode,
            "entries": entries,
            "renders": renders,
            "warmup": warmup,
            "load_seconds": round(loaded, 1),
        },
        "machine": machine_info(),
        "settings": settings,
        "load": {"before": load_before, "after": load_average()},
        "figures": figures,
    }
    out.mkdir(parents=True, exist_ok=True)
    name = "console-quick" if quick else "console"
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    text = report(results)
    (out / f"{name}.md").write_text(text, encoding="utf-8")
    say("")
    say(text)
    return 0
