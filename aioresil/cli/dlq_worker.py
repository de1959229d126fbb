"""``aioresil dlq worker``, ``dlq redrive`` and ``dlq unpark``: the scheduled redrive from a shell.

``dlq worker --handler module:function`` runs a :class:`~aioresil.stores.dlq_redrive.RedriveWorker`
until SIGINT/SIGTERM (handlers in flight finish first) or, with ``--exit-when-idle``, until
nothing is scheduled any more. Start as many as you like, on as many hosts: claims are
leased and renewed while the handler runs, so no entry runs in two workers at once (a worker
that loses a lease cancels that handler), and a worker killed with ``-9`` only delays its
entries by one lease. Policies per task type::

    aioresil --redis "$URL" dlq --dlq orders worker --handler ops.redrive:resend \\
        --policy send_email=delay=30,multiplier=2,max_delay=3600,max_attempts=6 \\
        --default-policy delay=60,max_attempts=3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from ..exceptions import AioresilError
from ..stores.dlq import DeadLetterQueue
from ..stores.dlq_redrive import Redrive, RedrivePolicy, RedriveWorker
from .common import CliError, load_handler, print_table

__all__ = ["add_redrive_parsers", "parse_policies", "run_redrive"]


def add_redrive_parsers(actions: Any, leaf: argparse.ArgumentParser, as_json: Any) -> None:
    """The ``worker``, ``redrive`` and ``unpark`` actions of ``aioresil dlq``."""
    from . import options as opt

    worker = actions.add_parser(
        "worker",
        parents=[leaf],
        help="run the scheduled redrive with --handler module:function",
        description="Redrive due entries with an async handler(dead_letter), on each task "
        "type's policy (backoff with jitter, then parked). Any number may run at once.",
    )
    worker.add_argument("--handler", metavar="MODULE:FUNC", help="async function to run")
    worker.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="TYPE=ITEMS",
        help="e.g. send_email=delay=30,multiplier=2,max_delay=600,jitter=0.1,max_attempts=5",
    )
    worker.add_argument("--default-policy", default="", metavar="ITEMS", help="other types")
    worker.add_argument(
        "--concurrency",
        type=opt.integer("--concurrency", 1),
        default=4,
        help="handlers at once (4)",
    )
    worker.add_argument(
        "--lease",
        type=opt.seconds("--lease", zero=False, most=86_400),
        default=30.0,
        help="seconds per claim (30)",
    )
    worker.add_argument(
        "--poll",
        type=opt.seconds("--poll", zero=False, most=3600),
        default=0.5,
        help="longest idle wait (0.5 s)",
    )
    worker.add_argument(
        "--exit-when-idle", action="store_true", help="exit once nothing is scheduled"
    )
    actions.add_parser(
        "redrive", parents=[leaf, as_json], help="the redrive schedule and parked entries"
    )
    unpark = actions.add_parser("unpark", parents=[leaf], help="reschedule a parked entry now")
    unpark.add_argument("entry_id", metavar="ID")


def parse_policies(
    items: list[str], default: str
) -> tuple[dict[str, RedrivePolicy], RedrivePolicy]:
    """``--policy TYPE=ITEMS`` options and ``--default-policy ITEMS``, checked."""
    policies: dict[str, RedrivePolicy] = {}
    try:
        for item in items:
            task_type, sep, rest = item.partition("=")
            if not sep or not task_type:
                raise ValueError(
                    f"--policy must look like TYPE=delay=30,max_attempts=5, got {item!r}"
                )
            policies[task_type] = RedrivePolicy.parse(rest)
        return policies, RedrivePolicy.parse(default)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None


async def run_redrive(args: argparse.Namespace, backend: Any) -> int:
    """Run one of the redrive actions on a connected backend."""
    dlq = DeadLetterQueue(backend, name=args.dlq)
    if args.action == "unpark":
        redrive = Redrive(dlq)
        if await redrive.unpark(args.entry_id):
            print(f"unparked {args.entry_id}: due now")
            return 0
        raise CliError(f"{args.entry_id!r} is not a parked entry of queue {dlq.name!r}")
    if args.action == "redrive":
        return await _show(Redrive(dlq), args.json)
    return await _work(dlq, args)


def prepare_worker(args: argparse.Namespace) -> tuple[Any, dict[str, RedrivePolicy], RedrivePolicy]:
    """Check the worker's options before connecting (errors name the option); single
    values (``--concurrency``, ``--lease``, ``--poll``) were checked while parsing."""
    if args.handler is None:
        raise CliError(
            "dlq worker needs --handler module:function, an async function that re-runs the "
            "task for one DeadLetter",
            2,
        )
    policies, default = parse_policies(args.policy, args.default_policy)
    return load_handler(args.handler), policies, default


async def _work(dlq: DeadLetterQueue, args: argparse.Namespace) -> int:
    handler, policies, default = prepare_worker(args)
    redrive = Redrive(dlq, policies=policies, default=default)
    worker = RedriveWorker(
        redrive, handler, lease=args.lease, concurrency=args.concurrency, poll=args.poll
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    watcher = None
    if args.exit_when_idle:

        async def watch() -> None:
            # Keeps polling through outages: a watcher that died on one failed read would
            # leave the worker running forever instead of exiting when the queue is idle.
            warned = False
            while True:
                await asyncio.sleep(args.poll)
                if worker.rounds == 0 or worker.busy:
                    continue  # not looked at the queue yet, or handlers still running
                try:
                    scheduled = (await redrive.stats()).scheduled
                except AioresilError as error:
                    if not warned:
                        warned = True
                        print(f"idle check failed, retrying: {error}", file=sys.stderr, flush=True)
                    continue
                if scheduled == 0:
                    worker.stop()
                    return

        watcher = loop.create_task(watch())
    print(f"redrive worker on queue {dlq.name!r} with {args.handler}", flush=True)
    try:
        stats = await worker.run()
    finally:
        if watcher is not None:
            watcher.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print(
        f"handled {stats.handled}, failed {stats.failed}, parked {stats.parked}, "
        f"lost leases {stats.lost_leases}",
        flush=True,
    )
    return 0


async def _show(redrive: Redrive, as_json: bool) -> int:
    stats = await redrive.stats()
    parked = await redrive.parked(limit=50)
    if as_json:
        body = stats.to_dict()
        body["parked_entries"] = [
            {
                "id": p.id,
                "task_type": p.task_type,
                "attempts": p.attempts,
                "error": f"{p.error_type or 'error'}: {p.error_message}",
            }
            for p in parked
        ]
        print(json.dumps(body, indent=2))
        return 0
    print(f"queue {redrive.dlq.name!r} redrive:")
    for key, value in stats.to_dict().items():
        if key != "queue":
            print(f"  {key:14} {value}")
    if parked:
        rows = [
            [
                p.id,
                p.task_type,
                str(p.attempts),
                f"{p.error_type or 'error'}: {p.error_message}"[:60],
            ]
            for p in parked
        ]
        print_table(["PARKED ID", "TYPE", "ATTEMPTS", "LAST ERROR"], rows, sys.stdout)
    return 0


def _error(letter: Any) -> str:
    return f"{letter.error_type or 'error'}: {letter.error_message}"
