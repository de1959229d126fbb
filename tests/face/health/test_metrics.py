"""``/metrics`` as Prometheus and resilience4j users expect it (see the README's table).

Parsed with ``prometheus_client``'s parser and linted with ``promtool check metrics`` (the
Debian ``prometheus`` package; CI installs it). On memory and on a real redis-server.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from aioresil import (
    BreakerConfig,
    BreakerRegistry,
    CircuitOpenError,
    DeadLetterQueue,
    MemoryBackend,
    health_app,
)
from aioresil.health.app import HealthApp
from aioresil.health.instruments import CallMetrics
from aioresil.testing import FakeClock

from ...helpers import Boom
from ...servers import free_port, required_tool


async def scrape(app: HealthApp) -> str:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.text


def parse(text: str) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Any, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if name is None or s.name == name
    }


async def fail(registry: BreakerRegistry, name: str) -> None:
    with pytest.raises(Boom):
        async with registry.get(name):
            raise Boom


def promtool_check(text: str) -> None:
    promtool = required_tool("promtool", "prometheus")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


async def test_breaker_and_queue_series_match_the_stats(
    registry: BreakerRegistry, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    weird = 'we"ird\\name\nx'
    async with registry.get(weird):
        pass
    await fail(registry, weird)
    await fail(registry, "payments")
    await fail(registry, "payments")
    with pytest.raises(CircuitOpenError):
        async with registry.get("payments"):
            pass
    await dlq.push("email", {}, "down")
    clock.advance(90)
    await dlq.push("email", {}, "down")
    await dlq.push("sms", {}, "down")
    app = health_app(registry=registry, dlq=dlq, dlq_warning_threshold=3, dlq_critical_threshold=7)
    text = await scrape(app)
    parsed = parse(text)
    state = samples(parsed["aioresil_circuitbreaker_state"])
    assert state[(("name", "payments"), ("state", "open"))] == 1
    assert state[(("name", "payments"), ("state", "closed"))] == 0
    assert state[(("name", weird), ("state", "closed"))] == 1
    assert sum(v for k, v in state.items() if ("name", weird) in k) == 1
    assert parsed["aioresil_circuitbreaker_calls"].type == "counter"
    calls = samples(parsed["aioresil_circuitbreaker_calls"], "aioresil_circuitbreaker_calls_total")
    assert calls[(("kind", "successful"), ("name", weird))] == 1
    assert calls[(("kind", "failed"), ("name", weird))] == 1
    assert calls[(("kind", "failed"), ("name", "payments"))] == 2
    assert calls[(("kind", "ignored"), ("name", "payments"))] == 0
    assert ("kind", "rejected") not in {k[0] for k in calls}
    rejected = samples(parsed["aioresil_circuitbreaker_not_permitted_calls"])
    assert rejected[(("name", "payments"),)] == 1
    # No rate rule: no failure-rate sample at all (never a -1 sentinel).
    assert samples(parsed["aioresil_circuitbreaker_failure_rate_ratio"]) == {}
    queue = (("queue", "jobs"),)
    assert samples(parsed["aioresil_dlq_entries"]) == {queue: 3}
    by_type = samples(parsed["aioresil_dlq_entries_by_type"])
    assert by_type == {
        (("queue", "jobs"), ("task_type", "email")): 2,
        (("queue", "jobs"), ("task_type", "sms")): 1,
    }
    assert samples(parsed["aioresil_dlq_oldest_age_seconds"]) == {
        queue: pytest.approx(90, abs=0.01)
    }
    for loss in ("aioresil_dlq_evicted", "aioresil_dlq_expired"):
        assert samples(parsed[loss], loss + "_total") == {queue: 0}
    assert samples(parsed["aioresil_dlq_in_flight"]) == {queue: 0}
    assert samples(parsed["aioresil_dlq_spooled"]) == {queue: 0}
    assert samples(parsed["aioresil_dlq_warning_threshold"]) == {queue: 3}
    assert samples(parsed["aioresil_dlq_critical_threshold"]) == {queue: 7}
    kind = "memory" if isinstance(registry.backend, MemoryBackend) else "redis:aioresil"
    assert samples(parsed["aioresil_backend_up"]) == {(("backend", kind),): 1}
    promtool_check(text)


async def test_an_empty_queue_reports_zero_entries_not_nothing(dlq: DeadLetterQueue) -> None:
    parsed = parse(await scrape(health_app(dlq=dlq)))
    assert samples(parsed["aioresil_dlq_entries"]) == {(("queue", "jobs"),): 0}
    assert samples(parsed["aioresil_dlq_oldest_age_seconds"]) == {(("queue", "jobs"),): 0}


async def test_rates_are_ratios_and_slow_calls_are_counted(backend: Any, clock: FakeClock) -> None:
    config = BreakerConfig(
        failure_threshold=None,
        failure_rate_threshold=0.9,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.9,
        window_size=10,
        minimum_calls=4,
    )
    registry = BreakerRegistry(backend=backend, default_config=config, clock=clock)
    breaker = registry.get("rated")
    await fail(registry, "rated")
    for slow in (True, False, False):
        async with breaker:
            if slow:
                clock.advance(2.0)
    parsed = parse(await scrape(health_app(registry=registry)))
    name = (("name", "rated"),)
    assert samples(parsed["aioresil_circuitbreaker_failure_rate_ratio"]) == {name: 0.25}
    assert samples(parsed["aioresil_circuitbreaker_slow_call_rate_ratio"]) == {name: 0.25}
    assert samples(parsed["aioresil_circuitbreaker_slow_calls"]) == {name: 1}


async def test_counters_stay_monotonic_across_an_operator_reset(
    registry: BreakerRegistry,
) -> None:
    app = health_app(registry=registry)
    await fail(registry, "payments")
    async with registry.get("payments"):
        pass
    before = samples(parse(await scrape(app))["aioresil_circuitbreaker_calls"])
    await registry.get("payments").reset()  # the backend's counts start again at 0
    await fail(registry, "payments")
    after = samples(parse(await scrape(app))["aioresil_circuitbreaker_calls"])
    failed = (("kind", "failed"), ("name", "payments"))
    successful = (("kind", "successful"), ("name", "payments"))
    assert (before[failed], before[successful]) == (1, 1)
    assert (after[failed], after[successful]) == (2, 1)


async def test_the_call_duration_histogram_has_a_series_per_outcome(clock: FakeClock) -> None:
    config = BreakerConfig(failure_threshold=5, ignore_exceptions=(KeyError,))
    registry = BreakerRegistry(default_config=config, clock=clock)
    calls = CallMetrics(buckets=(0.1, 1.0))
    calls.observe_registry(registry)
    breaker = registry.get("search")
    for seconds in (0.05, 0.5, 3.0):
        async with breaker:
            clock.advance(seconds)
    await fail(registry, "search")
    with pytest.raises(KeyError):
        async with registry.get("late"):  # created after observe_registry: observed too
            raise KeyError("x")
    text = await scrape(health_app(registry=registry, call_metrics=calls))
    family = parse(text)["aioresil_circuitbreaker_calls_seconds"]
    assert family.type == "histogram"
    ok = (("kind", "successful"), ("name", "search"))
    buckets = samples(family, "aioresil_circuitbreaker_calls_seconds_bucket")
    assert [buckets[(*ok[:1], ("le", le), ok[1])] for le in ("0.1", "1.0", "+Inf")] == [1, 2, 3]
    counts = samples(family, "aioresil_circuitbreaker_calls_seconds_count")
    assert counts[ok] == 3
    assert counts[(("kind", "failed"), ("name", "search"))] == 1
    assert counts[(("kind", "ignored"), ("name", "late"))] == 1
    total = samples(family, "aioresil_circuitbreaker_calls_seconds_sum")
    assert total[ok] == pytest.approx(3.55)
    promtool_check(text)


@pytest.mark.redis_server
async def test_with_redis_down_metrics_keep_the_local_series(
    clock: FakeClock, tmp_path: Path
) -> None:
    from aioresil import RedisBackend

    down = RedisBackend.from_url(
        f"redis://127.0.0.1:{free_port()}/0", listen=False, socket_connect_timeout=0.5
    )
    try:
        registry = BreakerRegistry(
            backend=down, default_config=BreakerConfig(on_backend_error="fail_open")
        )
        calls = CallMetrics()
        calls.observe_registry(registry)
        async with registry.get("payments"):  # judged by the in-process fallback
            pass
        # a spool file: the entry survives this process (closing warns otherwise)
        dlq = DeadLetterQueue(down, name="jobs", spool_path=tmp_path / "spool.jsonl")
        await dlq.push("email", {}, "down")  # spooled in this process
        text = await scrape(health_app(registry=registry, dlq=dlq, call_metrics=calls))
    finally:
        await down.aclose()
    parsed = parse(text)
    assert samples(parsed["aioresil_backend_up"]) == {(("backend", "redis:aioresil"),): 0}
    sources = samples(parsed["aioresil_metrics_source_up"])
    assert sources[(("source", "dlq"),)] == 0
    assert samples(parsed["aioresil_dlq_spooled"]) == {(("queue", "jobs"),): 1}
    counts = samples(
        parsed["aioresil_circuitbreaker_calls_seconds"],
        "aioresil_circuitbreaker_calls_seconds_count",
    )
    assert counts == {(("kind", "successful"), ("name", "payments")): 1}
    promtool_check(text)


async def test_the_collector_reports_what_the_text_endpoint_reports(
    registry: BreakerRegistry, dlq: DeadLetterQueue
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from aioresil.health.prometheus import AioresilCollector

    await fail(registry, "payments")
    await fail(registry, "payments")
    registry.get("search")
    await dlq.push("email", {}, "down")
    collector = AioresilCollector(registry=registry, dlq=dlq)
    await collector.refresh()
    prom = CollectorRegistry()
    prom.register(collector)
    ours = parse(await scrape(health_app(registry=registry, dlq=dlq)))
    theirs = parse(generate_latest(prom).decode())
    assert set(theirs) == set(ours)
    for name, family in ours.items():
        # prometheus_client adds *_created samples to counters; compare the rest exactly
        wanted = {s.name for s in family.samples}
        theirs_samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for s in theirs[name].samples
            if s.name in wanted
        }
        mine = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        if name == "aioresil_dlq_oldest_age_seconds":
            continue  # read a moment apart
        assert mine == theirs_samples, name


async def test_the_text_from_readings_is_the_generic_text_of_their_rows(
    backend: Any, clock: FakeClock
) -> None:
    """``/metrics`` writes the breaker families straight from the registry's readings; the
    generic :class:`~aioresil.health.metrics.Family` path over rows (what ``render`` does for
    a snapshot of rows, and the collector) writes the same bytes."""
    from aioresil.health.metrics import collect_snapshot, render

    from .test_golden_bodies import fixed_registry

    registry, trial = await fixed_registry(backend, clock)
    fast = await collect_snapshot(registry=registry, rows=False)
    both = await collect_snapshot(registry=registry)
    assert fast.readings is not None and fast.breakers == ()
    assert both.readings is not None and fast.figures() == both.breakers
    plain = dataclasses.replace(both, readings=None)  # rows only: the generic path
    assert render(fast) == render(both) == render(plain)
    await trial.__aexit__(None, None, None)
