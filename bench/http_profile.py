"""`python -m bench.http_profile`: where the CPU time of one HTTP request goes.

One process, one thread, a throwaway server: the Flask app is called as a
WSGI callable (no socket, no gunicorn) for POST /ledger and GET /balance,
beside the pieces of the same request measured on their own (the JSON
parser, the request schemas, the API-key lookup, the ledger_py call, raw
psycopg running the same SQL, the response encoding). CPU time of this
process (``time.process_time``) per call, so that PostgreSQL's own time and
other load on the machine stay out of it; the gunicorn/gevent layer is
what `--gunicorn` adds: worker CPU per request under wrk, read from /proc.

    python -m bench.http_profile [--calls 2000] [--cprofile] [--gunicorn SECONDS]
        [--key-cache SECONDS] [--loop SECONDS]

Run from another checkout's directory with this file's path (``python
/path/to/bench/http_profile.py``) to profile that checkout's web/ and
ledger_py/.

A diagnostic beside the benchmark (bench/results/http_profile.md), never
part of its figures.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench import dataset, httpload, pyload
from bench.server import start_server

Step = Callable[[int], Any]


def cpu_us(step: Step, calls: int, rounds: int = 3) -> float:
    """Median over rounds of the CPU microseconds of this process per call."""
    per_round = []
    for r in range(rounds):
        base = r * calls
        start = time.process_time()
        for i in range(calls):
            step(base + i)
        per_round.append((time.process_time() - start) * 1e6 / calls)
    return statistics.median(per_round)


def environ(method: str, path: str, token: str, body: bytes = b"", key: str = "") -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body:
        env["CONTENT_TYPE"] = "application/json"
        env["CONTENT_LENGTH"] = str(len(body))
    if key:
        env["HTTP_IDEMPOTENCY_KEY"] = key
    return env


def call_wsgi(app: Any, env: dict[str, Any]) -> tuple[str, bytes]:
    status: list[str] = []

    def start(s: str, headers: Any, exc_info: Any = None) -> None:
        status.append(s)

    result = app(env, start)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return status[0], body


def body_of(i: int) -> bytes:
    return json.dumps(
        {"owner_id": f"o{i % 10000 + 1}", "operation": "CREDIT_ADD", "amount": 1}
    ).encode()


def steps(url: str, token: str, key_cache: float = 1.0) -> dict[str, Step]:
    """Each measured piece, as a function of the call number."""
    from web.app import create_app

    app = create_app(
        {"LEDGER_DATABASE_URL": url, "LEDGER_POOL_SIZE": 1, "API_KEY_CACHE_SECONDS": key_cache}
    )
    state = app.extensions["ledger_web"]
    ledger = state.ledger
    run = uuid.uuid4().hex[:8]
    raw = psycopg.connect(url, autocommit=True)
    sql = pyload.post_entry_sql()
    from web import schemas
    from web.request_input import parse_json

    entry_in = schemas.EntryIn()
    write_out = schemas.WriteOut()
    balance_out = schemas.BalanceOut()
    sample_entry = ledger.post_entry(
        owner_id="o1", app="bench", operation="CREDIT_ADD", idempotency_key=f"s-{run}", amount=1
    )
    sample_balance = ledger.get_balance(owner_id="o1")
    bodies = [body_of(i) for i in range(1000)]

    def http_post(i: int) -> Any:
        env = environ("POST", "/ledger", token, bodies[i % 1000], key=f"h-{run}-{i}")
        status, out = call_wsgi(app, env)
        assert status.startswith("201"), (status, out)

    def http_balance(i: int) -> Any:
        status, out = call_wsgi(app, environ("GET", f"/balance/o{i % 10000 + 1}", token))
        assert status.startswith("200"), (status, out)

    def http_health(i: int) -> Any:
        call_wsgi(app, environ("GET", "/health", token))

    def raw_post(i: int) -> Any:
        return raw.execute(
            sql,
            {
                "owner_id": f"o{i % 10000 + 1}",
                "app": "bench",
                "operation": "CREDIT_ADD",
                "idempotency_key": f"r-{run}-{i}",
                "amount": 1,
            },
        ).fetchone()

    def raw_balance(i: int) -> Any:
        return raw.execute(
            "SELECT * FROM ledger.get_balance(owner_id => %(o)s::text)", {"o": f"o{i % 10000 + 1}"}
        ).fetchone()

    def wrapper_post(i: int) -> Any:
        return ledger.post_entry(
            owner_id=f"o{i % 10000 + 1}",
            app="bench",
            operation="CREDIT_ADD",
            idempotency_key=f"w-{run}-{i}",
            amount=1,
        )

    def wrapper_balance(i: int) -> Any:
        return ledger.get_balance(owner_id=f"o{i % 10000 + 1}")

    def key_lookup(i: int) -> Any:
        return state.keys.holder_for(token)

    def json_parse(i: int) -> Any:
        return parse_json(bodies[i % 1000])

    def schema_load(i: int) -> Any:
        return entry_in.load(parse_json(bodies[i % 1000]))

    def encode_write(i: int) -> Any:
        with app.app_context():
            return app.json.dumps(
                write_out.dump({"entry": sample_entry, "balance": sample_entry.balance})
            )

    def encode_balance(i: int) -> Any:
        with app.app_context():
            return app.json.dumps(balance_out.dump(sample_balance))

    return {
        "POST /ledger (whole WSGI call)": http_post,
        "  raw psycopg post_entry (same SQL)": raw_post,
        "  Ledger.post_entry": wrapper_post,
        "  API-key lookup (KeyResolver.holder_for)": key_lookup,
        "  JSON parse of the body": json_parse,
        "  JSON parse + EntryIn load": schema_load,
        "  WriteOut dump + JSON encode": encode_write,
        "GET /balance (whole WSGI call)": http_balance,
        "  raw psycopg get_balance": raw_balance,
        "  Ledger.get_balance": wrapper_balance,
        "  BalanceOut dump + JSON encode": encode_balance,
        "GET /health (whole WSGI call, one SELECT 1)": http_health,
    }


def _thread_cpu(master_pid: int) -> dict[str, float]:
    """CPU seconds so far of the workers' threads: "main" (gevent's hub and the
    greenlets: gunicorn's parsing, writing, access log) and "other" (the
    threads that run the app, the psycopg pool's)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {"main": 0.0, "other": 0.0}
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    for pid in children:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            role = "main" if task.name == pid else "other"
            out[role] += (int(fields[11]) + int(fields[12])) / ticks
    return out


