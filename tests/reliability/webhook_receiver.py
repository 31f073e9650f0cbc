"""Webhook receivers for the dispatcher's tests: real HTTP servers on 127.0.0.1.

A `Receiver` is an aiohttp server running in its own thread and event loop
in the test process. It records every request it got (webhook-id,
timestamp, signature, body, when) and answers as its `behave` function says:
a status code, or HANG to hold the request without answering (until the
client gives up), after `delay` seconds. It can be stopped and started again on the same port: a
receiver that is down for a while.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

HANG = -1  # `behave` answer: hold the request until the client gives up


@dataclass(frozen=True)
class Received:
    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)["data"]  # type: ignore[no-any-return]

    @property
    def headers(self) -> dict[str, str]:
        return {
            "webhook-id": self.webhook_id,
            "webhook-timestamp": self.timestamp,
            "webhook-signature": self.signature,
        }


def free_port() -> int:
    """A free port below the ephemeral range: no outgoing connection takes it
    as its source port meanwhile (a client that connects to a port nobody
    listens on may otherwise end up connected to itself, holding the port a
    receiver is about to open)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10_000, max(low, 10_001))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found below the ephemeral range")


class Receiver:
    def __init__(
        self,
        behave: Callable[[Received], int] | None = None,
        *,
        secret: str | None = None,
        port: int | None = None,
        delay: float = 0.0,
    ) -> None:
        self.behave = behave or (lambda _: 204)
        self.delay = delay  # seconds each answer waits (after the request is recorded)
        self.secret = secret  # when set, every request is verified on arrival
        self.port = port or free_port()
        self.received: list[Received] = []
        self.verified = 0
        self.unverified = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        got = Received(
            request.headers.get("webhook-id", ""),
            request.headers.get("webhook-timestamp", ""),
            request.headers.get("webhook-signature", ""),
            body,
            time.monotonic(),
        )
        with self._lock:
            self.received.append(got)
            if self.secret is not None:
                try:
                    Webhook(self.secret).verify(body, got.headers)
                    self.verified += 1
                except WebhookVerificationError:
                    self.unverified += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.behave(got)
        if status == HANG:
            assert self._stopping is not None
            await self._stopping.wait()
            status = 503
        return web.Response(status=status, text="ok" if status < 300 else "no")

    def start(self) -> Receiver:
        ready = threading.Event()
        failed: list[BaseException] = []

        async def serve() -> None:
            self._stopping = asyncio.Event()
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            # A request whose client went away is cancelled (a hanging one
            # ends with the dispatcher's timeout); stopping waits 1 s at most.
            self._runner = web.AppRunner(
                app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                handler_cancellation=True,
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await site.start()
            ready.set()
            await self._stopping.wait()
            await self._runner.cleanup()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(serve())
            except BaseException as exc:  # reported by start()
                failed.append(exc)
                ready.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        assert ready.wait(10) and not failed, failed
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(15)
        self._loop = self._thread = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what arrived ------------------------------------------------------------------------

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def event_ids(self) -> Counter[int]:
        return Counter(r.event["event_id"] for r in self.snapshot())

    def wait_for(self, condition: Callable[[Receiver], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self):
            assert time.monotonic() < deadline, f"waited {timeout} s; received {len(self.received)}"
            time.sleep(0.05)
