"""The test fixture really starts and stops a redis-server we own."""

from __future__ import annotations

import pytest
import redis

from ..servers import RedisServer, free_port


@pytest.mark.redis_server
def test_fixture_server_answers_and_is_stopped_by_pid() -> None:
    server = RedisServer(free_port()).start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        client.set("k", "v")
        server.restart()
        assert client.get("k") is None  # no persistence: a restart starts empty
        client.close()
        pid = server.process.pid if server.process else None
    finally:
        server.cleanup()
    assert server.process is not None and server.process.poll() is not None
    assert pid is not None
