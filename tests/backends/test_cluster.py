"""The Redis backend on a real 3-master Redis Cluster (started on loopback by the fixture).

Redis Cluster refuses a script whose keys live in different slots (``CROSSSLOT``) and sends a
client to the node that owns a key's slot. These tests run the whole breaker lifecycle and the
checkpoint store through ``redis.asyncio.cluster.RedisCluster`` for names that land on
different slots (and so on different nodes), including names with ``{``, ``}``, ``:``, spaces
and non-ASCII text, and pin that each object's keys share one slot.

Every breaker here is ``fail_closed`` and log output is captured: a script error on the record
path is logged rather than raised (a storage problem must not replace the caller's result), so
the tests check both that no such line was written and that the stored state moved as expected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

import aioresil
from aioresil import BreakerConfig, CircuitBreaker, CircuitOpenError, CircuitState, RedisBackend
from aioresil.backends.breaker_schema import Field
from aioresil.testing import EventRecorder, FakeClock

from ..cluster import RedisClusterNodes
from ..helpers import eventually, until

pytestmark = pytest.mark.redis_server

NAMES = [
    "orders",
    "payments:eu",
    "{payments}",
    "x}y{z",
    "with space",
    "ünïcødé ✓",
    "名前:{}",
    "%7B",
]
PARTS = ("state", "trials", "window", "row")


class Boom(Exception):
    """A failing dependency."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes().start()
    try:
        yield nodes
    finally:
        nodes.cleanup()


@pytest.fixture
async def cluster_client(cluster: RedisClusterNodes) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    await client.initialize()
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


async def test_each_breakers_keys_share_one_slot_and_the_names_cover_every_node(
    cluster_client: RedisCluster,
) -> None:
    backend = RedisBackend(cluster_client, listen=False)
    slots = set()
    nodes = set()
    for name in NAMES:
        keys = [backend.key("cb", name, part) for part in PARTS]
        assert len({key_slot(key.encode()) for key in keys}) == 1, name
        slots.add(key_slot(keys[0].encode()))
        nodes.add(cluster_client.get_node_from_key(keys[0]).name)
    assert len(slots) == len(NAMES)  # no two names collide on a tag
    assert len(nodes) == 3  # the lifecycle below runs on every master


async def stored(client: RedisCluster, backend: RedisBackend, name: str) -> dict[str, str]:
    """The breaker's text fields as stored in the cluster (read without aioresil)."""
    raw = await client.hgetall(backend.key("cb", name, "state"))
    return {k.decode(): v.decode() for k, v in raw.items()}


LIFECYCLE = BreakerConfig(
    failure_threshold=2,
    recovery_timeout=10,
    success_threshold=1,
    on_backend_error="fail_closed",
)


