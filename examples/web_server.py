"""A Starlette service that calls a flaky upstream over HTTP, one circuit breaker per
upstream, with the health endpoints and the live dashboard mounted next to its own routes.

What it shows:

* **A breaker around every HTTP call, without touching the call.** ``GET /quote/{upstream}``
  asks the upstream for a quote with an ``httpx.AsyncClient`` whose transport is
  :class:`aioresil.integrations.httpx.ResilientTransport`: the call site is a plain
  ``await client.get(...)``. The transport picks the breaker by the upstream's name in the
  path (``key=``), and classifies: a 5xx answer or a transport error (refused connection,
  timeout) counts as a failure; a 4xx is the upstream answering, so it never opens a circuit.
  After
  ``--failure-threshold`` failures in a row the circuit opens and the route answers **503 at
  once, without touching the upstream**, with ``retry_after`` in the JSON body and a
  ``Retry-After`` header (whole seconds, at least 1). After ``--recovery-timeout`` one trial
  call at a time goes through; 2 successes close the circuit again.
* **One breaker per upstream, from one** :class:`~aioresil.BreakerRegistry`: ``acme`` failing
  does not stop calls to ``globex``. Only known upstream names get a breaker (an unknown one is
  a 404), so a client cannot grow the registry without bound.
* **Shared through Redis.** With ``--redis URL`` the breakers live in Redis (one
  ``RedisBackend``, one connection pool): several copies of this service (different
  ``--port``, the same ``--redis`` and ``--upstream-url``) share each circuit, and when one copy
  trips it the others stop calling within milliseconds. Without ``--redis``: memory backend.
* **Health and dashboard.** ``health_app(registry=..., dashboard=True)`` is mounted with
  ``Mount("/ops", app=...)``. Its routes are relative to its mount point and already start
  with ``/health`` (``/health``, ``/health/ready``, ``/health/circuit-breakers``, ``/metrics``,
  ``/dashboard/``), so mounting it at ``/health`` would give ``/health/health/ready``; at
  ``/ops`` every operational URL sits under one prefix, apart from the service's own routes:

  =====================================  ==============================================
  ``GET /quote/{upstream}``              the guarded route (``acme``, ``globex``)
  ``GET /ops/health``                    liveness (never touches Redis)
  ``GET /ops/health/ready``              readiness: pings the backend
  ``GET /ops/health/circuit-breakers``   every breaker's state and counters
  ``GET /ops/metrics``                   Prometheus text
  ``GET /ops/dashboard/``                the live dashboard (read-only)
  =====================================  ==============================================

* **The simulated upstream** is a second tiny ASGI app served by uvicorn on another loopback
  port, in the same process and event loop: ``GET /quote/{name}`` answers 200 with a price, or
  503 while ``name`` is switched to failing; ``PUT /control/{name}`` with
  ``{"mode": "failing"}`` or ``{"mode": "healthy"}`` switches it; ``GET /control`` shows the
  modes and how many quote requests each name received (which is how you can see that an open
  circuit really spares the upstream).

Run it (no internet needed; ``pip install -e '.[redis,server]' starlette httpx`` first)::

    python examples/web_server.py                     # memory backend, ports 8000 and 8001
    python examples/web_server.py --redis redis://127.0.0.1:6379/0 --recovery-timeout 5

    curl -s http://127.0.0.1:8000/quote/acme                                  # 200
    curl -s -X PUT -d '{"mode": "failing"}' http://127.0.0.1:8001/control/acme
    for i in 1 2 3 4; do curl -si http://127.0.0.1:8000/quote/acme | head -1; done  # 502 x3, 503
    curl -s http://127.0.0.1:8000/ops/health/circuit-breakers                 # acme: open
    curl -s http://127.0.0.1:8001/control                                     # acme: 3 requests
    curl -s -X PUT -d '{"mode": "healthy"}' http://127.0.0.1:8001/control/acme
    # after the recovery timeout: two successful trial calls close the circuit again

Everything listens on 127.0.0.1 only; ``--port 0`` / ``--upstream-port 0`` pick free ports
(the URLs are printed once both servers accept connections; ``--json`` prints them as JSON).
Ctrl-C (or SIGTERM) stops both servers and closes the backend.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import httpx
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from aioresil import (
    AioresilError,
    BreakerConfig,
    BreakerRegistry,
    CircuitOpenError,
    MemoryBackend,
    health_app,
)
from aioresil.integrations.httpx import ResilientTransport

HOST = "127.0.0.1"
UPSTREAMS = ("acme", "globex")
MODES = ("healthy", "failing")


def breaker_config(*, failure_threshold: int = 3, recovery_timeout: float = 10.0) -> BreakerConfig:
    """The rules of every upstream's circuit (the tests read the shared state with it too).

    What counts as a failure is the transport's business (5xx, 429, transport errors), not
    the config's: ``record_exceptions`` stays at its default.
    """
    return BreakerConfig(
        failure_threshold=failure_threshold,
        recovery_timeout=recovery_timeout,
        half_open_max_calls=1,  # one trial at a time: a recovering upstream gets no herd
        success_threshold=2,
    )


def upstream_of(request: httpx.Request) -> str:
    """The breaker's name: the upstream named in ``/quote/{name}`` (one circuit per upstream)."""
    parts = request.url.path.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "quote" else request.url.host


