"""A real HTTP upstream on loopback (aiohttp.web) that can misbehave on demand.

Routes (every request is counted in ``hits[path]``):

* ``GET /status/{code}?retry_after=S``: answers ``code`` (with ``Retry-After: S`` when given).
* ``GET /hang``: never answers (until the server stops).
* ``GET /reset``: closes the connection without an answer.
* ``GET /stream?chunks=N&fail=1&hold=1``: a chunked 200 of N chunks; with ``fail=1`` the
  connection is cut after the first chunk; with ``hold=1`` the chunks after the first wait
  until ``stream_release`` is set.
* ``POST /{provider}/v1/chat/completions``: an OpenAI-compatible chat completion;
  ``POST /{provider}/v1/messages``: an Anthropic-compatible message. ``modes[provider]``
  (``"healthy"`` by default, or ``"failing"``: 500) decides the answer.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from aiohttp import web


class Upstream:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.modes: dict[str, str] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._hanging = asyncio.Event()
        self.stream_release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/status/{code}", self.status)
        app.router.add_get("/hang", self.hang)
        app.router.add_get("/reset", self.reset)
        app.router.add_get("/stream", self.stream)
        app.router.add_post("/{provider}/v1/chat/completions", self.chat)
        app.router.add_post("/{provider}/v1/messages", self.messages)
        self.app = app

    async def start(self) -> Upstream:
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._hanging.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def count(self, path: str) -> int:
        return self.hits[path]

    async def status(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        code = int(request.match_info["code"])
        return web.json_response({"status": code}, status=code, headers=headers)

    async def hang(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        await self._hanging.wait()
        return web.json_response({})

    async def reset(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError  # aiohttp drops the handler quietly

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for index in range(int(request.query.get("chunks", "3"))):
            if index == 1 and request.query.get("hold") == "1":
                await self.stream_release.wait()  # the rest of the body waits for the test
            await response.write(f"chunk{index};".encode())
            if request.query.get("fail") == "1":
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError
        await response.write_eof()
        return response

    def _mode(self, request: web.Request) -> str:
        provider = request.match_info["provider"]
        self.hits[request.path] += 1
        return self.modes.get(provider, "healthy")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        mode = self._mode(request)
        body = await request.json()
        if mode == "failing":
            return web.json_response({"error": {"message": "down", "type": "server"}}, status=500)
        provider = request.match_info["provider"]
        answer = f"{provider} says: {body['messages'][-1]['content']}"
        if body.get("stream"):
            return await self._chat_stream(request, answer, cut=mode == "cut")
        return web.json_response(chat_completion(answer, body.get("model", "m")))

    async def _chat_stream(
        self, request: web.Request, answer: str, *, cut: bool
    ) -> web.StreamResponse:
        """Server-sent events, one word per chunk; ``cut`` aborts after the first chunk."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in answer.split():
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if cut:
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def messages(self, request: web.Request) -> web.Response:
        mode = self._mode(request)
        body = await request.json()
        if mode == "failing":
            error = {"type": "error", "error": {"type": "api_error", "message": "down"}}
            return web.json_response(error, status=500)
        provider = request.match_info["provider"]
        answer = f"{provider} says: {body['messages'][-1]['content']}"
        return web.json_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", "m"),
                "content": [{"type": "text", "text": answer}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            }
        )


def chat_completion(answer: str, model: str) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )
    )
