"""Shared benchmark helpers: timing by best-of-N, interleaved, reported as ratios.

Why ratios in one run: absolute microseconds move with the machine and its load; the ratio of
a guarded call to a floor measured in the same process, interleaved round by round, does not.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata

__all__ = ["Result", "best_of", "concurrent_per_call", "environment", "markdown_table", "version"]


@dataclass
class Result:
    label: str
    per_call_us: float
    floor_us: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.per_call_us / self.floor_us


async def best_of(body: Callable[[int], Awaitable[None]], n: int, repeats: int) -> float:
    """Best per-iteration time (microseconds) of ``await body(n)`` over ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        await body(n)
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    return best


async def concurrent_per_call(
    one_call: Callable[[], Awaitable[object]], tasks: int, calls_per_task: int, repeats: int
) -> float:
    """Best wall time per call (microseconds) with ``tasks`` tasks each making calls."""

    async def worker() -> None:
        for _ in range(calls_per_task):
            await one_call()

    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        best = min(best, (time.perf_counter() - started) / (tasks * calls_per_task) * 1e6)
    return best


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def redis_server_version() -> str:
    """``redis-server --version``'s ``v=`` field ("unknown" when it cannot be read)."""
    import subprocess

    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for field in out.split():
        if field.startswith("v="):
            return field[2:]
    return "unknown"


def environment() -> str:
    return (
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.machine()}, {platform.system()} {platform.release()}, "
        f"{__import__('os').cpu_count()} CPUs"
    )


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
