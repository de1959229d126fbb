"""``aioresil dlq``: inspect, retry and purge a dead letter queue on Redis.

Retrying from a shell: the CLI cannot run your task by itself, so ``dlq retry`` imports the
function that can, ``--handler module:function`` (an ``async def handler(dead_letter)``; the
current directory is importable). It runs under the queue's lease exactly like
:meth:`DeadLetterQueue.retry`: the entry is deleted when the handler returns, and kept with
``attempts + 1`` and the new error when it raises. Example::

    # ops/redrive.py
    async def resend(letter):
        await queue.enqueue(letter.task_type, letter.payload, key=letter.idempotency_key)

    aioresil --redis "$URL" dlq retry --all --type send_email --handler ops.redrive:resend
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from ..stores.dlq import DeadLetterQueue
from ..stores.dlq_records import DeadLetter, RetryReport
from .common import (
    CliError,
    ProgressBar,
    confirm,
    connect,
    load_handler,
    print_table,
    scan_names,
)

__all__ = ["entries", "letter_to_dict", "run_dlq"]


def entries(count: int, what: str = "") -> str:
    """``"1 entry"``, ``"3 entries"``, ``"1 entry of type 'x'"``."""
    return f"{count} {'entry' if count == 1 else 'entries'}{what}"


def letter_to_dict(letter: DeadLetter, *, full: bool) -> dict[str, Any]:
    """JSON-ready entry; ``full`` adds the payload, traceback and metadata (``show``)."""
    body: dict[str, Any] = {
        "id": letter.id,
        "task_type": letter.task_type,
        "task_id": letter.task_id,
        "attempts": letter.attempts,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "first_failed_at": letter.first_failed_at.isoformat(),
        "failed_at": letter.failed_at.isoformat(),
    }
    if full:
        body["payload"] = letter.payload
        body["metadata"] = dict(letter.metadata)
        body["traceback"] = letter.traceback
    return body


async def run_dlq(args: argparse.Namespace) -> int:
    if args.action is None:
        raise CliError(
            "dlq needs an action: queues, stats, list, show, retry, purge, worker, redrive or "
            "unpark",
            2,
        )
    if args.action in ("worker", "redrive", "unpark"):
        from .dlq_worker import prepare_worker, run_redrive

        if args.action == "worker":
            prepare_worker(args)  # bad options fail before connecting
        redrive_backend = await connect(args)
        try:
            return await run_redrive(args, redrive_backend)
        finally:
            await redrive_backend.aclose()
    handler = None
    if args.action == "retry":
        if args.entry_id is None and not args.all:
            raise CliError("dlq retry needs an entry ID or --all", 2)
        if args.entry_id is not None and args.all:
            raise CliError("dlq retry takes an entry ID or --all, not both", 2)
        if args.handler is None:
            raise CliError(
                "dlq retry needs --handler module:function, an async function that re-runs the "
                "task for one DeadLetter (the CLI cannot run your task by itself)",
                2,
            )
        handler = load_handler(args.handler)
    backend = await connect(args)
    try:
        if args.action == "queues":
            return await _queues(backend, args.json)
        dlq = DeadLetterQueue(backend, name=args.dlq)
        if args.action == "stats":
            return await _stats(dlq, args.json)
        if args.action == "list":
            return await _list(dlq, args)
        if args.action == "show":
            return await _show(dlq, args.entry_id, args.json)
        if args.action == "retry":
            assert handler is not None
            if args.all:
                return await _retry_all(dlq, handler, args)
            return await _retry_one(dlq, handler, args.entry_id)
        return await _purge(dlq, args)
    finally:
        await backend.aclose()


async def queue_names(backend: Any) -> list[str]:
    """The queues under the backend's prefix that hold entries now, sorted.

    Found with ``SCAN MATCH <prefix>:{dlq:*}:idx COUNT 1000``, as ``aioresil breakers`` finds
    breakers (no central index to keep on the push path): a queue's time index exists exactly
    while it holds an entry (Redis deletes an emptied sorted set), so the answer is accurate
    and a queue emptied by retries or purges is, rightly, not listed. Cost grows with the
    database: an operator's command, never a request path.
    """
    return await scan_names(backend, "dlq", "idx")


async def _queues(backend: Any, as_json: bool) -> int:
    counts = {
        name: await DeadLetterQueue(backend, name=name).count()
        for name in await queue_names(backend)
    }
    if as_json:
        print(json.dumps(counts, indent=2))
        return 0
    if not counts:
        print(f"no queue under prefix {backend.prefix!r} holds entries")
        return 0
    rows = [[name, str(count)] for name, count in counts.items()]
    print_table(["QUEUE", "ENTRIES"], rows, sys.stdout)
    return 0


async def _stats(dlq: DeadLetterQueue, as_json: bool) -> int:
    stats = (await dlq.stats()).to_dict()
    if as_json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"queue {dlq.name!r}: {entries(stats['total_failed_tasks'])}")
    if stats["total_failed_tasks"] == 0:
        # an empty queue and a mistyped name look alike: point at the names that exist
        print("  (empty, or no such queue: 'aioresil dlq queues' lists those holding entries)")
    for key in (
        "recent_failures_24h",
        "oldest_failure",
        "newest_failure",
        "in_flight",
        "evicted",
        "expired",
    ):
        if key in stats:
            value = stats[key]
            print(f"  {key:22} {'-' if value is None else value}")
    if stats["failures_by_task_type"]:
        print("  by task type:")
        for task_type, count in stats["failures_by_task_type"].items():
            print(f"    {task_type:20} {count}")
    return 0


async def _list(dlq: DeadLetterQueue, args: argparse.Namespace) -> int:
    page = await dlq.list(task_type=args.type, limit=args.limit, cursor=args.cursor)
    if args.json:
        entries = [letter_to_dict(letter, full=False) for letter in page.entries]
        body = {
            "entries": entries,
            "more": page.next_cursor is not None,
            "next_cursor": page.next_cursor,  # pass it back as --cursor for the next page
        }
        print(json.dumps(body, indent=2))
        return 0
    if not page.entries:
        print(
            f"queue {dlq.name!r} has no entries" + (f" of type {args.type!r}" if args.type else "")
        )
        return 0
    rows = [
        [
            letter.id,
            letter.task_type,
            str(letter.attempts),
            letter.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{letter.error_type or 'error'}: {letter.error_message}"[:60],
        ]
        for letter in page.entries
    ]
    print_table(["ID", "TYPE", "ATTEMPTS", "FAILED AT (UTC)", "ERROR"], rows, sys.stdout)
    if page.next_cursor is not None:
        print(f"({len(rows)} shown, newest first; more follow)")
        print(f"next page: {_next_page(dlq, args, page.next_cursor)}")
    return 0


def _next_page(dlq: DeadLetterQueue, args: argparse.Namespace, next_cursor: str) -> str:
    """The command that lists the following page, quoted for a POSIX shell. The Redis URL is
    left out (it may hold a password): the same ``--redis`` or ``AIORESIL_REDIS_URL`` applies."""
    words = ["aioresil"]
    if args.prefix != "aioresil":
        words += ["--prefix", args.prefix]
    words += ["dlq", "--dlq", dlq.name, "list"]
    if args.type is not None:
        words += ["--type", args.type]
    words += ["--limit", str(args.limit), "--cursor", next_cursor]
    return shlex.join(words)


async def _get(dlq: DeadLetterQueue, entry_id: str) -> DeadLetter:
    letter = await dlq.get(entry_id)
    if letter is None:
        raise CliError(f"no dead letter {entry_id!r} in queue {dlq.name!r}")
    return letter


async def _show(dlq: DeadLetterQueue, entry_id: str, as_json: bool) -> int:
    letter = await _get(dlq, entry_id)
    body = letter_to_dict(letter, full=True)
    if as_json:
        print(json.dumps(body, indent=2, default=str))
        return 0
    for key, value in body.items():
        if key in ("payload", "metadata"):
            value = json.dumps(value, default=str)
        if key == "traceback" and value:
            print("traceback:")
            print(value.rstrip())
            continue
        print(f"{key:16} {value}")
    return 0


async def _retry_one(dlq: DeadLetterQueue, handler: Any, entry_id: str) -> int:
    await _get(dlq, entry_id)  # a clear "no such entry" before taking a lease
    if await dlq.retry(entry_id, handler):
        print(f"retried {entry_id}: succeeded, entry removed")
        return 0
    after = await dlq.get(entry_id)
    attempts = "?" if after is None else after.attempts
    print(
        f"retried {entry_id}: the handler failed again; entry kept (attempts {attempts})",
        file=sys.stderr,
    )
    return 1


async def _retry_all(dlq: DeadLetterQueue, handler: Any, args: argparse.Namespace) -> int:
    total = await dlq.count(task_type=args.type)
    what = f"entries of type {args.type!r}" if args.type else "entries"
    if total == 0:
        print(f"queue {dlq.name!r} has no {what}")
        return 0
    of_type = f" of type {args.type!r}" if args.type else ""
    confirm(f"Retry {entries(total, of_type)} of queue {dlq.name!r} with {args.handler}?", args.yes)
    bar = ProgressBar(total, "retrying")

    def progress(report: RetryReport) -> None:
        bar.update(report.succeeded + report.failed + report.skipped)

    report = await dlq.retry_all(
        handler, task_type=args.type, concurrency=args.concurrency, progress=progress
    )
    bar.finish(report.succeeded + report.failed + report.skipped)
    print(f"succeeded {report.succeeded}, failed {report.failed}, skipped {report.skipped}")
    return 0 if report.failed == 0 else 1


async def _purge(dlq: DeadLetterQueue, args: argparse.Namespace) -> int:
    from ..health.admin import parse_duration

    try:
        age = parse_duration(args.older_than)
    except ValueError as exc:
        raise CliError(f"--older-than: {exc}", 2) from None
    total = await dlq.count(task_type=args.type)
    what = f"entries of type {args.type!r}" if args.type else "entries"
    if total == 0:
        print(f"queue {dlq.name!r} has no {what}")
        return 0
    confirm(
        f"Purge {what} older than {args.older_than} from queue {dlq.name!r} (at most {total})?",
        args.yes,
    )
    bar = ProgressBar(total, "purging")
    removed = await dlq.purge(older_than=age, task_type=args.type, progress=bar.update)
    bar.finish(removed)
    of_type = f" of type {args.type!r}" if args.type else ""
    print(f"purged {entries(removed, of_type)} older than {args.older_than}")
    return 0
