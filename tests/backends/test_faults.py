"""Redis faults, for real: a ``redis-server`` behind the fault-injection proxy, no mocks.

Each fault (black hole, replies dropped, ``DEBUG SLEEP`` past the deadline, ``CLIENT PAUSE``,
``maxmemory`` + ``noeviction``, ``kill -9`` + restart, ``SCRIPT FLUSH``) is played against
breakers (both policies), the DLQ, checkpoints, the bulkhead, the rate limiter and the health
app. The client is built as a new user builds it, ``redis.asyncio.Redis(host, port)``: no
socket timeout, redis-py's default retries. What is asserted:

* every call is decided: the first within the operation deadline plus a generous margin, the
  next ones without a socket wait (a batch of them far faster than one deadline each); the
  bounds are ceilings for a slow shared machine, never speed claims;
* the state after recovery, and exact counts where the contract promises them;
* nothing handed to the DLQ is lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import redis.retry
from redis._parsers.base import BaseParser
from redis.backoff import NoBackoff

from aioresil import (
    BackendError,
    BackendState,
    BackendStateChanged,
    BackendUnavailableError,
    BreakerConfig,
    Bulkhead,
    CheckpointStore,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    DeadLetterQueue,
    PoolTimeoutError,
    RateLimiter,
    RedisBackend,
    health_app,
)
from aioresil.backends.redis import map_redis_error
from aioresil.dashboard import dashboard_app
from aioresil.registry import BreakerRegistry

from ..faultproxy import FaultProxy, Mode
from ..helpers import Boom, listener_synced, until
from ..servers import RedisServer, free_port

OP = 0.2
"""operation_timeout in these tests: small, so each fault costs the suite little."""

FIRST = OP + 3.0
"""Ceiling for the call that meets the fault (one deadline, plus a slow machine's margin)."""

BATCH = 100
BATCH_CEILING = 3.0
"""100 decisions after detection: each paying one deadline would take 100 * OP = 20 s."""

UNAVAILABLE = BackendState.UNAVAILABLE
HEALTHY = BackendState.HEALTHY


@pytest.fixture(scope="module")
def fault_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port(), extra_args=["--enable-debug-command", "yes"]).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def direct(fault_server: RedisServer) -> Iterator[redis.Redis]:
    """A client straight to the server (no proxy): to make faults and to check the truth."""
    client = redis.Redis(port=fault_server.port)
    client.flushall()
    client.script_flush()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 0)
    try:
        yield client
    finally:
        client.config_set("maxmemory", 0)
        client.close()


@pytest.fixture
def proxy(fault_server: RedisServer, direct: redis.Redis) -> Iterator[FaultProxy]:
    with FaultProxy(fault_server.port) as p:
        yield p


@asynccontextmanager
async def user_backend(port: int, **options: Any) -> AsyncIterator[RedisBackend]:
    """``RedisBackend(redis.asyncio.Redis(host, port))``: the client with no socket timeout."""
    client = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        async with RedisBackend(client, operation_timeout=OP, **options) as backend:
            yield backend
    finally:
        await client.aclose()


