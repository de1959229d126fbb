"""``aioresil serve``: the health app over HTTP with uvicorn (the ``aioresil[server]`` extra).

The served app reports every breaker found on Redis (rediscovered with ``SCAN`` at most every
``--discover-every`` seconds, before a breakers or metrics request; see
:mod:`aioresil.cli.breakers`) and the queue named by ``--dlq``. Admin routes are enabled when
the environment variable ``AIORESIL_ADMIN_TOKEN`` holds a token (an environment variable, not
an option, so the token never shows in ``ps``); ``--handler module:function`` enables the
HTTP retry route, one of the admin routes: without the token it is imported (a broken module
still fails at once) but unused, and a warning line on stderr says so (a warning, not a
refusal: the health endpoints are what ``serve`` is for).

Redis down at start is an outage, not a configuration error: ``serve`` starts anyway,
degraded, with one warning line on stderr (``/health`` 200, ``/health/ready`` 503,
``/metrics`` 200 with ``aioresil_backend_up 0``), and recovers by itself when Redis answers
again (the backend's background probe; breakers are rediscovered on the next request; one
line on stderr says so). Why: an orchestrator restarting a pod during an outage must still
find its probes answering, or liveness kills it in a loop and the outage's metrics vanish
with it; exiting would trade one outage for two. A mistake in the configuration is different:
a malformed URL (exit 2) or credentials Redis refuses (exit 1) end the command with one
line, because waiting would never fix them. (Credentials cannot be checked while Redis is
unreachable; wrong ones then show in ``/health/ready``'s error once it answers.)

It behaves like a server: it binds the port first (a busy port is one line on stderr and exit
1, before any banner), announces its URL once it accepts connections, and on SIGTERM finishes
the requests in flight and exits 0 (Ctrl-C: 130).
"""

from __future__ import annotations

import argparse
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
        health = self.registry.backend.health  # part of the backend contract (None: memory)
        if health is not None and not health.stats().up:
            return  # Redis known to be down: touch no socket; retried once its probe is back
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
    """What involves two options, checked before anything is bound or connected (exit 2, one
    line); each single value was checked while parsing (:mod:`aioresil.cli.options`)."""
    if not 0 <= args.dlq_warning <= args.dlq_critical:
        raise CliError(
            "need 0 <= --dlq-warning <= --dlq-critical, got "
            f"{args.dlq_warning} and {args.dlq_critical}",
            2,
        )


def _report_recovery(backend: Any) -> None:
    """One stderr line each time the backend is reachable again after an outage."""
    from ..backends.backend_health import BackendState, BackendStateChanged
    from .common import where_is

    def changed(event: BackendStateChanged) -> None:
        if event.new is BackendState.HEALTHY:
            print(
                f"aioresil serve: Redis at {where_is(backend)} is reachable again",
                file=sys.stderr,
                flush=True,
            )

    backend.health.subscribe(changed)


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
    if handler is not None and token is None:
        # Warn, not refuse: the health endpoints are what serve is for, and one manifest may
        # run with and without the admin secret; but never ignore an option silently.
        print(
            f"aioresil serve: warning: --handler is ignored: the HTTP retry route is an admin "
            f"route, and admin routes are off without {ENV_TOKEN}",
            file=sys.stderr,
            flush=True,
        )
    # Redis down at start is an outage, not a mistake: serve anyway, degraded (see the
    # module doc); a malformed URL or refused credentials still end here with exit 2 / 1.
    backend: Any = await connect(args, outage_ok=True)
    try:
        _report_recovery(backend)
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
        try:
            await wrapped.discover()
        except Exception:
            pass  # lost between the ping and the SCAN: retried on the next request
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
