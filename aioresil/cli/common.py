"""What every Redis-backed CLI command shares: connecting, errors, tables, progress, prompts.

Errors a user can cause (no or bad URL, Redis down, unknown id, bad duration) are raised as
:class:`CliError` (or one of aioresil's own errors) and printed by ``main`` as one line on
stderr with a non-zero exit code; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any
from urllib.parse import urlsplit

from ..backends.keys import decode_name
from ..exceptions import BackendUnavailableError

__all__ = [
    "ENV_URL",
    "CliError",
    "ProgressBar",
    "confirm",
    "connect",
    "load_handler",
    "print_table",
    "where_is",
]

ENV_URL = "AIORESIL_REDIS_URL"


class CliError(Exception):
    """A user-facing error: ``main`` prints ``aioresil: error: <message>`` and exits ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def where_is(backend: Any) -> str:
    """``host:port`` (or the socket path) of the backend's pool: never the password."""
    pool = backend.client.connection_pool
    service = getattr(pool, "service_name", None)
    if service is not None:  # Sentinel: name the service, the master's address is unknown
        return f"the master of Sentinel service {service!r}"
    kwargs = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


async def connect(args: argparse.Namespace, *, outage_ok: bool = False) -> Any:
    """A pinged :class:`~aioresil.RedisBackend` from ``--redis``/``AIORESIL_REDIS_URL``.

    Args:
        outage_ok: Redis unreachable is not an error: one warning line on stderr, and the
            backend is returned marked unavailable (its background probe reconnects). For
            ``serve``, whose health endpoints must answer during an outage. A configuration
            error (no URL, a malformed one, refused credentials) still raises.

    Raises:
        CliError: no URL, a malformed URL, the redis extra missing, refused credentials, or
            (without ``outage_ok``) Redis unreachable.
    """
    url = args.redis or os.environ.get(ENV_URL)
    if not url:
        raise CliError(
            f"this command needs Redis: pass --redis redis://HOST:6379/0 or set {ENV_URL}", 2
        )
    scheme = url.partition("://")[0].lower() if "://" in url else urlsplit(url).scheme.lower()
    if scheme not in ("redis", "rediss", "unix", "redis+sentinel"):
        raise CliError(
            "--redis must be a redis://, rediss://, unix:// or "
            "redis+sentinel://HOST:26379[,HOST:PORT...]/SERVICE[/DB] URL",
            2,
        )
    try:
        from ..backends.redis import RedisBackend
    except ImportError:  # pragma: no cover - depends on the environment
        raise CliError(_NO_REDIS) from None
    try:
        backend = RedisBackend.from_url(
            url,
            prefix=args.prefix,
            listen=False,
            max_connections=8,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
        )
    except ImportError:
        # `pip install aioresil` without the extra: redis-py is missing.
        raise CliError(_NO_REDIS) from None
    except ValueError as exc:
        # from_url never echoes the URL (it may hold a password); neither do we.
        raise CliError(str(exc).replace("prefix", "--prefix"), 2) from None
    try:
        await backend.ping()
    except BackendUnavailableError as exc:
        where = where_is(backend)
        if outage_ok and not _is_auth_failure(exc):
            # An outage, not a mistake: the ping marked the backend unavailable and started
            # its background probe, which brings it back when Redis answers again.
            print(
                f"aioresil serve: warning: cannot reach Redis at {where} ({exc}); serving "
                "anyway: /health/ready answers 503 until Redis is back",
                file=sys.stderr,
                flush=True,
            )
            return backend
        await backend.aclose()
        if _is_auth_failure(exc):
            raise CliError(
                f"Redis at {where} refused the credentials: wrong or missing password "
                "(or user) in the URL"
            ) from None
        raise CliError(f"cannot reach Redis at {where}: {exc}") from None
    except Exception as exc:
        await backend.aclose()
        raise CliError(f"Redis refused the connection: {exc}") from None
    return backend


_NO_REDIS = (
    "Redis support is not installed (the redis package is missing): pip install 'aioresil[redis]' "
    "(in a checkout: pip install -e '.[redis]')"
)


