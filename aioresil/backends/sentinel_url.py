"""The ``redis+sentinel://`` URL: one string that names a Sentinel-monitored Redis.

Why a URL at all: the CLI's ``--redis``, ``AIORESIL_REDIS_URL`` and most deployment configs
carry one string. redis-py has no URL form for Sentinel, so aioresil defines one, close to
what other clients (Celery/Kombu, Spring, ioredis) accept::

    redis+sentinel://[[username]:password@]host1[:port][,host2[:port]...]/service_name[/db]
        [?sentinel_password=...]

* hosts are the *sentinels* (port 26379 when omitted), comma-separated, IPv6 in brackets;
* the first path segment is the service name the sentinels monitor, the second the database
  number on the master (0 when omitted, unless ``from_url`` is given ``db=``);
* ``password`` (and ``username``) are the master's; the sentinels' own password, when they
  have ``requirepass``, goes in the ``sentinel_password`` query parameter. Both are
  percent-decoded.

Malformed URLs raise ``ValueError`` naming what is wrong, never echoing a password.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

__all__ = [
    "SENTINEL_SCHEME",
    "SentinelTarget",
    "check_sentinels",
    "is_sentinel_url",
    "parse_sentinel_url",
]

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
_EXAMPLE = "redis+sentinel://host1:26379,host2:26379/mymaster/0"


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names (``repr`` hides the passwords).

    ``None`` for what the URL leaves out (``db`` included: the master's database 0 unless a
    ``db=`` keyword of ``from_url`` says otherwise, as for a ``redis://`` URL without one).
    """

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int | None = None
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def __repr__(self) -> str:
        hidden = "***"
        return (
            f"SentinelTarget(sentinels={self.sentinels!r}, service_name={self.service_name!r}, "
            f"db={self.db}, username={self.username!r}, "
            f"password={hidden if self.password else None}, "
            f"sentinel_password={hidden if self.sentinel_password else None})"
        )


def is_sentinel_url(url: object) -> bool:
    """Whether ``url`` uses the ``redis+sentinel`` scheme (case-insensitive)."""
    return isinstance(url, str) and url.lower().startswith(SENTINEL_SCHEME + "://")


def _fail(problem: str) -> ValueError:
    return ValueError(f"invalid Sentinel URL: {problem} (expected e.g. {_EXAMPLE})")


def _port(text: str, host: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise _fail(f"the port of sentinel {host!r} is {shown!r}, not a number in 1..65535")
    return int(text)


def _host_port(item: str) -> tuple[str, int]:
    if not item:
        raise _fail("an empty sentinel address (two commas in a row, or a trailing comma)")
    if item.startswith("["):  # [IPv6]:port
        end = item.find("]")
        if end < 0:
            raise _fail(f"unclosed '[' in sentinel address {item!r}")
        host, rest = item[1:end], item[end + 1 :]
        if not rest:
            return host, DEFAULT_SENTINEL_PORT
        if not rest.startswith(":"):
            raise _fail(f"unexpected {rest!r} after the IPv6 address {host!r}")
        return host, _port(rest[1:], host)
    if item.count(":") > 1:
        raise _fail(f"sentinel address {item!r}: put IPv6 addresses in brackets, [::1]:26379")
    host, colon, port = item.partition(":")
    if not host:
        raise _fail(f"sentinel address {item!r} has no host")
    return host, (_port(port, host) if colon else DEFAULT_SENTINEL_PORT)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://...`` (see the module docstring for the syntax).

    Example::

        >>> parse_sentinel_url("redis+sentinel://s1,s2:26380/mymaster/2").sentinels
        (('s1', 26379), ('s2', 26380))
    """
    if not is_sentinel_url(url):
        raise _fail(f"the scheme must be {SENTINEL_SCHEME}://")
    rest = url[len(SENTINEL_SCHEME) + 3 :]
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise _fail("a '#fragment' is not allowed")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon and secret else None
    if not netloc:
        raise _fail("no sentinel host")
    sentinels = tuple(_host_port(item.strip()) for item in netloc.split(","))
    segments = path.split("/") if slash else []
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash is harmless
    if not segments or not segments[0]:
        raise _fail("no service name: it is the first path segment")
    if len(segments) > 2:
        raise _fail(f"{len(segments)} path segments; only /service_name[/db] is allowed")
    service_name = unquote(segments[0])
    db = None
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise _fail(f"the database number is {segments[1][:20]!r}, not an integer >= 0")
        db = int(segments[1])
    sentinel_password = None
    if query:
        try:
            params = parse_qs(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise _fail("the query string is malformed") from None
        unknown = sorted(set(params) - {"sentinel_password"})
        if unknown:
            raise _fail(f"unknown query parameter(s) {', '.join(unknown)}; only sentinel_password")
        values = params.get("sentinel_password", [])
        if len(values) > 1:
            raise _fail("sentinel_password is given more than once")
        sentinel_password = values[0] if values and values[0] else None
    return SentinelTarget(sentinels, service_name, db, username, password, sentinel_password)


def check_sentinels(sentinels: object) -> list[tuple[str, int]]:
    """Validate ``[(host, port), ...]`` for :meth:`RedisBackend.from_sentinel`."""
    if isinstance(sentinels, str | bytes) or not isinstance(sentinels, Sequence):
        raise TypeError(
            f"sentinels must be a list of (host, port) pairs, got {type(sentinels).__name__}"
        )
    if not sentinels:
        raise ValueError("sentinels must name at least one (host, port)")
    out: list[tuple[str, int]] = []
    for item in sentinels:
        if (
            not isinstance(item, tuple | list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not item[0]
            or isinstance(item[1], bool)
            or not isinstance(item[1], int)
            or not 1 <= item[1] <= 65535
        ):
            raise ValueError(
                f"each sentinel must be a (host: str, port: int 1..65535), got {item!r}"
            )
        out.append((item[0], item[1]))
    return out
