"""``aioresil serve``: the health app over HTTP with uvicorn (the ``aioresil[server]`` extra).

The served app reports every breaker found on Redis (rediscovered with ``SCAN`` at most every
``--discover-every`` seconds, before a breakers or metrics request; see
:mod:`aioresil.cli.breakers`) and the queue named by ``--dlq``. Admin routes are enabled when
the environment variable ``AIORESIL_ADMIN_TOKEN`` holds a token (an environment variable, not
an option, so the token never shows in ``ps``); ``--handler module:function`` enables the
HTTP retry route, one of the admin routes: without the token the handler is still loaded
and checked (a bad one is an error) but no route runs it, and the banner says ``admin off``.

It behaves like a server: it binds the port first (a busy port is one line on stderr and exit
1, before any banner), announces its URL once it accepts connections, and on SIGTERM finishes
the requests in flight and exits 0 (Ctrl-C: 130).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
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


def _check_options(args: argparse.Namespace) -> None:
    """Every option checked before anything is bound or connected (exit 2, one line)."""
    if not 0 <= args.port < 65536:
        raise CliError(f"--port must be in 0..65535, got {args.port}", 2)
    if not 0 <= args.dlq_warning <= args.dlq_critical:
        raise CliError(
            "need 0 <= --dlq-warning <= --dlq-critical, got "
            f"{args.dlq_warning} and {args.dlq_critical}",
            2,
        )
    if not math.isfinite(args.cache_ttl) or args.cache_ttl < 0:
        raise CliError(f"--cache-ttl must be a number of seconds >= 0, got {args.cache_ttl}", 2)
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise CliError(f"--timeout must be a number of seconds > 0, got {args.timeout}", 2)
    if not math.isfinite(args.discover_every) or args.discover_every < 0:
        raise CliError(f"--discover-every must be >= 0 seconds, got {args.discover_every}", 2)
    if not args.service.strip():
        raise CliError("--service must not be empty", 2)


async def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 - only to say which extra is missing, up front
    except ImportError:
        raise CliError(
            "aioresil serve needs uvicorn: pip install 'aioresil[server]' "
            "(in a checkout: pip install -e '.[server]')"
        ) from None
    from ..web.server import bound_url, listen, serve_socket

    _check_options(args)
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
                service=args.service,
                dlq_warning_threshold=args.dlq_warning,
                dlq_critical_threshold=args.dlq_critical,
                open_circuit_is_unhealthy=args.open_circuit_is_unhealthy,
                cache_ttl=args.cache_ttl,
                timeout=args.timeout,
            )
        except (TypeError, ValueError) as exc:
            raise CliError(f"{ENV_TOKEN}: {exc}", 2) from None
        wrapped = DiscoveringApp(app, registry, args.discover_every)
        await wrapped.discover()
        try:
            sock = listen(args.host, args.port)
        except OSError as exc:
            message = exc.strerror or str(exc)
            raise CliError(f"cannot listen on {args.host}:{args.port}: {message}") from None
        with sock:
            base = bound_url(sock)

            def announce() -> None:
                board = "" if args.no_dashboard else f", dashboard on {base}/dashboard/"
                print(
                    f"aioresil health app on {base}/health{board} "
                    f"({len(registry)} breakers, queue {args.dlq!r}, admin "
                    f"{'on' if token else 'off'})",
                    flush=True,
                )

            code = await serve_socket(wrapped, sock, lifespan="on", on_started=announce)
        if code == 1:
            print("aioresil: error: the server did not start", file=sys.stderr)
        return code
    finally:
        await backend.aclose()
