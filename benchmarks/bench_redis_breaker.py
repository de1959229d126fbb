"""A breaker shared through Redis: throughput, round trips per call, and propagation.

What is measured (issue 3, "Performance"), on a ``redis-server`` this module starts on a free
loopback port:

* **Throughput**: successful guarded calls of ``async def noop(): return 1`` per second, with
  1 task (a tight loop) and 100 concurrent tasks, for aioresil ``strict`` and ``batched``
  (``BreakerConfig(recording="batched")``), the in-process memory backend, pybreaker's
  ``CircuitRedisStorage`` and purgatory's Redis unit of work, against the floor: a raw
  ``EVALSHA`` of a script that returns 1, through the same connection pool as aioresil. Rounds
  interleave every contender in a shuffled order; each keeps its best round. pybreaker has no
  asyncio API: its calls run in this process through the *sync* redis client, so they block the
  event loop and "100 tasks" is sequential for it.
* **Round trips** per successful call and per rejected call while OPEN: client commands seen
  by a ``MONITOR`` connection between two marker commands (lines a Lua script runs inside are
  tagged ``lua]`` and skipped), and all commands Redis executed (``INFO commandstats``, script
  internals included).
* **Propagation**: three worker processes (``tests/workers/fleet_worker.py``) poll their
  breaker's local view (``breaker.state``, no I/O) every 0.5 ms; this process trips the circuit.
  Per trip the delay is from the moment the failing call's record was sent (an upper bound on
  the transition inside the script) until the *last* worker saw OPEN; wall clock, one host.
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioresil import BreakerConfig, CircuitBreaker, CircuitOpenError, CircuitState
from aioresil.backends.redis import RedisBackend

from ._harness import markdown_table, version

Call = Callable[[], Awaitable[None]]

LONG = 3600.0
FLOOR_SCRIPT = "return 1"


class Boom(Exception):
    """A failure of the guarded call."""


async def noop() -> int:
    return 1


@dataclass
class Contender:
    label: str
    call: Call | None = None  # one successful guarded call
    reject: Call | None = None  # one call on an OPEN breaker (must be rejected)
    skipped: str = ""
    note: str = ""
    scale: int = 1  # more calls for very fast contenders, so a round is long enough to time
    per_second: dict[int, float] | None = None
    breakers: tuple[CircuitBreaker, CircuitBreaker] | None = None  # aioresil: (ok, tripped)
    close: Callable[[], Awaitable[None]] | None = None


# ---------------------------------------------------------------- contenders


async def _expect_rejected(call: Call, error: type[BaseException]) -> None:
    try:
        await call()
    except error:
        return
    raise AssertionError("a call on an open breaker was not rejected")


def _aioresil(label: str, backend: Any, config: BreakerConfig, scale: int = 1) -> Contender:
    ok = CircuitBreaker(f"{label}-ok", config=config, backend=backend)
    tripped = CircuitBreaker(
        f"{label}-open",
        config=BreakerConfig(
            failure_threshold=1, recovery_timeout=LONG, recording=config.recording
        ),
        backend=backend,
    )

    async def call() -> None:
        async with ok:
            await noop()

    async def reject() -> None:
        try:
            async with tripped:
                raise AssertionError("a rejected call ran")
        except CircuitOpenError:
            pass

    return Contender(label, call, reject, scale=scale, breakers=(ok, tripped))


async def _trip_aioresil(contender: Contender) -> None:
    assert contender.breakers is not None
    _, tripped = contender.breakers
    try:
        async with tripped:
            raise Boom
    except Boom:
        pass
    await tripped.stats()  # flushes a batched failure
    if tripped.state is not CircuitState.OPEN:
        raise AssertionError(f"{contender.label}: did not open")


def _sync_floor(url: str) -> Contender:
    """pybreaker's own floor: the sync client's ``EVALSHA`` costs less CPU than asyncio's."""
    import redis

    client = redis.Redis.from_url(url)
    sha = client.script_load(FLOOR_SCRIPT)

    async def call() -> None:
        client.evalsha(sha, 0)

    async def close() -> None:
        client.close()

    return Contender(
        "raw `EVALSHA`, sync client",
        call,
        note="for pybreaker's row: the same floor without asyncio (blocks the loop)",
        close=close,
    )


