"""``EVALSHA`` written by us on a pooled connection: the script call at the wire's cost.

Why: a strict breaker makes one ``EVALSHA`` per guarded call, and on that path redis-py's
``execute_command`` cost more than our rules did (issue 17's profile at 100 tasks: encoding
every argument through a generator per call, observability hooks per command and per pool
checkout, a retry wrapper built per call). :class:`DirectScripts` packs the RESP array itself
(bytes pass through, the rest through the connection's own encoder) and uses the client's
pool and connection the way ``execute_command`` does: the pool's checkout, the connection's
``send_packed_command`` and ``read_response``, which connect on demand, honour
``health_check_interval`` and drop the connection on any error or cancellation, so no reply
is ever left for the next user of that connection.

What it does not do, by design: retry. When the command fails in a way the connection's own
retry policy answers by sending it again (redis-py's default: a connection error or a redis-py
timeout, up to its retries), :meth:`DirectScripts.call` raises :class:`Resend` and
:meth:`~aioresil.backends.redis.RedisBackend.run_script` sends the call once more through the
client, whose retry policy then goes on deciding. Otherwise redis-py's error is raised as it
is: a client built with its retries off (``retry=None``) or without timeouts among its
retried errors must not see a script that may already have run (the reply was lost, not the
command) sent a second time. Only a plain client qualifies:
not Redis Cluster (commands are routed by slot), not a single-connection client, and only a
pool whose checkout can be called without a command name.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

try:
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError

    _RESENT: tuple[type[Exception], ...] = (_RedisConnectionError, _RedisTimeoutError)
except ImportError:  # pragma: no cover - only used with the redis extra
    _RESENT = ()

__all__ = ["DirectScripts", "Resend"]

_EVALSHA = b"$7\r\nEVALSHA\r\n"


class Resend(Exception):
    """The direct call failed where the connection's retry policy sends the command again:
    send it through the client (``__cause__`` is redis-py's error)."""


def _resends(retry: Any, error: Exception) -> bool:
    """Whether redis-py's ``retry`` (a connection's policy) sends a command again after its
    first failure was ``error`` (a redis-py ``ConnectionError`` or ``TimeoutError``, the
    errors every redis-py client retries): it has a retry left and its ``is_retryable``
    check, when it has one, passes. (Which errors a policy retries has no public reader;
    the two we consider are in every redis-py policy's list by default.)"""
    try:
        retries = retry.get_retries()
    except AttributeError:  # no retry policy, or one of its own: nothing is sent again
        return False
    if retries == 0:
        return False
    check = getattr(retry, "is_retryable", None)
    return check is None or bool(check(error))


class DirectScripts:
    """Send ``EVALSHA sha numkeys keys... args...`` on a connection of ``pool``.

    Build with :meth:`for_client`, which returns ``None`` when the client does not qualify
    (see the module notes).
    """

    __slots__ = ("_encode", "_pool")

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        kwargs = getattr(pool, "connection_kwargs", {}) or {}
        encoding = kwargs.get("encoding", "utf-8")
        errors = kwargs.get("encoding_errors", "strict")

        def encode(value: object) -> bytes:
            # redis-py's Encoder.encode, for the types a script argument may have.
            if isinstance(value, bytes):
                return value
            if isinstance(value, bool):
                raise TypeError(f"a script argument cannot be a bool: {value!r}")
            if isinstance(value, int):
                return str(value).encode()
            if isinstance(value, float):
                return repr(value).encode()
            if isinstance(value, str):
                return value.encode(encoding, errors)
            raise TypeError(f"a script argument must be str, int, float or bytes: {value!r}")

        self._encode = encode

    @classmethod
    def for_client(cls, client: Any) -> DirectScripts | None:
        """A direct path for ``client``, or ``None`` where ``execute_command`` must be used."""
        if hasattr(client, "get_node_from_key"):  # Redis Cluster: routed by slot
            return None
        if getattr(client, "single_connection_client", False) or getattr(
            client, "connection", None
        ):
            return None
        pool = getattr(client, "connection_pool", None)
        checkout = getattr(pool, "get_connection", None)
        if pool is None or checkout is None or not hasattr(pool, "release"):
            return None
        try:
            parameters = inspect.signature(checkout).parameters
        except (TypeError, ValueError):  # pragma: no cover - a builtin or odd pool
            return None
        name = parameters.get("command_name")
        if name is not None and name.default is inspect.Parameter.empty:
            return None  # redis-py < 5.3 wants a command name: keep its own path
        return cls(pool)

    def pack(self, sha: str, keys: Sequence[str | bytes], args: Sequence[object]) -> bytes:
        """The RESP array of ``EVALSHA sha len(keys) *keys *args``."""
        encode = self._encode
        count = str(len(keys)).encode()
        out = [
            b"*%d\r\n" % (len(keys) + len(args) + 3),
            _EVALSHA,
            b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(sha), sha.encode(), len(count), count),
        ]
        append = out.append
        for value in (*keys, *args):
            data = encode(value)
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
        return b"".join(out)

    async def call(self, packed: bytes) -> Any:
        """Send ``packed`` on a pooled connection and return the parsed reply (a Redis error
        reply is raised as redis-py's exception, ``NOSCRIPT`` as ``NoScriptError``).

        Raises :class:`Resend` when the connection's retry policy would send the command again
        after what went wrong (see the module notes); a failed checkout is raised as it is
        (``execute_command`` does not retry it either).
        """
        pool = self._pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(packed)
            return await connection.read_response()
        except Exception as error:
            if isinstance(error, _RESENT) and _resends(getattr(connection, "retry", None), error):
                raise Resend from error
            raise
        finally:
            await pool.release(connection)
