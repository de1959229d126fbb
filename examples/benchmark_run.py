"""A resumable benchmark run: evaluate N items against flaky model providers, survive kill -9,
and account for every item exactly once.

What it shows:

* **Bounded concurrency + breakers.** ``--concurrency`` evaluations run at once (a
  ``Semaphore`` inside a ``TaskGroup``); each of three simulated providers sits behind its own
  breaker from one :class:`~aioresil.BreakerRegistry`. ``alpha`` has an outage over a band of
  items: its breaker opens and the items fall over to ``beta`` and ``gamma`` without waiting
  on ``alpha``. Some items are "poison" (every provider refuses them; ignored by the breakers).
* **A checkpoint** (``store.resume(...)``) of completed item ids and their results, written
  every 10 items or 0.5 s (``cp.every``); an item finished but not yet saved when the process
  dies is simply evaluated again.
* **The DLQ** for items that exhausted ``--attempts`` rounds over every provider.

Exactly once, even under SIGKILL (the protocol). Every item ends in exactly one of: the
checkpoint's ``done`` map, or the DLQ. A DLQ push is not idempotent (each push is a new
entry), so a crash between "push" and "remember that I pushed" must not lead to a second push:

1. *Intent first.* An item that failed for good goes into the checkpoint's ``dlq_pending`` map
   and that state is saved (``cp.save``, fenced) **before** the push.
2. *Push* with ``task_id=<item id>``.
3. *Confirm.* Move the id from ``dlq_pending`` to ``dead_lettered`` (saved with the next
   throttled save). A push that only reached the local spool (Redis unreachable) stays pending.
4. *Reconcile on every start (and at the end).* For ids still in ``dlq_pending``, list the
   run's DLQ once (paged, by ``task_id``): an id already there was pushed just before a crash
   and is only confirmed; an id not there is pushed now. Either way it is pushed exactly once.

Pending and confirmed ids are never evaluated again, so no item can also end up in ``done``.
The checkpoint is the record of the run; once it is marked ``finished``, running again
changes nothing (so draining the DLQ afterwards cannot cause a re-push). Cost: one DLQ listing
per start while ids are pending. One process per run id: the checkpoint is fenced, so a second
process resuming the same run gets ``CheckpointConflictError`` instead of forking it.

Draining the DLQ afterwards with the CLI: :func:`redrive` is the ``--handler``. It evaluates
a dead-lettered item again (the outage that sank it may be over) and accepts a refusal as the
item's final verdict; only a provider error again keeps the entry (``attempts + 1``)::

    aioresil --redis redis://127.0.0.1:6379/0 dlq --dlq examples-benchmark:bench-demo \
        retry --all --yes --handler examples.benchmark_run:redrive

Run it (no internet needed; from a checkout, ``pip install -e '.[redis]'`` first)::

    python examples/benchmark_run.py                         # memory backend: runs once
    python examples/benchmark_run.py --redis redis://127.0.0.1:6379/0 --fresh
    # kill -9 it at any point and run it again without --fresh: it resumes where it was
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import structlog

from aioresil import (
    AioresilError,
    BreakerConfig,
    BreakerRegistry,
    CheckpointStore,
    CircuitOpenError,
    DeadLetter,
    DeadLetterQueue,
    MemoryBackend,
)

TASK_TYPE = "eval-item"
FAIL_RATES = {"alpha": 0.05, "beta": 0.15, "gamma": 0.10}


class ProviderError(Exception):
    """The provider failed (timeout, 5xx): counts against its breaker."""


class Refused(Exception):
    """The provider answered and refused this item: not the provider's fault."""