async def _pybreaker(url: str) -> Contender:
    import pybreaker
    import redis

    client = redis.Redis.from_url(url)

    def breaker(namespace: str) -> Any:
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
        return pybreaker.CircuitBreaker(fail_max=1, reset_timeout=LONG, state_storage=storage)

    ok, tripped = breaker("bench-ok"), breaker("bench-open")

    async def call() -> None:
        with ok.calling():
            await noop()

    async def fail() -> None:
        with tripped.calling():
            raise Boom

    async def reject() -> None:
        try:
            with tripped.calling():
                raise AssertionError("a rejected call ran")
        except pybreaker.CircuitBreakerError:
            pass

    try:
        await fail()
    except (Boom, pybreaker.CircuitBreakerError):
        pass
    if tripped.current_state != "open":
        raise AssertionError("pybreaker did not open")

    async def close() -> None:
        client.close()

    return Contender(
        f"pybreaker {version('pybreaker')} `CircuitRedisStorage`",
        call,
        reject,
        note="sync redis client in this process: blocks the loop, so 100 tasks run one by one",
        close=close,
    )


async def _purgatory(url: str) -> Contender:
    from purgatory import AsyncCircuitBreakerFactory
    from purgatory.domain.model import OpenedState
    from purgatory.service._async.unit_of_work import AsyncRedisUnitOfWork

    uow = AsyncRedisUnitOfWork(url)
    factory = AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=LONG, uow=uow)
    await factory.initialize()

    async def call() -> None:
        async with await factory.get_breaker("bench-ok"):
            await noop()

    async def reject() -> None:
        try:
            async with await factory.get_breaker("bench-open"):
                raise AssertionError("a rejected call ran")
        except OpenedState as error:
            error.__traceback__ = None  # purgatory re-raises one instance: its traceback grows

    try:
        async with await factory.get_breaker("bench-open"):
            raise Boom
    except Boom:
        pass

    async def must_reject() -> None:
        async with await factory.get_breaker("bench-open"):
            raise AssertionError("a rejected call ran")

    await _expect_rejected(must_reject, OpenedState)

    async def close() -> None:
        await uow.contexts.redis.aclose()

    return Contender(
        f"purgatory {version('purgatory')} Redis unit of work", call, reject, close=close
    )


# ---------------------------------------------------------------- throughput


async def _per_second(call: Call, tasks: int, per_task: int) -> float:
    async def worker() -> None:
        for _ in range(per_task):
            await call()

    gc.collect()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return tasks * per_task / (time.perf_counter() - started)


async def _throughput(contenders: list[Contender], smoke: bool) -> None:
    per_task = {1: 20 if smoke else 1500, 100: 2 if smoke else 20}
    rounds = 1 if smoke else 3
    shuffle = random.Random(3)
    live = [c for c in contenders if c.call is not None]
    for c in live:
        c.per_second = {1: 0.0, 100: 0.0}
    for round_ in range(rounds + 1):  # round 0 warms up (opens the pools' connections)
        shuffle.shuffle(live)
        for c in live:
            assert c.call is not None
            assert c.per_second is not None
            for tasks, calls in per_task.items():
                rate = await _per_second(c.call, tasks, calls * c.scale)
                if round_:
                    c.per_second[tasks] = max(c.per_second[tasks], rate)


# ---------------------------------------------------------------- round trips


class Monitor:
    """Counts client commands between two ``ECHO`` markers on a ``MONITOR`` connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: list[str] = []

    async def count(
        self, marker_client: Any, body: Callable[[], Awaitable[None]]
    ) -> tuple[int, int]:
        """``(client commands, commands incl. script internals)`` issued while ``body`` ran."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"MONITOR\r\n")
            await writer.drain()
            assert (await reader.readline()).startswith(b"+OK")
            tag = f"{random.random():.12f}"
            await marker_client.config_resetstat()
            await marker_client.echo(f"start-{tag}")
            await body()
            await marker_client.echo(f"end-{tag}")
            stats = await marker_client.info("commandstats")
            client_commands = 0
            started = False
            while True:
                line = (await asyncio.wait_for(reader.readline(), 10)).decode(errors="replace")
                if f'"end-{tag}"' in line:
                    break
                if f'"start-{tag}"' in line:
                    started = True
                    continue
                if started and "lua]" not in line:
                    client_commands += 1
        finally:
            writer.close()
            await writer.wait_closed()
        skip = {"cmdstat_echo", "cmdstat_config|resetstat", "cmdstat_info", "cmdstat_monitor"}
        executed = sum(v["calls"] for k, v in stats.items() if k not in skip)
        # INFO's own count is not in its reply; echo/config/monitor are the measurement's own
        return client_commands, executed