def _is_auth_failure(exc: BaseException) -> bool:
    """Whether a ping failed on credentials (WRONGPASS, NOAUTH), not on reachability."""
    seen: BaseException | None = exc
    while seen is not None:
        if "Authentication" in type(seen).__name__:
            return True
        text = str(seen)
        if text.startswith(("WRONGPASS", "NOAUTH", "invalid password")):
            return True
        seen = seen.__cause__
    return False


def load_handler(spec: str) -> Callable[[Any], Any]:
    """Import ``module:function`` (the current directory is importable) and check it is async.

    Raises:
        CliError: malformed spec, module or attribute missing, or not an ``async def``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"--handler must look like module:function, got {spec!r}", 2)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import handler module {module_name!r}: {exc}") from None
    except BaseException as exc:  # SystemExit, a syntax error, a failing top-level line
        if isinstance(exc, KeyboardInterrupt):
            raise
        where = ""
        tb = exc.__traceback__
        while tb is not None:  # the innermost frame of the user's file: where to look
            if tb.tb_frame.f_code.co_filename.endswith(".py"):
                where = f" ({tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno})"
            tb = tb.tb_next
        if isinstance(exc, SyntaxError):
            where = f" ({exc.filename}, line {exc.lineno})"
        raise CliError(
            f"handler module {module_name!r} raised while importing: "
            f"{type(exc).__name__}: {exc}{where}"
        ) from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not inspect.iscoroutinefunction(target):
        raise CliError(f"handler {spec!r} must be an async function taking the DeadLetter")
    handler: Callable[[Any], Any] = target
    return handler


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: IO[str]) -> None:
    """Left-aligned columns, two spaces apart, sized to their widest cell."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in (headers, *rows):
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


class ProgressBar:
    """A plain-text bar on stderr, redrawn at most 10 times a second (and at the end).

    Example::

        bar = ProgressBar(total=1200, label="purging")
        bar.update(500)
        bar.finish(1200)
    """

    def __init__(self, total: int, label: str, out: IO[str] | None = None, width: int = 30):
        self.total = max(total, 0)
        self.label = label
        self.out = out if out is not None else sys.stderr
        self.width = width
        self._last = 0.0
        self._live = bool(getattr(self.out, "isatty", lambda: False)())

    def _draw(self, done: int, end: str) -> None:
        total = max(self.total, done)
        filled = self.width if total == 0 else self.width * done // total
        bar = "#" * filled + "-" * (self.width - filled)
        start = "\r" if self._live else ""
        self.out.write(f"{start}{self.label} [{bar}] {done}/{total}{end}")
        self.out.flush()

    def update(self, done: int) -> None:
        if not self._live:
            return  # not a terminal: only the final line, no carriage-return noise in logs
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self._draw(done, "")

    def finish(self, done: int) -> None:
        self._draw(done, "\n")


def confirm(question: str, assume_yes: bool) -> None:
    """Ask ``question [y/N]`` on stderr, read stdin; anything but yes aborts with exit 1."""
    if assume_yes:
        return
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CliError("aborted (nothing was changed); pass --yes to skip this question")


async def scan_names(backend: Any, kind: str, suffix: str) -> list[str]:
    """The names of every object of ``kind`` under the backend's prefix whose key
    ``<prefix>:{<kind>:<encoded name>}:<suffix>`` exists now, decoded and sorted.

    ``SCAN MATCH ... COUNT 1000``, never ``KEYS``: an operator's command over a database of
    any size (no central index is kept on the request path for it). A key that matches the
    pattern but does not decode is someone else's and is skipped.
    """
    head = f"{backend.prefix}:{{{kind}:"
    tail = f"}}:{suffix}"
    names: set[str] = set()
    async for raw in backend.client.scan_iter(match=f"{head}*{tail}", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if key.startswith(head) and key.endswith(tail):
            try:
                names.add(decode_name(key[len(head) : -len(tail)]))
            except (ValueError, IndexError, UnicodeDecodeError):
                continue  # not one of ours (a foreign key that happens to match)
    return sorted(names)
