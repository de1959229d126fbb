"""An async agent that falls back across model providers, resumes after a crash, and
dead-letters what no provider could answer.

What it shows:

* **One breaker per provider, from one** :class:`~aioresil.BreakerRegistry`. Three simulated
  providers answer with deterministic, seeded flakiness; ``primary`` goes down for good after
  a few calls. Its breaker opens after 3 failures, and from then on the agent does not even
  try it: ``CircuitOpenError`` is raised at once and the agent moves to the next provider.
  After the recovery timeout one trial call finds out whether ``primary`` is back.
* **What counts as a failure.** A provider *refusing* a prompt (``Refused``) is in the
  breaker's ``ignore_exceptions``: the provider answered, so it is no reason to open the
  circuit. Only ``ProviderDown`` counts.
* **Resume.** The plan is a memoized step (``cp.step("plan", ...)``): after a crash the
  resumed run gets the stored plan back instead of planning again, and continues at the first
  subtask not yet saved (``cp.save`` after every subtask).
* **Dead letters.** A subtask every provider failed or refused goes to the
  :class:`~aioresil.DeadLetterQueue` (``task_id`` = the subtask's id) for a human or a later
  ``dlq.retry_all(...)``. (A crash between that push and the next save would push the subtask
  again on resume; ``examples/benchmark_run.py`` shows the protocol that rules this out.)

Run it (no internet needed)::

    python examples/agent.py                              # memory backend, one process
    python examples/agent.py --redis redis://127.0.0.1:6379/0       # state in Redis
    python examples/agent.py --redis redis://127.0.0.1:6379/0       # again: resumes, no work
    python examples/agent.py --redis redis://127.0.0.1:6379/0 --fresh   # start over
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sys
from typing import Any

import structlog

from aioresil import (
    AioresilError,
    BreakerConfig,
    BreakerRegistry,
    CheckpointStore,
    CircuitOpenError,
    DeadLetterQueue,
    MemoryBackend,
)

GOAL = "write a release note for aioresil"
POISON = "subtask-07"  # every provider refuses this one: it ends in the DLQ


class ProviderDown(Exception):
    """The provider failed (timeout, 5xx): counts against its breaker."""


class Refused(Exception):
    """The provider answered but refused the prompt: not the provider's fault."""


class Provider:
    """A simulated model API: seeded flakiness, optional permanent outage after N calls."""

    def __init__(self, name: str, *, fail_rate: float, down_after: int | None, seed: int) -> None:
        self.name = name
        self.fail_rate = fail_rate
        self.down_after = down_after
        self.calls = 0
        self._rng = random.Random(f"{seed}/{name}")

    async def complete(self, subtask: str, prompt: str) -> str:
        self.calls += 1
        await asyncio.sleep(0.005)  # network latency
        if self.down_after is not None and self.calls > self.down_after:
            raise ProviderDown(f"{self.name}: 503 service unavailable")
        if self._rng.random() < self.fail_rate:
            raise ProviderDown(f"{self.name}: read timeout")
        if subtask == POISON:
            raise Refused(f"{self.name}: prompt refused by content policy")
        return f"[{self.name}] {prompt}: done"


async def make_plan(goal: str, subtasks: int) -> list[dict[str, str]]:
    """The expensive planning call, memoized by ``cp.step`` (runs once per task)."""
    await asyncio.sleep(0.01)
    return [
        {"id": f"subtask-{i:02d}", "prompt": f"{goal}, part {i}"} for i in range(1, subtasks + 1)
    ]


