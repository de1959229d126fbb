"""The ``aioresil`` command line (also ``python -m aioresil``).

``aioresil demo`` needs nothing (it runs on the memory backend unless a Redis URL is given);
every other command talks to Redis. Every command, the demo included, takes the URL from
``--redis URL`` or else the ``AIORESIL_REDIS_URL`` environment variable (``--redis`` and
``--prefix`` may come before or after the command). User mistakes and outages print one
line on stderr and exit non-zero: 2 for usage errors, 1 for everything else.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from ..exceptions import AioresilError
from . import options as opt
from .common import ENV_URL, CliError
from .options import OneLineParser

__all__ = ["build_parser", "main"]


def _connection_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=default,
        help=f"Redis URL, e.g. redis://127.0.0.1:6379/0 (default: ${ENV_URL})",
    )
    parser.add_argument(
        "--prefix",
        default="aioresil" if default is None else default,
        help="key prefix the application uses (default aioresil)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="aioresil",
        description="Asyncio-native resilience: circuit breakers, checkpoints, dead letters.",
    )
    parser.add_argument("--version", action="version", version=f"aioresil {__version__}")
    _connection_options(parser, None)
    # The same options after the command; SUPPRESS keeps a value given before it.
    shared = OneLineParser(add_help=False)
    _connection_options(shared, argparse.SUPPRESS)
    as_json = OneLineParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        parents=[shared],
        help="watch a breaker guard a flaky simulated upstream (memory, or Redis if given)",
        description="A simulated upstream goes down and comes back; a breaker guards it. "
        "Every state change is printed as it happens, then the final statistics. The breaker "
        f"(and with --serve the dead letters) live on --redis or ${ENV_URL} when one is "
        "given, else in memory.",
    )
    demo.add_argument(
        "--calls", type=opt.integer("--calls", 1), default=60, help="calls to make (default 60)"
    )
    demo.add_argument(
        "--interval",
        type=opt.seconds("--interval", most=3600),
        default=None,
        help="seconds between calls (default 0.05, with --serve 0.25)",
    )
    demo.add_argument(
        "--seed", type=opt.integer("--seed", 0), default=7, help="random seed of the upstream"
    )
    demo.add_argument("--json", action="store_true", help="print the final stats as JSON")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="serve the live dashboard and repeat outages until Ctrl-C (needs uvicorn)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="--serve: interface (127.0.0.1)")
    demo.add_argument(
        "--port",
        type=opt.integer("--port", 0, 65535),
        default=8000,
        help="--serve: port (8000; 0 = any)",
    )
    demo.add_argument(
        "--rounds",
        type=opt.integer("--rounds", 1),
        default=None,
        help="--serve: stop after N outages",
    )

    serve = commands.add_parser(
        "serve",
        parents=[shared],
        help="serve the health app over HTTP (needs aioresil[server])",
        description="Serve /health, /health/ready, /health/circuit-breakers, /health/dlq and "
        "/metrics for the breakers and the queue on Redis. Admin routes are on when "
        "AIORESIL_ADMIN_TOKEN is set.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=opt.integer("--port", 0, 65535), default=8000, help="port (default 8000)"
    )
    serve.add_argument(
        "--dlq", type=opt.name("--dlq", "queue"), default="default", help="dead letter queue name"
    )
    serve.add_argument(
        "--handler",
        metavar="MODULE:FUNC",
        help="enables the HTTP DLQ retry route (an admin route: needs AIORESIL_ADMIN_TOKEN)",
    )
    serve.add_argument(
        "--no-dashboard", action="store_true", help="do not serve the dashboard at /dashboard/"
    )
    serve.add_argument(
        "--service",
        type=opt.text("--service"),
        default="aioresil",
        help="service name /health reports (default aioresil)",
    )
    serve.add_argument(
        "--dlq-warning",
        type=opt.integer("--dlq-warning", 0),
        default=10,
        metavar="N",
        help="entries from which /health/dlq is degraded (default 10)",
    )
    serve.add_argument(
        "--dlq-critical",
        type=opt.integer("--dlq-critical", 0),
        default=50,
        metavar="N",
        help="entries from which /health/dlq is unhealthy, 503 (default 50)",
    )
    serve.add_argument(
        "--open-circuit-is-unhealthy",
        action="store_true",
        help="an open circuit makes /health/circuit-breakers 503 instead of degraded 200",
    )
    serve.add_argument(
        "--cache-ttl",
        type=opt.seconds("--cache-ttl"),
        default=0.0,
        metavar="SECONDS",
        help="reuse breaker/DLQ/metrics answers this long (default 0: read every time)",
    )
    serve.add_argument(
        "--timeout",
        type=opt.seconds("--timeout", zero=False),
        default=2.0,
        metavar="SECONDS",
        help="every route answers within this time (default 2; /metrics: local series)",
    )
    serve.add_argument(
        "--discover-every",
        type=opt.seconds("--discover-every"),
        default=10.0,
        metavar="SECONDS",
        help="rediscover breaker names with SCAN at most this often (default 10)",
    )

    breakers = commands.add_parser(
        "breakers",
        parents=[shared, as_json],
        help="table of every breaker on Redis; reset or force one open",
        description="Without an action: every breaker under --prefix (found with SCAN).",
    )
    actions = breakers.add_subparsers(dest="action", metavar="ACTION")
    for action, text in (("reset", "close it, clear counters"), ("open", "force it open")):
        one = actions.add_parser(action, parents=[shared], help=text, description=text)
        one.add_argument("name", type=opt.name("NAME", "breaker"), help="breaker name")

    dlq = commands.add_parser(
        "dlq",
        parents=[shared],
        help="inspect, retry and purge a dead letter queue",
        description="Inspect, retry and purge a dead letter queue on Redis.",
    )
    queue = opt.name("--dlq", "queue")
    dlq.add_argument("--dlq", type=queue, default="default", help="queue name (default 'default')")
    leaf = OneLineParser(add_help=False, parents=[shared])
    leaf.add_argument(
        "--dlq", type=queue, default=argparse.SUPPRESS, help="queue name (default 'default')"
    )
    of_type = opt.task_type("--type")
    dlq_actions = dlq.add_subparsers(dest="action", metavar="ACTION")
    dlq_actions.add_parser(
        "queues",
        parents=[leaf, as_json],
        help="the queues that hold entries, with their counts (SCAN)",
        description="Every queue under --prefix holding at least one entry: a mistyped "
        "--dlq reads as an empty queue, this shows the names that exist.",
    )
    dlq_actions.add_parser("stats", parents=[leaf, as_json], help="statistics")
    listing = dlq_actions.add_parser("list", parents=[leaf, as_json], help="newest entries")
    listing.add_argument("--type", type=of_type, help="only this task type")
    listing.add_argument(
        "--limit",
        type=opt.integer("--limit", 1, 1000),
        default=20,
        help="entries (1..1000, default 20)",
    )
    listing.add_argument(
        "--cursor",
        type=opt.cursor("--cursor"),
        help="continue after the previous page: its next_cursor (printed by --json and the table)",
    )
    show = dlq_actions.add_parser("show", parents=[leaf, as_json], help="one entry, in full")
    show.add_argument("entry_id", metavar="ID")
    retry = dlq_actions.add_parser(
        "retry",
        parents=[leaf],
        help="retry one entry or all with --handler module:function",
        description="Run an async handler(dead_letter) on the entry under a lease: removed "
        "when it returns, kept with attempts+1 when it raises.",
    )
    retry.add_argument("entry_id", metavar="ID", nargs="?")
    retry.add_argument("--all", action="store_true", help="every entry (of --type)")
    retry.add_argument("--type", type=of_type, help="with --all: only this task type")
    retry.add_argument("--handler", metavar="MODULE:FUNC", help="async function to run")
    retry.add_argument(
        "--concurrency",
        type=opt.integer("--concurrency", 1),
        default=10,
        help="with --all (default 10)",
    )
    retry.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge = dlq_actions.add_parser("purge", parents=[leaf], help="delete old entries")
    purge.add_argument(
        "--older-than",
        type=opt.duration("--older-than"),
        required=True,
        metavar="DURATION",
        help="e.g. 7d, 12h, 90s; 0 = all",
    )
    purge.add_argument("--type", type=of_type, help="only this task type")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    from .dlq_worker import add_redrive_parsers

    add_redrive_parsers(dlq_actions, leaf, as_json)
    return parser


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from .serve import run_serve

        return await run_serve(args)
    if args.command == "breakers":
        from .breakers import run_breakers

        return await run_breakers(args)
    from .dlq import run_dlq

    return await run_dlq(args)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.interval is None:
        args.interval = 0.25 if args.serve else 0.05
    if not args.serve:
        return asyncio.run(_demo_run(args, run_demo))
    try:
        return asyncio.run(_demo_run(args, None))
    except KeyboardInterrupt:
        return 0


async def _demo_run(args: argparse.Namespace, run_demo: Any) -> int:
    """The demo (``run_demo``, or ``--serve``'s when ``None``) on the memory backend, or on
    Redis when a URL is given by ``--redis`` or ``AIORESIL_REDIS_URL``, exactly as every
    other command finds it (never ignored)."""
    backend = None
    if args.redis or os.environ.get(ENV_URL):
        from .common import connect

        backend = await connect(args)
    try:
        if run_demo is None:
            from .demo_serve import serve_demo

            return await serve_demo(
                host=args.host,
                port=args.port,
                calls=args.calls,
                interval=args.interval,
                seed=args.seed,
                rounds=args.rounds,
                backend=backend,
            )
        code: int = await run_demo(
            calls=args.calls,
            interval=args.interval,
            seed=args.seed,
            as_json=args.json,
            backend=backend,
        )
        return code
    finally:
        if backend is not None:
            await backend.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    import structlog

    # Commands print their own results; keep the library's log lines for real errors.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        if args.command == "demo":
            return _demo(args)
        return asyncio.run(_dispatch(args))
    except CliError as exc:
        print(f"aioresil: error: {exc}", file=sys.stderr)
        return exc.code
    except (AioresilError, ValueError, TypeError) as exc:
        print(f"aioresil: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aioresil: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_left()
    except ImportError as exc:
        print(f"aioresil: error: a module is missing: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aioresil: error: {exc}", file=sys.stderr)
        return 1


def _reader_left() -> int:
    """`aioresil dlq list --json | head`: the reader left; exit quietly, as Unix tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141
