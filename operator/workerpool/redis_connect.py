"""Redis clients of the operator and the reference worker, built in one place
from a contract URL (contracts/redis_url.py), and what their errors mean.

Sentinel (DESIGN §3, "Redis in production"): redis-py's asyncio Sentinel client
asks the Sentinels for the master on every new connection (since redis-py 6.x
also on connection retries: redis-py #3874 is about 7.1's `_connect` retry, 8.x
reconnects through `connect_to`), drops a connection that answers READONLY (a
demoted primary) and re-asks, so a failover is followed by reconnecting. We
do not subscribe to Sentinel's `+switch-master` as well: a killed or
partitioned primary breaks or times out our connections first, and the next
connection asks the Sentinels; every caller here retries on its own loop (the
hub's loops, the worker's) after at most about a second. Lua scripts are
`register_script` objects: they re-load themselves on NOSCRIPT (a promoted
replica has an empty script cache).

TLS: `rediss://` and `rediss+sentinel://` (the Sentinels too) verify the server
with the system CAs or a given bundle (the operator: the pool's CA Secret, as
PEM; the worker: REDIS_TLS_CA_FILE); a certificate that does not verify is an
error, never a plaintext retry.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ReadOnlyError, RedisError

from .contracts.redis_url import RedisUrl, parse_redis_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedisAccess:
    """How to reach one Redis: its contract URL (may carry a password: never shown) and the CA
    bundle (PEM) that verifies its certificate (None: the system CAs)."""

    url: str = field(repr=False)
    ca_pem: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """A stable name for logs and metrics that reveals neither the URL nor the password."""
        digest = hashlib.sha256(f"{self.url}\n{self.ca_pem or ''}".encode()).hexdigest()[:8]
        return f"redis-{digest}"

    @property
    def target(self) -> RedisUrl:
        return parse_redis_url(self.url)

    @property
    def has_replicas(self) -> bool:
        """Whether durable writes wait for a replica (WAIT): a Sentinel URL names a primary with
        replicas; a single server may have none, and WAIT would then only time out."""
        return self.target.sentinel


@dataclass(frozen=True)
class Identity:
    """Credentials that replace the URL's (the operator's own Redis user, DESIGN §3 ACLs), only
    for the Redis endpoints the install allowed: a pool's URL names any host it likes, and the
    operator's password must never go to one an author chose (docs/security.md)."""

    username: str
    password: str | None = field(default=None, repr=False)
    # "host" or "host:port", as pool URLs name them (a Sentinel URL: every Sentinel must match).
    hosts: frozenset[str] = frozenset()
    plaintext: bool = False  # also without TLS (else only rediss:// and rediss+sentinel://)

    def applies_to(self, target: RedisUrl) -> bool:
        """Whether these credentials may be sent to the URL's endpoints."""
        if not target.tls and not self.plaintext:
            return False
        endpoints = target.sentinels or ((target.host, target.port),)
        if target.scheme == "unix" or not endpoints:
            return False
        allowed = {h.lower() for h in self.hosts}
        return all(h.lower() in allowed or f"{h.lower()}:{p}" in allowed for h, p in endpoints)


class SentinelRedis(aioredis.Redis):
    """A master client that also closes its Sentinel connections when closed."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            await manager.aclose()


def redis_client(
    access: RedisAccess,
    *,
    name: str,
    identity: Identity | None = None,
    ca_file: str | None = None,
    **options: Any,
) -> aioredis.Redis:
    """A client of the URL's server, or of the master its Sentinels name; `name` is its CLIENT SETNAME
    (so a server's CLIENT LIST says who is connected); `options` go to every connection."""
    target = access.target
    username: str | None
    if identity is not None and identity.applies_to(target):
        username, password = identity.username, identity.password
    else:  # the pool's own credentials (its URL's), never the operator's
        username, password = target.username, target.password
    # No retries inside redis-py (its default since 6.x: 3, silently): every caller retries on its
    # own loop and must see each break (a pub/sub reconnect loses messages; the hub then re-reads);
    # and no retry can go to a stale address (redis-py #3874, #3560).
    # RESP2, said once: the replies' shapes and the ACL's command list (no HELLO) rest on it.
    conn: dict[str, Any] = {
        "username": username,
        "password": password,
        "retry": Retry(NoBackoff(), 0),
        "protocol": 2,
        **options,
    }
    if target.tls:
        conn.update(ssl=True, ssl_cert_reqs="required")
        if access.ca_pem is not None:
            conn["ssl_ca_data"] = access.ca_pem
        if ca_file is not None:
            conn["ssl_ca_certs"] = ca_file
    if target.sentinel:
        assert target.master is not None  # the parser requires one with Sentinels
        sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=dict(conn), **conn)
        master: aioredis.Redis = sentinel.master_for(
            target.master, redis_class=SentinelRedis, db=target.db, client_name=name
        )
        return master
    if target.scheme == "unix":
        return aioredis.Redis(unix_socket_path=target.path, db=target.db, client_name=name, **conn)
    return aioredis.Redis(host=target.host, port=target.port, db=target.db, client_name=name, **conn)


