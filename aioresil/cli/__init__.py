"""The ``aioresil`` command line (also ``python -m aioresil``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from .._version import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioresil",
        description="Asyncio-native resilience: circuit breakers, checkpoints, dead letters.",
    )
    parser.add_argument("--version", action="version", version=f"aioresil {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="watch a breaker guard a flaky simulated upstream (memory backend)",
        description="A simulated upstream goes down and comes back; a breaker guards it. "
        "Every state change is printed as it happens, then the final statistics.",
    )
    demo.add_argument("--calls", type=int, default=60, help="calls to make (default 60)")
    demo.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between calls (default 0.05, with --serve 0.25)",
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed of the upstream")
    demo.add_argument("--json", action="store_true", help="print the final stats as JSON")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="serve the live dashboard and repeat outages until Ctrl-C (needs uvicorn)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="--serve: interface (127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="--serve: port (8000; 0 = any)")
    demo.add_argument("--rounds", type=int, default=None, help="--serve: stop after N outages")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        if args.interval is None:
            args.interval = 0.25 if args.serve else 0.05
        if args.calls < 1 or args.interval < 0:
            parser.error("--calls must be >= 1 and --interval >= 0")
        if args.serve:
            from .demo_serve import serve_demo

            if args.rounds is not None and args.rounds < 1:
                parser.error("--rounds must be >= 1")
            if not 0 <= args.port <= 65535:
                parser.error("--port must be in 0..65535")
            try:
                return asyncio.run(
                    serve_demo(
                        host=args.host,
                        port=args.port,
                        calls=args.calls,
                        interval=args.interval,
                        seed=args.seed,
                        rounds=args.rounds,
                    )
                )
            except KeyboardInterrupt:
                return 0
        return asyncio.run(
            run_demo(calls=args.calls, interval=args.interval, seed=args.seed, as_json=args.json)
        )
    parser.print_help(sys.stderr)
    return 2