async def _round_trips(
    contenders: list[Contender], port: int, marker_client: Any, smoke: bool
) -> dict[str, tuple[str, str]]:
    n = 20 if smoke else 200
    monitor = Monitor(port)
    out: dict[str, tuple[str, str]] = {}
    for c in contenders:
        cells = []
        for call in (c.call, c.reject):
            if call is None:
                cells.append("n/a")
                continue

            async def body(call: Call = call) -> None:
                for _ in range(n):
                    await call()
                await asyncio.sleep(0.02)  # let a batched flush (every 5 ms) land inside

            client, executed = await monitor.count(marker_client, body)
            cells.append(f"{client / n:.2f} ({executed / n:.1f})")
        out[c.label] = (cells[0], cells[1])
    return out


async def _redis_cpu(
    contenders: list[Contender], marker_client: Any, smoke: bool
) -> dict[str, str]:
    """Redis CPU per successful call: ``INFO commandstats`` microseconds of every command run
    (a script's internals are inside its ``EVALSHA``'s time), divided by the calls made.

    Measured apart from the ``MONITOR`` count: feeding a monitor costs Redis time too.
    """
    n = 50 if smoke else 2000
    out: dict[str, str] = {}
    skip = {"cmdstat_config|resetstat", "cmdstat_info"}
    for c in contenders:
        if c.call is None or c.skipped:
            continue
        best = float("inf")
        for _ in range(1 if smoke else 3):
            await marker_client.config_resetstat()
            for _ in range(n):
                await c.call()
            await asyncio.sleep(0.02)  # a batched flush lands inside
            stats = await marker_client.info("commandstats")
            usec = sum(v["usec"] for k, v in stats.items() if k not in skip)
            best = min(best, usec / n)
        out[c.label] = f"{best:.1f}"
    return out


# ---------------------------------------------------------------- propagation


async def _propagation(url: str, smoke: bool) -> tuple[list[float], list[float]]:
    from tests.fleet import Worker

    trips = 2 if smoke else 20
    config = {"failure_threshold": 1, "recovery_timeout": LONG}
    logs = Path(tempfile.mkdtemp(prefix="aioresil-bench-"))
    spec = {"url": url, "name": "propagation", "config": config}
    workers = [Worker(spec, logs / f"worker-{i}.log") for i in range(3)]
    backend = RedisBackend.from_url(url, listen=False)
    from_sent: list[float] = []
    from_reply: list[float] = []
    try:
        for w in workers:
            assert w.receive()["event"] == "ready"
            w.send("warm")
        for w in workers:
            assert (await w.areceive())["outcome"] == "ok"
        deadline = time.monotonic() + 10
        while (await backend.client.pubsub_numsub(backend.events_channel))[0][1] < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("workers never subscribed")
            await asyncio.sleep(0.01)
        breaker = CircuitBreaker("propagation", config=BreakerConfig(**config), backend=backend)
        for _ in range(trips):
            await breaker.reset()
            for w in workers:
                w.send("watch", until=time.time() + 5, interval=0.0005, state="closed")
            for w in workers:
                assert (await w.areceive())["seen"] is not None
            for w in workers:
                w.send("watch", until=time.time() + 5, interval=0.0005, state="open")
            await asyncio.sleep(0.03)  # every watcher is polling
            sent = 0.0
            try:
                async with breaker:
                    sent = time.time()
                    raise Boom
            except Boom:
                pass
            replied = time.time()
            seen = [(await w.areceive())["seen"] for w in workers]
            if None in seen:
                raise RuntimeError("a worker never saw OPEN")
            from_sent.append(max(seen) - sent)
            from_reply.append(max(seen) - replied)
    finally:
        for w in workers:
            w.stop()
        await backend.aclose()
        await backend.client.connection_pool.aclose()
    return from_sent, from_reply


# ---------------------------------------------------------------- main


async def _build(url: str, backend: RedisBackend) -> list[Contender]:
    from aioresil import MemoryBackend

    client = backend.client
    sha = await client.script_load(FLOOR_SCRIPT)

    async def floor() -> None:
        await client.evalsha(sha, 0)

    contenders = [
        Contender("raw `EVALSHA` (`return 1`), the floor", floor),
        _aioresil("aioresil strict", backend, BreakerConfig(recovery_timeout=LONG)),
        _aioresil(
            "aioresil batched",
            backend,
            BreakerConfig(recovery_timeout=LONG, recording="batched"),
            scale=10,
        ),
        _aioresil("aioresil memory backend", MemoryBackend(), BreakerConfig(), scale=20),
    ]
    for c in contenders[1:]:
        await _trip_aioresil(c)
    contenders.append(_sync_floor(url))
    for name, build in (("pybreaker", _pybreaker), ("purgatory", _purgatory)):
        try:
            contenders.append(await build(url))
        except ImportError:
            contenders.append(Contender(name, skipped="not installed"))
    return contenders


