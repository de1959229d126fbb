"""A read of the views in flight never rolls back what a reply or a message applied meanwhile.

The pub/sub listener resyncs every breaker's view after it (re)subscribes, and a fail-open
breaker's probe reads its view to leave the local fallback. Each reads Redis in one round
trip, then applies what it read, even an older generation (Redis lost transitions in a
failover). A transition whose reply or message arrives while that read is in flight is newer
than the read: applying the read over it turned the view back to CLOSED while Redis held
OPEN, and the hot path (CLOSED grants a permit locally) let calls through the open circuit.

A real ``redis-server``. :class:`HeldReads` lets the read's round trip complete and holds
only its result: Redis ran the read before the trip, as when its reply is slow to come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from aioresil import BreakerConfig, CircuitBreaker, CircuitOpenError, CircuitState, RedisBackend

from ..helpers import until


class Boom(Exception):
    pass


class HeldReads:
    """Wraps ``backend.read_views``: once armed, the next read runs on Redis, then its result
    is held until :meth:`release` (a reply slow to come back)."""

    def __init__(self, backend: RedisBackend) -> None:
        self.real = backend.read_views
        self.armed = False
        self.read = asyncio.Event()
        self._released = asyncio.Event()

    async def __call__(self, handles: Sequence[Any]) -> list[tuple[str, int, int]]:
        views = await self.real(handles)
        if self.armed:
            self.armed = False
            self.read.set()
            await self._released.wait()
        return views

    def release(self) -> None:
        self._released.set()

    async def redis_says(self, breaker: CircuitBreaker) -> str:
        ((state, _, _),) = await self.real([breaker.handle])
        return state


async def trip(breaker: CircuitBreaker) -> None:
    with pytest.raises(Boom):
        async with breaker:
            raise Boom
    await breaker.handle.flush()  # type: ignore[attr-defined]  # batched: sent now


async def granted(breaker: CircuitBreaker) -> bool:
    try:
        async with breaker:
            return True
    except CircuitOpenError:
        return False


def config(recording: str) -> BreakerConfig:
    return BreakerConfig(
        failure_threshold=1,
        recovery_timeout=60.0,
        recording=recording,  # type: ignore[arg-type]
        on_backend_error="fail_open",
    )


@pytest.mark.parametrize("recording", ["strict", "batched"])
async def test_a_listener_resync_in_flight_never_reopens_a_circuit_tripped_meanwhile(
    redis_url: str, recording: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with RedisBackend.from_url(redis_url) as backend:
        held = HeldReads(backend)
        monkeypatch.setattr(backend, "read_views", held)
        # The listener pauses right after each resync, before it reads its next pub/sub
        # message: what happens whenever the trip's message has not reached the socket yet
        # (it travels on another connection than the script's reply).
        resynced = asyncio.Event()
        go_on = asyncio.Event()
        real_resync = backend._resync_views

        async def resync_then_pause() -> None:
            await real_resync()
            resynced.set()
            await go_on.wait()
            go_on.clear()

        monkeypatch.setattr(backend, "_resync_views", resync_then_pause)
        breaker = CircuitBreaker(
            f"resync-race-{recording}", config=config(recording), backend=backend
        )
        assert await granted(breaker)
        await resynced.wait()  # the listener's first resync
        resynced.clear()
        go_on.set()
        assert breaker.state is CircuitState.CLOSED

        direct = aioredis.Redis.from_url(redis_url)
        try:
            held.armed = True
            await direct.client_kill_filter(_type="pubsub")  # the listener resubscribes
            await held.read.wait()  # Redis answered the resync's read: CLOSED
            await trip(breaker)  # this process trips it: the reply sets the view OPEN
            assert breaker.state is CircuitState.OPEN
            held.release()  # the read's reply, older than the trip, arrives now
            await resynced.wait()
            assert await held.redis_says(breaker) == "open"
            assert not await granted(breaker), "a call went through an open circuit"
            assert breaker.state is CircuitState.OPEN, "the resync rolled the view back"
            go_on.set()
        finally:
            go_on.set()
            await direct.aclose()


@pytest.mark.parametrize("recording", ["strict", "batched"])
async def test_a_probe_read_in_flight_keeps_a_trip_the_fallback_dropped_meanwhile(
    redis_url: str, recording: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"probe-race-{recording}"
    async with (
        RedisBackend.from_url(redis_url) as backend,
        RedisBackend.from_url(redis_url, listen=False) as other,  # another process
    ):
        held = HeldReads(backend)
        messages: list[bytes | str] = []
        real_on_message = backend._on_message

        def on_message(data: bytes | str) -> None:
            real_on_message(data)
            messages.append(data)

        monkeypatch.setattr(backend, "_on_message", on_message)
        breaker = CircuitBreaker(name, config=config(recording), backend=backend)
        elsewhere = CircuitBreaker(name, config=config(recording), backend=other)
        assert await granted(breaker)
        await until(lambda: backend._listener is not None, what="listener started")
        await until(lambda: backend._breakers[name].view.generation >= 0, what="view known")
        handle: Any = breaker.handle
        handle.backend_down("an operation found Redis unreachable")  # on the fallback now
        assert handle._fallback is not None

        monkeypatch.setattr(backend, "read_views", held)
        held.armed = True
        back = asyncio.ensure_future(handle.backend_back())  # the backend's recovery hook
        await held.read.wait()  # Redis answered the probe's read: CLOSED
        await trip(elsewhere)  # another process trips it, after that read
        await until(lambda: messages, what="the trip's message reached this process")
        held.release()
        await back
        assert handle._fallback is None
        assert await held.redis_says(breaker) == "open"
        assert not await granted(breaker), "a call went through an open circuit"
        assert breaker.state is CircuitState.OPEN, "the probe left a view older than Redis"


async def test_a_read_older_than_the_view_it_was_asked_from_is_adopted_a_newer_view_kept() -> None:
    """The rule of ``apply_read_view`` without I/O: below ``asked_at`` Redis lost transitions
    (a failover): adopt it, even over what arrived meanwhile; otherwise never go back."""
    async with RedisBackend.from_url("redis://127.0.0.1:1", listen=False) as backend:
        handle = backend.bind_breaker("rule", config("strict"))
        handle.apply_view("open", 5, 60_000_000)
        handle.apply_view("half_open", 6, -1)  # arrived while a read asked at 5 was in flight
        handle.apply_read_view("closed", 5, -1, asked_at=5)  # not newer than 6: kept
        assert (handle.view.state, handle.view.generation) == (CircuitState.HALF_OPEN, 6)
        handle.apply_read_view("closed", 3, -1, asked_at=5)  # Redis lost 4 and 5: adopted
        assert (handle.view.state, handle.view.generation) == (CircuitState.CLOSED, 3)
        handle.apply_read_view("open", 4, 1_000_000, asked_at=3)  # newer: applied
        assert (handle.view.state, handle.view.generation) == (CircuitState.OPEN, 4)
