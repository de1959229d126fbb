"""An agent that keeps answering when one model provider is down.

Two OpenAI-compatible providers (``primary`` and ``backup``) are served by a small fake server
on loopback; from question ``--fail-from`` on, ``primary`` answers 500. The agent asks through
the real ``openai.AsyncOpenAI`` SDK, unchanged, whose ``http_client`` sends through
:class:`aioresil.integrations.httpx.ResilientTransport` (one circuit per provider) and tries the
providers in order with :class:`aioresil.Failover`:

* while ``primary`` answers, it answers;
* when it fails, the same call falls through to ``backup`` (the user sees an answer, not an
  error), and after ``--failure-threshold`` failures its circuit opens;
* while the circuit is open, ``primary`` is skipped without a request (the fake server counts
  what each provider received, and the summary shows it);
* the agent's health app and live dashboard are served at ``/ops`` of the same local server:
  ``/ops/dashboard/`` shows the ``primary`` circuit open.

Run it (no internet, no API key needed)::

    python examples/llm_failover.py                 # ask 8 questions, print who answered
    python examples/llm_failover.py --serve         # then keep the dashboard up (Ctrl-C stops)
    python examples/llm_failover.py --json          # one JSON summary line (used by the tests)

Each answer prints one line; the summary says how many answers each provider gave, how many
requests each provider received, and each circuit's state; with ``--serve`` it also gives the
dashboard's URL (without it the server stops as the script ends, and ``--json`` reports
``"dashboard": null``). Any error prints one line on
stderr and exits 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from aioresil import (
    BreakerConfig,
    BreakerRegistry,
    CircuitOpenError,
    Failover,
    FailoverAnswered,
    health_app,
)
from aioresil.integrations.httpx import ResilientTransport

HOST = "127.0.0.1"
PROVIDERS = ("primary", "backup")


class FakeProviders:
    """OpenAI-compatible ``POST /{provider}/v1/chat/completions``; ``failing`` providers
    answer 500. ``requests`` counts what each provider received."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.requests: Counter[str] = Counter()

    async def chat(self, request: Request) -> JSONResponse:
        provider = request.path_params["provider"]
        if provider not in PROVIDERS:
            return JSONResponse({"error": {"message": "no such provider"}}, status_code=404)
        self.requests[provider] += 1
        if provider in self.failing:
            return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, 500)
        body = await request.json()
        question = body["messages"][-1]["content"]
        return JSONResponse(
            {
                "id": f"chatcmpl-{provider}-{self.requests[provider]}",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"{provider}: {question}?"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # main() handles SIGINT/SIGTERM itself
        yield


def provider_of(request: httpx.Request) -> str:
    """The circuit of a request: the provider named by the first path segment."""
    return request.url.path.split("/")[1]


async def ask(client: openai.AsyncOpenAI, question: str) -> str:
    reply = await client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": question}]
    )
    return reply.choices[0].message.content or ""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeProviders()
    registry = BreakerRegistry(
        default_config=BreakerConfig(
            failure_threshold=args.failure_threshold, recovery_timeout=args.recovery_timeout
        )
    )
    app = Starlette(
        routes=[
            Route("/{provider}/v1/chat/completions", fake.chat, methods=["POST"]),
            Mount("/ops", app=health_app(registry=registry, dashboard=True)),
        ]
    )
    # Bound here, so a taken port is an OSError we report in one line. IPPROTO_TCP: uvicorn
    # then sets TCP_NODELAY on the connections (a plain socket() would get 40 ms stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind((HOST, args.port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    server = _Server(uvicorn.Config(app, lifespan="off", log_level="warning", ws="none"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # uvicorn has no started event
        if serving.done():
            await serving  # the bind error, as one line from main()
            raise RuntimeError("the local server stopped before it started")
        await asyncio.sleep(0.01)
    base = f"http://{HOST}:{sock.getsockname()[1]}"

    transport = ResilientTransport(registry=registry, key=provider_of, timeout=10)
    http = httpx.AsyncClient(transport=transport, trust_env=False)
    clients = {
        name: openai.AsyncOpenAI(
            base_url=f"{base}/{name}/v1", api_key="not-needed", http_client=http, max_retries=0
        )
        for name in PROVIDERS
    }
    for name in PROVIDERS:
        registry.get(name)  # listed on the dashboard from the start
    agent = Failover([(name, clients[name]) for name in PROVIDERS], name="providers")
    answered_by: Counter[str] = Counter()
    events: list[FailoverAnswered] = []
    agent.add_listener(lambda event: events.append(event))  # type: ignore[arg-type]
    try:
        for number in range(1, args.questions + 1):
            if number == args.fail_from:
                fake.failing.add("primary")
            answer = await agent.call(ask, f"question {number}")
            event = events[-1]
            answered_by[event.alternative] += 1
            if not args.json:
                note = ""
                if event.failed:
                    note = f"  ({', '.join(event.failed)} failed)"
                elif event.skipped:
                    note = f"  ({', '.join(event.skipped)} skipped: circuit open)"
                print(f"q{number}: {answer}{note}", flush=True)
        states = {name: (await registry.get(name).stats()).state.value for name in PROVIDERS}
        summary = {
            "answered": sum(answered_by.values()),
            "answered_by": dict(answered_by),
            "requests": dict(fake.requests),
            "breakers": states,
            # The server stops when this function returns: a URL only while it stays up.
            "dashboard": f"{base}/ops/dashboard/" if args.serve else None,
        }
        if args.json:
            print(json.dumps(summary, sort_keys=True), flush=True)
        else:
            print(f"answers by provider: {dict(answered_by)}", flush=True)
            print(f"requests received:   {dict(fake.requests)}", flush=True)
            print(f"circuits:            {states}", flush=True)
            if args.serve:
                print(f"dashboard:           {summary['dashboard']}", flush=True)
            else:
                print("dashboard:           run with --serve to keep it up", flush=True)
        if args.serve:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            if not args.json:
                print("serving the dashboard; Ctrl-C stops", flush=True)
            await stop.wait()
        return summary
    finally:
        await http.aclose()
        server.should_exit = True
        await serving
        sock.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=8, help="questions to ask (8)")
    parser.add_argument("--fail-from", type=int, default=3, help="primary fails from this one")
    parser.add_argument("--failure-threshold", type=int, default=2, help="failures that open")
    parser.add_argument("--recovery-timeout", type=float, default=60.0, help="seconds open")
    parser.add_argument("--port", type=int, default=0, help="local server port (0: any free)")
    parser.add_argument("--serve", action="store_true", help="keep the dashboard up at the end")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.questions < 1 or args.failure_threshold < 1 or args.recovery_timeout <= 0:
        parser.error("--questions and --failure-threshold must be >= 1, --recovery-timeout > 0")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0
    except (OSError, CircuitOpenError, openai.OpenAIError, RuntimeError) as exc:
        print(f"llm_failover: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
