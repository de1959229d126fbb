"""The ``redis+sentinel://`` URL and the Sentinel/replication options: parsed or refused early.

No server is needed: every error here is raised before a socket is opened.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from aioresil import RedisBackend
from aioresil.backends.sentinel_url import SentinelTarget, is_sentinel_url, parse_sentinel_url


def test_a_full_url_names_every_part() -> None:
    target = parse_sentinel_url(
        "redis+sentinel://app:s%40cret@s1:26380,s2,[::1]:26381/my%20master/3?sentinel_password=sp"
    )
    assert target == SentinelTarget(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        service_name="my master",
        db=3,
        username="app",
        password="s@cret",
        sentinel_password="sp",
    )
    assert "s@cret" not in repr(target) and "sp'" not in repr(target)


@pytest.mark.parametrize(
    ("url", "sentinels", "service", "db"),
    [
        ("redis+sentinel://h/mymaster", (("h", 26379),), "mymaster", None),
        ("REDIS+SENTINEL://h:1/m/", (("h", 1),), "m", None),
        ("redis+sentinel://h/m/0", (("h", 26379),), "m", 0),
        ("redis+sentinel://:pw@h1:2,h2:3/m/15", (("h1", 2), ("h2", 3)), "m", 15),
    ],
)
def test_short_forms(
    url: str, sentinels: tuple[tuple[str, int], ...], service: str, db: int | None
) -> None:
    target = parse_sentinel_url(url)
    assert (target.sentinels, target.service_name, target.db) == (sentinels, service, db)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0", "scheme must be redis+sentinel://"),
        ("redis+sentinel:///mymaster", "no sentinel host"),
        ("redis+sentinel://h:26379", "no service name"),
        ("redis+sentinel://h:26379/", "no service name"),
        ("redis+sentinel://h:abc/m", "port of sentinel 'h' is 'abc'"),
        ("redis+sentinel://h:0/m", "port of sentinel 'h' is '0'"),
        ("redis+sentinel://h:70000/m", "not a number in 1..65535"),
        ("redis+sentinel://a,,b/m", "empty sentinel address"),
        ("redis+sentinel://a,/m", "empty sentinel address"),
        ("redis+sentinel://::1:5/m", "IPv6 addresses in brackets"),
        ("redis+sentinel://[::1/m", "unclosed '['"),
        ("redis+sentinel://h/m/x", "database number is 'x'"),
        ("redis+sentinel://h/m/-1", "database number is '-1'"),
        ("redis+sentinel://h/m/0/extra", "3 path segments"),
        ("redis+sentinel://h/m?password=x", "unknown query parameter(s) password"),
        ("redis+sentinel://h/m?sentinel_password=a&sentinel_password=b", "more than once"),
        ("redis+sentinel://h/m#frag", "fragment"),
    ],
)
def test_malformed_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="invalid Sentinel URL") as caught:
        parse_sentinel_url(url)
    assert message in str(caught.value)
    assert "e.g. redis+sentinel://host1:26379,host2:26379/mymaster/0" in str(caught.value)


def test_from_url_routes_sentinel_urls_and_never_echoes_a_password() -> None:
    assert is_sentinel_url("redis+sentinel://h/m") and not is_sentinel_url("redis://h")
    with pytest.raises(ValueError, match="port of sentinel") as caught:
        RedisBackend.from_url("redis+sentinel://:hunter2@h:bad/m")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("sentinels", "error", "message"),
    [
        ([], ValueError, "at least one"),
        ("h:26379", TypeError, "list of \\(host, port\\) pairs"),
        ([("h", "26379")], ValueError, "each sentinel must be"),
        ([("h", 0)], ValueError, "each sentinel must be"),
        ([("", 1)], ValueError, "each sentinel must be"),
    ],
)
def test_from_sentinel_checks_its_sentinels(
    sentinels: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RedisBackend.from_sentinel(sentinels, "m")  # type: ignore[arg-type]


def test_from_sentinel_checks_service_and_db() -> None:
    with pytest.raises(ValueError, match="service_name must be a non-empty str"):
        RedisBackend.from_sentinel([("h", 1)], "")
    with pytest.raises(ValueError, match="db must be an int >= 0"):
        RedisBackend.from_sentinel([("h", 1)], "m", db=-1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"wait_replicas": -1}, "wait_replicas must be >= 0"),
        ({"wait_replicas": 1, "wait_timeout": 0}, "wait_timeout must be a positive number"),
        (
            {"wait_replicas": 1, "wait_timeout": 2.0, "operation_timeout": 1.0},
            "wait_timeout \\(2s\\) must be below operation_timeout \\(1s\\)",
        ),
    ],
)
def test_replicated_acknowledgement_options_are_checked(
    options: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RedisBackend.from_url("redis://127.0.0.1:1/0", **options)  # type: ignore[arg-type]


def test_wait_replicas_is_refused_on_a_cluster_client() -> None:
    from redis.asyncio.cluster import RedisCluster

    cluster = RedisCluster(host="127.0.0.1", port=1)  # never connected: construction is lazy
    with pytest.raises(ValueError, match="wait_replicas is not supported on Redis Cluster"):
        RedisBackend(cluster, wait_replicas=1)


def test_a_client_that_decodes_replies_is_refused_at_once() -> None:
    """Breaker rows come back as binary: a client made with decode_responses=True used to
    fail on the first read, with a UnicodeDecodeError (or a TypeError) far from its cause."""
    from redis.asyncio.cluster import RedisCluster

    for client in (
        aioredis.Redis(host="127.0.0.1", port=1, decode_responses=True),
        RedisCluster(host="127.0.0.1", port=1, decode_responses=True),
    ):
        with pytest.raises(ValueError, match="decode_responses=False"):
            RedisBackend(client)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisBackend.from_url("redis://127.0.0.1:1/0?decode_responses=true")


PLAIN = "redis://127.0.0.1:1/0"
SENTINEL = "redis+sentinel://127.0.0.1:1/m/0"


@pytest.mark.parametrize("url", [PLAIN, SENTINEL])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_connections": 0}, "max_connections must be an int >= 1, got 0"),
        ({"pool_timeout": 0}, "pool_timeout must be a finite number of seconds > 0, got 0"),
        ({"pool_timeout": None}, "pool_timeout must be a finite number of seconds > 0, got None"),
        ({"pool_timeout": float("inf")}, "pool_timeout must be a finite number"),
        ({"timeout": 3}, "pass pool_timeout=, not timeout="),
        ({"socket_timeout": -1}, "socket_timeout must be a finite number of seconds > 0, got -1"),
        ({"socket_timeout": 0}, "socket_timeout must be a finite number of seconds > 0, got 0"),
        ({"socket_timeout": None}, "socket_timeout must be a finite number of seconds > 0"),
        ({"socket_timeout": float("nan")}, "socket_timeout must be a finite number"),
        ({"socket_timeout": True}, "socket_timeout must be a finite number"),
        ({"socket_connect_timeout": -2}, "socket_connect_timeout must be a finite number"),
        ({"socket_connect_timeout": float("inf")}, "socket_connect_timeout must be a finite"),
    ],
)
def test_pool_options_are_checked_the_same_on_both_url_forms(
    url: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RedisBackend.from_url(url, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "options"),
    [
        (PLAIN, {"db": 3}),
        (SENTINEL, {"db": 3}),
        ("redis://u:pw@127.0.0.1:1/0", {"password": "other"}),
        ("redis+sentinel://u:pw@127.0.0.1:1/m/0", {"password": "other"}),
        ("redis://u:pw@127.0.0.1:1/0", {"username": "v"}),
        ("redis+sentinel://u:pw@127.0.0.1:1/m/0", {"username": "v"}),
    ],
)
def test_a_keyword_contradicting_the_url_is_an_error_on_both_url_forms(
    url: str, options: dict[str, object]
) -> None:
    (name,) = options
    with pytest.raises(ValueError, match=f"{name} is given both in the URL and as a keyword"):
        RedisBackend.from_url(url, **options)  # type: ignore[arg-type]


async def test_keywords_fill_what_the_url_leaves_out_on_both_url_forms() -> None:
    # Like redis-py's from_url: db, username and password the URL does not name may be given
    # as keywords (a password kept out of a URL that is logged, say); equal values are fine.
    for url, db in (
        ("redis://127.0.0.1:1", 3),
        ("redis+sentinel://127.0.0.1:1/m", 3),
        (PLAIN, 0),
        (SENTINEL, 0),
    ):
        backend = RedisBackend.from_url(url, db=db, username="u", password="pw", listen=False)
        try:
            kwargs = backend.client.connection_pool.connection_kwargs
            assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (db, "u", "pw")
        finally:
            await backend.aclose()


def test_ssl_on_a_plain_url_names_the_scheme_to_use() -> None:
    with pytest.raises(ValueError, match="rediss://"):
        RedisBackend.from_url(PLAIN, ssl=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:1/abc", "the database number is 'abc'"),
        ("redis://127.0.0.1:1/1x", "the database number is '1x'"),
        ("rediss://127.0.0.1:1/x", "the database number is 'x'"),
        ("redis://127.0.0.1:1/0?db=3", "given both in the URL's path and in its query"),
        ("redis://127.0.0.1:1/0?foo=bar", "unknown Redis connection option(s) 'foo'"),
    ],
)
def test_a_plain_url_that_redis_py_would_misread_is_refused(url: str, message: str) -> None:
    """redis-py reads ``/abc`` as db 0, lets ``?db=3`` override ``/0``, and passes ``?foo=``
    through to fail with a ``TypeError`` on the first connection (the CLI's "Redis refused
    the connection: ping: TypeError"). The Sentinel form already refused the first two."""
    with pytest.raises(ValueError) as refused:
        RedisBackend.from_url(url)
    assert message in str(refused.value)


def test_an_unknown_keyword_option_is_refused_before_any_connection() -> None:
    with pytest.raises(ValueError, match=r"unknown Redis connection option.*'sockettimeout'"):
        RedisBackend.from_url(PLAIN, sockettimeout=1)


@pytest.mark.parametrize(
    ("url", "db"),
    [
        ("redis://127.0.0.1:1/3?db=3", 3),
        ("redis://127.0.0.1:1/?db=4", 4),
        ("redis://127.0.0.1:1", 0),
        ("unix:///tmp/aioresil-test.sock?db=2", 2),
        ("rediss://127.0.0.1:1/5?ssl_cert_reqs=none", 5),
        ("redis://127.0.0.1:1/1?health_check_interval=5&socket_keepalive=true", 1),
    ],
)
async def test_a_plain_url_redis_py_reads_right_is_kept(url: str, db: int) -> None:
    backend = RedisBackend.from_url(url, listen=False)
    try:
        assert backend.client.connection_pool.connection_kwargs.get("db", 0) == db
    finally:
        await backend.aclose()
