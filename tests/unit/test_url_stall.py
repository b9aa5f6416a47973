"""A Redis URL that a pool cannot use stalls the pool with a typed reason that says
why, without the URL or its password (never a traceback in a loop)."""

from __future__ import annotations

from typing import Any

import pytest

from workerpool.contracts.resource import WorkerPool
from workerpool.controller.loop.sources import url_stall
from workerpool.decide.reasons import Reason


def pool(protocol: str = "seed", secret: bool = True, ca: bool = False) -> WorkerPool:
    redis: dict[str, Any] = {"urlSecretRef": {"name": "redis", "key": "url"}} if secret else {"url": "redis://r/0"}
    if ca:
        redis["tls"] = {"caSecretRef": {"name": "redis-ca"}}
    spec: dict[str, Any] = {"protocol": protocol, "redis": redis}
    if protocol == "bifrost":
        spec["rabbitmq"] = {"url": "amqp://r/", "queues": ["workflow-executions"]}
        spec["template"] = {"spec": {"containers": [{"name": "worker", "image": "bifrost"}]}}
    return WorkerPool.from_body({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})


@pytest.mark.parametrize(
    ("url", "protocol", "reason", "says"),
    [
        ("http://:hunter2@redis:6379/0", "seed", Reason.REDIS_URL_INVALID, "unknown scheme 'http'"),
        ("redis://:hunter2@redis:port/0", "seed", Reason.REDIS_URL_INVALID, "port is not a number"),
        ("hunter2", "bifrost", Reason.REDIS_URL_INVALID, "not a URL"),
        ("redis+sentinel://:hunter2@s:26379/m", "bifrost", Reason.REDIS_URL_REFUSED, "the bifrost worker takes one"),
    ],
)
def test_a_url_that_cannot_be_used(url: str, protocol: str, reason: Reason, says: str) -> None:
    stall = url_stall(url, pool(protocol))
    assert stall is not None and stall.reason == reason
    assert says in stall.message and "Secret redis key url" in stall.message
    assert "hunter2" not in stall.message


@pytest.mark.parametrize("url", ["redis://r:6379/0", "rediss://:pw@r:6380/1", "unix:///run/redis.sock"])
def test_a_usable_url_is_no_stall(url: str) -> None:
    assert url_stall(url, pool("seed")) is None
    assert url_stall(url, pool("bifrost", secret=False)) is None


@pytest.mark.parametrize("url", ["redis+sentinel://:pw@s1:26379,s2:26379/m", "rediss+sentinel://u:pw@s1:26379/m/2"])
def test_the_reference_worker_follows_sentinel(url: str) -> None:
    assert url_stall(url, pool("seed")) is None


@pytest.mark.parametrize("url", ["redis://:hunter2@r:6379/0", "redis+sentinel://:hunter2@s1:26379/m"])
def test_a_ca_bundle_with_a_plaintext_url_is_refused_never_ignored(url: str) -> None:
    stall = url_stall(url, pool("seed", ca=True))
    assert stall is not None and stall.reason == Reason.REDIS_URL_REFUSED
    assert "not a TLS URL" in stall.message and "hunter2" not in stall.message
    assert url_stall(url.replace("redis", "rediss", 1), pool("seed", ca=True)) is None
