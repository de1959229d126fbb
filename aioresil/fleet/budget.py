"""A retry budget shared by a whole fleet: retries limited to a fraction of recent successes.

Why fleet-wide: a per-process budget (:class:`~aioresil.RetryBudget`) bounds what *one*
process adds, but 50 processes each allowed 20 % extra still hammer a dependency that is down,
and a process that just started has a full bucket to spend. Finagle and gRPC's retry throttling
answer with a budget that counts what the service as a whole has seen; this is that budget,
kept in one Redis hash every process updates with one script (``retry_budget.lua``):

* a successful call deposits one success into the current bucket of a sliding window
  (``window`` seconds in ``buckets`` steps);
* a retry is granted only while ``retries_in_window + 1 <= ratio * successes_in_window +
  min_retries``, counted and taken in the same atomic step.

So under a full outage (no successes) the whole fleet retries at most ``min_retries`` times per
window, whatever the number of processes; when the service is healthy, retries can add at most
``ratio`` extra load. Successes are sent in batches (with the next retry question, or every
``flush_interval`` seconds), so a successful call costs no round trip.

On a :class:`~aioresil.MemoryBackend` the same rule runs in-process (:class:`BudgetModel` is
both that store and the model the Lua script is tested against).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..backends.keys import encode_name
from ..backends.scripts import load_script
from ..clock import Clock, SystemClock
from ..exceptions import AioresilError
from ..policies.base import Statistics
from ._common import FleetBackend, Split, check_backend, memory_now_ms, now_ms_arg

__all__ = ["BudgetModel", "FleetRetryBudget", "FleetRetryBudgetStatistics"]

_log = structlog.get_logger("aioresil")


@dataclass(slots=True)
class BudgetModel:
    """The budget's window in Python: the memory store, and the Lua script's reference model."""

    buckets: dict[tuple[str, int], int] = field(default_factory=dict)

    def step(
        self,
        now_ms: float,
        width_ms: float,
        buckets: int,
        ratio: float,
        min_retries: int,
        deposit: int,
        withdraw: bool,
    ) -> tuple[int, int, int]:
        """``retry_budget.lua`` in Python: ``(granted, successes, retries)``."""
        current = math.floor(now_ms / width_ms)
        successes = retries = 0
        for key in list(self.buckets):
            kind, bucket = key
            if bucket <= current - buckets:
                del self.buckets[key]
            elif kind == "s":
                successes += self.buckets[key]
            else:
                retries += self.buckets[key]
        if deposit > 0:
            self.buckets[("s", current)] = self.buckets.get(("s", current), 0) + deposit
            successes += deposit
        granted = 0
        if withdraw and retries + 1 <= ratio * successes + min_retries:
            self.buckets[("r", current)] = self.buckets.get(("r", current), 0) + 1
            retries += 1
            granted = 1
        return granted, successes, retries


@dataclass(frozen=True, slots=True)
class FleetRetryBudgetStatistics(Statistics):
    """The fleet's window as last seen, and what *this process* was granted and refused."""

    name: str
    successes: int
    retries: int
    allowed: float
    granted: int
    refused: int


