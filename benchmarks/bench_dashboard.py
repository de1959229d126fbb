"""Dashboard: what one poll of the page costs the server, in process.

The page polls ``/api/breakers`` and ``/api/dlq/stats`` every second per open tab, so their
cost is what matters. Each route is called directly as an ASGI app (no HTTP server, no
client) and compared with a floor measured in the same run, interleaved: a trivial ASGI app
answering ``{}`` through the same fake receive/send. On Redis a second floor is the bare
round trip (``PING``): the note gives a route's time as the time of N ``PING``s, a cost in
time, not a count of commands (``tests/face/test_operator_reads.py`` counts those with
``MONITOR``: one or two per read).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aioresil import BreakerRegistry, DeadLetterQueue, MemoryBackend, RedisBackend
from aioresil.dashboard import dashboard_app

from ._harness import Result, best_of, markdown_table

try:
    from tests.servers import RedisServer, free_port
except ImportError:  # pragma: no cover - benchmarks run from the repository root
    raise SystemExit("run benchmarks from the repository root: python -m benchmarks") from None

Asgi = Callable[[Any, Any, Any], Awaitable[None]]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    if message["type"] == "http.response.start":
        assert message["status"] == 200, message


async def floor_app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


def caller(app: Asgi, path: str) -> Callable[[int], Awaitable[None]]:
    route, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": "GET",
        "path": route,
        "root_path": "",
        "query_string": query.encode(),
        "headers": [],
    }

    async def body(n: int) -> None:
        for _ in range(n):
            await app(dict(scope), _receive, _send)

    return body


async def fill(registry: BreakerRegistry, dlq: DeadLetterQueue, breakers: int, dead: int) -> None:
    for i in range(breakers):
        async with registry.get(f"service-{i:04d}"):
            pass
    template = dlq.prepare("send_email", {"order": 1}, "smtp timeout")
    now_ms = int(time.time() * 1000)
    rows = []
    for i in range(dead):
        row = dict(template)
        row["fa"] = row["ff"] = f"{now_ms - (dead - i):013d}"
        rows.append(row)
    await dlq.push_prepared(rows, batch=2000)


async def measure(
    label: str, backend: Any, breakers: int, dead: int, smoke: bool, ping: Any = None
) -> list[Result]:
    registry = BreakerRegistry(backend=backend)
    dlq = DeadLetterQueue(backend, name="bench", max_entries=10_000_000)
    await fill(registry, dlq, breakers, dead)
    app = dashboard_app(registry=registry, dlq=dlq)
    n, repeats = (20, 2) if smoke else (300, 7)
    floor_body = caller(floor_app, "/")
    routes = [
        (f"/api/breakers, {breakers} breakers", "/api/breakers"),
        (f"/api/dlq/stats, {dead:,} entries", "/api/dlq/stats"),
        ("/api/dlq/entries?limit=50", "/api/dlq/entries?limit=50"),
        ("/ (the page)", "/"),
    ]
    best = {name: float("inf") for name, _ in routes}
    floor = ping_us = float("inf")

    async def ping_n(k: int) -> None:
        for _ in range(k):
            await ping()

    for _ in range(repeats):  # interleaved, best of each
        floor = min(floor, await best_of(floor_body, n, 1))
        if ping is not None:
            ping_us = min(ping_us, await best_of(ping_n, n, 1))
        for name, path in routes:
            best[name] = min(best[name], await best_of(caller(app, path), n, 1))
    results = []
    for name, _ in routes:
        note = f"the time of {best[name] / ping_us:.1f} `PING`s" if ping is not None else ""
        if ping is not None and name.startswith("/ "):
            note = "no Redis access"
        results.append(Result(f"{label}: {name}", best[name], floor, note))
    return results


async def main(smoke: bool) -> str:
    breakers, dead = (10, 100) if smoke else (100, 10_000)
    results = await measure("memory", MemoryBackend(), breakers, dead, smoke)
    server = RedisServer(free_port()).start()
    try:
        async with RedisBackend.from_url(server.url, listen=False) as backend:
            results += await measure(
                "Redis", backend, breakers, dead, smoke, ping=backend.client.ping
            )
    finally:
        server.cleanup()
    table = markdown_table(
        ["route", "µs per request", "trivial ASGI floor µs", "ratio", "note"],
        [
            [r.label, f"{r.per_call_us:.1f}", f"{r.floor_us:.2f}", f"{r.ratio:.0f}x", r.note]
            for r in results
        ],
    )
    return f"## Dashboard API, in process (one poll = breakers + dlq/stats)\n\n{table}\n"
