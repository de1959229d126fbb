"""The webhook notifier against a real HTTP receiver on loopback (an asyncio server).

Breaker transitions and DLQ threshold crossings arrive as Slack, generic JSON and PagerDuty
Events v2 bodies; duplicates are sent once; the rate limit drops the excess; 503s are retried
with backoff; a receiver that never answers does not delay a guarded call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aioresil import BreakerConfig, BreakerRegistry, DeadLetterQueue
from aioresil.health.notifier import WebhookNotifier
from aioresil.testing import FakeClock


class Receiver:
    """Accepts POSTs, records their JSON bodies; ``fail_first`` answers 503 first."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.requests = 0
        self.fail_first = 0
        self.hold: asyncio.Event | None = None
        self.arrived = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook?x=1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        assert head.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
        body = await reader.readexactly(length)
        self.requests += 1
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.requests <= self.fail_first:
            writer.write(b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n")
        else:
            self.bodies.append(json.loads(body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        with contextlib.suppress(ConnectionError):  # the client may have given up
            await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    recv.server = await asyncio.start_server(recv.handle, "127.0.0.1", 0)
    try:
        yield recv
    finally:
        if recv.hold is not None:
            recv.hold.set()
        recv.server.close()
        await recv.server.wait_closed()


async def wait_for(condition: Any) -> None:
    """Poll ``condition`` (state in another task and a server): the bound only stops a hang."""
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110 - the receiver has no event per body
            await asyncio.sleep(0.01)


async def trip(registry: BreakerRegistry, name: str) -> None:
    for _ in range(2):
        with pytest.raises(RuntimeError):
            async with registry.get(name):
                raise RuntimeError("down")


async def test_transitions_arrive_as_json_then_slack_then_pagerduty(
    receiver: Receiver, clock: FakeClock
) -> None:
    config = BreakerConfig(failure_threshold=2, recovery_timeout=5, success_threshold=1)
    registry = BreakerRegistry(default_config=config, clock=clock)
    async with WebhookNotifier(receiver.url, service="checkout") as notifier:
        notifier.watch_registry(registry)
        await trip(registry, "payments")
        clock.advance(6)
        async with registry.get("payments"):  # the trial closes it
            pass
        await wait_for(lambda: len(receiver.bodies) == 3)
    states = [(b["subject"], b["previous"], b["state"], b["resolved"]) for b in receiver.bodies]
    assert states == [
        ("payments", "closed", "open", False),
        ("payments", "open", "half_open", False),
        ("payments", "half_open", "closed", True),
    ]
    first = receiver.bodies[0]
    assert first["service"] == "checkout" and first["severity"] == "critical"
    assert "circuit 'payments' opened" in first["message"]

    slack_receiver = Receiver()
    slack_receiver.server = await asyncio.start_server(slack_receiver.handle, "127.0.0.1", 0)
    async with WebhookNotifier(slack_receiver.url, style="slack") as slack:
        slack.watch_registry(registry)
        await trip(registry, "search")
        await wait_for(lambda: slack_receiver.bodies)
    slack_receiver.server.close()
    assert list(slack_receiver.bodies[0]) == ["text"]
    assert "circuit 'search' opened" in slack_receiver.bodies[0]["text"]


async def test_pagerduty_bodies_trigger_and_resolve_with_one_dedup_key(
    receiver: Receiver, clock: FakeClock
) -> None:
    config = BreakerConfig(failure_threshold=2)
    registry = BreakerRegistry(default_config=config, clock=clock)
    notifier = WebhookNotifier(
        receiver.url, style="pagerduty", routing_key="R0UTING", service="api"
    )
    async with notifier:
        notifier.watch_registry(registry)
        await trip(registry, "payments")
        await registry.get("payments").reset()
        await wait_for(lambda: len(receiver.bodies) == 2)
    trigger, resolve = receiver.bodies
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "aioresil/api/breaker/payments"
    assert trigger["routing_key"] == "R0UTING"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == "api"
    assert trigger["payload"]["component"] == "payments"


async def test_repeats_are_sent_once_and_the_rate_limit_drops_the_rest(
    receiver: Receiver, clock: FakeClock
) -> None:
    # Two registries (two processes sharing a circuit) each report the same transition.
    config = BreakerConfig(failure_threshold=2)
    first = BreakerRegistry(default_config=config, clock=clock)
    second = BreakerRegistry(default_config=config, clock=clock)
    notifier = WebhookNotifier(receiver.url, dedup_seconds=600, max_per_minute=3)
    async with notifier:
        notifier.watch_registry(first)
        notifier.watch_registry(second)
        for registry in (first, second):  # open, then open again: a repeat
            await trip(registry, "shared")
        await notifier.wait_idle()
        for registry in (first, second):  # closed, then closed again: a repeat
            await registry.get("shared").reset()
        for name in ("a", "b", "c"):  # three more distinct notes, over the limit of 3
            await trip(first, name)
        await notifier.wait_idle()
    stats = notifier.stats()
    assert stats.deduplicated == 2
    assert stats.sent == 3
    assert stats.dropped == 2
    assert [(b["subject"], b["state"]) for b in receiver.bodies] == [
        ("shared", "open"),
        ("shared", "closed"),
        ("a", "open"),
    ]


async def test_a_flapping_circuit_that_reopens_pages_again(
    receiver: Receiver, clock: FakeClock
) -> None:
    config = BreakerConfig(failure_threshold=2, recovery_timeout=5, success_threshold=1)
    registry = BreakerRegistry(default_config=config, clock=clock)
    notifier = WebhookNotifier(receiver.url, style="pagerduty", routing_key="R", dedup_seconds=300)
    async with notifier:
        notifier.watch_registry(registry)
        await trip(registry, "payments")  # CLOSED -> OPEN
        clock.advance(6)
        async with registry.get("payments"):  # OPEN -> HALF_OPEN -> CLOSED
            pass
        await trip(registry, "payments")  # CLOSED -> OPEN again, seconds later
        await wait_for(lambda: len(receiver.bodies) == 4)
        await notifier.wait_idle()
    actions = [(b["event_action"], b["payload"]["class"]) for b in receiver.bodies]
    assert actions == [
        ("trigger", "breaker_open"),
        ("trigger", "breaker_half_open"),
        ("resolve", "breaker_closed"),
        ("trigger", "breaker_open"),  # the incident is open again, as the circuit is
    ]
    assert notifier.stats().deduplicated == 0


async def test_aclose_waits_for_the_send_in_flight(receiver: Receiver, clock: FakeClock) -> None:
    receiver.hold = asyncio.Event()  # a slow receiver: answers when the test says so
    registry = BreakerRegistry(default_config=BreakerConfig(failure_threshold=2), clock=clock)
    notifier = WebhookNotifier(receiver.url, timeout=60, retries=0)
    await notifier.start()
    notifier.watch_registry(registry)
    await trip(registry, "payments")
    await receiver.arrived.wait()  # the worker took the only item: the queue is empty
    assert notifier.stats().queued == 0
    closing = asyncio.create_task(notifier.aclose(drain_timeout=30))
    await wait_for(lambda: notifier._closed)  # aclose is past its decision to wait or cancel
    assert not closing.done()  # still waiting for the send, which was not cancelled
    receiver.hold.set()
    await closing
    assert [b["state"] for b in receiver.bodies] == ["open"]
    stats = notifier.stats()
    assert (stats.sent, stats.failed, stats.dropped, stats.queued) == (1, 0, 0, 0)


async def test_aclose_past_its_drain_timeout_counts_what_it_gave_up(
    receiver: Receiver, clock: FakeClock
) -> None:
    receiver.hold = asyncio.Event()  # answers only after the notifier has given up
    registry = BreakerRegistry(default_config=BreakerConfig(failure_threshold=2), clock=clock)
    notifier = WebhookNotifier(receiver.url, timeout=60, retries=0)
    await notifier.start()
    notifier.watch_registry(registry)
    await trip(registry, "payments")
    await receiver.arrived.wait()  # "payments" is being sent ...
    await trip(registry, "search")  # ... and "search" waits behind it
    assert notifier.stats().queued == 1
    await notifier.aclose(drain_timeout=0.2)
    stats = notifier.stats()
    # The cancelled send counts as failed, the never-attempted one as dropped.
    assert (stats.sent, stats.failed, stats.dropped, stats.queued) == (0, 1, 1, 0)


async def test_503s_are_retried_with_backoff_until_delivered(
    receiver: Receiver, clock: FakeClock
) -> None:
    receiver.fail_first = 2
    registry = BreakerRegistry(default_config=BreakerConfig(failure_threshold=2), clock=clock)
    notifier = WebhookNotifier(receiver.url, retries=3, backoff=0.01)
    async with notifier:
        notifier.watch_registry(registry)
        await trip(registry, "payments")
        await wait_for(lambda: receiver.bodies)
    assert receiver.requests == 3
    assert notifier.stats().retried == 2
    assert notifier.stats().sent == 1


async def test_a_receiver_that_never_answers_does_not_delay_guarded_calls(
    receiver: Receiver, clock: FakeClock
) -> None:
    receiver.hold = asyncio.Event()  # accepts the request and never answers
    registry = BreakerRegistry(default_config=BreakerConfig(failure_threshold=2), clock=clock)
    notifier = WebhookNotifier(receiver.url, timeout=60, retries=0)
    async with notifier:
        notifier.watch_registry(registry)
        await trip(registry, "payments")
        await receiver.arrived.wait()  # the worker is stuck in the POST ...
        for name in ("b", "c"):  # ... and breakers still trip and calls still run
            await trip(registry, name)
            async with registry.get(name + "-ok"):
                pass
        assert notifier.stats().queued == 2  # queued behind the stuck request
        receiver.hold.set()
        await wait_for(lambda: len(receiver.bodies) == 3)


async def test_dlq_threshold_crossings_up_and_down(receiver: Receiver) -> None:
    dlq = DeadLetterQueue(name="jobs")
    notifier = WebhookNotifier(receiver.url, dedup_seconds=0)
    notifier.watch_dlq(dlq, warning_threshold=2, critical_threshold=3, interval=0.01)
    async with notifier:
        for n in range(3):
            await dlq.push("email", {"n": n}, RuntimeError("smtp"))
            await wait_for(lambda n=n: n < 1 or receiver.bodies)  # let a poll see each size
        await wait_for(lambda: any(b["state"] == "critical" for b in receiver.bodies))
        await dlq.purge(older_than=0)
        await wait_for(lambda: receiver.bodies[-1]["state"] == "ok")
    states = [b["state"] for b in receiver.bodies]
    assert states[-1] == "ok" and receiver.bodies[-1]["resolved"] is True
    assert "critical" in states
    critical = next(b for b in receiver.bodies if b["state"] == "critical")
    assert critical["kind"] == "dlq" and critical["subject"] == "jobs"
    assert critical["details"]["entries"] == 3


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookNotifier("ftp://x")
    with pytest.raises(ValueError, match="routing_key"):
        WebhookNotifier("https://events.pagerduty.com/v2/enqueue", style="pagerduty")
    with pytest.raises(ValueError, match="style"):
        WebhookNotifier("http://x", style="teams")  # type: ignore[arg-type]
