"""Call-duration histograms measured in this process, by breaker and outcome.

Why in process: durations exist only where the call ran; Redis keeps counts, not latency
distributions. :class:`CallMetrics` observes breakers (``observe(breaker)`` or
``observe_registry(registry)``) and is rendered by ``/metrics`` as
``aioresil_circuitbreaker_calls_seconds{name,kind}`` (resilience4j's
``resilience4j_circuitbreaker_calls_seconds``), with ``kind`` ``successful``, ``failed`` or
``ignored``. Rejected calls did not run and have no duration; they are the
``not_permitted_calls_total`` counter.

Cost: one ``bisect`` and three additions per call, no lock (one event loop), no allocation.

Example::

    calls = CallMetrics()
    calls.observe_registry(registry)        # every breaker, present and future
    app = health_app(registry=registry, call_metrics=calls)
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from ..core.machine import Outcome
from .metrics import Family

if TYPE_CHECKING:
    from ..breaker import CircuitBreaker
    from ..registry import BreakerRegistry

__all__ = ["DEFAULT_BUCKETS", "CallMetrics"]

# Seconds: from a cache hit to a slow upstream's timeout (Prometheus client defaults).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_KINDS = {Outcome.SUCCESS: "successful", Outcome.FAILURE: "failed", Outcome.IGNORED: "ignored"}


class _Series:
    __slots__ = ("buckets", "count", "total")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size  # per bucket, not cumulative (made cumulative on render)
        self.count = 0
        self.total = 0.0


class CallMetrics:
    """Histograms of call durations, keyed by breaker name and outcome kind.

    Args:
        buckets: upper bounds in seconds, increasing (``+Inf`` is added).
        max_series: a bound on (name, kind) pairs kept, so a runaway set of breaker names
            cannot grow memory without limit; calls beyond it are counted in no series.
    """

    def __init__(
        self, buckets: tuple[float, ...] = DEFAULT_BUCKETS, *, max_series: int = 30_000
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(b <= a for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"buckets must be increasing and not empty, got {buckets!r}")
        self.bounds = bounds
        self.max_series = max_series
        self._series: dict[tuple[str, str], _Series] = {}
        self._observed: set[int] = set()

    def record(self, name: str, outcome: Outcome, seconds: float) -> None:
        """Count one call of ``name`` that ended with ``outcome`` after ``seconds``."""
        kind = _KINDS.get(outcome)
        if kind is None:
            return  # cancelled: neither a success nor a failure, no duration worth keeping
        key = (name, kind)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                return
            series = self._series[key] = _Series(len(self.bounds) + 1)
        series.buckets[bisect_left(self.bounds, seconds)] += 1
        series.count += 1
        series.total += seconds

    def observe(self, breaker: CircuitBreaker) -> None:
        """Record every call ``breaker`` guards from now on (idempotent)."""
        if id(breaker) in self._observed:
            return
        self._observed.add(id(breaker))
        breaker.add_call_observer(self.record)

    def observe_registry(self, registry: BreakerRegistry) -> None:
        """Observe the registry's breakers, and those it creates later."""
        registry.add_call_observer(self.record)

    def family(self) -> Family:
        """The histogram as one metric family (cumulative buckets, ``_sum``, ``_count``)."""
        family = Family(
            "aioresil_circuitbreaker_calls_seconds",
            "histogram",
            "Duration of calls that ran under the breaker, by outcome kind (this process)",
        )
        bounds = [*(repr(b) if b != int(b) else f"{b:.1f}" for b in self.bounds), "+Inf"]
        for (name, kind), series in sorted(self._series.items()):
            labels: Any = (("name", name), ("kind", kind))
            running = 0
            for le, count in zip(bounds, series.buckets, strict=True):
                running += count
                family.add(running, *labels, ("le", le), suffix="_bucket")
            family.add(series.total, *labels, suffix="_sum")
            family.add(series.count, *labels, suffix="_count")
        return family