async def timed(awaitable: Any) -> tuple[float, Any]:
    """``(seconds, result or exception)``; never hangs past 20 s (the test then fails)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(20):
            result: Any = await awaitable
    except (Exception, CircuitOpenError) as exc:
        result = exc
    return time.monotonic() - started, result


async def guarded(breaker: CircuitBreaker, *, failing: bool, ran: list[int]) -> None:
    async with breaker:
        ran.append(1)
        if failing:
            raise Boom


def in_thread(fn: Any, *args: Any) -> threading.Thread:
    """Run a blocking command (``DEBUG SLEEP``) without blocking the test's loop."""
    thread = threading.Thread(target=fn, args=args, daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------- black hole


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_black_hole_breakers_decide_by_policy_at_once_and_recover(
    proxy: FaultProxy, policy: str
) -> None:
    changes: list[BackendStateChanged] = []
    async with user_backend(proxy.port) as backend:
        backend.health.subscribe(changes.append)
        config = BreakerConfig(failure_threshold=3, on_backend_error=policy)  # type: ignore[arg-type]
        breaker = CircuitBreaker("bh", config=config, backend=backend)
        ran: list[int] = []
        await guarded(breaker, failing=False, ran=ran)  # the view is CLOSED: no round trip next
        await listener_synced(backend)
        proxy.set_mode(Mode.BLACKHOLE)

        # The first call raced the detection: it runs (the view said CLOSED); recording it
        # meets the black hole and is cut at the deadline, not at "never".
        seconds, result = await timed(guarded(breaker, failing=True, ran=ran))
        assert isinstance(result, Boom)  # the caller's own exception, never ours
        assert seconds < FIRST
        assert backend.state is UNAVAILABLE
        assert [(c.old, c.new) for c in changes] == [(HEALTHY, UNAVAILABLE)]

        outcomes: list[str] = []

        async def batch() -> None:
            for _ in range(BATCH):
                try:
                    await guarded(breaker, failing=True, ran=ran)
                except Boom:
                    outcomes.append("ran")
                except CircuitOpenError:
                    outcomes.append("open")
                except BackendUnavailableError:
                    outcomes.append("refused")

        seconds, result = await timed(batch())
        assert result is None
        assert seconds < BATCH_CEILING
        if policy == "fail_open":
            # the local breaker protects: the outage's first failure counts, so 2 more open it
            assert outcomes == ["ran"] * 2 + ["open"] * (BATCH - 2)
            assert len(ran) == 4
        else:
            assert outcomes == ["refused"] * BATCH
            assert len(ran) == 2

        proxy.set_mode(Mode.PASS)
        await until(lambda: backend.state is HEALTHY, what="probe finds Redis back")
        assert [c.new for c in changes] == [UNAVAILABLE, BackendState.RECOVERING, HEALTHY]
        # decisions are remote again: the shared state is Redis's (the local counts of the
        # outage are not merged into it), and a success is recorded there
        await guarded(breaker, failing=False, ran=ran)
        stats = await breaker.stats()
        assert stats.state is CircuitState.CLOSED
        assert stats.success_count == 2


async def test_black_hole_stores_and_policies_are_bounded(proxy: FaultProxy) -> None:
    async with user_backend(proxy.port) as backend:
        dlq = DeadLetterQueue(backend, name="jobs")
        store = CheckpointStore(backend)
        bulkhead = Bulkhead(2, backend=backend, name="bh")
        limiter = RateLimiter(100, backend=backend, name="rl")
        await store.save("t1", {"step": 1})
        proxy.set_mode(Mode.BLACKHOLE)

        seconds, entry_id = await timed(dlq.push("t", {"n": 1}, "down"))
        assert isinstance(entry_id, str)  # spooled, not raised
        assert seconds < FIRST
        assert dlq.spooled == 1
        for operation in (
            store.save("t1", {"step": 2}),
            store.load("t1"),
            bulkhead.call(asyncio.sleep, 0),
            limiter.call(asyncio.sleep, 0),
        ):
            seconds, result = await timed(operation)
            assert isinstance(result, BackendUnavailableError), result
            assert seconds < FIRST

        proxy.set_mode(Mode.PASS)
        await until(lambda: backend.state is HEALTHY and dlq.spooled == 0)
        assert await dlq.get(entry_id) is not None
        checkpoint = await store.load("t1")
        assert checkpoint is not None and checkpoint.state == {"step": 1}
        assert await bulkhead.call(asyncio.sleep, 0) is None
        assert await limiter.call(asyncio.sleep, 0) is None


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_a_read_cut_as_contention_then_as_an_outage_still_answers_by_policy(
    proxy: FaultProxy, policy: str
) -> None:
    """The first read of ``readings(fallback=True)`` is cut while Redis answered another
    operation meanwhile (read as contention, not an outage); each breaker then reads alone,
    that read finds the outage, and a fail_open breaker answers with its local fallback (it
    raised, and the health endpoint answered 503) while a fail_closed one raises."""
    async with user_backend(proxy.port) as backend:
        registry = BreakerRegistry(backend=backend)
        config = BreakerConfig(on_backend_error=policy)  # type: ignore[arg-type]
        breaker = registry.get("payments", config)
        await guarded(breaker, failing=False, ran=[])
        await listener_synced(backend)
        proxy.set_mode(Mode.BLACKHOLE)
        read = asyncio.create_task(registry.readings(fallback=True))
        await until(lambda: len(backend._deadlines) > 0, what="the read in flight")
        backend._replies += 1  # what a reply to another operation meanwhile does
        seconds, result = await timed(read)
        assert seconds < FIRST
        assert backend.state is UNAVAILABLE  # the second read found the outage
        if policy == "fail_open":
            assert not isinstance(result, BaseException), result
            ((_, (record, _, _)),) = result
            assert record.state is CircuitState.CLOSED  # the local view
        else:
            assert isinstance(result, BackendUnavailableError), result


async def test_black_hole_health_and_dashboard_answer_and_say_redis_is_down(
    proxy: FaultProxy,
) -> None:
    """Issue 14: with the client's default (no socket timeout) every Redis read of the health
    app and the dashboard hung on a black hole (10 s with from_url's defaults). Here the hole
    opens while the backend still believes Redis healthy, so each endpoint's own read meets
    it: every one answers, and says Redis is what is wrong."""
    async with user_backend(proxy.port) as backend:
        registry = BreakerRegistry(backend=backend)
        await guarded(registry.get("payments"), failing=False, ran=[])
        dlq = DeadLetterQueue(backend, name="jobs")
        health = health_app(registry=registry, dlq=dlq, timeout=1.0)
        dashboard = dashboard_app(registry=registry, dlq=dlq)
        await listener_synced(backend)
        proxy.set_mode(Mode.BLACKHOLE)
        assert backend.state is HEALTHY
        answers: dict[str, tuple[float, Any]] = {}
        async with _client(health) as http:
            for path in (
                "/health/circuit-breakers",
                "/health/dlq",
                "/health/ready",
                "/metrics",
                "/health",
            ):
                answers[path] = await timed(http.get(path))
        async with _client(dashboard) as http:
            for path in ("/api/breakers", "/api/dlq/stats", "/api/dlq/entries"):
                answers[path] = await timed(http.get(path))
        for path, (seconds, response) in answers.items():
            assert isinstance(response, httpx.Response), (path, response)  # not a hang
            assert seconds < FIRST, path
        status = {path: response.status_code for path, (_, response) in answers.items()}
        assert status == {
            "/health/circuit-breakers": 200,  # degraded: the local views, naming the outage
            "/health/dlq": 503,
            "/health/ready": 503,
            "/metrics": 200,
            "/health": 200,
            "/api/breakers": 200,  # the local views
            "/api/dlq/stats": 503,
            "/api/dlq/entries": 503,
        }
        assert backend.state is UNAVAILABLE
        metrics = answers["/metrics"][1].text
        assert 'aioresil_backend_up{backend="redis:aioresil"} 0' in metrics
        assert answers["/health/ready"][1].json()["backends"][0]["state"] == "unavailable"
        breakers = answers["/health/circuit-breakers"][1].json()
        assert breakers["status"] == "degraded"
        assert [b["state"] for b in breakers["backends_unavailable"]] == ["unavailable"]
        assert "no reply from Redis" in breakers["backends_unavailable"][0]["error"]
        assert "unavailable" in answers["/api/dlq/stats"][1].json()["error"]

        proxy.set_mode(Mode.PASS)
        await until(lambda: backend.state is HEALTHY, what="probe finds Redis back")
        async with _client(health) as http:
            assert (await http.get("/health/circuit-breakers")).status_code == 200


# ---------------------------------------------------------------------- replies dropped


async def test_dropped_replies_spool_dead_letters_that_are_stored_exactly_once(
    proxy: FaultProxy,
) -> None:
    async with user_backend(proxy.port) as backend:
        dlq = DeadLetterQueue(backend, name="jobs")
        await dlq.push("t", "before", "e")
        proxy.set_mode(Mode.DROP_REPLIES)
        # The first push reaches Redis; only its reply is lost. The next ones are spooled at
        # once. Replaying by entry id stores the first one once, not twice.
        ids = [await dlq.push("t", f"during {i}", "e") for i in range(5)]
        assert dlq.spooled == 5
        proxy.set_mode(Mode.PASS)
        await until(lambda: dlq.spooled == 0, what="spool flushed on recovery")
        assert await dlq.count() == 6
        for entry_id in ids:
            assert await dlq.get(entry_id) is not None


# ---------------------------------------------------------------------- a blocked server


async def test_debug_sleep_past_the_deadline_is_an_outage_then_recovers(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    async with user_backend(proxy.port) as backend:
        limiter = RateLimiter(1000, backend=backend, name="rl")
        bulkhead = Bulkhead(1, backend=backend, name="bh")
        await limiter.call(asyncio.sleep, 0)
        sleeper = redis.Redis(port=direct.connection_pool.connection_kwargs["port"])
        thread = in_thread(sleeper.execute_command, "DEBUG", "SLEEP", "1.5")
        await until(lambda: _sleeping(direct), what="server busy in DEBUG SLEEP")
        for operation in (limiter.call(asyncio.sleep, 0), bulkhead.call(asyncio.sleep, 0)):
            seconds, result = await timed(operation)
            assert isinstance(result, BackendUnavailableError), result
            assert seconds < FIRST
        await asyncio.to_thread(thread.join)
        sleeper.close()
        await until(lambda: backend.state is HEALTHY)
        assert await limiter.call(asyncio.sleep, 0) is None
        assert await bulkhead.call(asyncio.sleep, 0) is None


def _sleeping(direct: redis.Redis) -> bool:
    # A server in DEBUG SLEEP answers nobody: a PING with a short timeout tells.
    probe = redis.Redis(
        port=direct.connection_pool.connection_kwargs["port"],
        socket_timeout=0.05,
        retry=redis.retry.Retry(NoBackoff(), 0),  # redis-py 6+ retries with backoff otherwise
    )
    try:
        probe.ping()
        return False
    except redis.exceptions.TimeoutError:
        return True
    finally:
        probe.close()


async def test_client_pause_write_checkpoints_and_readiness(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    async with user_backend(proxy.port) as backend:
        store = CheckpointStore(backend)
        await store.save("job", {"at": 1})
        app = health_app(backend=backend, timeout=1.0)
        direct.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        seconds, result = await timed(store.save("job", {"at": 2}))
        assert isinstance(result, BackendUnavailableError)
        assert seconds < FIRST
        async with _client(app) as http:
            seconds, ready = await timed(http.get("/health/ready"))
        assert seconds < FIRST
        assert ready.status_code == 503
        assert ready.json()["backends"][0]["state"] == "unavailable"
        await until(lambda: backend.state is HEALTHY, what="pause over")
        assert (await store.save("job", {"at": 3})) >= 2
        loaded = await store.load("job")
        assert loaded is not None and loaded.state == {"at": 3}


# ---------------------------------------------------------------------- out of memory


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_out_of_memory_breakers_keep_protecting_and_the_dlq_loses_nothing(
    proxy: FaultProxy, direct: redis.Redis, policy: str
) -> None:
    async with user_backend(proxy.port) as backend:
        config = BreakerConfig(failure_threshold=5, on_backend_error=policy)  # type: ignore[arg-type]
        breaker = CircuitBreaker("oom", config=config, backend=backend)
        dlq = DeadLetterQueue(backend, name="jobs")

        @dlq.on_failure("job")
        async def job(n: int) -> None:
            raise Boom(n)

        ran: list[int] = []
        await guarded(breaker, failing=False, ran=ran)
        direct.config_set("maxmemory", 1)  # every write is refused with OOM from now on

        outcomes: list[str] = []
        for _ in range(20):
            try:
                await guarded(breaker, failing=True, ran=ran)
            except Boom:
                outcomes.append("ran")
            except CircuitOpenError:
                outcomes.append("open")
            except BackendUnavailableError:
                outcomes.append("refused")
        assert backend.state is UNAVAILABLE
        if policy == "fail_open":
            # exactly failure_threshold failing calls got through, then the local circuit
            assert outcomes == ["ran"] * 5 + ["open"] * 15
        else:
            # the call that met OOM ran (it raced the detection), then every call is refused
            assert outcomes == ["ran"] + ["refused"] * 19

        # a breaker created during the outage follows the policy instead of raising
        late = CircuitBreaker("late", config=config, backend=backend)
        late_ran: list[int] = []
        if policy == "fail_open":
            await guarded(late, failing=False, ran=late_ran)
            assert late_ran == [1]
        else:
            with pytest.raises(BackendUnavailableError):
                await guarded(late, failing=False, ran=late_ran)
            assert late_ran == []

        for n in range(7):
            with pytest.raises(Boom):
                await job(n)
        assert dlq.spooled == 7

        direct.config_set("maxmemory", 0)
        await until(lambda: backend.state is HEALTHY and dlq.spooled == 0)
        assert await dlq.count() == 7
        page = await dlq.list()
        assert sorted(e.payload["args"][0] for e in page.entries) == list(range(7))
        assert (await breaker.stats()).state is CircuitState.CLOSED


async def test_out_of_memory_readiness_is_503_and_metrics_keep_serving(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    async with user_backend(proxy.port) as backend:
        registry = BreakerRegistry(backend=backend)
        breaker = registry.get("payments")
        await guarded(breaker, failing=False, ran=[])
        dlq = DeadLetterQueue(backend, name="jobs")
        app = health_app(registry=registry, dlq=dlq, timeout=1.0)
        direct.config_set("maxmemory", 1)
        # No call met the OOM yet: PING still passes, the readiness write check does not.
        assert backend.state is HEALTHY
        async with _client(app) as http:
            answers = {
                path: await timed(http.get(path))
                for path in (
                    "/health/ready",
                    "/health",
                    "/metrics",
                    "/health/dlq",
                    "/health/circuit-breakers",
                )
            }
        for path, (seconds, _) in answers.items():
            assert seconds < FIRST, path
        ready = answers["/health/ready"][1]
        assert ready.status_code == 503
        assert "OutOfMemoryError" in ready.json()["backends"][0]["error"]
        assert answers["/health"][1].status_code == 200
        metrics = answers["/metrics"][1]
        assert metrics.status_code == 200
        assert 'aioresil_backend_up{backend="redis:aioresil"} 0' in metrics.text
        assert 'aioresil_circuitbreaker_state{name="payments",state="closed"} 1' in metrics.text
        assert answers["/health/dlq"][1].status_code == 503


# ---------------------------------------------------------------------- READONLY, BUSY


@pytest.mark.parametrize("fault", ["READONLY", "BUSY"])
async def test_refusing_replies_are_outages_and_caller_faults_are_not(
    proxy: FaultProxy, direct: redis.Redis, fault: str
) -> None:
    port = direct.connection_pool.connection_kwargs["port"]
    async with user_backend(proxy.port) as backend:
        config = BreakerConfig(on_backend_error="fail_closed")
        breaker = CircuitBreaker(fault.lower(), config=config, backend=backend)
        store = CheckpointStore(backend)
        await guarded(breaker, failing=False, ran=[])
        # a caller's fault is raised as such and marks nothing
        with pytest.raises(BackendError) as caller_fault:
            await backend.execute("bad command", lambda: backend.client.execute_command("NOPE"))
        assert not isinstance(caller_fault.value, BackendUnavailableError)
        assert backend.state is HEALTHY

        busy: threading.Thread | None = None
        if fault == "READONLY":  # a replica of a master that does not exist: read-only
            direct.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        else:  # a script that runs past lua-time-limit: everyone else gets BUSY
            direct.config_set("lua-time-limit", 10)
            spinner = redis.Redis(port=port)
            busy = in_thread(_spin, spinner)
            await until(lambda: _busy(port), what="server BUSY")
        try:
            seconds, result = await timed(store.save("job", 1))
            assert isinstance(result, BackendUnavailableError), result
            assert fault in str(result) or "ReadOnly" in str(result)
            assert seconds < FIRST
            assert backend.state is UNAVAILABLE
            with pytest.raises(BackendUnavailableError):
                await guarded(breaker, failing=False, ran=[])
        finally:
            if fault == "READONLY":
                direct.execute_command("REPLICAOF", "NO", "ONE")
            else:
                redis.Redis(port=port).script_kill()
                assert busy is not None
                await asyncio.to_thread(busy.join)
                direct.config_set("lua-time-limit", 5000)
        await until(lambda: backend.state is HEALTHY)
        assert await store.save("job", 1) == 1
        await guarded(breaker, failing=False, ran=[])


def _spin(client: redis.Redis) -> None:
    try:
        client.eval("while true do end", 0)
    except redis.exceptions.ResponseError:
        pass  # killed by SCRIPT KILL
    finally:
        client.close()


def _busy(port: int) -> bool:
    probe = redis.Redis(port=port, socket_timeout=1, retry=redis.retry.Retry(NoBackoff(), 0))
    try:
        probe.ping()
        return False
    except redis.exceptions.ResponseError as exc:
        return str(exc).startswith("BUSY")
    finally:
        probe.close()


# ---------------------------------------------------------------------- kill -9, script flush


async def test_kill_and_restart(own_redis_server: RedisServer) -> None:
    async with user_backend(own_redis_server.port) as backend:
        config = BreakerConfig(failure_threshold=2, on_backend_error="fail_closed")
        breaker = CircuitBreaker("k", config=config, backend=backend)
        store = CheckpointStore(backend)
        bulkhead = Bulkhead(1, backend=backend, name="bh")
        await guarded(breaker, failing=False, ran=[])
        await store.save("job", 1)
        assert own_redis_server.process is not None
        os.kill(own_redis_server.process.pid, signal.SIGKILL)
        own_redis_server.process.wait(5)
        for operation in (
            store.load("job"),
            bulkhead.call(asyncio.sleep, 0),
            guarded(breaker, failing=True, ran=[]),
        ):
            seconds, result = await timed(operation)
            assert isinstance(result, BackendUnavailableError | Boom), result
            assert seconds < FIRST
        assert backend.state is UNAVAILABLE
        seconds, result = await timed(guarded(breaker, failing=False, ran=[]))
        assert isinstance(result, BackendUnavailableError)
        own_redis_server.start()  # no persistence: it comes back empty
        await until(lambda: backend.state is HEALTHY, what="probe finds the new server")
        assert await store.load("job") is None  # the data died with the server
        assert await bulkhead.call(asyncio.sleep, 0) is None
        await guarded(breaker, failing=False, ran=[])
        assert (await breaker.stats()).state is CircuitState.CLOSED


async def test_script_flush_is_not_an_outage(proxy: FaultProxy, direct: redis.Redis) -> None:
    async with user_backend(proxy.port) as backend:
        breaker = CircuitBreaker("sf", backend=backend)
        dlq = DeadLetterQueue(backend, name="jobs")
        store = CheckpointStore(backend)
        await guarded(breaker, failing=False, ran=[])
        await dlq.push("t", 1, "e")
        direct.script_flush()
        with pytest.raises(Boom):
            await guarded(breaker, failing=True, ran=[])
        await dlq.push("t", 2, "e")
        await store.save("job", 1)
        assert backend.health.stats().outages == 0
        assert await dlq.count() == 2
        assert (await breaker.stats()).failure_count == 1


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


# ---------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    "reply",
    [
        "OOM command not allowed when used memory > 'maxmemory'.",
        "READONLY You can't write against a read only replica.",
        "LOADING Redis is loading the dataset in memory",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "CLUSTERDOWN The cluster is down",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "BUSY Redis is busy running a script.",
        "MISCONF Redis is configured to save RDB snapshots, but it's unable to persist.",
        "NOREPLICAS Not enough good replicas to write.",
    ],
)
def test_replies_that_mean_cannot_serve_now_are_outages(reply: str) -> None:
    # the error exactly as redis-py's own parser builds it from the server's reply
    error = BaseParser.parse_error(reply)
    assert isinstance(map_redis_error(error, "op"), BackendUnavailableError)


@pytest.mark.parametrize(
    "reply",
    [
        "ERR unknown command 'NOPE'",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR Error running script: user_script:1: attempt to compare nil with number",
        "NOPERM this user has no permissions to run the 'set' command",
    ],
)
def test_caller_faults_are_not_outages(reply: str) -> None:
    mapped = map_redis_error(BaseParser.parse_error(reply), "op")
    assert isinstance(mapped, BackendError)
    assert not isinstance(mapped, BackendUnavailableError)


def test_an_exhausted_pool_is_an_outage() -> None:
    mapped = map_redis_error(redis.exceptions.MaxConnectionsError("Too many connections"), "op")
    assert isinstance(mapped, PoolTimeoutError)
    assert isinstance(mapped, BackendUnavailableError)


async def test_a_slow_operation_while_redis_answers_others_is_not_an_outage(
    proxy: FaultProxy,
) -> None:
    async with user_backend(proxy.port) as backend:
        client = backend.client
        await backend.ping()  # a warm connection: the BLPOP below is one send on it
        sent = proxy.requests_seen

        async def pings() -> int:
            # once the BLPOP is on the wire (a condition, not a pause), on other connections
            await until(lambda: proxy.requests_seen > sent, what="the BLPOP sent")
            answered = 0
            for _ in range(5):
                await backend.ping()
                answered += 1
            return answered

        # a command that outlives the deadline (BLPOP on an empty list) while other
        # operations on other connections are answered: it fails, the backend stays healthy
        slow = backend.execute("slow", lambda: client.blpop(["empty"], timeout=1))
        result, answered = await asyncio.gather(slow, pings(), return_exceptions=True)
        assert isinstance(result, BackendUnavailableError), result
        assert "operation_timeout" in str(result)
        assert answered == 5
        assert backend.state is HEALTHY
        assert backend.health.stats().outages == 0


async def test_a_stalled_event_loop_is_not_an_outage(proxy: FaultProxy) -> None:
    """A blocking call on the loop outlives the deadline of an operation in flight: the
    deadline fires late, that operation fails, and the backend is not marked unavailable
    (every breaker would otherwise switch to its outage policy on a GC pause)."""
    async with user_backend(proxy.port) as backend:
        await backend.ping()  # a warm connection: the next ping is one send and one read
        # Each chunk is delayed OP/4 by the proxy: the ping is surely sent and waiting for
        # its reply when the loop blocks (for 3 deadlines), and its reply lands meanwhile.
        proxy.set_mode(Mode.LATENCY, latency=OP / 4)
        sent = proxy.requests_seen
        in_flight = asyncio.ensure_future(backend.ping())
        await until(lambda: proxy.requests_seen > sent, what="ping sent")
        time.sleep(OP * 3)  # noqa: ASYNC251 - the stall under test: a blocking call on the loop
        result = await asyncio.gather(in_flight, return_exceptions=True)
        assert isinstance(result[0], BackendUnavailableError), result
        proxy.set_mode(Mode.PASS)
        assert backend.state is HEALTHY
        assert backend.health.stats().outages == 0
        await backend.ping()  # the backend still serves remotely
