"""A registry: one breaker per name, all on one backend, read together by health checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from .backends.base import BreakerBackend, BreakerHandle, BreakerReading
from .backends.memory import MemoryBackend
from .breaker import BreakerStats, CallObserver, CircuitBreaker, stats_from_record
from .clock import Clock, SystemClock
from .core.config import BreakerConfig
from .events import Listener
from .exceptions import BackendError

__all__ = ["BreakerRegistry"]


class BreakerRegistry:
    """Creates breakers on first use and hands back the same one afterwards.

    Args:
        backend: shared by every breaker of the registry (memory by default).
        default_config: used by :meth:`get` when it is given no config.
        clock: passed to every breaker.

    Example::

        registry = BreakerRegistry(backend=redis_backend)
        async with registry.get("openai"):
            ...
    """

    def __init__(
        self,
        *,
        backend: BreakerBackend | None = None,
        default_config: BreakerConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        if default_config is not None and not isinstance(default_config, BreakerConfig):
            raise TypeError(
                f"default_config must be a BreakerConfig, got {type(default_config).__name__}"
            )
        self.backend: BreakerBackend = backend if backend is not None else MemoryBackend()
        self.default_config = default_config if default_config is not None else BreakerConfig()
        self._clock = clock
        system = clock is None or type(clock) is SystemClock
        self._mono = time.monotonic if system or clock is None else clock.monotonic
        self._wall = time.time if system or clock is None else clock.time
        self._breakers: dict[str, CircuitBreaker] = {}
        self._handles: list[BreakerHandle] = []  # in creation order, for operator reads
        self._listeners: list[Listener] = []
        self._call_observers: list[CallObserver] = []

    def get(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        """The breaker called ``name``, created with ``config`` (or the default) on first use.

        Asking again with a *different* explicit config raises ``ValueError``: two parts of a
        program silently disagreeing about a circuit's rules is a bug worth hearing about.
        """
        breaker = self._breakers.get(name)
        if breaker is not None:
            if config is not None and config != breaker.config:
                raise ValueError(
                    f"breaker {name!r} already exists with a different config; "
                    "pass the same config or none"
                )
            return breaker
        breaker = CircuitBreaker(
            name, config=config or self.default_config, backend=self.backend, clock=self._clock
        )
        for listener in self._listeners:
            breaker.add_listener(listener)
        for observer in self._call_observers:
            breaker.add_call_observer(observer)
        self._breakers[name] = breaker
        self._handles.append(breaker.handle)
        return breaker

    def add_listener(self, listener: Listener) -> None:
        """Listen to every breaker of the registry, present and future."""
        self._listeners.append(listener)
        for breaker in self._breakers.values():
            breaker.add_listener(listener)

    def add_call_observer(self, observer: CallObserver) -> None:
        """Observe the calls of every breaker of the registry, present and future (see
        :meth:`CircuitBreaker.add_call_observer`)."""
        self._call_observers.append(observer)
        for breaker in self._breakers.values():
            breaker.add_call_observer(observer)

    def names(self) -> list[str]:
        """Names of the breakers created so far, in creation order."""
        return list(self._breakers)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    async def readings(
        self, *, fallback: bool = False
    ) -> list[tuple[CircuitBreaker, BreakerReading]]:
        """``(breaker, (record, record_now, wall_offset))`` for every breaker, in creation
        order: one :meth:`~aioresil.backends.base.BreakerBackend.read_breakers` call (in memory
        a direct read, on Redis one round trip after flushing batched outcomes).

        The raw material of :meth:`stats` and of the operator endpoints, which render
        thousands of breakers without building a :class:`BreakerStats` each. Raises
        :class:`~aioresil.BackendError` when the backend cannot answer; with ``fallback``,
        each breaker then answers by its own policy instead (its local fallback record, or
        the error of a ``fail_closed`` breaker).
        """
        breakers = list(self._breakers.values())
        if not breakers:
            return []
        try:
            readings = await self.backend.read_breakers(self._handles, self._mono(), self._wall())
        except BackendError:
            if not fallback:
                raise
            now, wall = self._mono(), self._wall()
            readings = await asyncio.gather(*(b.handle.refresh(now, wall) for b in breakers))
        return list(zip(breakers, readings, strict=True))

    async def stats(self) -> dict[str, BreakerStats]:
        """``{name: BreakerStats}`` for every breaker.

        One :meth:`readings` call for all of them. When the backend cannot answer, each
        breaker answers by its own policy (local fallback or error).
        """
        return {
            b.name: stats_from_record(b.name, b.config, rec, rec_now, offset)
            for b, (rec, rec_now, offset) in await self.readings(fallback=True)
        }

    async def reset_all(self) -> None:
        """Reset every breaker to CLOSED with cleared counters."""
        await asyncio.gather(*(b.reset() for b in list(self._breakers.values())))

    def __repr__(self) -> str:
        return f"BreakerRegistry(breakers={len(self._breakers)}, backend={self.backend!r})"