# ---------------------------------------------------------------------------- the service


def create_app(registry: BreakerRegistry, upstream_url: str, *, timeout: float = 2.0) -> Starlette:
    """The service: ``GET /quote/{upstream}`` guarded by ``registry``, the health app at ``/ops``.

    The ``httpx.AsyncClient`` (one connection pool for every request) lives as long as the app:
    opened and closed by the lifespan. ``trust_env=False``: a proxy set in the environment must
    not capture loopback traffic.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        transport = ResilientTransport(registry=registry, key=upstream_of)
        async with httpx.AsyncClient(
            base_url=upstream_url, timeout=timeout, trust_env=False, transport=transport
        ) as client:
            app.state.client = client
            yield

    async def quote(request: Request) -> JSONResponse:
        name = request.path_params["upstream"]
        if name not in UPSTREAMS:
            body: dict[str, Any] = {
                "error": f"unknown upstream {name!r}",
                "upstreams": [*UPSTREAMS],
            }
            return JSONResponse(body, status_code=404)
        client: httpx.AsyncClient = request.app.state.client
        try:
            response = await client.get(f"/quote/{name}")  # CircuitOpenError at once while open
        except CircuitOpenError as error:
            # retry_after is None while every trial permit of a half-open circuit is taken.
            wait = error.retry_after
            headers = {"Retry-After": str(max(1, math.ceil(wait or 0)))}
            body = {
                "error": "circuit open: upstream not called",
                "upstream": name,
                "state": error.state.value,
                "retry_after": wait,
            }
            return JSONResponse(body, status_code=503, headers=headers)
        except httpx.TransportError as error:
            body = {"error": f"{type(error).__name__}: {error}", "upstream": name}
            return JSONResponse(body, status_code=502)
        if response.status_code >= 500:  # counted as a failure by the transport
            body = {"error": f"upstream {name!r} answered {response.status_code}", "upstream": name}
            return JSONResponse(body, status_code=502)
        return JSONResponse({"upstream": name, **response.json()}, status_code=response.status_code)

    async def index(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "quote": [f"/quote/{name}" for name in UPSTREAMS],
                "health": "/ops/health",
                "ready": "/ops/health/ready",
                "circuit_breakers": "/ops/health/circuit-breakers",
                "metrics": "/ops/metrics",
                "dashboard": "/ops/dashboard/",
            }
        )

    for name in UPSTREAMS:
        registry.get(name)  # up front, so the health endpoint lists every circuit at once
    return Starlette(
        routes=[
            Route("/", index),
            Route("/quote/{upstream}", quote),
            Mount("/ops", app=health_app(registry=registry, dashboard=True)),
        ],
        lifespan=lifespan,
    )


# ---------------------------------------------------------------------------- the upstream


class FlakyUpstream:
    """The simulated upstream: an ASGI app whose names can be switched to failing.

    ``requests`` counts the quote requests each name received (control calls do not count).
    """

    def __init__(self) -> None:
        self.modes = dict.fromkeys(UPSTREAMS, "healthy")
        self.requests = dict.fromkeys(UPSTREAMS, 0)
        self.app = Starlette(
            routes=[
                Route("/quote/{name}", self.quote),
                Route("/control", self.status),
                Route("/control/{name}", self.switch, methods=["PUT"]),
            ]
        )

    async def quote(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if name not in self.modes:
            return JSONResponse({"error": f"no such symbol {name!r}"}, status_code=404)
        self.requests[name] += 1
        if self.modes[name] == "failing":
            return JSONResponse({"error": "service unavailable"}, status_code=503)
        price = round(100 + 7.5 * (self.requests[name] % 10), 2)
        return JSONResponse({"price": price, "served": self.requests[name]})

    async def status(self, request: Request) -> JSONResponse:
        return JSONResponse({"modes": self.modes, "requests": self.requests})

    async def switch(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if name not in self.modes:
            return JSONResponse({"error": f"no such symbol {name!r}"}, status_code=404)
        try:
            mode = (await request.json())["mode"]
        except (ValueError, KeyError, TypeError):
            mode = None
        if mode not in MODES:
            return JSONResponse({"error": f'send {{"mode": one of {list(MODES)}}}'}, 400)
        self.modes[name] = mode
        return JSONResponse({"name": name, "mode": mode})


# ---------------------------------------------------------------------------- running both


class _Server(uvicorn.Server):
    """uvicorn's server minus its own signal handlers: two servers share one event loop here,
    and :func:`serve` stops both together on SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(port: int) -> socket.socket:
    """A listening socket on the loopback interface (``port`` 0: any free port).

    ``IPPROTO_TCP``, not the default protocol 0: asyncio sets ``TCP_NODELAY`` only on accepted
    sockets of that protocol, and without it every keep-alive response waits ~40 ms for the
    client's delayed ACK (uvicorn writes the head and the body separately).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace) -> int:
    backend: Any = MemoryBackend()
    if args.redis:
        from aioresil import RedisBackend

        backend = RedisBackend.from_url(args.redis, prefix=args.prefix)
        try:
            await backend.ping()  # fail now, in one line, rather than on the first request
        except AioresilError:
            await backend.aclose()
            raise
    sockets: list[socket.socket] = []
    try:
        servers: list[_Server] = []  # served on sockets[i]
        upstream_url = args.upstream_url
        if upstream_url is None:
            sockets.append(bind(args.upstream_port))
            upstream_url = f"http://{HOST}:{sockets[-1].getsockname()[1]}"
            servers.append(_server(FlakyUpstream().app, lifespan="off"))
        app_sock = bind(args.port)
        sockets.append(app_sock)
        registry = BreakerRegistry(
            backend=backend,
            default_config=breaker_config(
                failure_threshold=args.failure_threshold, recovery_timeout=args.recovery_timeout
            ),
        )
        app = create_app(registry, upstream_url, timeout=args.timeout)
        servers.append(_server(app, lifespan="on"))

        def stop() -> None:
            for server in servers:
                server.should_exit = True

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop)
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(servers, sockets, strict=True)
        ]
        while not all(s.started for s in servers) and not any(t.done() for t in tasks):  # noqa: ASYNC110 - uvicorn has no started event
            await asyncio.sleep(0.01)
        if all(s.started for s in servers):
            announce(args, f"http://{HOST}:{app_sock.getsockname()[1]}", upstream_url)
        # One server ending (a startup error, or the signal) ends the other one too.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        return 0 if all(s.started for s in servers) else 1
    finally:
        for sock in sockets:
            sock.close()
        if args.redis:
            await backend.aclose()


def _server(app: Any, *, lifespan: Literal["on", "off"]) -> _Server:
    return _Server(
        uvicorn.Config(app, lifespan=lifespan, ws="none", log_level="warning", access_log=False)
    )


def announce(args: argparse.Namespace, app_url: str, upstream_url: str) -> None:
    urls = {
        "app": app_url,
        "upstream": upstream_url,
        "backend": "redis" if args.redis else "memory",
        "health": f"{app_url}/ops/health",
        "circuit_breakers": f"{app_url}/ops/health/circuit-breakers",
        "dashboard": f"{app_url}/ops/dashboard/",
    }
    if args.json:
        print(json.dumps(urls, sort_keys=True), flush=True)
        return
    print(f"serving    {app_url}  (breakers on {urls['backend']})", flush=True)
    print(f'upstream   {upstream_url}  (PUT /control/acme {{"mode": "failing"}})', flush=True)
    print(f"try        curl {app_url}/quote/acme", flush=True)
    print(f"breakers   {urls['circuit_breakers']}", flush=True)
    print(f"dashboard  {urls['dashboard']}   (Ctrl-C stops)", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", metavar="URL", help="Redis URL (default: memory backend)")
    parser.add_argument("--prefix", default="aioresil", help="Redis key prefix (aioresil)")
    parser.add_argument("--port", type=int, default=8000, help="the service's port (0: any)")
    parser.add_argument(
        "--upstream-port", type=int, default=8001, help="the simulated upstream's port (0: any)"
    )
    parser.add_argument(
        "--upstream-url", metavar="URL", help="use this running upstream instead of starting one"
    )
    parser.add_argument("--failure-threshold", type=int, default=3, help="failures that open")
    parser.add_argument(
        "--recovery-timeout", type=float, default=10.0, help="seconds open before a trial"
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="upstream request seconds")
    parser.add_argument("--json", action="store_true", help="print the URLs as one JSON line")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.failure_threshold < 1 or args.recovery_timeout <= 0 or args.timeout <= 0:
        parser.error("--failure-threshold must be >= 1, --recovery-timeout and --timeout > 0")
    # The example prints its own lines; keep aioresil's structlog lines for errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        return asyncio.run(serve(args))
    except (AioresilError, OSError) as exc:  # the port is taken, Redis down: one line
        print(f"web_server: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
