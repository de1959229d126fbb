"""``aioresil breakers``: list every breaker on Redis, reset one, force one open.

How names are found: breakers keep no central index (a hot-path write the breakers do not
need), so the CLI discovers them with ``SCAN MATCH <prefix>:{cb:*}:state COUNT 1000`` and
decodes each name from its key. SCAN is incremental and never blocks Redis the way ``KEYS``
does; its cost grows with the size of the database, which is fine for an operator's command
and for ``aioresil serve``'s periodic rediscovery, never for a request path. A breaker that
no process has bound yet (no guarded call since Redis started, so no state hash) is not
listed.

What it shows is read from Redis, the config in force included (stored with the breaker by
the newest process to bind its name). The table: state, consecutive failures, ``FAILURE
RATE`` (failures over successes + failures since the last reset, :func:`lifetime_failure_rate`;
not the sliding window's rate), calls, rejected calls and the time until the next trial.
``--json`` gives each breaker's ``BreakerStats.to_dict()`` (the window's ``failure_rate`` and
``slow_call_rate``, ``config`` with its ``fingerprint``) plus ``lifetime_failure_rate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..breaker import BreakerStats, CircuitBreaker
from ..registry import BreakerRegistry
from .common import CliError, connect, print_table, scan_names

__all__ = ["discover_names", "run_breakers"]


async def discover_names(backend: Any) -> list[str]:
    """Every breaker name under the backend's prefix, sorted (``SCAN``, see module doc)."""
    return await scan_names(backend, "cb", "state")


def lifetime_failure_rate(stats: BreakerStats) -> float | None:
    """Failures over successes + failures since the last reset (``None`` without calls)."""
    judged = stats.failure_count + stats.success_count
    return None if judged == 0 else stats.failure_count / judged


def _row(stats: BreakerStats) -> list[str]:
    rate = lifetime_failure_rate(stats)
    retry = "-" if stats.retry_after is None else f"{stats.retry_after:.1f}s"
    return [
        stats.name,
        stats.state.value,
        str(stats.consecutive_failures),
        "-" if rate is None else f"{rate:.1%}",
        str(stats.total_calls),
        str(stats.rejected_calls),
        retry,
    ]


async def run_breakers(args: argparse.Namespace) -> int:
    backend = await connect(args)
    try:
        if args.action is None:
            return await _table(backend, args.json)
        return await _operate(backend, args.action, args.name)
    finally:
        await backend.aclose()


async def _table(backend: Any, as_json: bool) -> int:
    registry = BreakerRegistry(backend=backend)
    for name in await discover_names(backend):
        registry.get(name)
    stats = await registry.stats()  # one round trip for all of them
    if as_json:
        body = {
            name: {**one.to_dict(), "lifetime_failure_rate": lifetime_failure_rate(one)}
            for name, one in stats.items()
        }
        print(json.dumps(body, indent=2))
        return 0
    if not stats:
        print(f"no breakers under prefix {backend.prefix!r}")
        return 0
    headers = ["NAME", "STATE", "CONSEC. FAILURES", "FAILURE RATE", "CALLS", "REJECTED", "RETRY"]
    print_table(headers, [_row(one) for one in stats.values()], sys.stdout)
    return 0


async def _operate(backend: Any, action: str, name: str) -> int:
    if not await backend.client.exists(backend.key("cb", name, "state")):
        raise CliError(f"no breaker named {name!r} under prefix {backend.prefix!r}")
    breaker = CircuitBreaker(name, backend=backend)
    if action == "reset":
        await breaker.reset()
    else:
        await breaker.force_open()
    stats = await breaker.stats()
    print(f"breaker {name!r} is now {stats.state.value}")
    return 0
