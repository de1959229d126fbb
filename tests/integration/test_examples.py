"""The examples in ``examples/`` run as real subprocesses, on memory and on a real Redis, and
leave the state they promise: checked through aioresil's own API, not only by exit codes.

* ``agent.py`` falls back past a provider whose breaker is open, answers every subtask but the
  poisoned one, dead-letters that one, and after a SIGKILL resumes without planning again or
  pushing the dead letter twice;
* ``benchmark_run.py`` is SIGKILLed at the worst moment (between its DLQ push and the
  checkpoint save that records it) and at 5 random moments, restarted each time, and ends
  with every item in exactly one of (checkpoint ``done``, DLQ), no DLQ duplicate; the DLQ
  then drains through ``retry_all``, and a fresh run's DLQ through the real
  ``aioresil dlq retry --all`` CLI with the example's ``redrive`` handler;
* ``multi_process.py``: 4 processes share one breaker; after one trips it, all 4 stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aioresil import (
    BreakerConfig,
    CheckpointStore,
    CircuitBreaker,
    CircuitState,
    DeadLetter,
    DeadLetterQueue,
    RedisBackend,
)

from ..helpers import until_sync

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

BENCH_ITEMS = 200
POISON = {f"item-{i:04d}" for i in range(BENCH_ITEMS) if i % 23 == 5}  # refused everywhere


def command(example: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / example), *args]


def run_example(example: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(example, *args), capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT
    )


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


async def load_state(url: str, namespace: str, task_id: str) -> dict[str, Any]:
    async with RedisBackend.from_url(url) as backend:
        checkpoint = await CheckpointStore(backend, namespace=namespace).load(task_id)
    assert checkpoint is not None
    state: dict[str, Any] = checkpoint.state
    return state


async def dead_letters(url: str, queue: str) -> list[DeadLetter]:
    async with RedisBackend.from_url(url) as backend:
        dlq = DeadLetterQueue(backend, name=queue)
        page = await dlq.list(limit=1000)
        entries = list(page.entries)
        while page.next_cursor is not None:
            page = await dlq.list(limit=1000, cursor=page.next_cursor)
            entries.extend(page.entries)
    return entries


# ---------------------------------------------------------------------------- agent


def check_agent_summary(summary: dict[str, Any]) -> None:
    assert summary["subtasks"] == 12
    assert summary["answered"] == 11
    assert summary["dead_lettered"] == ["subtask-07"]
    assert summary["dlq_total"] == 1


def test_agent_falls_back_past_the_open_breaker_and_answers_every_subtask_on_memory() -> None:
    # A long recovery timeout: once open, primary stays open for the rest of the run.
    summary = summary_of(run_example("agent.py", "--json", "--recovery-timeout", "30"))

    check_agent_summary(summary)
    assert not summary["resumed"]
    assert summary["planned_this_run"]
    assert summary["fallbacks"] > 0
    assert summary["rejected_by_breaker"]["primary"] > 0
    # A rejected call never reached the provider: its calls are its answers and failures only.
    calls = summary["provider_calls"]
    for name in ("primary", "secondary", "backup"):
        assert calls[name] == summary["answered_by"][name] + summary["failed"][name]


def test_agent_on_redis_resumes_after_sigkill_without_planning_or_dead_lettering_again(
    redis_url: str,
) -> None:
    # Killed right after saving subtask 7, the poisoned one, which it had dead-lettered.
    killed = run_example("agent.py", "--redis", redis_url, "--fresh", "--crash-after", "7")
    assert killed.returncode == -signal.SIGKILL
    before = asyncio.run(load_state(redis_url, "examples-agent", "agent-demo"))
    assert before["next"] == 7
    assert before["dead"] == ["subtask-07"]

    summary = summary_of(run_example("agent.py", "--redis", redis_url, "--json"))

    check_agent_summary(summary)
    assert summary["resumed"]
    assert not summary["planned_this_run"]  # the memoized plan step came from the checkpoint
    assert sum(summary["answered_by"].values()) == 5  # only subtasks 8..12 were asked
    state = asyncio.run(load_state(redis_url, "examples-agent", "agent-demo"))
    assert state["next"] == 12
    assert sorted(state["answers"]) == [f"subtask-{i:02d}" for i in range(1, 13) if i != 7]
    letters = asyncio.run(dead_letters(redis_url, "examples-agent"))
    assert [letter.task_id for letter in letters] == ["subtask-07"]


# ---------------------------------------------------------------------------- benchmark run


def test_benchmark_run_on_memory_accounts_for_every_item_once() -> None:
    summary = summary_of(
        run_example("benchmark_run.py", "--items", "60", "--latency", "0.005", "--json")
    )

    assert summary["finished"]
    assert summary["done"] + summary["dead_lettered"] == 60
    assert summary["dlq_entries"] == summary["dead_lettered"] == summary["pushed_this_run"]
    assert summary["dead_lettered"] >= 3  # items 5, 28, 51 are refused by every provider
    assert summary["dlq_pending"] == 0


def start_and_kill(url: str, delay: float, log: Path) -> int:
    """Start a run, SIGKILL it ``delay`` s after it printed its first line; return the code."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command("benchmark_run.py", "--redis", url, "--latency", "0.12"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
            cwd=ROOT,
        )
    try:

        def started() -> bool:
            assert process.poll() is None, log.read_text()
            return "starting run" in log.read_text()

        until_sync(started, within=30, what="the run starting")
        time.sleep(delay)  # the behaviour under test: a SIGKILL at a random point of the run
        assert process.poll() is None, f"the run ended before the kill: {log.read_text()}"
        os.kill(process.pid, signal.SIGKILL)
        return process.wait(timeout=10)
    finally:
        if process.poll() is None:  # pragma: no cover - only when an assertion failed
            process.kill()
            process.wait()