async def test_breaker_lifecycle_runs_on_a_cluster_for_names_on_every_node(
    cluster_client: RedisCluster, clock: FakeClock, logs: list[dict[str, Any]]
) -> None:
    async with RedisBackend(cluster_client, clock=clock, listen=False) as backend:
        for name in NAMES:
            breaker = CircuitBreaker(name, config=LIFECYCLE, backend=backend, clock=clock)
            events = EventRecorder()
            breaker.add_listener(events)

            async with breaker:  # first call learns the (fresh) state
                pass
            created = int((await stored(cluster_client, backend, name))[Field.GENERATION])
            for _ in range(2):
                with pytest.raises(Boom):
                    async with breaker:
                        raise Boom
            assert breaker.state is CircuitState.OPEN, name
            with pytest.raises(CircuitOpenError):
                async with breaker:
                    raise AssertionError("rejected calls never run")

            clock.advance(10)
            async with breaker:  # the trial call
                assert breaker.state is CircuitState.HALF_OPEN
            assert breaker.state is CircuitState.CLOSED, name
            assert [(e.old, e.new) for e in events.of_type(aioresil.StateChanged)] == [
                (CircuitState.CLOSED, CircuitState.OPEN),
                (CircuitState.OPEN, CircuitState.HALF_OPEN),
                (CircuitState.HALF_OPEN, CircuitState.CLOSED),
            ]
            state = await stored(cluster_client, backend, name)
            # 2 successes, 2 failures; the local rejection was sent with the trial's acquire
            assert (
                state[Field.STATE],
                state[Field.SUCCESSES],
                state[Field.FAILURES],
                state[Field.REJECTED],
                state[Field.GENERATION],
            ) == (
                "closed",
                "2",
                "2",
                "1",
                str(created + 3),  # three transitions
            ), name

            await breaker.force_open()
            assert (await stored(cluster_client, backend, name))["st"] == "forced_open"
            with pytest.raises(CircuitOpenError):
                async with breaker:
                    raise AssertionError("rejected calls never run")
            await breaker.reset()
            state = await stored(cluster_client, backend, name)
            assert (
                state[Field.STATE],
                state[Field.SUCCESSES],
                state[Field.FAILURES],
                state[Field.REJECTED],
            ) == ("closed", "0", "0", "0")
            assert breaker.state is CircuitState.CLOSED
            # The state lives in the slot of its hash tag, on whichever node owns it.
            state_key = backend.key("cb", name, "state")
            assert await cluster_client.cluster_keyslot(state_key) == key_slot(state_key.encode())
    problems = [e for e in logs if e["log_level"] in ("warning", "error")]
    assert all(e["event"] == "circuit_state_changed" for e in problems), problems


async def test_stats_reads_a_breaker_on_a_cluster(
    cluster_client: RedisCluster, clock: FakeClock
) -> None:
    async with RedisBackend(cluster_client, clock=clock, listen=False) as backend:
        breaker = CircuitBreaker("stats {x}", config=LIFECYCLE, backend=backend, clock=clock)
        for _ in range(2):
            with pytest.raises(Boom):
                async with breaker:
                    raise Boom
        stats = await breaker.stats()
        assert (stats.state, stats.failure_count) == (CircuitState.OPEN, 2)


async def test_redis_time_drives_the_recovery_timeout_on_a_cluster(
    cluster_client: RedisCluster,
) -> None:
    config = BreakerConfig(
        failure_threshold=1, recovery_timeout=0.1, on_backend_error="fail_closed"
    )
    async with RedisBackend(cluster_client, listen=False) as backend:
        breaker = CircuitBreaker("timed {on} cluster", config=config, backend=backend)
        with pytest.raises(Boom):
            async with breaker:
                raise Boom
        with pytest.raises(CircuitOpenError) as rejected:
            async with breaker:
                pass
        assert rejected.value.retry_after is not None
        assert 0 < rejected.value.retry_after <= 0.1

        async def trial_allowed() -> bool:
            try:
                async with breaker:  # a trial: the script read TIME on the key's node
                    pass
            except CircuitOpenError:
                return False
            return True

        await eventually(trial_allowed, what="the recovery timeout passing on Redis TIME")
        state = await stored(cluster_client, backend, "timed {on} cluster")
        assert (state[Field.STATE], state[Field.TRIAL_SUCCESSES]) == ("half_open", "1")


async def test_a_transition_published_on_a_cluster_reaches_another_backends_view(
    cluster: RedisClusterNodes,
    cluster_client: RedisCluster,
) -> None:
    # redis-py's asyncio RedisCluster does support pub/sub (a plain SUBSCRIBE on one node
    # receives a PUBLISH run by a script on another); the failure is aioresil's resync.
    config = BreakerConfig(failure_threshold=1, recovery_timeout=60, on_backend_error="fail_closed")
    other_client = RedisCluster(host="127.0.0.1", port=cluster.ports[1])
    try:
        async with (
            RedisBackend(cluster_client) as tripping,
            RedisBackend(other_client) as watching,
        ):
            watcher = CircuitBreaker("pub sub:{x}", config=config, backend=watching)
            async with watcher:
                pass
            assert watcher.state is CircuitState.CLOSED

            async def subscribed() -> bool:
                numsub = await cluster_client.pubsub_numsub(watching.events_channel)
                return bool(numsub and numsub[0][1] >= 1)

            await eventually(subscribed, within=10, what="the listener subscribing")

            breaker = CircuitBreaker("pub sub:{x}", config=config, backend=tripping)
            with pytest.raises(Boom):
                async with breaker:
                    raise Boom
            await until(lambda: watcher.state is CircuitState.OPEN, within=5, what="the trip")
            assert watcher.state is CircuitState.OPEN
    finally:
        await other_client.aclose()


