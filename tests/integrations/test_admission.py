"""Admission control under overload: real uvicorn servers, many concurrent real requests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from aioresil import BreakerRegistry, Bulkhead, RateLimiter, RedisBackend, health_app
from aioresil.integrations.starlette import AdmissionMiddleware, admission, prefix_key

from ..helpers import until
from .asgi_server import serve

LIMIT = 4
CLIENTS = 40


class Gate:
    """An endpoint that holds every request until released, counting how many are inside."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.served = 0
        self.open = asyncio.Event()

    async def endpoint(self, request: Request | None = None) -> JSONResponse:
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await self.open.wait()
        finally:
            self.inside -= 1
        self.served += 1
        return JSONResponse({"ok": True})


async def overload(
    urls: list[str], gate: Gate, admitted: int, path: str = "/work"
) -> list[httpx.Response]:
    """CLIENTS concurrent requests spread over ``urls``; the gate opens once every request
    beyond ``admitted`` (running or queued) has been refused."""
    limits = httpx.Limits(max_connections=CLIENTS * 2)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=30) as http:
        refused: list[httpx.Response] = []

        async def one(index: int) -> httpx.Response:
            response = await http.get(urls[index % len(urls)] + path)
            if response.status_code != 200:
                refused.append(response)
            return response

        tasks = [asyncio.create_task(one(i)) for i in range(CLIENTS)]
        try:
            await until(lambda: len(refused) == CLIENTS - admitted, what="the refusals")
            await until(lambda: gate.inside == min(admitted, LIMIT), what="the admitted")
        finally:
            gate.open.set()
        return list(await asyncio.gather(*tasks))


def check_refusals(responses: list[httpx.Response], status: int) -> None:
    refused = [r for r in responses if r.status_code != 200]
    assert {r.status_code for r in refused} == {status}
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"] in ("overloaded", "rate limited")


async def test_bulkhead_middleware_answers_503_with_retry_after_and_never_queues_beyond_it() -> (
    None
):
    gate = Gate()
    inner = Starlette(routes=[Route("/work", gate.endpoint)])
    app = AdmissionMiddleware(inner, max_concurrent=LIMIT)
    async with serve(app) as url:
        responses = await overload([url], gate, LIMIT)

    check_refusals(responses, 503)
    assert sum(r.status_code == 200 for r in responses) == LIMIT
    assert gate.most == LIMIT
    assert app.limits()[0] is not None
    assert app.limits()[0].stats().rejected == CLIENTS - LIMIT


async def test_bounded_queue_waits_then_refuses_the_rest() -> None:
    gate = Gate()
    inner = Starlette(routes=[Route("/work", gate.endpoint)])
    app = AdmissionMiddleware(inner, max_concurrent=LIMIT, max_waiting=6)
    async with serve(app) as url:
        responses = await overload([url], gate, LIMIT + 6)  # inside or queued: 10

    check_refusals(responses, 503)
    assert sum(r.status_code == 200 for r in responses) == LIMIT + 6  # the queued ones ran
    assert gate.most == LIMIT  # ... one after another, never more than the limit at once


async def test_rate_limit_answers_429_with_retry_after_and_exempt_keys_pass() -> None:
    gate = Gate()
    gate.open.set()
    registry = BreakerRegistry()

    def key(scope: Any) -> str | None:
        return None if scope["path"].startswith("/ops") else "api"

    inner = Starlette(
        routes=[Route("/work", gate.endpoint), Mount("/ops", app=health_app(registry=registry))]
    )
    app = AdmissionMiddleware(inner, rate=5, per=60, key=key)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        responses = await asyncio.gather(*(http.get("/work") for _ in range(20)))
        probes = [await http.get("/ops/health") for _ in range(10)]

    assert sum(r.status_code == 200 for r in responses) == 5
    check_refusals(responses, 429)
    # The limiter's own wait: 12 s per token at 5 per minute (less what the test took so far).
    assert all(6 <= int(r.headers["retry-after"]) <= 12 for r in responses if r.status_code == 429)
    assert [p.status_code for p in probes] == [200] * 10  # the health app is never limited


@pytest.mark.redis_server
async def test_fleet_wide_bulkhead_over_two_servers_on_redis(redis_url: str) -> None:
    gate = Gate()
    inner = Starlette(routes=[Route("/work", gate.endpoint)])
    async with (
        RedisBackend.from_url(redis_url) as first_backend,
        RedisBackend.from_url(redis_url) as second_backend,
    ):
        first = AdmissionMiddleware(inner, max_concurrent=LIMIT, backend=first_backend)
        second = AdmissionMiddleware(inner, max_concurrent=LIMIT, backend=second_backend)
        async with serve(first) as first_url, serve(second) as second_url:
            responses = await overload([first_url, second_url], gate, LIMIT)

    check_refusals(responses, 503)
    assert gate.most == LIMIT  # LIMIT for the two servers together, not each


async def test_fastapi_dependency_form() -> None:
    gate = Gate()
    app = FastAPI()
    limit = admission(bulkhead=Bulkhead(LIMIT, name="work"))

    @app.get("/work", dependencies=[Depends(limit)])
    async def work() -> JSONResponse:
        return await gate.endpoint()

    async with serve(app) as url:
        responses = await overload([url], gate, LIMIT)

    check_refusals_fastapi(responses)
    assert gate.most == LIMIT


def check_refusals_fastapi(responses: list[httpx.Response]) -> None:
    refused = [r for r in responses if r.status_code != 200]
    assert len(refused) == CLIENTS - LIMIT
    assert {r.status_code for r in refused} == {503}
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert all(r.json() == {"detail": "overloaded"} for r in refused)


async def test_per_route_limits_with_prefix_key() -> None:
    gate = Gate()
    inner = Starlette(
        routes=[Route("/reports/{id}", gate.endpoint), Route("/api/{id}", gate.endpoint)]
    )
    key = prefix_key({"/reports": "reports", "/api": "api"})
    app = AdmissionMiddleware(inner, max_concurrent=LIMIT, key=key)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        held = [asyncio.create_task(http.get(f"/reports/{i}")) for i in range(LIMIT)]
        try:
            await until(lambda: gate.inside == LIMIT, what="the reports inside")
            refused = await http.get("/reports/99")  # the reports group is full ...
            api = asyncio.create_task(http.get("/api/1"))  # ... the api group is not
            await until(lambda: gate.inside == LIMIT + 1, what="the api request inside")
        finally:
            gate.open.set()
        assert (await api).status_code == 200
        assert [r.status_code for r in await asyncio.gather(*held)] == [200] * LIMIT
    assert refused.status_code == 503
    assert refused.json()["limit"] == "reports"

    assert key({"path": "/reports"}) == "reports"
    assert key({"path": "/reportsX"}) is None  # a prefix is a path segment, not a string
    assert sorted(app._limits) == ["api", "reports"]


def test_bad_arguments_are_refused_at_construction() -> None:
    app: Callable[..., Awaitable[None]] = Starlette()
    with pytest.raises(ValueError, match="max_concurrent=, rate="):
        AdmissionMiddleware(app)
    with pytest.raises(ValueError, match="max_concurrent"):
        AdmissionMiddleware(app, max_concurrent=0)
    with pytest.raises(ValueError, match="rate"):
        AdmissionMiddleware(app, rate=-1)
    with pytest.raises(ValueError, match="needs bulkhead"):
        admission()
    with pytest.raises(TypeError, match="RateLimiter"):
        admission(rate_limiter=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start with '/'"):
        prefix_key({"api": "api"})
    assert RateLimiter(1).fleet_wide is False