def chance(seed: int, *parts: object) -> float:
    """A deterministic number in [0, 1) for (seed, parts): same run, same flakiness."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Provider:
    def __init__(self, name: str, fail_rate: float, outage: range, args: Any) -> None:
        self.name, self.fail_rate, self.outage = name, fail_rate, outage
        self.seed, self.latency = args.seed, args.latency
        self.calls = 0

    async def evaluate(self, index: int, attempt: int) -> float:
        self.calls += 1
        await asyncio.sleep(self.latency * (0.5 + chance(self.seed, self.name, index, "latency")))
        if index in self.outage or chance(self.seed, self.name, index, attempt) < self.fail_rate:
            raise ProviderError(f"{self.name}: 503 on item {index}")
        if index % 23 == 5:
            raise Refused(f"{self.name}: item {index} refused by content policy")
        return round(chance(self.seed, "score", index), 4)


async def evaluate(
    item: int, providers: list[Provider], registry: BreakerRegistry, args: Any
) -> tuple[str, Any]:
    """``("done", result)`` or ``("dead", last_error)`` after ``args.attempts`` rounds."""
    error: BaseException | None = None
    for attempt in range(args.attempts):
        waits: list[float] = []
        for provider in providers:
            try:
                async with registry.get(provider.name):
                    score = await provider.evaluate(item, attempt)
                return "done", {"score": score, "provider": provider.name}
            except CircuitOpenError as exc:
                waits.append(exc.retry_after if exc.retry_after is not None else 0.05)
                error = exc
            except (ProviderError, Refused) as exc:
                error = exc
        if len(waits) == len(providers):  # every circuit open: wait for the first to recover
            await asyncio.sleep(min(max(min(waits), 0.01), 0.2))
    assert error is not None
    return "dead", error


async def reconcile(cp: Any, dlq: DeadLetterQueue) -> int:
    """Step 4 of the protocol: confirm pending ids already in the DLQ, push the others.

    Returns how many it pushed.
    """
    pending: dict[str, Any] = cp.state["dlq_pending"]
    if not pending:
        return 0
    pushed = 0
    await dlq.flush_spool()
    present: set[str] = set()
    page = await dlq.list(task_type=TASK_TYPE, limit=1000)
    while True:
        present.update(e.task_id for e in page.entries if e.task_id is not None)
        if page.next_cursor is None:
            break
        page = await dlq.list(task_type=TASK_TYPE, limit=1000, cursor=page.next_cursor)
    for item_id, info in list(pending.items()):
        if item_id not in present:
            await dlq.push(
                TASK_TYPE,
                info["payload"],
                info["error"],
                attempts=info["attempts"],
                task_id=item_id,
            )
            pushed += 1
            if dlq.spooled:
                continue
        del pending[item_id]
        cp.state["dead_lettered"].append(item_id)
    await cp.save(cp.state)
    return pushed


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backend: Any = MemoryBackend()
    if args.redis:
        from aioresil import RedisBackend

        backend = RedisBackend.from_url(args.redis)
    config = BreakerConfig(
        failure_threshold=5,
        recovery_timeout=0.2,
        success_threshold=1,
        trial_lease=2.0,
        record_exceptions=(ProviderError,),
        ignore_exceptions=(Refused,),
    )
    store = CheckpointStore(backend, namespace="examples-benchmark")
    dlq = DeadLetterQueue(backend, name=f"examples-benchmark:{args.run_id}")
    n = args.items
    providers = [
        Provider("alpha", FAIL_RATES["alpha"], range(n // 4, n // 2), args),
        Provider("beta", FAIL_RATES["beta"], range(0), args),
        Provider("gamma", FAIL_RATES["gamma"], range(0), args),
    ]
    registry = BreakerRegistry(backend=backend, default_config=config)
    for provider in providers:
        registry.get(provider.name)  # up front, so the summary always lists every breaker
    pushes = 0
    started = time.monotonic()
    try:
        if args.fresh:
            await store.delete(args.run_id)
            await dlq.purge()
            await asyncio.gather(*(registry.get(p.name).reset() for p in providers))
        print(f"starting run {args.run_id!r}", file=sys.stderr, flush=True)
        initial = {
            "items": n,
            "done": {},
            "dlq_pending": {},
            "dead_lettered": [],
            "finished": False,
        }
        async with store.resume(args.run_id, initial=initial).every(n=10, seconds=0.5) as cp:
            state = cp.state
            if state["items"] != n:
                raise SystemExit(f"run {args.run_id!r} has {state['items']} items, not {n}")
            pushes += await reconcile(cp, dlq)
            accounted = set(state["done"]) | set(state["dead_lettered"])
            todo = [i for i in range(n) if f"item-{i:04d}" not in accounted]
            print(
                f"resumed={cp.resumed} done={len(state['done'])} "
                f"dead_lettered={len(state['dead_lettered'])} todo={len(todo)}",
                file=sys.stderr,
                flush=True,
            )
            limit = asyncio.Semaphore(args.concurrency)

            async def one(index: int) -> None:
                nonlocal pushes
                item_id = f"item-{index:04d}"
                async with limit:
                    outcome, value = await evaluate(index, providers, registry, args)
                if outcome == "done":
                    state["done"][item_id] = value
                    await cp.maybe_save(state)
                    return
                payload = {"item": index, "seed": args.seed}
                state["dlq_pending"][item_id] = {
                    "payload": payload,
                    "error": f"{type(value).__name__}: {value}",
                    "attempts": args.attempts * len(providers),
                }
                await cp.save(state)  # 1. intent, durable before the push
                attempts = args.attempts * len(providers)  # 2. push
                await dlq.push(TASK_TYPE, payload, value, task_id=item_id, attempts=attempts)
                pushes += 1
                if args.crash_after_dlq_push == pushes:
                    os.kill(os.getpid(), signal.SIGKILL)  # fault injection: the worst moment
                if not dlq.spooled:  # 3. confirm (saved with the next write)
                    del state["dlq_pending"][item_id]
                    state["dead_lettered"].append(item_id)
                    await cp.maybe_save(state)

            if not state["finished"]:
                async with asyncio.TaskGroup() as group:
                    for index in todo:
                        group.create_task(one(index))
                pushes += await reconcile(cp, dlq)
                state["finished"] = not state["dlq_pending"]
                await cp.save(state)
            breakers = {name: s.state.value for name, s in (await registry.stats()).items()}
            return {
                "run_id": args.run_id,
                "items": n,
                "done": len(state["done"]),
                "dead_lettered": len(state["dead_lettered"]),
                "dlq_pending": len(state["dlq_pending"]),
                "dlq_entries": await dlq.count(),
                "finished": state["finished"],
                "evaluated_this_run": len(todo),
                "pushed_this_run": pushes,
                "provider_calls": {p.name: p.calls for p in providers},
                "breakers": breakers,
                "seconds": round(time.monotonic() - started, 3),
            }
    finally:
        if args.redis:
            await backend.aclose()


async def redrive(letter: DeadLetter) -> None:
    """The DLQ retry handler: ``aioresil dlq retry --all --handler examples.benchmark_run:redrive``.

    Evaluates the item again, one round over every provider (no outage any more, no
    latency; the round number continues from ``letter.attempts``, so the simulated flakiness
    is not the same draw that sank it). A score, or a refusal (the provider answered: a
    final verdict, not an outage), is accepted: the handler returns and the CLI deletes the
    entry. Every provider failing again raises, so the CLI keeps the entry with
    ``attempts + 1`` for a later drain. Prints one line per item: a real redrive would write
    the verdict to the run's results instead.

    Args:
        letter: a dead letter pushed by :func:`run` (payload ``{"item": n, "seed": s}``).
    """
    index = int(letter.payload["item"])
    args = argparse.Namespace(seed=int(letter.payload.get("seed", 7)), latency=0.0)
    error: Exception | None = None
    for name, fail_rate in FAIL_RATES.items():
        try:
            score = await Provider(name, fail_rate, range(0), args).evaluate(index, letter.attempts)
        except Refused:
            print(f"redriven {letter.task_id}: refused by {name}, accepted as final", flush=True)
            return
        except ProviderError as exc:
            error = exc
        else:
            print(f"redriven {letter.task_id}: score {score} from {name}", flush=True)
            return
    assert error is not None
    raise error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", metavar="URL", help="Redis URL (default: memory backend)")
    parser.add_argument("--run-id", default="bench-demo", help="checkpoint task id of the run")
    parser.add_argument("--items", type=int, default=200, help="items to evaluate")
    parser.add_argument("--concurrency", type=int, default=8, help="evaluations at once")
    parser.add_argument("--attempts", type=int, default=2, help="rounds over every provider")
    parser.add_argument("--latency", type=float, default=0.03, help="mean provider seconds")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated providers")
    parser.add_argument("--fresh", action="store_true", help="forget the previous run first")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--crash-after-dlq-push", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.items < 1 or args.concurrency < 1 or args.attempts < 1 or args.latency < 0:
        parser.error("--items, --concurrency, --attempts must be >= 1 and --latency >= 0")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        summary = asyncio.run(run(args))
    except (AioresilError, OSError) as exc:  # Redis down or refusing: one line, no traceback
        print(f"benchmark_run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"{summary['done']} done + {summary['dead_lettered']} in the DLQ "
            f"= {summary['done'] + summary['dead_lettered']} of {summary['items']} items "
            f"in {summary['seconds']} s (evaluated {summary['evaluated_this_run']} this run)"
        )
        print(f"provider calls {summary['provider_calls']}, breakers {summary['breakers']}")
    return 0 if summary["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