async def test_checkpoint_store_lifecycle_runs_on_a_cluster(
    cluster_client: RedisCluster,
) -> None:
    if not hasattr(aioresil, "CheckpointStore"):
        pytest.skip("aioresil.CheckpointStore is not in this tree yet")
    async with RedisBackend(cluster_client, listen=False) as backend:
        namespaces = ["jobs", "agents:{eu}", "ünï code ns"]
        for namespace in namespaces:
            store = aioresil.CheckpointStore(backend, namespace=namespace, keep_history=2)
            for task in NAMES:
                assert await store.save(task, {"task": task, "step": 1}) == 1
                assert await store.save(task, {"task": task, "step": 2}, expected_version=1) == 2
            loaded = await store.load(NAMES[3])
            assert loaded is not None
            assert (loaded.state, loaded.version) == ({"task": NAMES[3], "step": 2}, 2)
            assert [c.version for c in await store.history(NAMES[3])] == [2, 1]
            page = await store.list(limit=100)
            assert sorted(e.task_id for e in page.entries) == sorted(NAMES)
            assert page.next_cursor is None
            assert await store.delete(NAMES[0]) is True
            assert await store.load(NAMES[0]) is None
            assert len((await store.list()).entries) == len(NAMES) - 1
        for namespace in namespaces:
            parts = ("index", "d:" + NAMES[4], "h:" + NAMES[4])
            slots = {key_slot(backend.key("ckpt", namespace, part).encode()) for part in parts}
            assert len(slots) == 1, namespace


async def test_a_registry_of_breakers_in_many_slots_reads_as_on_one_node(
    cluster_client: RedisCluster, clock: FakeClock
) -> None:
    """Operator reads call breaker_read.lua once per breaker on a cluster (its 2 or 4 keys,
    all in the breaker's slot); rows and the health JSON come out whole."""
    from aioresil import BreakerRegistry
    from aioresil.health.rows import circuits_json, circuits_json_parts, rows_from_readings

    timed = BreakerConfig(
        failure_rate_threshold=0.9,
        window_duration=10.0,
        minimum_calls=2,
        on_backend_error="fail_closed",
    )
    async with RedisBackend(cluster_client, clock=clock, listen=False) as backend:
        registry = BreakerRegistry(backend=backend, clock=clock)
        for i, name in enumerate(NAMES):
            breaker = registry.get(name, timed if i % 2 else LIFECYCLE)
            async with breaker:
                pass
            with pytest.raises(Boom):
                async with breaker:
                    raise Boom
        readings = await registry.readings()
        rows = rows_from_readings(readings)
        assert [r.name for r in rows] == NAMES
        assert all((r.failure_count, r.success_count) == (1, 1) for r in rows)
        assert [r.failure_rate for r in rows[1::2]] == [0.5] * (len(NAMES) // 2)
        assert "".join(circuits_json_parts(readings)) == circuits_json(rows)


async def test_one_read_gives_each_breaker_its_own_leases_config_and_error_on_a_cluster(
    cluster_client: RedisCluster, clock: FakeClock
) -> None:
    """The cluster read calls the script once per breaker and merges the replies: each
    breaker's lease count, stored config and error must land on its own record."""
    from .test_read_rows import check_a_mixed_read

    async with (
        RedisBackend(cluster_client, clock=clock, listen=False) as writer,
        RedisBackend(cluster_client, clock=clock, listen=False) as reader,
        RedisBackend(cluster_client, clock=clock, listen=False) as third,
    ):
        await check_a_mixed_read(writer, reader, third, clock)
