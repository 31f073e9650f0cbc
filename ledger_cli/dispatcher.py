"""The webhook dispatcher behind `ledger webhooks run`: a long-running process
that delivers the ledger's events to the endpoints apps registered.

Every rule about what to deliver lives in SQL (sql/80_webhooks.sql): the
fan-out of the event feed into one delivery per (endpoint, event), which
delivery is due, the lease that keeps two dispatchers from attempting one
delivery at once, and what an outcome does (delivered; tried again later;
failed past the horizon). This module is the part that cannot live in the
database: it polls, sends HTTP requests, signs them, times them out and
chooses each retry's delay.

One asyncio loop per process. Each tick (every `poll_interval` seconds when
there is nothing to do, at once again while there is):

1. `relay_events`: committed events join the feed (no NOTIFY anywhere: the
   write path never waits for the dispatcher);
2. `fan_out_webhooks`: new events of the feed become pending deliveries;
3. `claim_webhook_deliveries`: as many due deliveries as there are free
   slots (`concurrency`), at most `per_endpoint` in flight per endpoint, each
   leased for `lease` seconds;
4. every claimed delivery is one POST in its own task, signed per Standard
   Webhooks (webhook-id, webhook-timestamp, webhook-signature: v1, HMAC-SHA256
   over "id.timestamp.body" with the endpoint's whsec_ secret, made by the
   `standardwebhooks` package), bounded by `timeout` as a whole (connecting,
   sending, the answer);
5. outcomes are written in batches (`record_webhook_attempts`): a 2xx answer
   is delivered; anything else is tried again after an exponential backoff
   with jitter (`retry_delay`), until the database finds the next try past
   the horizon (default 3 days) and marks the delivery failed.

Why asyncio with aiohttp rather than threads: an attempt spends its time
waiting on a socket, so one event loop keeps hundreds in flight for the
memory of a few coroutines, and a slow or dead endpoint costs a coroutine
and a connection, never a thread; aiohttp's total timeout bounds the whole
attempt (a receiver that dribbles its answer cannot stretch it), and it
keeps connections to a receiver alive between deliveries. The database is
reached through AsyncLedger in the same loop.

At least once: a delivery is recorded only after its attempt ended, so a
dispatcher killed mid-attempt leaves a lease that runs out, and the next
claim sends the same body with the same webhook-id again. The lease is
longer than the attempt's timeout (checked in DispatcherConfig), so an
attempt always ends before another dispatcher may claim its delivery: no
event goes to one endpoint twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import metadata
from typing import Any

import aiohttp
from standardwebhooks import Webhook

from ledger_py import AsyncLedger, LedgerError, WebhookClaim

log = logging.getLogger("ledger_cli.dispatcher")

# Characters of an answer's body kept in the delivery log.
ANSWER_SNIPPET = 200
# Bytes of an answer read at most (the rest is dropped with the connection).
ANSWER_READ_LIMIT = 64 * 1024
# Outcomes written per statement.
RECORD_BATCH = 500
# Seconds between the summaries written to the log while there is activity.
SUMMARY_EVERY = 60.0


def _version() -> str:
    try:
        return metadata.version("shared-ledger")
    except metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "0.0.0"


USER_AGENT = f"shared-ledger-webhooks/{_version()}"


@dataclass(frozen=True)
class DispatcherConfig:
    """How one dispatcher polls, sends and retries (every time in seconds).

    `horizon` None leaves the database's default (3 days): a delivery whose
    next try would come later than that after it was created (or resent) is
    failed instead."""

    poll_interval: float = 0.5
    timeout: float = 10.0
    lease: float = 60.0
    concurrency: int = 64
    per_endpoint: int = 8
    backoff_base: float = 5.0
    backoff_max: float = 3600.0
    horizon: timedelta | None = None
    relay_rows: int = 10_000
    fan_out_rows: int = 1000

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.poll_interval <= 3600:
            problems.append("poll_interval must be more than 0 and at most 3600 seconds")
        if not 0 < self.timeout <= 3600:
            problems.append("timeout must be more than 0 and at most 3600 seconds")
        if not self.timeout + 1 <= self.lease <= 86_400:
            problems.append(
                "lease must be at least the timeout plus 1 second (an attempt must end "
                "before another dispatcher may claim its delivery) and at most 1 day"
            )
        if not 1 <= self.concurrency <= 1000:
            problems.append("concurrency must be between 1 and 1000")
        if not 1 <= self.per_endpoint <= self.concurrency:
            problems.append("per_endpoint must be between 1 and concurrency")
        if not 0 < self.backoff_base <= self.backoff_max:
            problems.append("backoff_base must be more than 0 and at most backoff_max")
        if self.horizon is not None and self.horizon < timedelta(0):
            problems.append("horizon must not be negative")
        if not 1 <= self.relay_rows <= 100_000 or not 1 <= self.fan_out_rows <= 10_000:
            problems.append("relay_rows must be 1 to 100000 and fan_out_rows 1 to 10000")
        if problems:
            raise ValueError("; ".join(problems))


def retry_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...):
    exponential (base, 2 base, 4 base, ... at most cap) with "equal jitter":
    half of it fixed, half random. Retries of many deliveries that failed
    together spread out instead of hitting a recovering endpoint at once,
    and never come sooner than half the schedule."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 1) - 1, 60))
    return ceiling / 2 + rand() * ceiling / 2


def signed_headers(secret: str, webhook_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: the id (the same on every
    attempt of a delivery), the attempt's timestamp and its signature."""
    moment = at.astimezone(timezone.utc)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, moment, body),
    }