class FleetRetryBudget:
    """Retries of every process of the fleet limited to ``ratio`` of the fleet's successes.

    Args:
        name: the budget's name; processes using one name on one Redis share the budget.
        backend: a :class:`~aioresil.backends.redis.RedisBackend` (fleet-wide) or a
            :class:`~aioresil.MemoryBackend` (this process only).
        ratio: retries allowed per successful call in the window (0.1 = 10 % extra load).
        window: seconds of history the rule looks at.
        buckets: steps the window slides in (``window / buckets`` seconds each).
        min_retries: retries the whole fleet may make per window regardless of successes.
        flush_interval: seconds successes may wait locally before they are sent.
        clock: time source of the memory store (tests); Redis uses its own ``TIME``.

    Example::

        budget = FleetRetryBudget("payments-api", backend=redis_backend, ratio=0.1)
        retry = Retry(4, budget=budget)
    """

    def __init__(
        self,
        name: str,
        *,
        backend: FleetBackend,
        ratio: float = 0.1,
        window: float = 10.0,
        buckets: int = 10,
        min_retries: int = 10,
        flush_interval: float = 0.25,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        encode_name(name)
        check_backend(backend, "FleetRetryBudget")
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1e6:
            raise ValueError(f"ratio must be a number >= 0, got {ratio!r}")
        if isinstance(window, bool) or not isinstance(window, int | float) or not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window!r}")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= 100:
            raise ValueError(f"buckets must be an int in 1..100, got {buckets!r}")
        if isinstance(min_retries, bool) or not isinstance(min_retries, int) or min_retries < 0:
            raise ValueError(f"min_retries must be an int >= 0, got {min_retries!r}")
        if not isinstance(flush_interval, int | float) or not flush_interval > 0:
            raise ValueError(f"flush_interval must be > 0 seconds, got {flush_interval!r}")
        if not math.isfinite(float(window)) or not math.isfinite(float(ratio)):
            raise ValueError("ratio and window must be finite")
        self.name = name
        self.backend = backend
        self.ratio = float(ratio)
        self.window = float(window)
        self.buckets = buckets
        self.min_retries = min_retries
        self.flush_interval = float(flush_interval)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._width_ms = self.window * 1000.0 / buckets
        self._pending = 0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._granted = 0
        self._refused = 0
        self._seen = (0, 0)
        self._model: BudgetModel | None
        self._model, runner = backend.open_storage(Split("fleet-retry-budget", name, BudgetModel))
        self._runner = runner
        self._key = "" if runner is None else runner.key("rb", name, "w")

    async def _step(self, deposit: int, withdraw: bool) -> tuple[int, int, int]:
        if self._model is not None:
            return self._model.step(
                memory_now_ms(self._clock),
                self._width_ms,
                self.buckets,
                self.ratio,
                self.min_retries,
                deposit,
                withdraw,
            )
        assert self._runner is not None
        reply: Any = await self._runner.run_script(
            load_script("retry_budget"),
            [self._key],
            [
                now_ms_arg(self._runner),
                repr(self._width_ms),
                self.buckets,
                repr(self.ratio),
                self.min_retries,
                deposit,
                "1" if withdraw else "0",
            ],
        )
        return int(reply[0]), int(reply[1]), int(reply[2])

    def deposit(self, successes: int = 1) -> None:
        """Credit successful calls (no I/O: sent with the next retry question or flush)."""
        self._pending += successes
        if self._model is not None:
            self._model_flush()
            return
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # sent with the next try_withdraw() or flush()
            self._flush_handle = loop.call_later(self.flush_interval, self._start_flush)

    def _model_flush(self) -> None:
        pending, self._pending = self._pending, 0
        assert self._model is not None
        _, successes, retries = self._model.step(
            memory_now_ms(self._clock),
            self._width_ms,
            self.buckets,
            self.ratio,
            self.min_retries,
            pending,
            False,
        )
        self._seen = (successes, retries)

    def _start_flush(self) -> None:
        self._flush_handle = None
        task = asyncio.get_running_loop().create_task(self._flush_quietly())
        track = getattr(self.backend, "track", None)  # a Redis backend awaits it on close
        if track is not None:
            track(task)

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except AioresilError as error:
            _log.warning("retry_budget_flush_failed", budget=self.name, error=str(error))

    async def flush(self) -> None:
        """Send the successes counted locally (a failed send keeps them for the next)."""
        pending, self._pending = self._pending, 0
        try:
            _, successes, retries = await self._step(pending, False)
        except BaseException:
            self._pending += pending
            raise
        self._seen = (successes, retries)

    async def try_withdraw(self) -> bool:
        """Ask the fleet for one retry; ``False`` (nothing taken) when the budget is spent.

        When the store cannot be reached the answer is ``False``: a retry is extra load, and
        an outage of the store is no time to add it.
        """
        pending, self._pending = self._pending, 0
        try:
            granted, successes, retries = await self._step(pending, True)
        except AioresilError as error:
            self._pending += pending
            _log.warning("retry_budget_unavailable", budget=self.name, error=str(error))
            self._refused += 1
            return False
        except BaseException:
            self._pending += pending
            raise
        self._seen = (successes, retries)
        if granted:
            self._granted += 1
        else:
            self._refused += 1
        return bool(granted)

    async def stats(self) -> FleetRetryBudgetStatistics:
        """The fleet's current window (one round trip on Redis, after sending successes)."""
        await self.flush()
        successes, retries = self._seen
        return FleetRetryBudgetStatistics(
            name=self.name,
            successes=successes,
            retries=retries,
            allowed=self.ratio * successes + self.min_retries,
            granted=self._granted,
            refused=self._refused,
        )

    def close(self) -> None:
        """Disarm the flush timer (pending successes are dropped: they only add retries)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def __repr__(self) -> str:
        return f"<FleetRetryBudget {self.name!r} ratio={self.ratio} window={self.window:g}s>"