def gunicorn_cpu(url: str, token: str, seconds: float) -> None:
    """Worker CPU per request under wrk (8 connections), from /proc."""
    server = httpload.Gunicorn(url)
    try:
        httpload.probe(server.base, token)
        time.sleep(1)
        for balance in (False, True):
            before = _thread_cpu(server.proc.pid)
            sample = httpload.run_wrk(
                server.base, token, connections=8, threads=2, seconds=seconds, balance=balance
            )
            after = _thread_cpu(server.proc.pid)
            per = {k: (after[k] - before[k]) * 1e6 / max(1, sample.count) for k in after}
            print(
                f"gunicorn {'GET /balance' if balance else 'POST /ledger'}: "
                f"{sample.rate:.0f} requests/s, worker CPU per request {sum(per.values()):.0f} us"
                f" (main thread {per['main']:.0f}, app and pool threads {per['other']:.0f})"
            )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--cprofile", action="store_true", help="cProfile POST /ledger")
    parser.add_argument(
        "--key-cache", type=float, default=1.0, help="API_KEY_CACHE_SECONDS (the served default)"
    )
    parser.add_argument("--gunicorn", type=float, default=0, help="seconds of wrk (0: none)")
    parser.add_argument(
        "--loop",
        type=float,
        default=0,
        help="then POST /ledger alone for this many seconds (py-spy)",
    )
    args = parser.parse_args()
    server = start_server()
    try:
        url = dataset.create_database(server.url(database="postgres"), "bench")
        dataset.prepare_ledger(url)
        token = httpload.create_token(url)
        measured = steps(url, token, args.key_cache)
        for step in measured.values():  # warm-up: connections, prepared statements
            for i in range(10):
                step(10**7 + i)
        print(f"CPU microseconds of this process per call (median of 3 x {args.calls}):")
        for name, step in measured.items():
            print(f"{name:48} {cpu_us(step, args.calls):8.1f}")
        if args.cprofile:
            profiler = cProfile.Profile(time.thread_time)
            post = measured["POST /ledger (whole WSGI call)"]
            profiler.enable()
            for i in range(args.calls):
                post(2 * 10**7 + i)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(40)
            print(out.getvalue())
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
            print(out.getvalue())
        if args.loop:
            post = measured["POST /ledger (whole WSGI call)"]
            print("looping, pid", os.getpid(), flush=True)
            deadline = time.monotonic() + args.loop
            i = 3 * 10**7
            while time.monotonic() < deadline:
                post(i)
                i += 1
        if args.gunicorn:
            gunicorn_cpu(url, token, args.gunicorn)
        print("load average:", os.getloadavg())
    finally:
        server.stop()


if __name__ == "__main__":
    main()
