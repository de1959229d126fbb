"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

The app is served by an in-process uvicorn on a free loopback port, in the test's own event
loop, so a breaker the test opens through the Python API is the very object the page reads.
One server and one browser serve the whole module; each test installs a fresh app (its own
registry and queue) behind the server and opens a fresh browser context.

Without ``/usr/bin/chromium`` these tests skip, unless ``AIORESIL_REQUIRE_BROWSER=1`` (CI),
which turns the missing browser into a failure.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from aioresil import BreakerConfig, BreakerRegistry, DeadLetter, DeadLetterQueue, MemoryBackend
from aioresil.dashboard import dashboard_app

from ..helpers import until
from ..servers import free_port

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
TOKEN = "browser-test-token"
HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_IMG = "<img src=x onerror=alert(2)>"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("AIORESIL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"AIORESIL_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if not Path(CHROMIUM).exists():
    _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
try:
    import playwright  # noqa: F401
except ImportError:
    _unavailable("playwright is not installed (pip install -e '.[test]')")

from playwright.async_api import (  # noqa: E402 - only once the browser is known to exist
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    async_playwright,
    expect,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

Asgi = Callable[[Any, Any, Any], Awaitable[None]]


class SwitchableApp:
    """Forwards to whichever app the current test installed."""

    def __init__(self) -> None:
        self.app: Asgi | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "no app installed"
        await self.app(scope, receive, send)


class Server:
    def __init__(self, switch: SwitchableApp, url: str) -> None:
        self.switch = switch
        self.url = url

    def install(self, app: Asgi) -> None:
        self.switch.app = app


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[Server]:
    import uvicorn

    switch = SwitchableApp()
    port = free_port()
    config = uvicorn.Config(
        switch,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        ws="none",
        log_level="warning",
        access_log=False,
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    await until(lambda: uv.started or task.done(), what="uvicorn started")
    if task.done():
        task.result()
    assert uv.started, "uvicorn did not start"
    try:
        yield Server(switch, f"http://127.0.0.1:{port}")
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


class Watched:
    """A page plus every console error, page error and dialog it produced."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.accept_dialogs = False
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("dialog", self._dialog)
        page.on("response", self._response)

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.errors.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if self.accept_dialogs and dialog.type == "confirm":
            await dialog.accept()
        else:
            await dialog.dismiss()


@pytest_asyncio.fixture(loop_scope="module")
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(5000)
    try:
        yield Watched(page)
    finally:
        await context.close()


async def open_dashboard(server: Server, watched: Watched) -> Page:
    page = watched.page
    await page.goto(server.url + "/")
    await expect(page.locator("#live")).to_contain_text("live", timeout=3000)
    return page


async def one_more_poll(page: Page) -> None:
    """Until the page has finished one more poll after this point. ``#live`` carries the
    time of the last finished poll to the second and polls are at least POLL_MS = 1 s
    apart, so its text changes with every poll: a marker, not a pause."""
    live = page.locator("#live")
    before = await live.text_content()
    await expect(live).not_to_have_text(before or "", timeout=20_000)


def badge(page: Page, name: str) -> Any:
    return page.locator(f'tr[data-breaker="{name}"] .badge')


async def fail(registry: BreakerRegistry, name: str, times: int) -> None:
    for _ in range(times):
        try:
            async with registry.get(name):
                raise RuntimeError("upstream down")
        except RuntimeError:
            pass


# ---------------------------------------------------------------------- tests


async def test_page_loads_without_console_errors(server: Server, watched: Watched) -> None:
    registry = BreakerRegistry()
    registry.get("payments")
    dlq = DeadLetterQueue()
    await dlq.push("email", {"to": "a@example.com"}, "smtp timeout")
    server.install(dashboard_app(registry=registry, dlq=dlq))
    page = await open_dashboard(server, watched)
    await expect(badge(page, "payments")).to_have_text("closed")
    await expect(page.locator("#dlq-total")).to_have_text("1")
    await expect(page.locator("#dlq-rows tr")).to_have_count(1)
    await one_more_poll(page)  # at least one more poll ran before judging the console
    assert watched.errors == []
    assert watched.dialogs == []


async def test_breaker_opened_in_python_turns_open_without_reload(
    server: Server, watched: Watched
) -> None:
    registry = BreakerRegistry()
    registry.get("upstream", BreakerConfig(failure_threshold=2, recovery_timeout=120))
    server.install(dashboard_app(registry=registry))
    page = await open_dashboard(server, watched)
    await expect(badge(page, "upstream")).to_have_text("closed")
    await page.evaluate("window.__sameDocument = true")

    await fail(registry, "upstream", 2)

    await expect(badge(page, "upstream")).to_have_text("open", timeout=2000)
    assert await page.evaluate("window.__sameDocument === true")  # no reload happened
    row = page.locator('tr[data-breaker="upstream"]')
    await expect(row.locator(".next-trial")).to_contain_text("in ")
    await expect(row.locator("svg.timeline rect").first).to_be_attached()
    assert watched.errors == []


async def test_hostile_dead_letter_renders_as_text(server: Server, watched: Watched) -> None:
    hostile = HOSTILE_SCRIPT + HOSTILE_IMG
    dlq = DeadLetterQueue()
    await dlq.push(hostile, {"html": hostile, HOSTILE_IMG: [HOSTILE_SCRIPT]}, hostile)
    server.install(dashboard_app(dlq=dlq))
    page = await open_dashboard(server, watched)

    row = page.locator("#dlq-rows tr").first
    await expect(row.locator("td.type")).to_have_text(hostile)
    await expect(row.locator("td.error")).to_have_text(hostile)
    await expect(page.locator("#dlq-types li").first).to_contain_text(hostile)
    await row.click()
    await expect(page.locator("#entry")).to_be_visible()
    await expect(page.locator("#entry-error")).to_have_text(hostile)
    payload = await page.locator("#entry-payload").text_content()
    assert payload is not None and HOSTILE_SCRIPT in payload and HOSTILE_IMG in payload
    await expect(page.get_by_text(HOSTILE_SCRIPT).first).to_be_visible()

    # An injected handler would have fired (and its request for "x" failed) by the end of
    # the next poll, which renders the same hostile entry again.
    await one_more_poll(page)
    assert watched.dialogs == []
    assert await page.locator("img").count() == 0
    assert await page.locator("script").count() == 1  # only dashboard.js
    assert watched.errors == []


async def test_admin_actions_hidden_without_a_token(server: Server, watched: Watched) -> None:
    registry = BreakerRegistry()
    registry.get("payments")
    dlq = DeadLetterQueue()
    await dlq.push("email", {}, "boom")

    # Read-only app: not even a token field.
    server.install(dashboard_app(registry=registry, dlq=dlq))
    page = await open_dashboard(server, watched)
    await expect(badge(page, "payments")).to_have_text("closed")
    await expect(page.locator("#admin-form")).to_be_hidden()
    assert await page.locator("button.reset").count() == 0

    # Admin-capable app, but no token entered yet: the field, and still no actions.
    server.install(dashboard_app(registry=registry, dlq=dlq, admin_token=TOKEN))
    page = await open_dashboard(server, watched)
    await expect(page.locator("#admin-form")).to_be_visible()
    await expect(badge(page, "payments")).to_have_text("closed")
    assert await page.locator("button.reset").count() == 0
    assert await page.locator("button.force-open").count() == 0
    await expect(page.locator("#purge-form")).to_be_hidden()
    await page.locator("#dlq-rows tr").first.click()
    await expect(page.locator("#entry")).to_be_visible()
    await expect(page.locator("#entry-remove")).to_be_hidden()
    assert watched.errors == []


async def test_reset_with_the_token_closes_the_breaker(server: Server, watched: Watched) -> None:
    registry = BreakerRegistry()
    registry.get("payments", BreakerConfig(failure_threshold=1, recovery_timeout=120))
    await fail(registry, "payments", 1)
    server.install(dashboard_app(registry=registry, admin_token=TOKEN))
    page = await open_dashboard(server, watched)
    await expect(badge(page, "payments")).to_have_text("open")
    watched.accept_dialogs = True

    # A wrong token: the action is refused and says so.
    await page.locator("#admin-token").fill("not-the-token")
    await page.locator("#admin-use").click()
    await page.locator('tr[data-breaker="payments"] button.reset').click()
    await expect(page.locator("#result")).to_contain_text("the admin token is not valid")
    assert (await registry.get("payments").stats()).state.value == "open"

    await page.locator("#admin-token").fill(TOKEN)
    await page.locator("#admin-use").click()
    await page.locator('tr[data-breaker="payments"] button.reset').click()
    await expect(page.locator("#result")).to_contain_text("now closed")
    await expect(badge(page, "payments")).to_have_text("closed")
    assert (await registry.get("payments").stats()).state.value == "closed"
    assert watched.dialogs == ['confirm: Reset breaker "payments"?'] * 2
    # The two refused attempts logged a 401 in the console; nothing else did.
    assert all("401" in e for e in watched.errors), watched.errors


async def test_remove_and_retry_dead_letters_with_the_token(
    server: Server, watched: Watched
) -> None:
    dlq = DeadLetterQueue()
    retried: list[object] = []

    async def resend(letter: DeadLetter) -> None:
        retried.append(letter.payload)

    gone = await dlq.push("email", {"n": 1}, "boom")
    again = await dlq.push("email", {"n": 2}, "boom")
    await dlq.push("email", {"n": 3}, "boom")
    server.install(dashboard_app(dlq=dlq, admin_token=TOKEN, retry_handler=resend))
    page = await open_dashboard(server, watched)
    await page.locator("#admin-token").fill(TOKEN)
    await page.locator("#admin-use").click()
    watched.accept_dialogs = True
    await page.locator(f'#dlq-rows tr[data-id="{gone}"]').click()
    await page.locator("#entry-remove").click()
    await expect(page.locator("#result")).to_contain_text(f"Removed {gone}")
    await expect(page.locator("#dlq-total")).to_have_text("2")
    await expect(page.locator("#dlq-rows tr")).to_have_count(2)
    assert await dlq.get(gone) is None

    await page.locator(f'#dlq-rows tr[data-id="{again}"]').click()
    await expect(page.locator("#entry-id")).to_have_text(again)
    await page.locator("#entry-retry").click()
    await expect(page.locator("#result")).to_contain_text(f"Retried {again}: succeeded")
    await expect(page.locator("#dlq-total")).to_have_text("1")
    assert retried == [{"n": 2}]
    assert await dlq.get(again) is None
    assert watched.dialogs == [
        f"confirm: Remove dead letter {gone}? This cannot be undone.",
        f"confirm: Retry dead letter {again} now?",
    ]
    assert watched.errors == []


async def test_screenshot_of_a_busy_dashboard(server: Server, watched: Watched) -> None:
    registry = BreakerRegistry(backend=MemoryBackend())
    for name in ("inventory", "payments", "search", "shipping"):
        registry.get(name, BreakerConfig(failure_threshold=3, recovery_timeout=60))
    dlq = DeadLetterQueue()

    async def resend(letter: DeadLetter) -> None:
        return None

    server.install(
        dashboard_app(registry=registry, dlq=dlq, admin_token=TOKEN, retry_handler=resend)
    )
    for n in range(6):
        await dlq.push(
            ("send_email", "charge_card", "sync_stock")[n % 3],
            {"order": 1000 + n},
            f"upstream returned 503 on attempt {n}",
        )
    page = await open_dashboard(server, watched)
    await page.locator("#admin-token").fill(TOKEN)
    await page.locator("#admin-use").click()
    for _ in range(3):  # a little history for the timelines
        await fail(registry, "payments", 1)
        async with registry.get("search"):
            pass
        await one_more_poll(page)  # the page saw this step: one point of history per poll
    await expect(badge(page, "payments")).to_have_text("open", timeout=2000)
    await page.locator("#dlq-rows tr").first.click()
    await expect(page.locator("#entry")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "dashboard.png"
    await page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert watched.errors == []