async def answer(
    registry: BreakerRegistry, providers: list[Provider], subtask: str, prompt: str, stats: Any
) -> str | None:
    """Try each provider in order; ``None`` (with ``stats["last_error"]``) when all fail."""
    for provider in providers:
        try:
            async with registry.get(provider.name):
                text = await provider.complete(subtask, prompt)
        except CircuitOpenError as error:
            stats["rejected"][provider.name] += 1
            stats["last_error"] = error
        except (ProviderDown, Refused) as error:
            stats["failed"][provider.name] += 1
            stats["last_error"] = error
        else:
            stats["answered_by"][provider.name] += 1
            if provider is not providers[0]:
                stats["fallbacks"] += 1
            return text
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.redis:
        from aioresil import RedisBackend

        backend: Any = RedisBackend.from_url(args.redis)
    else:
        backend = MemoryBackend()
    config = BreakerConfig(
        failure_threshold=3,
        recovery_timeout=args.recovery_timeout,
        success_threshold=1,
        record_exceptions=(ProviderDown,),
        ignore_exceptions=(Refused,),
    )
    providers = [
        Provider("primary", fail_rate=0.05, down_after=args.primary_down_after, seed=args.seed),
        Provider("secondary", fail_rate=0.25, down_after=None, seed=args.seed),
        Provider("backup", fail_rate=0.05, down_after=None, seed=args.seed),
    ]
    names = [p.name for p in providers]
    registry = BreakerRegistry(backend=backend, default_config=config)
    for name in names:
        registry.get(name)  # created up front so the summary lists every breaker
    store = CheckpointStore(backend, namespace="examples-agent")
    dlq = DeadLetterQueue(backend, name="examples-agent")
    stats: dict[str, Any] = {
        "answered_by": dict.fromkeys(names, 0),
        "failed": dict.fromkeys(names, 0),
        "rejected": dict.fromkeys(names, 0),
        "fallbacks": 0,
        "last_error": None,
    }
    planned: list[bool] = []

    async def plan() -> list[dict[str, str]]:
        planned.append(True)
        return await make_plan(GOAL, args.subtasks)

    try:
        if args.fresh:
            await store.delete(args.run_id)
            await dlq.purge()
            for name in names:
                await registry.get(name).reset()
        initial = {"next": 0, "answers": {}, "dead": []}
        async with store.resume(args.run_id, initial=initial) as cp:
            subtasks = await cp.step("plan", plan)
            state = cp.state
            for index in range(state["next"], len(subtasks)):
                item = subtasks[index]
                text = await answer(registry, providers, item["id"], item["prompt"], stats)
                if text is None:
                    error = stats["last_error"]
                    await dlq.push(
                        "agent.subtask",
                        item,
                        error,
                        attempts=len(providers),
                        task_id=item["id"],
                        metadata={"run_id": args.run_id},
                    )
                    state["dead"].append(item["id"])
                else:
                    state["answers"][item["id"]] = text
                state["next"] = index + 1
                await cp.save(state)  # the subtask is never redone after a crash
                if args.crash_after is not None and index + 1 == args.crash_after:
                    os.kill(os.getpid(), signal.SIGKILL)  # fault injection for the tests
            breakers = {n: s.state.value for n, s in (await registry.stats()).items()}
            return {
                "run_id": args.run_id,
                "resumed": cp.resumed,
                "planned_this_run": bool(planned),
                "subtasks": len(subtasks),
                "answered": len(state["answers"]),
                "dead_lettered": state["dead"],
                "dlq_total": await dlq.count(),
                "answered_by": stats["answered_by"],
                "failed": stats["failed"],
                "rejected_by_breaker": stats["rejected"],
                "fallbacks": stats["fallbacks"],
                "provider_calls": {p.name: p.calls for p in providers},
                "breakers": breakers,
                "checkpoint_version": cp.version,
            }
    finally:
        if args.redis:
            await backend.aclose()


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"run {summary['run_id']!r}: resumed={summary['resumed']}, "
        f"plan {'made' if summary['planned_this_run'] else 'taken from the checkpoint'}"
    )
    print(
        f"answered {summary['answered']}/{summary['subtasks']} subtasks, "
        f"{summary['fallbacks']} after falling back"
    )
    for name, count in summary["answered_by"].items():
        print(
            f"  {name:<10} answered {count:>2}  failed {summary['failed'][name]:>2}  "
            f"rejected by its open breaker {summary['rejected_by_breaker'][name]:>2}  "
            f"(breaker now {summary['breakers'][name]})"
        )
    print(f"dead-lettered: {summary['dead_lettered'] or 'none'} (DLQ holds {summary['dlq_total']})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", metavar="URL", help="Redis URL (default: memory backend)")
    parser.add_argument("--run-id", default="agent-demo", help="checkpoint task id")
    parser.add_argument("--subtasks", type=int, default=12, help="subtasks in the plan")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated providers")
    parser.add_argument(
        "--primary-down-after", type=int, default=4, help="primary fails after N calls"
    )
    parser.add_argument("--recovery-timeout", type=float, default=0.05, help="breaker seconds")
    parser.add_argument("--fresh", action="store_true", help="forget the previous run first")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--crash-after", type=int, help="SIGKILL itself after N subtasks (tests)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.subtasks < 1:
        print("--subtasks must be >= 1", file=sys.stderr)
        return 2
    # The example prints its own summary; keep aioresil's structlog lines for errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        summary = asyncio.run(run(args))
    except (AioresilError, OSError) as exc:  # Redis down or refusing: one line, no traceback
        print(f"agent: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
