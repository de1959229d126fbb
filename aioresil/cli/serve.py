"""``aioresil serve``: the health app over HTTP with uvicorn (the ``aioresil[server]`` extra).

The served app reports every breaker found on Redis (rediscovered with ``SCAN`` at most every
``--discover-every`` seconds, before a breakers or metrics request; see
:mod:`aioresil.cli.breakers`) and the queue named by ``--dlq``. Admin routes are enabled when
the environment variable ``AIORESIL_ADMIN_TOKEN`` holds a token (an environment variable, not
an option, so the token never shows in ``ps``); ``--handler module:function`` enables the
HTTP retry route.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from ..health.app import HealthApp, Receive, Scope, Send, health_app
from ..registry import BreakerRegistry
from ..stores.dlq import DeadLetterQueue
from .breakers import discover_names
from .common import CliError, connect, load_handler

__all__ = ["DiscoveringApp", "run_serve"]

ENV_TOKEN = "AIORESIL_ADMIN_TOKEN"
_DISCOVER_PATHS = frozenset({"/health/circuit-breakers", "/metrics"})


class DiscoveringApp:
    """Wraps a :class:`HealthApp` and adds breakers found on Redis to its registry."""

    def __init__(self, app: HealthApp, registry: BreakerRegistry, every: float) -> None:
        self.app = app
        self.registry = registry
        self.every = every
        self._last = float("-inf")

    async def discover(self) -> None:
        for name in await discover_names(self.registry.backend):
            if name not in self.registry:
                self.registry.get(name)
        self._last = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].rstrip("/") in _DISCOVER_PATHS
            and time.monotonic() - self._last >= self.every
        ):
            try:
                await self.discover()
            except Exception:
                pass  # Redis down: the app reports that itself, from the breakers it knows
        await self.app(scope, receive, send)


async def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise CliError("aioresil serve needs uvicorn: pip install 'aioresil[server]'") from None
    if not 0 < args.port < 65536:
        raise CliError(f"--port must be in 1..65535, got {args.port}", 2)
    handler = load_handler(args.handler) if args.handler else None
    token = os.environ.get(ENV_TOKEN) or None
    backend: Any = await connect(args)
    try:
        registry = BreakerRegistry(backend=backend)
        dlq = DeadLetterQueue(backend, name=args.dlq)
        try:
            app = health_app(
                registry=registry,
                dlq=dlq,
                admin_token=token,
                dlq_retry_handler=handler,
                dashboard=not args.no_dashboard,
            )
        except ValueError as exc:
            raise CliError(f"{ENV_TOKEN}: {exc}", 2) from None
        wrapped = DiscoveringApp(app, registry, args.discover_every)
        await wrapped.discover()
        config = uvicorn.Config(
            wrapped, host=args.host, port=args.port, log_level="warning", lifespan="on"
        )
        base = f"http://{args.host}:{args.port}"
        board = "" if args.no_dashboard else f", dashboard on {base}/dashboard/"
        print(
            f"aioresil health app on {base}/health{board} "
            f"({len(registry)} breakers, queue {args.dlq!r}, admin "
            f"{'on' if token else 'off'})",
            flush=True,
        )
        await uvicorn.Server(config).serve()
    finally:
        await backend.aclose()
    return 0
