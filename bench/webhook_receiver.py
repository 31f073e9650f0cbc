"""The benchmark's webhook receiver: `python -m bench.webhook_receiver PORT OUT`.

An aiohttp server on 127.0.0.1:PORT that answers every POST /hook at once
(204) and remembers its webhook-id and the wall-clock time it arrived;
GET /count says how many arrived. On SIGTERM it writes "<webhook-id>
<unix time>" lines to OUT and exits. A process of its own, so that its work
is not charged to the dispatcher or to the benchmark's writers.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from aiohttp import web


async def serve(port: int, out: Path) -> None:
    received: list[tuple[str, float]] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        received.append((request.headers.get("webhook-id", ""), time.time()))
        return web.Response(status=204)

    async def count(_: web.Request) -> web.Response:
        return web.Response(text=str(len(received)))

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", count)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()
    out.write_text("".join(f"{webhook_id} {at:.6f}\n" for webhook_id, at in received))


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