@pytest.mark.slow
def test_benchmark_run_killed_six_times_accounts_for_every_item_exactly_once(
    redis_url: str, tmp_path: Path
) -> None:
    queue = "examples-benchmark:bench-demo"
    # 1. The worst moment: killed after a DLQ push, before the checkpoint recorded it.
    killed = run_example(
        "benchmark_run.py", "--redis", redis_url, "--fresh", "--crash-after-dlq-push", "2"
    )
    assert killed.returncode == -signal.SIGKILL
    state = asyncio.run(load_state(redis_url, "examples-benchmark", "bench-demo"))
    in_dlq = {letter.task_id for letter in asyncio.run(dead_letters(redis_url, queue))}
    assert state["dlq_pending"], "the kill did not land between push and save"
    assert set(state["dlq_pending"]) <= in_dlq  # pushed, but the checkpoint says "pending"

    # 2. Five SIGKILLs at random moments, each run resuming the last one's checkpoint.
    # A whole run takes ~5 s of simulated latency; 5 delays of at most 1 s (each ~0.3 s of
    # it spent starting up) cannot finish it.
    rng = random.Random(20261127)
    progress = []
    for attempt in range(5):
        log = tmp_path / f"run{attempt}.log"
        assert start_and_kill(redis_url, rng.uniform(0.2, 1.0), log) == -signal.SIGKILL
        progress += [line for line in log.read_text().splitlines() if line.startswith("resumed=")]

    # 3. The last run finishes.
    summary = summary_of(run_example("benchmark_run.py", "--redis", redis_url, "--json"))
    assert summary["finished"]
    assert summary["evaluated_this_run"] < BENCH_ITEMS  # earlier runs' work was kept
    # Every restart resumed from at least the progress the one before it resumed from.
    done_at_start = [int(line.split()[1].removeprefix("done=")) for line in progress]
    assert done_at_start == sorted(done_at_start)

    state = asyncio.run(load_state(redis_url, "examples-benchmark", "bench-demo"))
    dlq_ids = [str(letter.task_id) for letter in asyncio.run(dead_letters(redis_url, queue))]
    done = set(state["done"])
    everything = {f"item-{i:04d}" for i in range(BENCH_ITEMS)}
    assert len(dlq_ids) == len(set(dlq_ids)), "an item was dead-lettered twice"
    assert not done & set(dlq_ids), "an item is both done and dead-lettered"
    assert done | set(dlq_ids) == everything, "an item was lost"
    assert len(done) + len(dlq_ids) == BENCH_ITEMS
    assert set(dlq_ids) >= POISON
    assert state["dlq_pending"] == {}
    assert sorted(state["dead_lettered"]) == sorted(dlq_ids)
    assert all(isinstance(result["score"], float) for result in state["done"].values())

    # 4. A finished run started again changes nothing.
    again = summary_of(run_example("benchmark_run.py", "--redis", redis_url, "--json"))
    assert (again["evaluated_this_run"], again["pushed_this_run"]) == (0, 0)
    assert again["dlq_entries"] == len(dlq_ids)

    # 5. The DLQ drains through the Python API.
    retried: list[str] = []

    async def drain() -> tuple[int, int]:
        async def handler(letter: DeadLetter) -> None:
            retried.append(str(letter.task_id))

        async with RedisBackend.from_url(redis_url) as backend:
            dlq = DeadLetterQueue(backend, name=queue)
            report = await dlq.retry_all(handler, concurrency=4)
            return report.succeeded, await dlq.count()

    succeeded, left = asyncio.run(drain())
    assert succeeded == len(dlq_ids)
    assert left == 0
    assert sorted(retried) == sorted(dlq_ids)

    # 6. A fresh run's DLQ drains through the real CLI, with the example's own handler.
    fresh = summary_of(
        run_example(
            "benchmark_run.py", "--redis", redis_url, "--fresh", "--latency", "0.005", "--json"
        )
    )
    assert fresh["finished"]
    assert fresh["dlq_entries"] == fresh["dead_lettered"] > 0
    to_drain = sorted(str(letter.task_id) for letter in asyncio.run(dead_letters(redis_url, queue)))
    assert set(to_drain) >= POISON

    # The example's keys use the default prefix, which the CLI's default --prefix matches.
    drained = subprocess.run(
        [
            sys.executable,
            "-m",
            "aioresil",
            "--redis",
            redis_url,
            "--prefix",
            "aioresil",
            "dlq",
            "--dlq",
            queue,
            "retry",
            "--all",
            "--yes",
            "--handler",
            "examples.benchmark_run:redrive",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        cwd=ROOT,
    )

    assert drained.returncode == 0, drained.stderr
    lines = drained.stdout.splitlines()
    assert f"succeeded {len(to_drain)}, failed 0, skipped 0" in lines
    verdicts = [line.split(maxsplit=2)[1:] for line in lines if line.startswith("redriven ")]
    assert sorted(item.rstrip(":") for item, _ in verdicts) == to_drain  # once per entry
    refused = {item.rstrip(":") for item, verdict in verdicts if "accepted as final" in verdict}
    assert refused == POISON  # a refusal is a verdict; the outage's items got a score

    async def left_in_queue() -> int:
        async with RedisBackend.from_url(redis_url) as backend:
            return await DeadLetterQueue(backend, name=queue).count()

    assert asyncio.run(left_in_queue()) == 0


# ---------------------------------------------------------------------------- multi process


@pytest.mark.slow
def test_multi_process_every_worker_stops_once_one_trips_the_shared_breaker(
    redis_url: str,
) -> None:
    result = summary_of(
        run_example("multi_process.py", "--redis", redis_url, "--prefix", "mp-test", "--json")
    )

    assert result["all_saw_open"]
    workers = result["workers"]
    assert [w["worker"] for w in workers] == [0, 1, 2, 3]
    assert [w["failing"] for w in workers] == [True, False, False, False]
    assert all(w["saw_open"] and w["stopped_ms_after_trip"] >= 0 for w in workers)
    stops = [w["stopped_ms_after_trip"] for w in workers]
    assert result["spread_ms"] == pytest.approx(max(stops) - min(stops), abs=0.01)

    async def shared_stats() -> Any:
        async with RedisBackend.from_url(redis_url, prefix="mp-test") as backend:
            config = BreakerConfig(
                failure_threshold=None,
                failure_rate_threshold=0.2,
                window_size=20,
                minimum_calls=10,
                recovery_timeout=30.0,
            )
            return await CircuitBreaker("shared-upstream", config=config, backend=backend).stats()

    stats = asyncio.run(shared_stats())
    assert stats.state is CircuitState.OPEN
    assert stats.failure_count > 0
    assert stats.success_count > 0  # the healthy workers' calls were in the same circuit


def test_multi_process_refuses_to_run_without_redis() -> None:
    result = run_example("multi_process.py")

    assert result.returncode == 2
    assert "--redis" in result.stderr
