"""``aioresil demo``: a flaky upstream behind a breaker, on the memory backend.

The upstream is healthy, then goes down for a while, then recovers. The breaker opens after a
few failures, rejects calls without touching the upstream while open, lets a trial through
after its recovery timeout, and closes once trials succeed.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

from ..breaker import CircuitBreaker
from ..core.config import BreakerConfig
from ..events import BreakerEvent, StateChanged
from ..exceptions import CircuitOpenError

__all__ = ["FlakyUpstream", "run_demo"]


class UpstreamError(Exception):
    """The simulated upstream failed."""


class FlakyUpstream:
    """Fails with probability ``error_rate`` outside outages and always during one.

    ``outage`` is ``(start, end)`` as fractions of the run, in call numbers.
    """

    def __init__(self, calls: int, seed: int, error_rate: float = 0.05) -> None:
        self.calls_seen = 0
        self._rng = random.Random(seed)
        self._error_rate = error_rate
        self._down = range(int(calls * 0.25), int(calls * 0.55))

    async def request(self, n: int) -> str:
        self.calls_seen += 1
        if n in self._down or self._rng.random() < self._error_rate:
            raise UpstreamError(f"upstream failed on call {n}")
        return "ok"


async def run_demo(
    *,
    calls: int = 60,
    interval: float = 0.05,
    seed: int = 7,
    as_json: bool = False,
    backend: Any = None,
) -> int:
    """Run the demo; with ``as_json`` stdout holds only the final JSON (the narration goes
    to stderr), so ``aioresil demo --json | jq`` works. ``backend``: where the breaker keeps
    its state (``aioresil --redis URL demo``); the memory backend when ``None``."""
    import asyncio
    import logging

    import structlog

    out = sys.stderr if as_json else sys.stdout

    # The demo prints each transition itself; keep structlog's own lines for real errors.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    config = BreakerConfig(
        failure_threshold=3, recovery_timeout=round(max(interval * 6, 0.01), 3), success_threshold=2
    )
    breaker = CircuitBreaker("upstream", config=config, backend=backend)
    if backend is not None:
        await breaker.reset()  # a previous run's state on Redis: start closed
    upstream = FlakyUpstream(calls, seed)
    started = time.monotonic()

    def show(event: BreakerEvent) -> None:
        if isinstance(event, StateChanged):
            elapsed = time.monotonic() - started
            print(
                f"[{elapsed:6.2f}s] state {event.old.value} -> {event.new.value}"
                f"  ({event.trigger.value if event.trigger else 'external'})",
                file=out,
                flush=True,
            )

    breaker.add_listener(show)
    print(
        f"aioresil demo: {calls} calls to a flaky upstream, breaker "
        f"failure_threshold={config.failure_threshold}, "
        f"recovery_timeout={config.recovery_timeout:.2f}s"
        + ("" if backend is None else f", state on {type(backend).__name__}"),
        file=out,
        flush=True,
    )
    print("an outage hits the upstream from 25% to 55% of the run", file=out, flush=True)
    outcomes = {"ok": 0, "failed": 0, "rejected": 0}
    for n in range(calls):
        try:
            async with breaker:
                await upstream.request(n)
            outcomes["ok"] += 1
        except CircuitOpenError:
            outcomes["rejected"] += 1
        except UpstreamError:
            outcomes["failed"] += 1
        await asyncio.sleep(interval)
    stats = await breaker.stats()
    print(
        f"calls: {outcomes['ok']} ok, {outcomes['failed']} failed, "
        f"{outcomes['rejected']} rejected without reaching the upstream "
        f"(upstream saw {upstream.calls_seen} of {calls})",
        file=out,
    )
    if as_json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print("final stats:")
        for key, value in stats.to_dict().items():
            print(f"  {key:22} {value}")
    return 0