async def _close(contenders: list[Contender]) -> None:
    for c in contenders:
        if c.close is not None:
            await c.close()


async def _verify(contenders: list[Contender]) -> None:
    """Every aioresil success breaker is still CLOSED and counted every call it made."""
    for c in contenders:
        if c.breakers is not None:
            ok, tripped = c.breakers
            stats = await ok.stats()
            if stats.state is not CircuitState.CLOSED or stats.failure_count:
                raise AssertionError(f"{c.label}: {stats}")
            if (await tripped.stats()).state is not CircuitState.OPEN:
                raise AssertionError(f"{c.label}: the tripped breaker closed")


async def main(smoke: bool) -> str:
    from tests.servers import RedisServer, free_port

    server = RedisServer(free_port()).start()
    try:
        backend = RedisBackend.from_url(server.url, max_connections=128)
        try:
            contenders = await _build(server.url, backend)
            try:
                await _throughput(contenders, smoke)
                trips = await _round_trips(
                    [c for c in contenders if c.call is not None],
                    server.port,
                    backend.client,
                    smoke,
                )
                cpu = await _redis_cpu(contenders, backend.client, smoke)
                await _verify(contenders)
            finally:
                await _close(contenders)
        finally:
            await backend.aclose()
            await backend.client.connection_pool.aclose()
        from_sent, from_reply = await _propagation(server.url, smoke)
    finally:
        server.cleanup()
    return _report(contenders, trips, cpu, from_sent, from_reply)


def _report(
    contenders: list[Contender],
    trips: dict[str, tuple[str, str]],
    cpu: dict[str, str],
    from_sent: list[float],
    from_reply: list[float],
) -> str:
    floor, memory = contenders[0], contenders[3]
    assert floor.per_second is not None
    assert memory.per_second is not None
    rows = []
    for c in contenders:
        if c.skipped or c.per_second is None:
            rows.append([c.label, *["-"] * 9, c.skipped])
            continue
        ratios = [
            f"{c.per_second[t] / base.per_second[t]:.2f}x"  # type: ignore[index]
            for base in (floor, memory)
            for t in (1, 100)
        ]
        success, rejected = trips.get(c.label, ("-", "-"))
        rows.append(
            [
                c.label,
                f"{c.per_second[1]:,.0f}",
                f"{c.per_second[100]:,.0f}",
                *ratios,
                success,
                rejected,
                cpu.get(c.label, "-"),
                c.note,
            ]
        )
    table = markdown_table(
        [
            "contender",
            "calls/s, 1 task",
            "calls/s, 100 tasks",
            "vs EVALSHA, 1 task",
            "vs EVALSHA, 100 tasks",
            "vs memory, 1 task",
            "vs memory, 100 tasks",
            "round trips per success (commands)",
            "round trips per rejection (commands)",
            "Redis µs per success",
            "note",
        ],
        rows,
    )

    def ms(values: list[float], fn: Callable[[list[float]], float]) -> str:
        return f"{fn(values) * 1e3:.2f} ms"

    propagation = markdown_table(
        ["measured from", "median", "max", "trips"],
        [
            [
                "failure record sent (upper bound on the transition)",
                ms(from_sent, statistics.median),
                ms(from_sent, max),
                str(len(from_sent)),
            ],
            [
                "tripping process read the reply",
                ms(from_reply, statistics.median),
                ms(from_reply, max),
                str(len(from_reply)),
            ],
        ],
    )
    return (
        "## Breaker on Redis (`benchmarks/bench_redis_breaker.py`)\n\n"
        "Successful guarded calls of a no-op per second on a loopback `redis-server` (best of "
        "interleaved rounds), as throughput ratios: above 1.00x is faster than the base. "
        "Round trips are client commands seen by `MONITOR` per call (script internals "
        "skipped); in brackets every command Redis ran (`INFO commandstats`, script internals "
        "included). Rejections are calls on a tripped breaker whose recovery timeout has not "
        "elapsed. Redis µs per success: `INFO commandstats` microseconds of every command "
        "Redis ran (script internals inside their `EVALSHA`), per successful call, best of 3 "
        "runs of 2,000 calls without `MONITOR` (a CLOSED breaker; memory rows make no "
        "command).\n\n" + table + "\n\n"
        "Propagation: time until the last of 3 other processes' local views (`breaker.state`, "
        "polled every 0.5 ms) showed OPEN after this process tripped the circuit. Negative "
        "values mean the `PUBLISH` inside the script reached the watchers before the tripping "
        "process had read its own reply.\n\n" + propagation
    )
