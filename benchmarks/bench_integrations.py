"""What the HTTP integrations cost per request: ``ResilientTransport`` against a bare
``httpx.AsyncClient`` and ``ResilientMiddleware`` against a bare ``aiohttp.ClientSession``.

The upstream is an aiohttp.web server in a subprocess on loopback answering ``GET /`` with a
small JSON body (so client and server do not share one event loop). Each row is the best wall
time per request over interleaved rounds (bare, guarded, bare, guarded...), with 1 and with 50
concurrent tasks; the ratio is guarded / bare in the same run. The guarded clients use a
memory-backend breaker registry and no other policy (the breaker and the classification are
what every request pays). A third pair sends through ``httpx.MockTransport`` in process: no
network and no server, so it isolates the transport's own CPU cost from loopback noise.
"""

from __future__ import annotations

import datetime
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import structlog

from ._harness import concurrent_per_call, environment, markdown_table, version

SERVER = """
import sys
from aiohttp import web

async def ok(request):
    return web.json_response({"ok": True})

app = web.Application()
app.router.add_get("/", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the benchmark upstream did not start") from None
            time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}/"


Call = Callable[[], Awaitable[object]]


async def _compare(bare: Call, guarded: Call, tasks: int, calls: int, rounds: int) -> list[float]:
    best_bare = best_guarded = float("inf")
    for _ in range(rounds):  # interleaved, so load changes hit both alike
        best_bare = min(best_bare, await concurrent_per_call(bare, tasks, calls, 1))
        best_guarded = min(best_guarded, await concurrent_per_call(guarded, tasks, calls, 1))
    return [best_bare, best_guarded]


async def main(smoke: bool) -> str:
    import aiohttp
    import httpx

    from aioresil import BreakerRegistry
    from aioresil.integrations.aiohttp import ResilientMiddleware
    from aioresil.integrations.httpx import ResilientTransport

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    requests = 40 if smoke else 1000
    rounds = 1 if smoke else 7
    process, url = _start_server()
    rows: list[list[str]] = []
    try:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with (
            httpx.AsyncClient(trust_env=False, limits=limits) as bare_httpx,
            httpx.AsyncClient(
                trust_env=False,
                transport=ResilientTransport(
                    httpx.AsyncHTTPTransport(limits=limits), registry=BreakerRegistry()
                ),
            ) as guarded_httpx,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as bare_aiohttp,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64),
                middlewares=(ResilientMiddleware(registry=BreakerRegistry()),),
            ) as guarded_aiohttp,
        ):

            async def httpx_bare() -> None:
                (await bare_httpx.get(url)).raise_for_status()

            async def httpx_guarded() -> None:
                (await guarded_httpx.get(url)).raise_for_status()

            def answer(request: httpx.Request) -> httpx.Response:
                return httpx.Response(200, json={"ok": True})

            in_process_bare = httpx.AsyncClient(transport=httpx.MockTransport(answer))
            in_process_guarded = httpx.AsyncClient(
                transport=ResilientTransport(
                    httpx.MockTransport(answer), registry=BreakerRegistry()
                )
            )

            async def mock_bare() -> None:
                (await in_process_bare.get(url)).raise_for_status()

            async def mock_guarded() -> None:
                (await in_process_guarded.get(url)).raise_for_status()

            async def aiohttp_bare() -> None:
                async with bare_aiohttp.get(url) as response:
                    await response.read()

            async def aiohttp_guarded() -> None:
                async with guarded_aiohttp.get(url) as response:
                    await response.read()

            for label, bare, guarded in (
                (
                    f"httpx {version('httpx')}, in-process MockTransport (no network)",
                    mock_bare,
                    mock_guarded,
                ),
                (f"httpx {version('httpx')} + ResilientTransport", httpx_bare, httpx_guarded),
                (
                    f"aiohttp {version('aiohttp')} + ResilientMiddleware",
                    aiohttp_bare,
                    aiohttp_guarded,
                ),
            ):
                await bare()  # connect once before timing
                await guarded()
                for tasks in (1, 50):
                    calls = max(requests // tasks, 1)
                    floor, cost = await _compare(bare, guarded, tasks, calls, rounds)
                    rows.append(
                        [
                            label,
                            str(tasks),
                            f"{floor:.1f}",
                            f"{cost:.1f}",
                            f"{cost / floor:.2f}x",
                            f"{cost - floor:+.1f}",
                        ]
                    )
            await in_process_bare.aclose()
            await in_process_guarded.aclose()
    finally:
        process.terminate()
        process.wait(timeout=10)
    table = markdown_table(
        [
            "client",
            "concurrent",
            "bare µs/request",
            "guarded µs/request",
            "ratio",
            "added µs/request",
        ],
        rows,
    )
    return (
        "## HTTP integrations: overhead per request against a local server\n\n"
        f"{datetime.date.today().isoformat()}, {environment()}; upstream aiohttp.web in a "
        f"subprocess on loopback. {requests} requests per round, best of {rounds} interleaved "
        "rounds; wall time per request (at 50 concurrent, total wall time / requests).\n\n" + table
    )
