"""The ASGI 3 plumbing the health app and the dashboard share: responses, JSON, lifespan,
request bodies, the admin token and bounded numbers from requests.

Why one copy: the two apps used to implement each of these separately and disagreed (an
``Authorization: bearer`` header in lower case was 401 on one and 200 on the other; tokens of
8 characters were accepted by one and refused by the other). Everything here is small and
framework-free, so the apps mount anywhere (uvicorn, Starlette ``Mount``) with no dependency.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

__all__ = [
    "MAX_BODY",
    "MAX_SECONDS",
    "MIN_TOKEN_LENGTH",
    "AdminToken",
    "BodyTooLarge",
    "Headers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "header",
    "json_bytes",
    "lifespan",
    "parse_duration",
    "parse_seconds",
    "read_body",
    "send_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

MAX_BODY = 64 * 1024
MIN_TOKEN_LENGTH = 16
# Ages and durations from requests: past a century they mean "everything" at best and an
# overflow in datetime arithmetic at worst; refused with a 400 instead.
MAX_SECONDS = 100 * 365 * 86_400.0

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


class BodyTooLarge(Exception):
    """The request body exceeds :data:`MAX_BODY`."""


async def send_response(
    send: Send,
    status: int,
    body: bytes | Sequence[bytes],
    content_type: bytes | str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
    cache: bytes = b"no-store",
) -> None:
    """One complete response. ``head``: the same headers (``content-length`` of the full
    body) without the body, as ``HEAD`` requires.

    ``body`` may be a sequence of chunks, sent as one ``http.response.body`` message each:
    a large body (``/metrics`` of thousands of breakers) is then never copied into one
    buffer, which costs more than writing it."""
    if isinstance(content_type, str):
        content_type = content_type.encode()
    chunks: Sequence[bytes] = (body,) if isinstance(body, bytes) else body
    start = [
        (b"content-type", content_type),
        (b"content-length", str(sum(map(len, chunks))).encode()),
        (b"cache-control", cache),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    if head or len(chunks) < 2:
        await send({"type": "http.response.body", "body": b"" if head or not chunks else chunks[0]})
        return
    for chunk in chunks[:-1]:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": chunks[-1]})


def json_bytes(data: Any, *, compact: bool = True) -> bytes:
    """``data`` as UTF-8 JSON; values JSON cannot hold (datetimes, custom payloads) as strings."""
    separators = (",", ":") if compact else None
    return json.dumps(data, separators=separators, default=str, ensure_ascii=False).encode()


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer ASGI lifespan startup and shutdown (nothing to set up or tear down)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Receive, limit: int = MAX_BODY) -> bytes:
    """The whole request body; raises :class:`BodyTooLarge` beyond ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or ``None``."""
    for key, value in headers:
        if key.lower() == name:
            return bytes(value)
    return None


class AdminToken:
    """The bearer token that enables and guards admin actions.

    One rule for every app: a str of at least :data:`MIN_TOKEN_LENGTH` printable ASCII
    characters without whitespace; the ``Bearer`` scheme is matched case-insensitively
    (RFC 9110 makes auth schemes case-insensitive) and the token with
    :func:`hmac.compare_digest`, so the comparison time does not reveal how much matched.

    Raises:
        TypeError: ``token`` is not a str.
        ValueError: too short, or holding whitespace or non-printable characters.
    """

    __slots__ = ("_token",)

    def __init__(self, token: object) -> None:
        if not isinstance(token, str):
            raise TypeError(f"admin_token must be a str, got {type(token).__name__}")
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"admin_token must be at least {MIN_TOKEN_LENGTH} characters "
                "(e.g. secrets.token_urlsafe(32))"
            )
        if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
            raise ValueError("admin_token must be printable ASCII without spaces")
        self._token = token.encode()

    def check(self, headers: Headers) -> bool:
        """Whether ``headers`` carry ``Authorization: Bearer <token>``."""
        return self.problem(headers) is None

    def problem(self, headers: Headers) -> str | None:
        """Why ``headers`` are refused (for the 401 body), or ``None`` when they carry the
        token."""
        value = header(headers, b"authorization") or b""
        scheme, _, given = value.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return "admin actions need an Authorization: Bearer token"
        if not hmac.compare_digest(given.strip(), self._token):
            return "the admin token is not valid"
        return None

    def __repr__(self) -> str:
        return "AdminToken(***)"


def parse_seconds(value: object, *, name: str, maximum: float = MAX_SECONDS) -> float:
    """A number of seconds from a JSON request body: finite, 0..``maximum``.

    Raises:
        ValueError: naming ``name`` and the value, for anything else (``1e308``, ``-1``,
            ``true``, ``"7d"``, ``null``).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= maximum
    ):
        raise ValueError(
            f"{name} must be a number >= 0 and at most {maximum:.0f} (seconds), got {value!r}"
        )
    return float(value)


def parse_duration(text: str, *, name: str = "duration", maximum: float = MAX_SECONDS) -> float:
    """Seconds in ``text``: a number with an optional unit ``ms s m h d w`` (``"7d"``, ``"90"``).

    >>> parse_duration("7d")
    604800.0

    Raises:
        ValueError: naming the text, when it is not a duration or exceeds ``maximum``.
    """
    match = _DURATION_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"not a duration: {text!r} (use a number with an optional unit ms, s, m, h, d or w, "
            "e.g. 7d or 90s)"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds > maximum:
        raise ValueError(
            f"{name} {text.strip()!r} is too long (at most {maximum / 86_400:.0f} days)"
        )
    return seconds
