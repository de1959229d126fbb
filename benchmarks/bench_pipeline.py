"""Overhead of the resilience policies around a trivial coroutine, and Retry vs tenacity/stamina.

Every row is timed in the same process, rounds interleaved, best of N; ratios are against
the bare ``await`` measured in the same run (the floor). Logging is silenced for every
library alike (structlog filtered to warnings, stamina's retry hooks off), so we time the
policies and not a log formatter. Retries wait zero seconds in every library.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import structlog

from aioresil import Bulkhead, CircuitBreaker, Retry, Timeout, constant, pipeline

from ._harness import markdown_table, version

Body = Callable[[int], Awaitable[None]]


async def trivial() -> int:
    return 1


FailsOnce = Callable[[], Awaitable[int]]


def fails_once() -> FailsOnce:
    """An ``async def`` whose calls alternate: fail, succeed; a retried call costs one retry.

    (A plain coroutine function: stamina and tenacity detect ``async def``, not callables.)
    """
    failed = False

    async def call() -> int:
        nonlocal failed
        if not failed:
            failed = True
            raise OSError("transient")
        failed = False
        return 1

    return call


def loop_of(call: Callable[[], Awaitable[object]]) -> Body:
    async def body(n: int) -> None:
        for _ in range(n):
            await call()

    return body


async def interleaved(bodies: dict[str, Body], n: int, repeats: int) -> dict[str, float]:
    """Best microseconds per call of each body, rounds interleaved so load hits all alike."""
    best = dict.fromkeys(bodies, float("inf"))
    for _ in range(repeats):
        for label, body in bodies.items():
            started = time.perf_counter()
            await body(n)
            best[label] = min(best[label], (time.perf_counter() - started) / n * 1e6)
    return best


Call = Callable[[], Awaitable[object]]


def competitors(target: Callable[[], Awaitable[int]]) -> dict[str, Call | None]:
    """tenacity and stamina retrying ``target`` with zero waits; ``None`` when not installed
    (they are bench-only dependencies: CI's smoke run has neither)."""
    calls: dict[str, Call | None] = {}
    try:
        import tenacity
    except ImportError:
        calls["tenacity `@retry`"] = None
    else:
        calls[f"tenacity {version('tenacity')} `@retry`"] = tenacity.retry(
            retry=tenacity.retry_if_exception_type(OSError),
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_none(),
            reraise=True,
        )(target)
    try:
        import stamina
    except ImportError:
        calls["stamina `@retry`"] = None
    else:
        stamina.instrumentation.set_on_retry_hooks([])
        calls[f"stamina {version('stamina')} `@retry`"] = stamina.retry(
            on=OSError, attempts=3, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0
        )(target)
    return calls


def table(calls: dict[str, Call | None], times: dict[str, float], floor: float) -> list[list[str]]:
    rows = []
    for label in calls:
        if label in times:
            us = times[label]
            rows.append([label, f"{us:.2f}", f"{us / floor:.1f}x"])
        else:
            rows.append([label, "not installed", "-"])
    return rows


async def main(smoke: bool) -> str:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    n, repeats = (300, 2) if smoke else (20_000, 7)

    retry = Retry(3, on=OSError, backoff=constant(0.0))
    timeout_alone = Timeout(60)
    bulkhead_alone = Bulkhead(100)
    breaker_alone = CircuitBreaker("alone")
    four = pipeline(
        Timeout(60), Retry(3, backoff=constant(0.0)), CircuitBreaker("bench"), Bulkhead(100)
    )
    success: dict[str, Call | None] = {
        "bare `await trivial()` (floor)": trivial,
        "`Timeout(60).call`": lambda: timeout_alone.call(trivial),
        "`Retry(3).call`": lambda: retry.call(trivial),
        "`Bulkhead(100).call`": lambda: bulkhead_alone.call(trivial),
        "`CircuitBreaker.call`": lambda: breaker_alone.call(trivial),
        "4-policy pipeline: Timeout, Retry, breaker, Bulkhead": lambda: four.call(trivial),
    }
    success.update(competitors(trivial))
    bodies = {k: loop_of(v) for k, v in success.items() if v is not None}
    times = await interleaved(bodies, n, repeats)
    rows = table(success, times, times["bare `await trivial()` (floor)"])

    flaky = fails_once()
    ours = Retry(3, on=OSError, backoff=constant(0.0))

    async def floor_retry() -> None:
        # The least a retry can do: catch the failure, call again.
        try:
            await flaky()
        except OSError:
            await flaky()

    failing: dict[str, Call | None] = {
        "hand-written `try`/`except` + second call (floor)": floor_retry,
        "aioresil `Retry(3).call`": lambda: ours.call(flaky),
        **competitors(flaky),
    }
    fail_n = max(n // 4, 100)  # the competitors take ~100 us a call here
    fail_bodies = {k: loop_of(v) for k, v in failing.items() if v is not None}
    fail_times = await interleaved(fail_bodies, fail_n, repeats)
    fail_rows = table(
        failing, fail_times, fail_times["hand-written `try`/`except` + second call (floor)"]
    )

    structlog.reset_defaults()
    return (
        "## Resilience pipeline\n\n"
        f"Best of {repeats} interleaved rounds of {n} sequential calls on asyncio.\n\n"
        "Around a trivial coroutine that succeeds (the happy path every call pays):\n\n"
        + markdown_table(["call", "µs/call", "vs bare"], rows)
        + f"\n\nRetry alone, every call failing once then succeeding (one retry, zero wait; "
        f"{fail_n} calls a round):\n\n"
        + markdown_table(["call", "µs/call", "vs floor"], fail_rows)
        + "\n"
    )
