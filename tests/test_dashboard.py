"""The dashboard's ASGI app, driven in-process through httpx.ASGITransport.

Backend-dependent routes run on every backend of ``tests/conftest.py`` (memory, fakeredis,
a real redis-server); routing, headers and auth need only the memory backend.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

import httpx
import pytest

from aioresil import (
    BreakerConfig,
    BreakerRegistry,
    CircuitState,
    DeadLetter,
    DeadLetterQueue,
    MemoryBackend,
)
from aioresil.dashboard import DashboardApp, dashboard_app
from aioresil.dashboard.http import route_path
from aioresil.testing import FakeClock

TOKEN = "s3cret-token-for-tests"
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


class Boom(Exception):
    pass


def client(app: DashboardApp, root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://dash")


def admin(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def push_failure(dlq: DeadLetterQueue, task_type: str, payload: Any, message: str) -> str:
    try:
        raise Boom(message)
    except Boom as exc:
        return await dlq.push(task_type, payload, exc, attempts=2)


@pytest.fixture
def registry(backend: Any, clock: FakeClock) -> BreakerRegistry:
    return BreakerRegistry(backend=backend, clock=clock)


@pytest.fixture
def dlq(backend: Any, clock: FakeClock) -> DeadLetterQueue:
    return DeadLetterQueue(backend, name="jobs", clock=clock)


@pytest.fixture
def memory_parts(clock: FakeClock) -> tuple[BreakerRegistry, DeadLetterQueue]:
    backend = MemoryBackend()
    return BreakerRegistry(backend=backend, clock=clock), DeadLetterQueue(
        backend, name="jobs", clock=clock
    )


@pytest.fixture
async def admin_client(
    memory_parts: tuple[BreakerRegistry, DeadLetterQueue],
) -> AsyncIterator[httpx.AsyncClient]:
    registry, dlq = memory_parts
    async with client(dashboard_app(registry=registry, dlq=dlq, admin_token=TOKEN)) as c:
        yield c


# ---------------------------------------------------------------------- page, static, headers


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_page_is_html_with_csp_and_only_external_scripts(
    memory_parts: tuple[BreakerRegistry, DeadLetterQueue],
) -> None:
    registry, dlq = memory_parts
    async with client(dashboard_app(registry=registry, dlq=dlq)) as c:
        response = await c.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert_security_headers(response)
    page = response.text
    assert '<script src="/static/dashboard.js" defer></script>' in page
    assert page.count("<script") == 1  # no inline script: CSP would block it anyway
    assert 'data-base=""' in page
    assert "{{" not in page


async def test_title_is_escaped_in_the_page() -> None:
    async with client(dashboard_app(title='<b>"x"</b>')) as c:
        page = (await c.get("/")).text
    assert "<b>" not in page
    assert "&lt;b&gt;&quot;x&quot;&lt;/b&gt; dashboard</title>" in page


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("dashboard.js", "text/javascript; charset=utf-8"),
        ("dashboard.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
async def test_static_files_are_package_data_with_their_content_types(
    name: str, content_type: str
) -> None:
    async with client(dashboard_app()) as c:
        response = await c.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert_security_headers(response)
    expected = files("aioresil.dashboard").joinpath("static", name).read_bytes()
    assert response.content == expected


async def test_unknown_static_file_and_path_traversal_are_404() -> None:
    async with client(dashboard_app()) as c:
        for path in ("/static/index.html", "/static/../app.py", "/static/", "/nope"):
            response = await c.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/json"
            assert_security_headers(response)


def test_script_never_writes_html_from_strings() -> None:
    # The escaping rule of the page: data goes through textContent / DOM calls only.
    script = files("aioresil.dashboard").joinpath("static", "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "textContent" in script


async def test_mounted_under_root_path_serves_page_api_and_static() -> None:
    app = dashboard_app(registry=BreakerRegistry())
    # Current convention (uvicorn >= 0.26, Starlette Mount): path still includes root_path.
    async with client(app, root_path="/dashboard") as c:
        page = await c.get("/dashboard/")
        bare = await c.get("/dashboard")
        config = await c.get("/dashboard/api/config")
        js = await c.get("/dashboard/static/dashboard.js")
    assert page.status_code == bare.status_code == 200
    assert 'src="/dashboard/static/dashboard.js"' in page.text
    assert 'href="/dashboard/static/dashboard.css"' in page.text
    assert 'data-base="/dashboard"' in page.text
    assert config.json()["breakers"] is True
    assert js.headers["content-type"].startswith("text/javascript")
    # Older convention: root_path already stripped from path.
    async with client(app, root_path="/dashboard") as c:
        stripped = await c.get("/api/config")
    assert stripped.status_code == 200


@pytest.mark.parametrize(
    ("root", "path", "expected"),
    [
        ("", "/", "/"),
        ("/dashboard", "/dashboard", "/"),
        ("/dashboard", "/dashboard/api/x", "/api/x"),
        ("/dashboard/", "/dashboard/api/x", "/api/x"),
        ("/dashboard", "/api/x", "/api/x"),
        ("/dash", "/dashboard/api/x", "/dashboard/api/x"),  # a prefix, not the mount
    ],
)
def test_route_path_strips_the_mount_point_only_when_present(
    root: str, path: str, expected: str
) -> None:
    assert route_path({"root_path": root, "path": path}) == expected


async def test_config_tells_the_page_what_it_may_show(
    memory_parts: tuple[BreakerRegistry, DeadLetterQueue],
) -> None:
    registry, dlq = memory_parts

    async def handler(letter: DeadLetter) -> None:
        return None

    async with client(dashboard_app(dlq=dlq, title="shop")) as c:
        assert (await c.get("/api/config")).json() == {
            "title": "shop",
            "breakers": False,
            "dlq": True,
            "admin": False,
            "retry": False,
        }
    app = dashboard_app(registry=registry, admin_token=TOKEN, retry_handler=handler)
    async with client(app) as c:
        body = (await c.get("/api/config")).json()
    assert body["breakers"] and body["admin"] and body["retry"]
    assert not body["dlq"]
    assert TOKEN not in json.dumps(body)


async def test_missing_parts_answer_404_with_a_reason() -> None:
    async with client(dashboard_app()) as c:
        breakers = await c.get("/api/breakers")
        stats = await c.get("/api/dlq/stats")
    assert breakers.status_code == stats.status_code == 404
    assert breakers.json() == {"error": "no breaker registry is configured"}
    assert stats.json() == {"error": "no dead letter queue is configured"}


async def test_wrong_method_is_405_with_allow() -> None:
    async with client(dashboard_app(registry=BreakerRegistry())) as c:
        response = await c.post("/api/breakers")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert_security_headers(response)


async def test_lifespan_and_websocket_scopes_are_answered() -> None:
    app = dashboard_app()
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app({"type": "lifespan"}, receive, send)
    await app({"type": "websocket", "path": "/"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "websocket.close",
    ]


def test_bad_arguments_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        dashboard_app(admin_token="short")
    with pytest.raises(ValueError, match="printable ASCII"):
        dashboard_app(admin_token="has a space in it")
    with pytest.raises(TypeError, match="BreakerRegistry"):
        dashboard_app(registry=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DeadLetterQueue"):
        dashboard_app(dlq=MemoryBackend())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_handler"):
        dashboard_app(retry_handler="nope")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- breakers


async def test_breakers_lists_stats_and_thresholds_sorted_by_name(
    registry: BreakerRegistry, clock: FakeClock
) -> None:
    rate = BreakerConfig(failure_threshold=None, failure_rate_threshold=0.5, window_size=10)
    registry.get("zeta", BreakerConfig(failure_threshold=2, recovery_timeout=10.0))
    registry.get("alpha", rate)
    for _ in range(2):
        with pytest.raises(Boom):
            async with registry.get("zeta"):
                raise Boom("down")
    clock.advance(4.0)
    async with client(dashboard_app(registry=registry)) as c:
        response = await c.get("/api/breakers")
    assert response.status_code == 200
    assert_security_headers(response)
    rows = response.json()
    assert [r["name"] for r in rows] == ["alpha", "zeta"]
    alpha, zeta = rows
    assert alpha["state"] == "closed"
    assert alpha["config"]["failure_rate_threshold"] == 0.5
    assert alpha["config"]["window_size"] == 10
    assert zeta["state"] == "open"
    assert zeta["failure_count"] == 2
    assert zeta["config"]["failure_threshold"] == 2
    assert zeta["retry_after"] == pytest.approx(6.0, abs=0.01)
    assert set(zeta) >= {"total_calls", "rejected_calls", "consecutive_failures", "opened_at"}


async def test_admin_reset_and_force_open_change_the_shared_state(
    registry: BreakerRegistry,
) -> None:
    breaker = registry.get("pay/ments: ü")  # slashes and unicode in the name
    async with client(dashboard_app(registry=registry, admin_token=TOKEN)) as c:
        url = "/api/breakers/pay%2Fments%3A%20%C3%BC"
        opened = await c.post(f"{url}/force_open", headers=admin())
        assert opened.status_code == 200
        assert opened.json()["breaker"]["state"] == "forced_open"
        assert (await breaker.stats()).state is CircuitState.FORCED_OPEN
        reset = await c.post(f"{url}/reset", headers=admin())
        body = reset.json()
        assert (body["action"], body["name"], body["state"]) == ("reset", "pay/ments: ü", "closed")
        assert reset.json()["breaker"]["state"] == "closed"
        assert (await breaker.stats()).state is CircuitState.CLOSED
        unknown = await c.post("/api/breakers/ghost/reset", headers=admin())
    assert unknown.status_code == 404
    assert "ghost" in unknown.json()["error"]
    assert "ghost" not in registry  # an unknown name is not created by asking


# ---------------------------------------------------------------------- dead letters


async def test_dlq_stats_include_the_oldest_age(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await push_failure(dlq, "email", {"to": "a"}, "smtp down")
    clock.advance(90)
    await push_failure(dlq, "sms", {"to": "b"}, "gateway down")
    clock.advance(30)
    async with client(dashboard_app(dlq=dlq)) as c:
        response = await c.get("/api/dlq/stats")
    body = response.json()
    assert body["total_failed_tasks"] == 2
    assert body["recent_failures_24h"] == 2
    assert body["failures_by_task_type"] == {"email": 1, "sms": 1}
    assert body["oldest_age_seconds"] == pytest.approx(120, abs=0.01)
    assert body["in_flight"] == 0


async def test_dlq_stats_of_an_empty_queue_have_no_age(dlq: DeadLetterQueue) -> None:
    async with client(dashboard_app(dlq=dlq)) as c:
        body = (await c.get("/api/dlq/stats")).json()
    assert body["total_failed_tasks"] == 0
    assert body["oldest_age_seconds"] is None


async def test_dlq_entries_page_newest_first_with_type_filter_and_cursor(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    ids = []
    for n in range(5):
        ids.append(await push_failure(dlq, "email" if n % 2 == 0 else "sms", {"n": n}, f"e{n}"))
        clock.advance(1)
    async with client(dashboard_app(dlq=dlq)) as c:
        first = (await c.get("/api/dlq/entries", params={"limit": 2})).json()
        assert [e["id"] for e in first["entries"]] == [ids[4], ids[3]]
        second = await c.get(
            "/api/dlq/entries", params={"limit": 2, "cursor": first["next_cursor"]}
        )
        assert [e["id"] for e in second.json()["entries"]] == [ids[2], ids[1]]
        emails = (await c.get("/api/dlq/entries", params={"type": "email"})).json()
    assert [e["id"] for e in emails["entries"]] == [ids[4], ids[2], ids[0]]
    assert emails["next_cursor"] is None
    row = emails["entries"][0]
    assert row["task_type"] == "email"
    assert row["error_type"] == "Boom"
    assert row["error_message"] == "e4"
    assert row["attempts"] == 2
    assert "payload" not in row and "traceback" not in row  # summaries only


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"limit": "many"}, "limit must be an integer"),
        ({"limit": "0"}, "limit must be an int in 1..1000"),
        ({"cursor": "nope"}, "cursor is not one this queue returned"),
    ],
)
async def test_dlq_entries_bad_query_is_400(
    memory_parts: tuple[BreakerRegistry, DeadLetterQueue], params: dict[str, str], needle: str
) -> None:
    async with client(dashboard_app(dlq=memory_parts[1])) as c:
        response = await c.get("/api/dlq/entries", params=params)
    assert response.status_code == 400
    assert needle in response.json()["error"]


async def test_dlq_entry_detail_has_traceback_and_payload_verbatim(dlq: DeadLetterQueue) -> None:
    entry_id = await push_failure(dlq, HOSTILE, {"html": HOSTILE}, HOSTILE)
    long_id = await push_failure(dlq, "long", {}, "x" * 1000)
    async with client(dashboard_app(dlq=dlq)) as c:
        detail = await c.get(f"/api/dlq/entries/{entry_id}")
        listed = (await c.get("/api/dlq/entries")).json()["entries"]
        long_detail = (await c.get(f"/api/dlq/entries/{long_id}")).json()
        unknown = await c.get("/api/dlq/entries/000000000000-0000000000000000")
        malformed = await c.get("/api/dlq/entries/<script>")
    assert detail.status_code == 200
    assert detail.headers["content-type"] == "application/json"
    body = detail.json()
    # JSON carries the text unchanged; the page renders it with textContent.
    assert body["payload"] == {"html": HOSTILE}
    assert body["task_type"] == HOSTILE
    assert body["error_message"] == HOSTILE
    assert "Boom: " + HOSTILE in body["traceback"]
    assert body["idempotency_key"] == f"{entry_id}:2"
    assert len(long_detail["error_message"]) == 1000
    assert len(next(e for e in listed if e["id"] == long_id)["error_message"]) == 301
    assert unknown.status_code == malformed.status_code == 404


# ---------------------------------------------------------------------- admin auth


ADMIN_ROUTES = [
    ("POST", "/api/breakers/b/reset"),
    ("POST", "/api/breakers/b/force_open"),
    ("POST", "/api/dlq/entries/000000000000-0000000000000000/retry"),
    ("DELETE", "/api/dlq/entries/000000000000-0000000000000000"),
    ("POST", "/api/dlq/purge"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_admin_routes_do_not_exist_without_a_configured_token(
    memory_parts: tuple[BreakerRegistry, DeadLetterQueue], method: str, path: str
) -> None:
    registry, dlq = memory_parts
    breaker = registry.get("b")
    await breaker.force_open()
    async with client(dashboard_app(registry=registry, dlq=dlq)) as c:
        response = await c.request(method, path, headers=admin(), json={"older_than_seconds": 0})
    assert response.status_code == 404
    assert (await breaker.stats()).state is CircuitState.FORCED_OPEN


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", "Bearer wrong-token", f"Bearer {TOKEN}x"],
)
async def test_admin_routes_refuse_a_missing_or_wrong_token(
    memory_parts: tuple[BreakerRegistry, DeadLetterQueue],
    method: str,
    path: str,
    authorization: str | None,
) -> None:
    registry, dlq = memory_parts
    breaker = registry.get("b")
    await breaker.force_open()
    entry_id = await push_failure(dlq, "t", {}, "x")
    path = path.replace("000000000000-0000000000000000", entry_id)
    headers = {} if authorization is None else {"Authorization": authorization}
    app = dashboard_app(registry=registry, dlq=dlq, admin_token=TOKEN)
    async with client(app) as c:
        response = await c.request(method, path, headers=headers, json={"older_than_seconds": 0})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in response.text
    assert (await breaker.stats()).state is CircuitState.FORCED_OPEN
    assert await dlq.get(entry_id) is not None


async def test_read_routes_need_no_token_even_when_admin_is_enabled(
    admin_client: httpx.AsyncClient,
) -> None:
    for path in ("/", "/api/config", "/api/breakers", "/api/dlq/stats", "/api/dlq/entries"):
        assert (await admin_client.get(path)).status_code == 200, path


# ---------------------------------------------------------------------- admin dead letters


async def test_retry_without_a_handler_is_400_and_keeps_the_entry(dlq: DeadLetterQueue) -> None:
    entry_id = await push_failure(dlq, "t", {}, "x")
    async with client(dashboard_app(dlq=dlq, admin_token=TOKEN)) as c:
        response = await c.post(f"/api/dlq/entries/{entry_id}/retry", headers=admin())
    assert response.status_code == 400
    assert "retry_handler" in response.json()["error"]
    assert await dlq.get(entry_id) is not None


async def test_retry_runs_the_handler_and_reports_success_or_the_new_error(
    dlq: DeadLetterQueue,
) -> None:
    seen: list[Any] = []

    async def handler(letter: DeadLetter) -> None:
        seen.append(letter.payload)
        if letter.payload["n"] == 2:
            raise Boom("still broken")

    good = await push_failure(dlq, "t", {"n": 1}, "x")
    bad = await push_failure(dlq, "t", {"n": 2}, "x")
    app = dashboard_app(dlq=dlq, admin_token=TOKEN, retry_handler=handler)
    async with client(app) as c:
        ok = await c.post(f"/api/dlq/entries/{good}/retry", headers=admin())
        failed = await c.post(f"/api/dlq/entries/{bad}/retry", headers=admin())
        gone = await c.post(f"/api/dlq/entries/{good}/retry", headers=admin())
    assert ok.json() == {"id": good, "succeeded": True}
    assert failed.json() == {
        "id": bad,
        "succeeded": False,
        "attempts": 3,
        "error": "Boom: still broken",
    }
    assert gone.status_code == 404
    assert seen == [{"n": 1}, {"n": 2}]
    assert await dlq.get(good) is None
    assert (await dlq.get(bad)) is not None


async def test_retry_of_an_entry_leased_elsewhere_is_409(dlq: DeadLetterQueue) -> None:
    entry_id = await push_failure(dlq, "t", {}, "x")
    await dlq.claim(entry_id, lease=60)

    async def handler(letter: DeadLetter) -> None:
        raise AssertionError("must not run")

    app = dashboard_app(dlq=dlq, admin_token=TOKEN, retry_handler=handler)
    async with client(app) as c:
        response = await c.post(f"/api/dlq/entries/{entry_id}/retry", headers=admin())
    assert response.status_code == 409


async def test_delete_removes_the_entry_once(dlq: DeadLetterQueue) -> None:
    entry_id = await push_failure(dlq, "t", {}, "x")
    keep = await push_failure(dlq, "t", {}, "y")
    async with client(dashboard_app(dlq=dlq, admin_token=TOKEN)) as c:
        first = await c.delete(f"/api/dlq/entries/{entry_id}", headers=admin())
        second = await c.delete(f"/api/dlq/entries/{entry_id}", headers=admin())
    assert first.json() == {"id": entry_id, "removed": True}
    assert second.status_code == 404
    assert await dlq.get(entry_id) is None
    assert await dlq.count() == 1 and await dlq.get(keep) is not None


async def test_purge_by_age_and_type(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    old_email = await push_failure(dlq, "email", {}, "x")
    old_sms = await push_failure(dlq, "sms", {}, "x")
    clock.advance(3600)
    new_email = await push_failure(dlq, "email", {}, "x")
    async with client(dashboard_app(dlq=dlq, admin_token=TOKEN)) as c:
        typed = await c.post(
            "/api/dlq/purge",
            headers=admin(),
            json={"older_than_seconds": 60, "task_type": "email"},
        )
        assert typed.json()["purged"] == 1
        assert await dlq.get(old_email) is None
        assert await dlq.get(old_sms) is not None
        every = await c.post("/api/dlq/purge", headers=admin(), json={"older_than_seconds": 60.5})
    assert every.json()["purged"] == 1
    assert await dlq.get(old_sms) is None
    assert await dlq.get(new_email) is not None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "JSON object"),
        (b"not json", "must be JSON"),
        (b"[1]", "JSON object"),
        (
            b"{}",
            "older_than_seconds must be a number >= 0 and at most 3153600000 (seconds), got None",
        ),
        (b'{"older_than_seconds": 1e308}', "older_than_seconds must be a number >= 0"),
        (b'{"older_than_seconds": -1}', "older_than_seconds must be a number >= 0"),
        (b'{"older_than_seconds": true}', "older_than_seconds must be a number >= 0"),
        (b'{"older_than_seconds": "7d"}', "older_than_seconds must be a number >= 0"),
        (b'{"older_than_seconds": 1, "task_type": 3}', "task_type must be a string"),
        (b'{"older_than_seconds": 1, "task_type": " "}', "task_type must be a non-empty"),
        (b'{"older_than_seconds": 1, "everything": true}', "unknown fields: everything"),
    ],
)
async def test_purge_refuses_bad_bodies_and_removes_nothing(
    memory_parts: tuple[BreakerRegistry, DeadLetterQueue], body: bytes, needle: str
) -> None:
    dlq = memory_parts[1]
    await push_failure(dlq, "t", {}, "x")
    async with client(dashboard_app(dlq=dlq, admin_token=TOKEN)) as c:
        response = await c.post(
            "/api/dlq/purge",
            headers={**admin(), "Content-Type": "application/json"},
            content=body,
        )
    assert response.status_code == 400
    assert needle in response.json()["error"]
    assert await dlq.count() == 1


async def test_purge_refuses_an_oversized_body(admin_client: httpx.AsyncClient) -> None:
    response = await admin_client.post(
        "/api/dlq/purge", headers=admin(), content=b" " * (64 * 1024 + 1)
    )
    assert response.status_code == 413


# ---------------------------------------------------------------------- Redis outage


@pytest.mark.redis_server
async def test_redis_outage_is_503_without_leaking_the_server(own_redis_server: Any) -> None:
    from aioresil import RedisBackend

    async with RedisBackend.from_url(own_redis_server.url) as backend:
        dlq = DeadLetterQueue(backend, name="jobs")
        async with client(dashboard_app(dlq=dlq)) as c:
            assert (await c.get("/api/dlq/stats")).status_code == 200
            own_redis_server.stop()
            response = await c.get("/api/dlq/stats")
    assert response.status_code == 503
    assert "backend is unavailable" in response.json()["error"]
    assert str(own_redis_server.port) not in response.text
    assert "127.0.0.1" not in response.text


async def test_a_corrupt_entry_is_500_naming_it() -> None:
    backend = MemoryBackend()
    dlq = DeadLetterQueue(backend, name="jobs")
    entry_id = await push_failure(dlq, "t", {}, "x")
    backend.namespace("dlq")["jobs"].entries[entry_id]["p"] = b"{not json"
    async with client(dashboard_app(dlq=dlq)) as c:
        response = await c.get(f"/api/dlq/entries/{entry_id}")
    assert response.status_code == 500
    assert entry_id in response.json()["error"]
    assert_security_headers(response)
