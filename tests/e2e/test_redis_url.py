"""A Redis URL the pool cannot use, from a Secret (where admission cannot see it):
`Stalled` with a typed reason that says what is wrong, a Warning Event, no
traceback loop in the operator's log, no URL or password anywhere; fixing the
Secret makes the pool Ready. (Each unusable shape has its unit test: test_url_stall.py.)"""

from __future__ import annotations

import pytest

from devcluster.harness import READY, OperatorProcess, Pools, pool_manifest
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack

pytestmark = pytest.mark.cluster

PASSWORD = "hunter2-never-shown"


def put_secret(stack: DevStack, namespace: str, url: str) -> None:
    stack.cluster.kubectl("delete", "secret", "redis", "-n", namespace, "--ignore-not-found")
    stack.cluster.kubectl("create", "secret", "generic", "redis", "-n", namespace, f"--from-literal=url={url}")


def test_a_secrets_unusable_url_stalls_the_pool_with_the_reason_and_recovers_when_fixed(
    pools: Pools, operator: OperatorProcess, redis_server: RedisServer, stack: DevStack, namespace: str
) -> None:
    put_secret(stack, namespace, f"redis-sentinel://:{PASSWORD}@sentinel:26379/mymaster")  # a typo of the scheme
    manifest = pool_manifest("p")
    manifest["spec"]["redis"] = {"urlSecretRef": {"name": "redis", "key": "url"}}
    pools.apply(manifest)
    stalled = pools.wait_condition("p", "Stalled", timeout=READY)
    assert stalled["reason"] == "RedisURLInvalid" and "unknown scheme" in stalled["message"], stalled
    assert "Secret redis key url" in stalled["message"]
    events = [e for e in pools.events("p") if e["reason"] == "RedisURLInvalid"]
    assert events and events[0]["type"] == "Warning"

    put_secret(stack, namespace, redis_server.url)
    pools.wait_condition("p", "Ready", timeout=READY)
    everything = operator.logs() + str(pools.get("p")) + str(pools.events("p"))
    assert PASSWORD not in everything
    assert "Traceback" not in operator.logs(), "an unusable URL must not crash a reconcile"
