"""``health_app(..., dashboard=True)`` serves the dashboard at ``/dashboard/``."""

from __future__ import annotations

import httpx

from aioresil import BreakerRegistry, DeadLetterQueue, health_app

TOKEN = "a-long-enough-admin-token"


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_dashboard_is_mounted_under_the_health_app() -> None:
    registry = BreakerRegistry()
    registry.get("payments")
    app = health_app(registry=registry, dlq=DeadLetterQueue(), dashboard=True)
    async with client(app) as http:
        redirect = await http.get("/dashboard")
        assert redirect.status_code == 308
        assert redirect.headers["location"] == "/dashboard/"
        page = await http.get("/dashboard/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        breakers = await http.get("/dashboard/api/breakers")
        assert [b["name"] for b in breakers.json()] == ["payments"]
        assert (await http.get("/dashboard/static/dashboard.js")).status_code == 200
        assert (await http.get("/health")).json()["status"] == "healthy"


async def test_dashboard_actions_follow_the_health_apps_admin_token() -> None:
    registry = BreakerRegistry()
    breaker = registry.get("payments")
    await breaker.force_open()
    read_only = health_app(registry=registry, dashboard=True)
    async with client(read_only) as http:
        assert (await http.post("/dashboard/api/breakers/payments/reset")).status_code == 404
    admin = health_app(registry=registry, dashboard=True, admin_token=TOKEN)
    async with client(admin) as http:
        denied = await http.post("/dashboard/api/breakers/payments/reset")
        assert denied.status_code == 401
        done = await http.post(
            "/dashboard/api/breakers/payments/reset",
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        assert done.status_code == 200
    assert breaker.state.value == "closed"


async def test_without_dashboard_the_path_is_unknown() -> None:
    async with client(health_app(registry=BreakerRegistry())) as http:
        assert (await http.get("/dashboard/")).status_code == 404
