"""The health app through ``httpx.ASGITransport``, on the memory backend and a real Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from aioresil import (
    BreakerConfig,
    BreakerRegistry,
    CircuitState,
    DeadLetter,
    DeadLetterQueue,
    health_app,
)
from aioresil.health.app import HealthApp
from aioresil.testing import FakeClock

from ...helpers import Boom
from ...servers import RedisServer, free_port
from ...wire_spy import WireSpy

TOKEN = "t0ken-for-tests-only-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENDPOINTS = ["/health", "/health/ready", "/health/circuit-breakers", "/health/dlq", "/metrics"]


def client_for(app: HealthApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def trip(registry: BreakerRegistry, name: str) -> None:
    breaker = registry.get(name)
    for _ in range(breaker.config.failure_threshold or 1):
        with pytest.raises(Boom):
            async with breaker:
                raise Boom


# ---------------------------------------------------------------------- liveness, readiness


async def test_liveness_reports_service_version_and_utc_timestamp(
    registry: BreakerRegistry,
) -> None:
    app = health_app(registry=registry, service="orders", version="9.9")
    async with client_for(app) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "healthy"
    assert (body["service"], body["version"]) == ("orders", "9.9")
    assert body["timestamp"].endswith("+00:00")


async def test_liveness_never_touches_redis_while_readiness_reports_it_down() -> None:
    from aioresil import RedisBackend

    down = RedisBackend.from_url(
        f"redis://127.0.0.1:{free_port()}/0", listen=False, socket_connect_timeout=0.5
    )
    registry = BreakerRegistry(backend=down)
    registry.get("payments")
    app = health_app(registry=registry)
    try:
        async with client_for(app) as client:
            live = await client.get("/health")
            ready = await client.get("/health/ready")
    finally:
        await down.aclose()
    assert live.status_code == 200
    assert ready.status_code == 503
    check = ready.json()["backends"][0]
    assert check["kind"] == "RedisBackend"
    assert check["status"] == "unhealthy"
    assert check["error"].startswith("BackendUnavailableError: ")


async def test_readiness_right_after_redis_dies_does_not_say_healthy_anywhere(
    own_redis_server: RedisServer,
) -> None:
    # The nested "state" is the backend's connection state *after* this check: the check that
    # finds Redis gone is the one that marks it unavailable, so the same body must say so.
    from aioresil import RedisBackend

    async with RedisBackend.from_url(
        own_redis_server.url, listen=False, socket_connect_timeout=0.5
    ) as backend:
        app = health_app(registry=BreakerRegistry(backend=backend))
        async with client_for(app) as client:
            up = (await client.get("/health/ready")).json()
            assert (up["status"], up["backends"][0]["state"]) == ("healthy", "healthy")
            own_redis_server.stop()
            response = await client.get("/health/ready")
    body = response.json()
    assert response.status_code == 503
    check = body["backends"][0]
    assert (body["status"], check["status"], check["state"]) == (
        "unhealthy",
        "unhealthy",
        "unavailable",
    )


async def test_readiness_is_200_when_every_backend_answers(
    registry: BreakerRegistry, dlq: DeadLetterQueue
) -> None:
    async with client_for(health_app(registry=registry, dlq=dlq)) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert [c["status"] for c in body["backends"]] == ["healthy"]  # one shared backend


# ---------------------------------------------------------------------- breakers


async def test_no_breakers_is_healthy_with_an_empty_summary() -> None:
    async with client_for(health_app()) as client:
        body = (await client.get("/health/circuit-breakers")).json()
    assert body["status"] == "healthy"
    assert body["circuit_breakers"] == {}
    assert body["summary"] == {
        "total_breakers": 0,
        "open_circuits": 0,
        "half_open_circuits": 0,
        "closed_circuits": 0,
        "all_healthy": True,
    }


async def test_an_open_circuit_degrades_with_200_and_counts_in_the_summary(
    registry: BreakerRegistry,
) -> None:
    registry.get("search")
    await trip(registry, "payments")
    async with client_for(health_app(registry=registry)) as client:
        response = await client.get("/health/circuit-breakers")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["circuit_breakers"]["payments"]["state"] == "open"
    assert body["circuit_breakers"]["payments"]["retry_after"] == pytest.approx(30)
    assert body["circuit_breakers"]["search"]["state"] == "closed"
    assert body["summary"] == {
        "total_breakers": 2,
        "open_circuits": 1,
        "half_open_circuits": 0,
        "closed_circuits": 1,
        "all_healthy": False,
    }


async def test_open_circuit_is_unhealthy_makes_it_503(registry: BreakerRegistry) -> None:
    await trip(registry, "payments")
    app = health_app(registry=registry, open_circuit_is_unhealthy=True)
    async with client_for(app) as client:
        response = await client.get("/health/circuit-breakers")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"


async def test_a_half_open_circuit_degrades_but_is_not_unhealthy(
    registry: BreakerRegistry, clock: FakeClock
) -> None:
    await trip(registry, "payments")
    clock.advance(31)
    app = health_app(registry=registry, open_circuit_is_unhealthy=True)
    async with client_for(app) as client, registry.get("payments"):  # the trial call
        response = await client.get("/health/circuit-breakers")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["summary"]["half_open_circuits"] == 1
    assert body["circuit_breakers"]["payments"]["state"] == "half_open"


async def test_forced_open_counts_as_open(registry: BreakerRegistry) -> None:
    await registry.get("payments").force_open()
    async with client_for(health_app(registry=registry)) as client:
        body = (await client.get("/health/circuit-breakers")).json()
    assert body["summary"]["open_circuits"] == 1
    assert body["circuit_breakers"]["payments"]["state"] == "forced_open"


@pytest.mark.redis_server
async def test_a_thousand_redis_breakers_are_read_in_one_round_trip(
    redis_url: str, clock: FakeClock
) -> None:
    from aioresil import RedisBackend

    async with RedisBackend.from_url(redis_url, clock=clock, listen=False) as redis_backend:
        registry = BreakerRegistry(
            backend=redis_backend, default_config=BreakerConfig(failure_threshold=1), clock=clock
        )
        for i in range(1000):
            registry.get(f"svc-{i:04d}")
        for i in range(0, 1000, 100):
            await trip(registry, f"svc-{i:04d}")
        await registry.stats()  # the first read loads breaker_read.lua (SCRIPT LOAD + retry)
        spy = WireSpy(redis_backend.client)
        async with client_for(health_app(registry=registry)) as http:
            response = await http.get("/health/circuit-breakers")
    assert response.status_code == 200
    body = response.json()
    assert len(body["circuit_breakers"]) == 1000
    assert body["summary"]["open_circuits"] == 10
    assert body["summary"]["closed_circuits"] == 990
    assert spy.writes == [["EVALSHA"]]  # one read script for all 1,000 breakers, one trip


# ---------------------------------------------------------------------- DLQ


async def test_dlq_status_follows_the_thresholds(dlq: DeadLetterQueue) -> None:
    app = health_app(dlq=dlq, dlq_warning_threshold=2, dlq_critical_threshold=3)
    seen = []
    async with client_for(app) as client:
        for _ in range(4):
            response = await client.get("/health/dlq")
            seen.append((response.status_code, response.json()["status"]))
            await dlq.push("email", {"to": "x"}, "smtp down")
    assert seen == [(200, "healthy"), (200, "healthy"), (200, "degraded"), (503, "unhealthy")]


async def test_dlq_body_is_the_queue_health_and_holds_no_payload(dlq: DeadLetterQueue) -> None:
    await dlq.push("email", {"to": "secret-address@example.org"}, "smtp down")
    async with client_for(health_app(dlq=dlq)) as client:
        response = await client.get("/health/dlq")
    body = response.json()
    assert body["statistics"]["failures_by_task_type"] == {"email": 1}
    assert body["health_indicators"]["total_failed_tasks"] == 1
    assert "secret-address" not in response.text


async def test_dlq_route_is_404_without_a_queue() -> None:
    async with client_for(health_app()) as client:
        response = await client.get("/health/dlq")
    assert response.status_code == 404
    assert response.json() == {"error": "no dead letter queue is configured"}


# ---------------------------------------------------------------------- HTTP details


async def test_unknown_paths_are_404_json() -> None:
    async with client_for(health_app()) as client:
        response = await client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "not found"


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405_with_allow_get(path: str, method: str) -> None:
    async with client_for(health_app(dlq=DeadLetterQueue())) as client:
        response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_head_answers_the_get_headers_without_a_body(path: str) -> None:
    async with client_for(health_app(dlq=DeadLetterQueue())) as client:
        got = await client.get(path)
        head = await client.head(path)
    assert head.status_code == got.status_code
    assert head.headers["content-type"] == got.headers["content-type"]
    assert int(head.headers["content-length"]) > 0
    assert head.content == b""


async def test_a_trailing_slash_is_the_same_route() -> None:
    async with client_for(health_app()) as client:
        response = await client.get("/health/")
    assert response.status_code == 200


async def test_health_json_maps_status_to_pass_warn_fail(registry: BreakerRegistry) -> None:
    accept = {"Accept": "application/health+json"}
    app = health_app(registry=registry, service="orders")
    async with client_for(app) as client:
        live = await client.get("/health", headers=accept)
        registry.get("ok")
        passing = await client.get("/health/circuit-breakers", headers=accept)
        await trip(registry, "payments")
        warning = await client.get("/health/circuit-breakers", headers=accept)
        plain = await client.get("/health/circuit-breakers")
    failing_app = health_app(registry=registry, open_circuit_is_unhealthy=True)
    async with client_for(failing_app) as client:
        failing = await client.get("/health/circuit-breakers", headers=accept)
    assert live.headers["content-type"] == "application/health+json"
    assert live.json()["status"] == "pass"
    assert live.json()["serviceId"] == "orders"
    assert passing.json()["status"] == "pass"
    assert warning.json()["status"] == "warn"
    assert (failing.status_code, failing.json()["status"]) == (503, "fail")
    assert plain.headers["content-type"] == "application/json"
    assert plain.json()["status"] == "degraded"


async def test_the_app_answers_lifespan_startup_and_shutdown() -> None:
    app = health_app()
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_mounted_under_a_root_path_it_routes_on_the_rest() -> None:
    app = health_app()
    transport = httpx.ASGITransport(app=app, root_path="/ops")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/ops/health")
    assert response.status_code == 200


def test_bad_thresholds_and_short_tokens_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="dlq_warning_threshold"):
        health_app(dlq_warning_threshold=10, dlq_critical_threshold=5)
    with pytest.raises(ValueError, match="at least 16 characters"):
        health_app(admin_token="short")
    with pytest.raises(TypeError, match="admin_token must be a str"):
        health_app(admin_token=b"x" * 32)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- admin


async def test_admin_routes_do_not_exist_without_a_token(registry: BreakerRegistry) -> None:
    await trip(registry, "payments")
    async with client_for(health_app(registry=registry)) as client:
        response = await client.post("/admin/breakers/payments/reset", headers=AUTH)
    assert response.status_code == 404
    assert (await registry.get("payments").stats()).state is CircuitState.OPEN


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_admin_refuses_a_missing_or_wrong_token_and_changes_nothing(
    registry: BreakerRegistry, headers: dict[str, str]
) -> None:
    await trip(registry, "payments")
    async with client_for(health_app(registry=registry, admin_token=TOKEN)) as client:
        response = await client.post("/admin/breakers/payments/reset", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="aioresil"'
    assert (await registry.get("payments").stats()).state is CircuitState.OPEN


async def test_the_bearer_scheme_is_case_insensitive(registry: BreakerRegistry) -> None:
    await trip(registry, "payments")
    async with client_for(health_app(registry=registry, admin_token=TOKEN)) as client:
        response = await client.post(
            "/admin/breakers/payments/reset", headers={"Authorization": f"bearer {TOKEN}"}
        )
    assert response.status_code == 200
    assert (await registry.get("payments").stats()).state is CircuitState.CLOSED


async def test_admin_resets_and_forces_open_a_breaker(registry: BreakerRegistry) -> None:
    await trip(registry, "pay/ments eu")
    app = health_app(registry=registry, admin_token=TOKEN)
    async with client_for(app) as client:
        reset = await client.post("/admin/breakers/pay%2Fments%20eu/reset", headers=AUTH)
        assert (await registry.get("pay/ments eu").stats()).state is CircuitState.CLOSED
        opened = await client.post("/admin/breakers/pay%2Fments%20eu/force_open", headers=AUTH)
        await registry.get("pay/ments eu").reset()
        alias = await client.post("/admin/breakers/pay%2Fments%20eu/open", headers=AUTH)
        unknown = await client.post("/admin/breakers/never-made/reset", headers=AUTH)
        wrong_method = await client.get("/admin/breakers/pay%2Fments%20eu/open", headers=AUTH)
    assert (reset.json()["name"], reset.json()["state"]) == ("pay/ments eu", "closed")
    assert reset.json()["action"] == "reset"
    assert reset.json()["breaker"]["state"] == "closed"
    assert (opened.json()["name"], opened.json()["state"]) == ("pay/ments eu", "forced_open")
    assert "deprecation" not in opened.headers
    # The first version's path still works, marked deprecated with a link to the new one.
    assert alias.json()["state"] == "forced_open"
    assert alias.headers["deprecation"] == "true"
    assert (
        alias.headers["link"]
        == '</admin/breakers/pay%2Fments%20eu/force_open>; rel="successor-version"'
    )
    assert (await registry.get("pay/ments eu").stats()).state is CircuitState.FORCED_OPEN
    assert unknown.status_code == 404
    assert "never-made" not in registry
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")


async def test_admin_removes_purges_and_retries_dead_letters(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    retried: list[DeadLetter] = []

    async def handler(letter: DeadLetter) -> None:
        retried.append(letter)

    old = await dlq.push("email", {"n": 1}, "down")
    clock.advance(3 * 86_400)
    keep = await dlq.push("email", {"n": 2}, "down")
    gone = await dlq.push("sms", {"n": 3}, "down")
    retry_me = await dlq.push("sms", {"n": 4}, "down")
    app = health_app(dlq=dlq, admin_token=TOKEN, dlq_retry_handler=handler)
    async with client_for(app) as client:
        removed = await client.delete(f"/admin/dlq/entries/{gone}", headers=AUTH)
        missing = await client.post(f"/admin/dlq/entries/{gone}/remove", headers=AUTH)
        purged = await client.post("/admin/dlq/purge?older_than=2d", headers=AUTH)
        no_age = await client.post("/admin/dlq/purge", headers=AUTH)
        bad_age = await client.post("/admin/dlq/purge?older_than=soon", headers=AUTH)
        huge_age = await client.post(
            "/admin/dlq/purge?older_than=99999999999999999999999d", headers=AUTH
        )
        huge_body = await client.post(
            "/admin/dlq/purge", headers=AUTH, json={"older_than_seconds": 1e308}
        )
        retried_ok = await client.post(f"/admin/dlq/entries/{retry_me}/retry", headers=AUTH)
        retried_missing = await client.post(f"/admin/dlq/entries/{retry_me}/retry", headers=AUTH)
    assert removed.json() == {"id": gone, "removed": True}
    assert missing.status_code == 404
    assert missing.headers["deprecation"] == "true"
    assert purged.json()["purged"] == 1
    assert await dlq.get(old) is None
    assert no_age.status_code == 400
    assert bad_age.status_code == 400
    assert "not a duration" in bad_age.json()["error"]
    assert huge_age.status_code == 400  # not an outage (503), not a crash (500)
    assert "too long" in huge_age.json()["error"]
    assert huge_body.status_code == 400
    assert "older_than_seconds must be a number >= 0" in huge_body.json()["error"]
    assert retried_ok.json() == {"id": retry_me, "succeeded": True}
    assert [letter.id for letter in retried] == [retry_me]
    assert retried_missing.status_code == 404
    assert [letter.id for letter in (await dlq.list()).entries] == [keep]


async def test_admin_retry_without_a_handler_explains_and_keeps_the_entry(
    dlq: DeadLetterQueue,
) -> None:
    entry = await dlq.push("email", {"n": 1}, "down")
    async with client_for(health_app(dlq=dlq, admin_token=TOKEN)) as client:
        response = await client.post(f"/admin/dlq/entries/{entry}/retry", headers=AUTH)
    assert response.status_code == 400
    assert "dlq_retry_handler" in response.json()["error"]
    assert await dlq.get(entry) is not None


# ---------------------------------------------------------------------- secrets


@pytest.mark.redis_server
async def test_no_response_ever_shows_the_redis_url_or_password(redis_url: str) -> None:
    import redis.asyncio as aioredis

    from aioresil import RedisBackend

    password = "Pa55-w0rd-never-shown"
    user = "health-user-x"
    admin = aioredis.Redis.from_url(redis_url)
    await admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )
    await admin.aclose()
    host_port = redis_url.removeprefix("redis://").split("/")[0]
    secret_url = f"redis://{user}:{password}@{host_port}/0"
    down_url = f"redis://{user}:{password}@127.0.0.1:{free_port()}/0"
    bodies: list[str] = []
    for url in (secret_url, down_url):
        backend = RedisBackend.from_url(url, listen=False, socket_connect_timeout=0.5)
        try:
            registry = BreakerRegistry(backend=backend)
            registry.get("payments")
            dlq = DeadLetterQueue(backend)
            if url == secret_url:
                await dlq.push("email", {"password": password}, f"failed for {url}")
            app = health_app(registry=registry, dlq=dlq, admin_token=TOKEN)
            async with client_for(app) as client:
                for path in ENDPOINTS:
                    for accept in ("application/json", "application/health+json"):
                        response = await client.get(path, headers={"Accept": accept})
                        bodies.append(response.text)
                        bodies.append(json.dumps(dict(response.headers)))
                admin_paths = ["/admin/breakers/payments/reset", "/admin/dlq/purge?older_than=9d"]
                for path in admin_paths:
                    bodies.append((await client.post(path, headers=AUTH)).text)
            if url == secret_url:
                assert (await dlq.count()) == 1
        finally:
            await backend.aclose()
    ready_down = [b for b in bodies if '"backends"' in b][-1]
    assert "BackendUnavailableError" in ready_down
    for body in bodies:
        assert password not in body
        assert user not in body
        assert "redis://" not in body
        assert host_port not in body or '"error"' not in body


# ---------------------------------------------------------------------- Redis down
# (the metrics themselves are in tests/face/health/test_metrics.py)


@pytest.mark.redis_server
async def test_reads_are_503_when_redis_is_down_but_liveness_and_metrics_stay_200() -> None:
    from aioresil import RedisBackend

    down = RedisBackend.from_url(
        f"redis://127.0.0.1:{free_port()}/0", listen=False, socket_connect_timeout=0.5
    )
    try:
        registry = BreakerRegistry(backend=down)
        registry.get("payments")
        app = health_app(registry=registry, dlq=DeadLetterQueue(down))
        async with client_for(app) as client:
            metrics = await client.get("/metrics")
            dlq_health = await client.get("/health/dlq")
            breakers = await client.get("/health/circuit-breakers")
            live = await client.get("/health")
    finally:
        await down.aclose()
    assert live.status_code == 200
    # the first read found the outage, so the (fail_open) breaker answers from its local
    # fallback; the body says Redis is down
    assert breakers.status_code == 200
    assert breakers.json()["status"] == "degraded"
    [down_backend] = breakers.json()["backends_unavailable"]
    assert down_backend["state"] == "unavailable"
    assert "Redis unreachable" in down_backend["error"]
    # /metrics keeps serving what this process knows: backend down, the local breaker view
    assert metrics.status_code == 200
    assert metrics.text.startswith("# aioresil: serving local values only: BackendUnavailableError")
    assert 'aioresil_backend_up{backend="redis:aioresil"} 0' in metrics.text
    # fail_open: the breaker judges calls locally (CLOSED) since the outage was found
    assert 'aioresil_circuitbreaker_state{name="payments",state="closed"} 1' in metrics.text
    assert dlq_health.status_code == 503
    assert dlq_health.json()["status"] == "unhealthy"


# ---------------------------------------------------------------------- shared reads, cache


class SlowRegistry:
    """A registry stand-in whose bulk read waits for the test: counts reads in flight."""

    def __init__(self, inner: BreakerRegistry) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.reads = 0
        self.release = asyncio.Event()

    async def stats(self) -> dict[str, Any]:
        self.reads += 1
        await self.release.wait()
        return await self.inner.stats()

    async def readings(self, *, fallback: bool = False) -> list[Any]:
        self.reads += 1
        await self.release.wait()
        return await self.inner.readings(fallback=fallback)


async def asgi_get(app: HealthApp, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


async def test_requests_arriving_during_a_read_share_it() -> None:
    inner = BreakerRegistry()
    inner.get("payments")
    slow = SlowRegistry(inner)
    app = health_app(registry=slow)  # type: ignore[arg-type]
    tasks = [asyncio.ensure_future(asgi_get(app, "/health/circuit-breakers")) for _ in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert slow.reads == 1
    slow.release.set()
    answers = await asyncio.gather(*tasks)
    assert slow.reads == 1
    assert {status for status, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1
    await asgi_get(app, "/health/circuit-breakers")  # no cache_ttl: the next request reads
    assert slow.reads == 2


async def test_a_cancelled_request_does_not_cancel_the_shared_read() -> None:
    inner = BreakerRegistry()
    slow = SlowRegistry(inner)
    app = health_app(registry=slow)  # type: ignore[arg-type]
    first = asyncio.ensure_future(asgi_get(app, "/health/circuit-breakers"))
    second = asyncio.ensure_future(asgi_get(app, "/health/circuit-breakers"))
    for _ in range(5):
        await asyncio.sleep(0)
    first.cancel()
    slow.release.set()
    assert (await second)[0] == 200
    assert slow.reads == 1


async def test_cache_ttl_reuses_answers_until_an_admin_action(registry: BreakerRegistry) -> None:
    registry.get("payments")
    app = health_app(registry=registry, cache_ttl=3600, admin_token=TOKEN)
    async with client_for(app) as client:
        before = (await client.get("/health/circuit-breakers")).json()
        await trip(registry, "payments")
        cached = (await client.get("/health/circuit-breakers")).json()
        await client.post("/admin/breakers/payments/open", headers=AUTH)
        after = (await client.get("/health/circuit-breakers")).json()
    assert cached == before
    assert after["circuit_breakers"]["payments"]["state"] == "forced_open"
    with pytest.raises(ValueError, match="cache_ttl"):
        health_app(cache_ttl=-1)


async def test_purge_reports_progress_after_each_batch() -> None:
    dlq = DeadLetterQueue()
    rows = [dlq.prepare("email", {"n": i}, "down") for i in range(1200)]
    await dlq.push_prepared(rows)
    seen: list[int] = []
    assert await dlq.purge(progress=seen.append) == 1200
    assert seen == [500, 1000, 1200]
