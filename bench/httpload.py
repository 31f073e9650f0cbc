"""The HTTP scenarios: `POST /ledger` (JSON bodies, a unique Idempotency-Key
per request) and `GET /balance/{owner}` through gunicorn on loopback, driven
by wrk with a Lua script."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench.measure import Sample
from bench.scripts import OWNERS

REPO = Path(__file__).resolve().parent.parent
WORKERS = 2
THREADS_PER_WORKER = 4
# web/gunicorn_conf.py's default (LEDGER_API_KEY_CACHE_SECONDS).
API_KEY_CACHE_SECONDS = "1"


class HttpUnavailable(RuntimeError):
    """The web app, its API keys or wrk are not there: the scenario is skipped."""


def check_available() -> None:
    if shutil.which("wrk") is None:
        raise HttpUnavailable("wrk is not installed (apt-get install wrk)")
    import importlib.util

    try:
        import web  # noqa: F401

        for module in ("web.wsgi", "web.gunicorn_conf"):
            if importlib.util.find_spec(module) is None:
                raise ImportError(f"{module} does not exist yet")
    except Exception as exc:
        raise HttpUnavailable(
            f"the web app is not available yet ({type(exc).__name__}: {exc})"
        ) from exc


def create_token(url: str) -> str:
    from ledger_py import Ledger, tokens

    ledger = Ledger(url)
    try:
        token = tokens.create_api_key(ledger, app="bench").token
    finally:
        close = getattr(ledger, "close", None)
        if callable(close):
            close()
    return str(token)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gunicorn:
    """gunicorn serving web.create_app on a free loopback port."""

    def __init__(
        self,
        database_url: str,
        *,
        workers: int = WORKERS,
        threads: int = THREADS_PER_WORKER,
        extra_args: tuple[str, ...] = (),
        repo: Path = REPO,
        env_extra: dict[str, str] | None = None,
    ):
        """`repo`: the checkout whose web/ and ledger_py/ serve (another
        version's, for a side-by-side run)."""
        self.port = _free_port()
        self.workers = workers
        self.threads = threads
        # The production configuration (web/gunicorn_conf.py, as `ledger serve`
        # runs it), sized by its environment variables; only the port differs.
        env = dict(
            os.environ,
            LEDGER_DATABASE_URL=database_url,
            LEDGER_WORKERS=str(workers),
            LEDGER_THREADS=str(threads),
            LEDGER_POOL_SIZE=str(threads),
            LEDGER_LOG_LEVEL="warning",
        )
        env.update(env_extra or {})
        env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:web.gunicorn_conf",
                "--bind",
                f"127.0.0.1:{self.port}",
                *extra_args,
                "web.wsgi:app",
            ],
            cwd=repo,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HttpUnavailable(f"gunicorn exited: {self.output()[-800:]}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise HttpUnavailable(
            f"gunicorn did not answer /health in {timeout:.0f}s: {self.output()[-800:]}"
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def worker_rss_mb(self) -> list[float]:
        """Resident memory of each worker (children of the master)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            pids = children.read_text().split()
        except OSError:
            return []
        sizes = []
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        sizes.append(round(int(line.split()[1]) / 1024, 1))
            except OSError:
                continue
        return sizes

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def probe(base: str, token: str) -> None:
    """One POST before the measurement: a failure here names the cause."""
    body = json.dumps({"owner_id": "o1", "operation": "CREDIT_ADD", "amount": 1}).encode()
    request = urllib.request.Request(
        base + "/ledger",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": f"probe-{uuid.uuid4().hex}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status not in (200, 201):
                raise HttpUnavailable(f"POST /ledger answered {resp.status}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise HttpUnavailable(f"POST /ledger answered {exc.code}: {detail}") from exc


_LUA = """
local counter = 0
local run = "%(run)s"
local token = "%(token)s"
tid = tid or "0"

function init(args)
    math.randomseed(os.time() + tonumber(tid) * 7919)
end

function request()
    counter = counter + 1
    local body = '{"owner_id": "o' .. math.random(1, %(owners)d) ..
                 '", "operation": "CREDIT_ADD", "amount": 1}'
    local headers = {}
    headers["Content-Type"] = "application/json"
    headers["Authorization"] = "Bearer " .. token
    headers["Idempotency-Key"] = "http-" .. run .. "-" .. tid .. "-" .. counter
    return wrk.format("POST", "/ledger", headers, body)
end
"""

_LUA_BALANCE = """
local token = "%(token)s"
tid = tid or "0"

function init(args)
    math.randomseed(os.time() + tonumber(tid) * 7919)
end

function request()
    local headers = {}
    headers["Authorization"] = "Bearer " .. token
    return wrk.format("GET", "/balance/o" .. math.random(1, %(owners)d), headers)
end
"""

_LUA_MAIN = """
local next_tid = 0
function setup(thread)
    thread:set("tid", tostring(next_tid))
    next_tid = next_tid + 1
end

function done(summary, latency, requests)
    io.write(string.format(
        'WRK_JSON {"requests": %%d, "duration_us": %%d, "status_errors": %%d, "connect": %%d,' ..
        ' "read": %%d, "write": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
        summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
        summary.errors.read, summary.errors.write, summary.errors.timeout,
        latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    base: str,
    token: str,
    *,
    connections: int,
    threads: int,
    seconds: float,
    balance: bool = False,
) -> Sample:
    """wrk's POST /ledger (or, with `balance`, GET /balance/{owner}) for `seconds`."""
    values = {"run": uuid.uuid4().hex[:12], "token": token, "owners": OWNERS}
    script = ((_LUA_BALANCE if balance else _LUA) % values) + (_LUA_MAIN % {})
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        proc = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(seconds))}s",
                "-s",
                path,
                base + ("/balance/o1" if balance else "/ledger"),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=seconds + 60,
        )
    finally:
        os.unlink(path)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}")
    stats: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
    seconds_run = stats["duration_us"] / 1e6
    errors = sum(int(stats[k]) for k in ("status_errors", "connect", "read", "write", "timeout"))
    ok = stats["requests"] - stats["status_errors"]
    return Sample(
        rate=ok / seconds_run if seconds_run else 0.0,
        p50_ms=stats["p50_us"] / 1000.0,
        p99_ms=stats["p99_us"] / 1000.0,
        count=int(stats["requests"]),
        seconds=seconds_run,
        errors=errors,
    )