class ReplicaAck:
    """`WAIT 1` after a durable write (the Redis has replicas: a Sentinel URL), so a failover right
    after cannot lose it. When no replica answers in time (the primary lost its only one, say to
    a failover), the next writes skip the wait for `skip_seconds` instead of each paying the
    timeout: the writes are not failed (the primary holds them), only less durable meanwhile."""

    def __init__(
        self,
        client: aioredis.Redis,
        enabled: bool,
        timeout_ms: int = 500,
        skip_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.enabled, self.timeout_ms, self.skip_seconds = client, enabled, timeout_ms, skip_seconds
        self.clock = clock
        self._skip_until = 0.0

    async def __call__(self) -> bool:
        """True: one replica holds this connection's writes so far (or no replicas are expected)."""
        if not self.enabled:
            return True
        if self.clock() < self._skip_until:
            return False
        acked = int(await self.client.wait(1, self.timeout_ms)) >= 1
        if not acked:
            self._skip_until = self.clock() + self.skip_seconds
            log.warning(
                "no replica acknowledged a write within %d ms: durable writes go unconfirmed for %.0f s",
                self.timeout_ms,
                self.skip_seconds,
            )
        return acked


class Problem(StrEnum):
    """What kind of Redis error stops the operator from trusting what it reads."""

    UNAVAILABLE = "unavailable"  # the server cannot be reached or answered in time
    FAILOVER = "failover"  # a Sentinel URL's primary is unreachable or being replaced
    TLS = "tls"  # the server's certificate does not verify (or TLS does not start)
    AUTH = "auth"  # the credentials are refused
    PERMISSION = "permission"  # the ACL user may not run a command
    INTERNAL = "internal"  # not Redis's doing: the operator's own loop crashed (restarting)
    NAMES_SHARED = "names-shared"  # read fine, but another pool's workers report under the same names


def classify(exc: BaseException, sentinel: bool) -> Problem:
    """The kind of an error from a client of `redis_client` (`sentinel`: its URL names Sentinels)."""
    text = str(exc)
    if isinstance(exc, NoPermissionError):
        return Problem.PERMISSION
    if isinstance(exc, AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        return Problem.AUTH
    if _TLS_ERROR.search(text):
        return Problem.TLS
    if isinstance(exc, MasterNotFoundError | ReadOnlyError) or sentinel:
        return Problem.FAILOVER
    return Problem.UNAVAILABLE


# What a TLS failure says (not the name of an SSL connection class in some repr).
_TLS_ERROR = re.compile(r"\[SSL|SSL:|certificate verify|CERTIFICATE_VERIFY|WRONG_VERSION_NUMBER|tlsv1 alert")


async def diagnose(client: aioredis.Redis, exc: BaseException) -> BaseException:
    """The error behind a MasterNotFoundError (redis-py 8 keeps only each Sentinel's error class):
    the first Sentinel that fails a PING says why (TLS, credentials, unreachable); when every
    Sentinel answers, they know no healthy primary (a failover): the error itself."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if not isinstance(exc, MasterNotFoundError) or manager is None:
        return exc
    for sentinel in manager.sentinels:
        try:
            await sentinel.ping()
        except (RedisError, OSError) as why:
            return why
    return exc


def describe(exc: BaseException, access: RedisAccess) -> str:
    """An error's text for conditions, Events and logs: the URL and password never in it."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MasterNotFoundError):  # its text is every Sentinel client's repr
        text = f"no Sentinel names a healthy primary for {access.target.master!r}"
    target = access.target
    for secret in (access.url, target.password):
        if secret:
            text = text.replace(secret, "***")
    return text[:300]
