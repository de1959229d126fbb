"""Scheduled DLQ redrive on a real Redis: policies, parking, and three worker processes of
which one is killed with SIGKILL mid-handler (every entry handled or parked, none run by two
workers at once)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from aioresil import DeadLetter, DeadLetterQueue, MemoryBackend
from aioresil.backends.redis import RedisBackend
from aioresil.cli.dlq_worker import _work
from aioresil.dashboard import dashboard_app
from aioresil.exceptions import BackendUnavailableError
from aioresil.health.metrics import collect_snapshot, render
from aioresil.stores.dlq_redrive import (
    Redrive,
    RedrivePolicy,
    RedriveStats,
    RedriveWorker,
)

from ..helpers import until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.redis_server


def test_policy_waits_grow_with_jitter_below_the_cap() -> None:
    policy = RedrivePolicy(delay=10, multiplier=3, max_delay=100, jitter=0.5, max_attempts=4)
    assert [policy.wait(n, 0.0) for n in range(4)] == [10, 30, 90, 100]
    assert policy.wait(0, 0.999) == pytest.approx(5.005)
    assert RedrivePolicy.parse("delay=1,max_attempts=2") == RedrivePolicy(delay=1, max_attempts=2)
    with pytest.raises(ValueError, match="max_attempts"):
        RedrivePolicy(max_attempts=0)
    with pytest.raises(ValueError, match="names"):
        RedrivePolicy.parse("wait=3")


def test_redrive_needs_a_redis_queue() -> None:
    with pytest.raises(TypeError, match="RedisBackend"):
        Redrive(DeadLetterQueue(MemoryBackend(), name="q"))


async def test_failed_redrives_back_off_then_park_and_unpark(redis_url: str) -> None:
    async with RedisBackend.from_url(redis_url) as backend:
        dlq = DeadLetterQueue(backend, name="orders")
        ok_id = await dlq.push("email", {"n": 1}, RuntimeError("smtp"))
        bad_id = await dlq.push("sms", {"n": 2}, RuntimeError("gateway"))
        redrive = Redrive(
            dlq,
            policies={"sms": RedrivePolicy(delay=0, max_delay=0.01, jitter=0, max_attempts=3)},
            default=RedrivePolicy(delay=0, max_delay=0, max_attempts=1),
        )
        runs: list[str] = []

        async def handler(letter: object) -> None:
            runs.append(letter.task_type)  # type: ignore[attr-defined]
            if letter.task_type == "sms":  # type: ignore[attr-defined]
                raise ValueError("still down")

        worker = RedriveWorker(redrive, handler, lease=5, poll=0.01)
        task = asyncio.create_task(worker.run())
        done = worker.stats
        await until(lambda: (done().handled, done().parked) == (1, 1), what="email and sms")
        worker.stop()
        await task
        stats = await redrive.stats()
        assert runs.count("email") == 1 and runs.count("sms") == 3
        assert (stats.handled, stats.failed, stats.parked, stats.parked_total) == (1, 3, 1, 1)
        assert await dlq.get(ok_id) is None
        parked = await dlq.get(bad_id)
        assert parked is not None and parked.attempts == 1 + 3
        assert [p.id for p in await redrive.parked()] == [bad_id]
        # Visible in the metrics and the dashboard's API.
        text = render(await collect_snapshot(dlq=dlq))
        assert 'aioresil_dlq_redrive_entries{queue="orders",state="parked"} 1' in text
        assert 'aioresil_dlq_redrive_total{queue="orders",outcome="handled"} 1' in text
        assert 'aioresil_dlq_redrive_total{queue="orders",outcome="failed"} 3' in text
        transport = httpx.ASGITransport(app=dashboard_app(dlq=dlq))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as web:
            body = (await web.get("/api/dlq/stats")).json()
        assert body["redrive"]["parked"] == 1 and body["redrive"]["scheduled"] == 0
        assert await redrive.unpark(bad_id)
        assert not await redrive.unpark(bad_id)
        assert (await redrive.stats()).due == 1


async def _mark(backend: RedisBackend, event: str, entry_id: str, who: str) -> None:
    """Log a run's start or end with Redis's clock (one time base for every worker)."""
    seconds, micros = await backend.client.time()
    await backend.client.rpush("test:log", f"{event} {entry_id} {who} {seconds * 10**6 + micros}")


async def _runs(backend: RedisBackend) -> list[tuple[str, str, int, int]]:
    """``(entry_id, who, start µs, end µs)`` of every finished run, in start order."""
    started: dict[tuple[str, str], int] = {}
    runs = []
    for raw in await backend.client.lrange("test:log", 0, -1):
        event, entry_id, who, at = raw.decode().split()
        if event == "start":
            started[(entry_id, who)] = int(at)
        else:
            runs.append((entry_id, who, started.pop((entry_id, who)), int(at)))
    assert not started, f"runs that never ended: {started}"
    return sorted(runs, key=lambda run: run[2])


async def test_a_handler_slower_than_its_lease_keeps_its_entry(redis_url: str) -> None:
    # Two workers, a 0.5 s lease, a 1.5 s handler: the lease is renewed every third of it,
    # so the other worker, looking at the schedule all along, never claims the entry.
    policy = RedrivePolicy(delay=0, max_delay=0, max_attempts=1)
    async with RedisBackend.from_url(redis_url) as one, RedisBackend.from_url(redis_url) as two:
        entry_id = await DeadLetterQueue(one, name="slow").push("job", {}, RuntimeError("x"))
        workers: list[RedriveWorker] = []
        started: list[str] = []
        looked: list[int] = []

        def handler(who: str, backend: RedisBackend) -> Callable[[DeadLetter], Awaitable[None]]:
            async def handle(letter: DeadLetter) -> None:
                started.append(who)
                await _mark(backend, "start", letter.id, who)
                other = workers[1 - int(who)]
                rounds = other.rounds
                try:
                    await asyncio.sleep(1.5)
                finally:
                    looked.append(other.rounds - rounds)
                    await _mark(backend, "end", letter.id, who)

            return handle

        for who, backend in enumerate((one, two)):
            redrive = Redrive(DeadLetterQueue(backend, name="slow"), default=policy)
            workers.append(RedriveWorker(redrive, handler(str(who), backend), lease=0.5, poll=0.02))
        tasks = [asyncio.create_task(worker.run()) for worker in workers]
        await until(  # handled, or started twice (then the assertions below say how)
            lambda: sum(w.stats().handled for w in workers) >= 1 or len(started) >= 2,
            what="the entry handled",
        )
        for worker in workers:
            worker.stop()
        stats = await asyncio.gather(*tasks)
        runs = await _runs(one)
        redrive_stats = await Redrive(DeadLetterQueue(one, name="slow")).stats()
    for before, after in itertools.pairwise(runs):
        assert after[2] >= before[3], f"two runs at once: {runs}"
    assert [run[0] for run in runs] == [entry_id], runs  # exactly one run
    assert looked[0] >= 3, looked  # the other worker kept looking at the schedule meanwhile
    assert sum(s.handled for s in stats) == 1 and sum(s.lost_leases for s in stats) == 0
    assert (redrive_stats.claimed, redrive_stats.lease_expired) == (1, 0)


async def test_a_lost_lease_cancels_the_handler_and_settles_nothing(redis_url: str) -> None:
    async with RedisBackend.from_url(redis_url) as backend:
        dlq = DeadLetterQueue(backend, name="lost")
        entry_id = await dlq.push("job", {}, RuntimeError("x"))
        redrive = Redrive(dlq, default=RedrivePolicy(delay=0, max_delay=0, max_attempts=1))
        events: list[str] = []

        async def handler(letter: DeadLetter) -> None:
            events.append("start")
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise

        worker = RedriveWorker(redrive, handler, lease=0.5, poll=0.02)
        task = asyncio.create_task(worker.run())
        await until(lambda: events == ["start"], what="the handler running")
        # Another claim replaces the fencing token (here an operator's manual claim after
        # the redrive lease is dropped): the next renewal finds the token gone.
        await backend.client.zrem(redrive.keys.base + "lease", entry_id)
        lease = await dlq.claim(entry_id, lease=60)
        await until(lambda: worker.stats().lost_leases == 1, what="the lease lost")
        worker.stop()
        stats = await task
        schedule = await redrive.stats()
        assert await dlq.ack(lease)  # the operator's claim is intact: nothing settled it
    assert events == ["start", "cancelled"]
    assert (stats.handled, stats.failed, stats.parked) == (0, 0, 0)
    assert (schedule.handled, schedule.failed) == (0, 0)


async def test_an_error_outside_the_handler_is_settled_by_the_policy(redis_url: str) -> None:
    # dlq.get raising (a corrupt entry, a bug): settled as a failed redrive, so the entry
    # backs off and is parked like one whose handler fails, and the worker counts it.
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    policy = RedrivePolicy(delay=0.3, multiplier=1, max_delay=0.3, jitter=0, max_attempts=2)
    try:
        async with RedisBackend.from_url(redis_url) as backend:
            dlq = DeadLetterQueue(backend, name="errs")
            unreadable = await dlq.push("job", {"kind": "unreadable"}, RuntimeError("x"))
            failing = await dlq.push("job", {"kind": "failing"}, RuntimeError("x"))
            attempts: dict[str, list[float]] = defaultdict(list)
            read = dlq.get

            async def broken_get(entry_id: str) -> DeadLetter | None:
                if entry_id == unreadable:
                    attempts[entry_id].append(loop.time())
                    raise RuntimeError("cannot decode the entry")
                return await read(entry_id)

            async def handler(letter: DeadLetter) -> None:
                attempts[letter.id].append(loop.time())
                raise RuntimeError("handler broke")

            dlq.get = broken_get  # type: ignore[method-assign]
            redrive = Redrive(dlq, default=policy)
            worker = RedriveWorker(redrive, handler, lease=5, poll=0.02)
            task = asyncio.create_task(worker.run())
            await until(lambda: worker.stats().parked == 2, what="both entries parked")
            worker.stop()
            stats = await task
            dlq.get = read  # type: ignore[method-assign]
            schedule = await redrive.stats()
            parked = {letter.id: letter for letter in await redrive.parked()}
        gc.collect()  # a task whose exception nobody retrieved is reported when collected
    finally:
        loop.set_exception_handler(None)
    assert (stats.errors, stats.failed, stats.parked, stats.lost_leases) == (2, 2, 2, 0)
    assert (schedule.failed, schedule.parked, schedule.scheduled) == (4, 2, 0)
    assert set(parked) == {unreadable, failing}
    assert parked[unreadable].error_type == "RuntimeError"
    assert parked[unreadable].error_message == "cannot decode the entry"
    assert parked[failing].error_message == "handler broke"
    for entry_id in (unreadable, failing):  # the policy's backoff (0.3 s) between the runs
        first, second = attempts[entry_id]
        assert second - first >= 0.29, attempts
    assert unhandled == []


async def test_the_idle_watcher_outlives_a_failed_stats_read(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # --exit-when-idle: a watcher that died on one failed read would leave the worker running
    # forever; it keeps polling and exits once the queue is idle.
    real_stats = Redrive.stats
    calls = 0

    async def flaky_stats(self: Redrive) -> RedriveStats:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise BackendUnavailableError("redis restarting")
        return await real_stats(self)

    monkeypatch.setattr(Redrive, "stats", flaky_stats)
    args = argparse.Namespace(
        handler="tests.workers.redrive_handler:noop",
        policy=[],
        default_policy="delay=0,max_delay=0",
        concurrency=1,
        lease=5.0,
        poll=0.02,
        exit_when_idle=True,
    )
    async with RedisBackend.from_url(redis_url) as backend:
        dlq = DeadLetterQueue(backend, name="idle")
        await dlq.push("job", {}, RuntimeError("x"))
        async with asyncio.timeout(30):  # (without the fix: running forever)
            assert await _work(dlq, args) == 0
        assert not (await dlq.list()).entries  # handled
    err = capsys.readouterr().err
    assert calls >= 4 and err.count("idle check failed, retrying: redis restarting") == 1, err


def _worker(url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIORESIL_TEST_REDIS": url}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aioresil",
            "--redis",
            url,
            "dlq",
            "--dlq",
            "rq",
            "worker",
            "--handler",
            "tests.workers.redrive_handler:handle",
            "--lease",
            "4",
            "--poll",
            "0.05",
            "--concurrency",
            "2",
            "--exit-when-idle",
            "--default-policy",
            "delay=0,max_delay=0.05,jitter=0,max_attempts=2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


async def test_three_workers_one_killed_mid_handler(redis_url: str) -> None:
    kinds = ["slow"] + ["bad"] * 4 + ["ok"] * 19
    async with RedisBackend.from_url(redis_url) as backend:
        dlq = DeadLetterQueue(backend, name="rq")
        ids = {await dlq.push("job", {"kind": kind}, RuntimeError("x")): kind for kind in kinds}
        workers = [_worker(redis_url) for _ in range(3)]
        try:
            popped = await backend.client.blpop(["test:slow"], timeout=60)
            assert popped is not None, "no worker started the slow entry"
            victim = int(popped[1])
            os.kill(victim, signal.SIGKILL)
            killed = next(w for w in workers if w.pid == victim)
            await asyncio.to_thread(killed.communicate, timeout=10)  # reaps it, closes pipes
            seconds, micros = await backend.client.time()
            killed_at = seconds * 10**6 + micros
            survivors = [w for w in workers if w is not killed]
            outputs = [await asyncio.to_thread(w.communicate, timeout=90) for w in survivors]
            for w, (_out, err) in zip(survivors, outputs, strict=True):
                assert w.returncode == 0, err[-2000:]
        finally:
            for w in workers:
                if w.poll() is None:
                    os.kill(w.pid, signal.SIGKILL)
                w.communicate()
        log = [line.decode().split() for line in await backend.client.lrange("test:log", 0, -1)]
        stats = await Redrive(dlq).stats()

    runs: dict[str, list[tuple[int, int | None, str]]] = defaultdict(list)
    open_runs: dict[tuple[str, str], int] = {}
    for event, entry_id, pid, at in log:
        if event == "start":
            open_runs[(entry_id, pid)] = int(at)
        else:
            runs[entry_id].append((open_runs.pop((entry_id, pid)), int(at), pid))
    for (entry_id, pid), started in open_runs.items():  # only the killed run never ended
        assert int(pid) == victim
        runs[entry_id].append((started, killed_at, pid))
    for entry_id, intervals in runs.items():  # never two runs of one entry at once
        intervals.sort()
        for (_, end, _), (start, _, _) in itertools.pairwise(intervals):
            assert end is not None and start >= end, (entry_id, intervals)
    # The killed worker may have been running a second entry too (concurrency 2), and may have
    # finished a run without settling it: such a run is not an attempt and runs again after
    # its lease. What settled is in the store: handled entries are gone, and each bad entry
    # is parked after exactly max_attempts=2 settled failures.
    cut = {i for i, rs in runs.items() for (_, end, _) in rs if end == killed_at}
    slow = next(i for i, k in ids.items() if k == "slow")
    assert slow in cut and len(runs[slow]) == 2 and runs[slow][1][2] != str(victim)
    for entry_id, kind in ids.items():
        finished = [r for r in runs[entry_id] if r[1] != killed_at]
        by_survivors = [r for r in finished if r[2] != str(victim)]
        assert finished, (kind, runs[entry_id])
        assert len(by_survivors) <= (2 if kind == "bad" else 1), (kind, runs[entry_id])
    assert (stats.scheduled, stats.parked, stats.handled) == (0, 4, 20)  # 19 ok + slow
    # Leases of the killed worker that expired: the runs it cut, and perhaps a run it had
    # finished but not settled; never more than its concurrency.
    assert len(cut) <= stats.lease_expired <= 2
    remaining = await _list(redis_url)
    assert {letter.id for letter in remaining} == {i for i, k in ids.items() if k == "bad"}
    assert all(letter.attempts == 1 + 2 for letter in remaining)  # pushed once, 2 redrives


async def _list(url: str) -> list[DeadLetter]:
    async with RedisBackend.from_url(url) as backend:
        page = await DeadLetterQueue(backend, name="rq").list(limit=100)
        return list(page.entries)


async def test_cli_shows_the_schedule_and_refuses_bad_input(redis_url: str) -> None:
    async with RedisBackend.from_url(redis_url) as backend:
        await DeadLetterQueue(backend, name="cli").push("job", {"kind": "ok"}, RuntimeError("x"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "aioresil", "--redis", redis_url, "dlq", "--dlq", "cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )

    shown = await asyncio.to_thread(cli, "redrive", "--json")
    assert shown.returncode == 0, shown.stderr
    assert '"scheduled": 0' in shown.stdout and '"parked_entries": []' in shown.stdout
    for args, message in [
        (("unpark", "nope"), "is not a parked entry"),
        (("worker",), "needs --handler"),
        (("worker", "--handler", "m:f", "--policy", "x=wait=3"), "names"),
    ]:
        result = await asyncio.to_thread(cli, *args)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
