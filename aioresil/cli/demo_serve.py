"""``aioresil demo --serve``: the flaky-upstream demo with the live dashboard open.

A newcomer runs one command and watches, in a browser, a circuit open during an outage,
reject calls, let a trial through and close again, while the failed calls pile up as dead
letters. Everything is in memory (on Redis when the command line gives a URL: ``aioresil
--redis URL demo --serve`` or ``AIORESIL_REDIS_URL``) and served on 127.0.0.1 by default;
the admin token for the dashboard's actions is random and printed once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from typing import Any

import structlog

from ..core.config import BreakerConfig
from ..dashboard import dashboard_app
from ..events import BreakerEvent, StateChanged
from ..exceptions import CircuitOpenError
from ..registry import BreakerRegistry
from ..stores.dlq import DeadLetterQueue
from ..stores.dlq_records import DeadLetter
from ..web.server import bound_url, listen
from .demo import FlakyUpstream, UpstreamError

__all__ = ["serve_demo"]


async def serve_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    calls: int = 60,
    interval: float = 0.25,
    seed: int = 7,
    rounds: int | None = None,
    backend: Any = None,
) -> int:
    """Serve the dashboard and run ``rounds`` outage cycles (forever when ``None``).

    Args:
        host: interface to listen on (loopback by default: the demo has no authentication
            beyond its admin token).
        port: TCP port; 0 picks a free one (printed).
        calls: calls per round; the upstream is down from 25% to 55% of each round.
        interval: seconds between calls (slow enough to watch by default).
        seed: random seed of the upstream's background error rate.
        rounds: how many outage cycles to run before stopping; ``None`` runs until Ctrl-C.
        backend: where the breakers and the ``demo`` queue live; ``None``: in memory.

    Returns the process exit code.
    """
    try:
        import uvicorn
    except ImportError:
        print(
            "aioresil demo --serve needs uvicorn: pip install 'aioresil[server]' "
            "(in a checkout: pip install -e '.[server]')",
            file=sys.stderr,
        )
        return 2
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        sock = listen(host, port)
    except OSError as exc:
        print(f"aioresil demo --serve: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1

    registry = BreakerRegistry(backend=backend)
    config = BreakerConfig(
        failure_threshold=3, recovery_timeout=max(interval * 12, 0.05), success_threshold=2
    )
    breaker = registry.get("upstream", config)
    registry.get("search", BreakerConfig(failure_threshold=5))  # a healthy neighbour
    dlq = DeadLetterQueue(backend, name="demo")
    if backend is not None:  # a previous run's circuits on Redis: start closed
        for one in registry:
            await one.reset()
    current = FlakyUpstream(calls, seed)
    call_no = 0

    async def retry(letter: DeadLetter) -> None:
        async with breaker:
            await current.request(call_no)

    token = secrets.token_urlsafe(16)
    app = dashboard_app(
        registry=registry, dlq=dlq, admin_token=token, retry_handler=retry, title="aioresil demo"
    )
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", ws="none", log_level="warning", access_log=False)
    )
    served = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not served.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.01)
    if served.done():
        served.result()
        return 1
    print(f"dashboard: {bound_url(sock)}/", flush=True)
    print(f"admin token (reset breakers, retry dead letters): {token}", flush=True)
    print("an outage hits the upstream from 25% to 55% of every round; Ctrl-C stops", flush=True)
    if backend is not None:
        print(f"breakers and the 'demo' queue on {type(backend).__name__}", flush=True)

    def show(event: BreakerEvent) -> None:
        if isinstance(event, StateChanged):
            print(f"{event.name}: {event.old.value} -> {event.new.value}", flush=True)

    breaker.add_listener(show)
    search = registry.get("search")
    done = 0
    try:
        while (rounds is None or done < rounds) and not server.should_exit:
            current = FlakyUpstream(calls, seed + done)
            for call_no in range(calls):  # call_no is read by retry()
                if server.should_exit:
                    break
                try:
                    async with breaker:
                        await current.request(call_no)
                except CircuitOpenError:
                    pass
                except UpstreamError as exc:
                    await dlq.push("upstream_call", {"round": done, "call": call_no}, exc)
                async with search:
                    pass
                await asyncio.sleep(interval)
            done += 1
    finally:
        server.should_exit = True
        await served
    print(f"stopped after {done} round(s); {await dlq.count()} dead letters", flush=True)
    return 0