def _clean(text: str) -> str:
    """What a log row can hold: no NUL (PostgreSQL text cannot), bounded length."""
    return text.replace("\x00", "\ufffd")[:1000]


@dataclass
class Stats:
    """What a dispatcher did since it started (its summaries and the tests read it)."""

    claimed: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    recorded: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)


class Dispatcher:
    """One dispatcher process's loop (`run`), its HTTP session and its connections."""

    def __init__(self, url: str, config: DispatcherConfig | None = None) -> None:
        self.url = url
        self.config = config or DispatcherConfig()
        self.stats = Stats()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._per_endpoint: dict[int, int] = {}
        self._outcomes: list[dict[str, Any]] = []
        self._outcome_ready = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._ledger: AsyncLedger | None = None
        self._session: aiohttp.ClientSession | None = None
        self._database_down = False

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set; then finish the attempts in flight
        (each ends within the timeout) and record their outcomes."""
        config = self.config
        connector = aiohttp.TCPConnector(limit=config.concurrency, ttl_dns_cache=60)
        async with (
            AsyncLedger(
                self.url, min_size=1, max_size=2, name="ledger-webhooks", timeout=10.0
            ) as ledger,
            aiohttp.ClientSession(connector=connector, auto_decompress=False) as session,
        ):
            self._ledger, self._session = ledger, session
            writer = asyncio.create_task(self._write_outcomes(stop))
            last_summary = time.monotonic()
            try:
                while not stop.is_set():
                    busy = await self._tick()
                    if time.monotonic() - last_summary >= SUMMARY_EVERY:
                        self._summary()
                        last_summary = time.monotonic()
                    if stop.is_set():
                        break
                    if busy is None:  # every slot taken: wait for one
                        await _wait_any([stop, self._slot_free], config.poll_interval)
                    elif not busy:
                        await _wait_any([stop], config.poll_interval)
            finally:
                if self._in_flight:
                    await asyncio.wait(set(self._in_flight), timeout=config.timeout + 5)
                await asyncio.wait({writer}, timeout=10.0)
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                self._summary()

    async def _tick(self) -> bool | None:
        """One round: relay, fan out, claim. True: there may be more to do now;
        False: nothing is due; None: every slot is taken."""
        assert self._ledger is not None
        config = self.config
        self._slot_free.clear()
        try:
            relayed = await self._ledger.relay_events(max_rows=config.relay_rows)
            read = await self._ledger.fan_out_webhooks(max_rows=config.fan_out_rows)
            free = config.concurrency - len(self._in_flight)
            if free <= 0:
                return None
            wanted = min(free, 1000)
            skip = [e for e, n in self._per_endpoint.items() if n >= config.per_endpoint]
            claims = await self._ledger.claim_webhook_deliveries(
                max_rows=wanted,
                lease=timedelta(seconds=config.lease),
                per_endpoint=config.per_endpoint,
                skip_endpoints=skip or None,
            )
        except LedgerError as exc:
            self.stats.errors += 1
            if not self._database_down:
                log.warning("webhook dispatcher: %s: %s (retrying)", exc.code, exc.message)
                self._database_down = True
            await asyncio.sleep(min(5.0, max(config.poll_interval, 1.0)))
            return False
        if self._database_down:
            log.info("webhook dispatcher: the database answers again")
            self._database_down = False
        for claim in claims:
            self._start(claim)
        return bool(relayed or read) or len(claims) == wanted

    def _start(self, claim: WebhookClaim) -> None:
        self.stats.claimed += 1
        self._per_endpoint[claim.endpoint_id] = self._per_endpoint.get(claim.endpoint_id, 0) + 1
        task = asyncio.create_task(self._attempt(claim))
        self._in_flight.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._in_flight.discard(finished)
            left = self._per_endpoint.get(claim.endpoint_id, 1) - 1
            if left > 0:
                self._per_endpoint[claim.endpoint_id] = left
            else:
                self._per_endpoint.pop(claim.endpoint_id, None)
            self._slot_free.set()

        task.add_done_callback(done)

    # -- one attempt ---------------------------------------------------------------------

    async def _attempt(self, claim: WebhookClaim) -> None:
        assert self._session is not None
        config = self.config
        at = datetime.now(timezone.utc)
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            headers = signed_headers(claim.secret, claim.webhook_id, claim.body, at)
            async with self._session.post(
                claim.url,
                data=claim.body.encode("utf-8"),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=config.timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                answer = await response.content.read(ANSWER_READ_LIMIT)
                if not 200 <= status < 300:
                    text = answer[: ANSWER_SNIPPET * 4].decode("utf-8", "replace")
                    error = f"HTTP {status}" + (f": {text[:ANSWER_SNIPPET]}" if text else "")
        except asyncio.TimeoutError:
            error = f"timeout after {config.timeout:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # a bad URL or secret: the attempt failed, the loop goes on
            log.debug("webhook attempt %s failed", claim.webhook_id, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
        ok = error is None and status is not None
        if ok:
            self.stats.delivered += 1
        else:
            self.stats.failed_attempts += 1
            log.debug("webhook %s to %s: %s", claim.webhook_id, claim.url, error)
        self._outcomes.append(
            {
                "delivery_id": claim.delivery_id,
                "attempt": claim.attempt,
                "ok": ok,
                "status_code": status,
                "error": None if error is None else _clean(error),
                "duration_ms": int((time.monotonic() - started) * 1000),
                "attempted_at": at.isoformat(),
                "retry_in": None
                if ok
                else retry_delay(claim.attempt, config.backoff_base, config.backoff_max),
            }
        )
        self._outcome_ready.set()

    # -- outcomes ------------------------------------------------------------------------

    async def _write_outcomes(self, stop: asyncio.Event) -> None:
        """Record outcomes in batches, until stopped and nothing is in flight
        or left to record. A failed write is retried: the outcomes stay here
        (if this process dies first, the leases run out and the deliveries
        are attempted again)."""
        assert self._ledger is not None
        while True:
            if not self._outcomes:
                if stop.is_set() and not self._in_flight:
                    return
                self._outcome_ready.clear()
                await _wait_any([self._outcome_ready, stop], 0.5)
                continue
            await asyncio.sleep(0.005)  # let the attempts finishing together share a statement
            batch = self._outcomes[:RECORD_BATCH]
            try:
                self.stats.recorded += await self._ledger.record_webhook_attempts(
                    outcomes=batch, horizon=self.config.horizon
                )
            except LedgerError as exc:
                self.stats.errors += 1
                log.warning("webhook dispatcher: cannot record outcomes: %s (retrying)", exc)
                await asyncio.sleep(1.0)
                continue
            del self._outcomes[: len(batch)]

    def _summary(self) -> None:
        s = self.stats
        if s.claimed or s.errors:
            log.info(
                "webhook dispatcher: %d attempts (%d delivered, %d failed), %d in flight,"
                " %d errors",
                s.claimed,
                s.delivered,
                s.failed_attempts,
                len(self._in_flight),
                s.errors,
            )


async def _wait_any(events: list[asyncio.Event], timeout: float) -> None:
    """Wait until one of the events is set, or the timeout has passed."""
    waiting = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiting:
            task.cancel()


def run(url: str, config: DispatcherConfig) -> Stats:
    """Run a dispatcher in this process until SIGTERM or SIGINT (Ctrl-C)."""

    async def main() -> Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        dispatcher = Dispatcher(url, config)
        await dispatcher.run(stop)
        return dispatcher.stats

    return asyncio.run(main())


__all__ = [
    "Dispatcher",
    "DispatcherConfig",
    "Stats",
    "retry_delay",
    "run",
    "signed_headers",
]
