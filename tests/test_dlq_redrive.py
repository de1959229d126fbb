"""Scheduled DLQ redrive on a real Redis: policies, parking, and three worker processes of
which one is killed with SIGKILL mid-handler (every entry handled or parked, none run by two
workers at once)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from aioresil import DeadLetter, DeadLetterQueue, MemoryBackend
from aioresil.backends.redis import RedisBackend
from aioresil.dashboard import dashboard_app
from aioresil.health.metrics import collect_snapshot, render
from aioresil.stores.dlq_redrive import Redrive, RedrivePolicy, RedriveWorker

ROOT = Path(__file__).resolve().parent.parent
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
        while (await redrive.stats()).scheduled or worker.rounds == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # (the schedule lives in Redis: nothing to wait on)
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
