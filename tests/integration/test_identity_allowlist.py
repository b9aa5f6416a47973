"""The operator's own Redis identity goes only where the install allowed (a pool's URL names
any host its author likes): a listener a pool points at receives no AUTH carrying it, while
the same listener on the allowlist does (the control that shows the test can fail)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from devcluster.procs import free_port
from devcluster.waiting import async_wait_until
from workerpool.contracts.redis_url import parse_redis_url
from workerpool.controller.adapters.redis_hub import RedisHub
from workerpool.protocols import SEED
from workerpool.redis_connect import Identity, RedisAccess

pytestmark = pytest.mark.redis

PASSWORD = "the-operators-own-password"


class Listener:
    """A TCP listener that records every byte a client sends (and answers nothing)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = bytearray()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conns: list[socket.socket] = []
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
                conn.settimeout(0.05)
                conns.append(conn)
            except TimeoutError:
                pass
            for conn in conns:
                with contextlib.suppress(TimeoutError, OSError):
                    self.received += conn.recv(65536)
        for conn in conns:
            conn.close()
        self._server.close()

    def close(self) -> None:
        self._stop.set()


@pytest.fixture
def listener() -> Iterator[Listener]:
    listening = Listener()
    yield listening
    listening.close()


async def heard_by(listener: Listener, identity: Identity, first_words: bytes) -> bytes:
    """What the listener received from a hub of a pool whose URL points at it, once a connection
    said `first_words` (its first command: AUTH with credentials, else a health check's PING; the
    listener never answers, so nothing else follows on that connection)."""
    hub = RedisHub(RedisAccess(f"redis://127.0.0.1:{listener.port}/0"), SEED, 3600, 0.05, identity=identity)
    hub.start()
    try:
        await async_wait_until(lambda: first_words in listener.received, within=10, what="the hub's first command")
    finally:
        await hub.stop()
    return bytes(listener.received)


async def test_a_pool_url_off_the_allowlist_never_receives_the_operators_identity(listener: Listener) -> None:
    identity = Identity("workerpool-operator", PASSWORD, frozenset({"redis.internal"}), plaintext=True)
    got = await heard_by(listener, identity, b"PING")
    assert b"AUTH" not in got and PASSWORD.encode() not in got, got[:200]


async def test_the_same_url_on_the_allowlist_receives_it(listener: Listener) -> None:
    identity = Identity("workerpool-operator", PASSWORD, frozenset({"127.0.0.1"}), plaintext=True)
    got = await heard_by(listener, identity, b"AUTH")
    assert PASSWORD.encode() in got


def test_the_identity_needs_tls_unless_plaintext_is_allowed() -> None:
    allowed = frozenset({"r:6379", "s1", "s2"})
    assert not Identity("u", "p", allowed).applies_to(parse_redis_url("redis://r:6379/0"))
    assert Identity("u", "p", allowed).applies_to(parse_redis_url("rediss://r:6379/0"))
    assert Identity("u", "p", allowed, plaintext=True).applies_to(parse_redis_url("redis://r:6379/0"))
    assert not Identity("u", "p", allowed).applies_to(parse_redis_url("rediss://r:6380/0"))
    assert Identity("u", "p", allowed).applies_to(parse_redis_url("rediss+sentinel://s1:26379,s2:26379/m/0"))
    assert not Identity("u", "p", allowed).applies_to(parse_redis_url("rediss+sentinel://s1:26379,evil:26379/m/0"))
