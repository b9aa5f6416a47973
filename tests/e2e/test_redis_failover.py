"""Redis as production runs it, on the local cluster: a primary, a replica and three
Sentinels on the bridge gateway, TLS from the test bed's CA (mounted into the pods
from `spec.redis.tls.caSecretRef`), and the contract's ACL users (`user default off`:
the operator runs as `workerpool-operator`, the pods as `workerpool-worker`).

A burst runs; a recycle is annotated; the primary is `kill -9`ed. Asserted on the
events themselves: every execution ends with a result (re-runs counted), no pod of
the pool is deleted while the primary is away (the operator's delete counter), the
status goes Stalled (RedisFailover) then Ready, each worker the recycle names hears
it exactly once (its own counter of the commands it received, read from its
/metrics: a PUBLISH keeps nothing, so a command sent while a worker resubscribes
after the failover would be lost, and Sentinel closes every client of the
promoted replica, a MONITOR of it included), executions are counted the same way
(a recycled process takes its own counter with it), and the old primary, back as
a replica, gets no client and no write."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devcluster import network
from devcluster.certs import RedisTls, make_redis_tls
from devcluster.client import Client
from devcluster.harness import READY, STATUS, OperatorProcess, Pools, Series, parse_series, pool_manifest
from devcluster.sentinel_set import SentinelSet
from devcluster.stack import DevStack
from devcluster.waiting import wait_until
from workerpool.contracts.redis_acl import OPERATOR, WORKER

pytestmark = pytest.mark.cluster

BURST = 16
FOLLOW = 30.0  # s: Sentinel's promotion (2 s down-after) and everyone following it
METRICS_PORT = 9400


def worker_samples(pod: dict[str, Any]) -> list[Series]:
    """One worker's /metrics (spec.metricsPort), from its pod's address on the bridge."""
    url = f"http://{pod['status']['podIP']}:{METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        return parse_series(r.read().decode())


def commands_heard(samples: list[Series]) -> float:
    """Every well-formed command the worker received, whatever came of it."""
    return sum(
        v for n, labels, v in samples if n == "workerpool_worker_commands_total" and labels["outcome"] != "malformed"
    )


def executions(samples: list[Series]) -> float:
    return sum(v for n, _, v in samples if n == "workerpool_worker_executions_total")


def put_secret(stack: DevStack, namespace: str, name: str, **data: str) -> None:
    args = [f"--from-literal={k}={v}" for k, v in data.items() if not v.startswith("@")]
    args += [f"--from-file={k}={v[1:]}" for k, v in data.items() if v.startswith("@")]
    stack.cluster.kubectl("create", "secret", "generic", name, "-n", namespace, *args)


def our_clients(client: redis.Redis) -> list[str]:
    return [c["name"] for c in client.client_list() if c.get("name", "").startswith("workerpool-")]


@pytest.fixture(scope="module")
def tls(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> RedisTls:
    return make_redis_tls(tmp_path_factory.mktemp("tls"), (network.GATEWAY,))


@pytest.fixture(scope="module")
def sentinels(stack: DevStack, tmp_path_factory: pytest.TempPathFactory, tls: RedisTls) -> Iterator[SentinelSet]:
    """One set for the module (the failover test leaves it whole: the old primary rejoins)."""
    s = SentinelSet(tmp_path_factory.mktemp("sentinel"), host=network.GATEWAY, tls=tls, acl=True).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def acl_operator(stack: DevStack, namespace: str, tmp_path: Path, sentinels: SentinelSet) -> Iterator[OperatorProcess]:
    """The operator as its own ACL user (replacing the URL's, which is the workers')."""
    env = {
        "WORKERPOOL_REDIS_USERNAME": OPERATOR.user,
        "WORKERPOOL_REDIS_PASSWORD": sentinels.passwords[OPERATOR.user],
        "WORKERPOOL_REDIS_IDENTITY_HOSTS": sentinels.host,  # the Sentinels' (TLS: the default suffices)
    }
    op = OperatorProcess(stack, namespace, tmp_path, **env).start()
    yield op
    op.stop()


def sentinel_pool(name: str, ca_secret: str, **spec: object) -> dict[str, object]:
    manifest = pool_manifest(name, **spec)
    manifest["spec"]["redis"] = {  # type: ignore[index]
        "urlSecretRef": {"name": "redis", "key": "url"},
        "tls": {"caSecretRef": {"name": ca_secret}},
    }
    return manifest


def test_a_failover_under_a_burst_loses_nothing_deletes_nothing_and_publishes_a_recycle_once(
    pools: Pools,
    acl_operator: OperatorProcess,
    sentinels: SentinelSet,
    tls: RedisTls,
    stack: DevStack,
    namespace: str,
    tmp_path: Path,
) -> None:
    put_secret(stack, namespace, "redis", url=sentinels.url(WORKER.user))
    put_secret(stack, namespace, "redis-ca", **{"ca.crt": f"@{tls.ca}"})
    # Two workers, never fewer: every deletion would be the operator's choice, and none is due
    # (the queue drains long before scaleDownDelaySeconds); registrations kept 15 s (leases too).
    env = [{"name": "REGISTRATION_TTL_SECONDS", "value": "15"}]
    manifest = sentinel_pool(
        "p", "redis-ca", minWorkers=2, maxWorkers=3, metricsPort=METRICS_PORT, scaling={"scaleDownDelaySeconds": 300}
    )
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = env  # type: ignore[index]
    pools.apply(manifest)
    status = pools.wait_status("p", lambda s: s.get("readyWorkers") == 2, "2 ready workers", timeout=READY)
    workers = [w["workerId"] for w in status["workerDetails"]]

    client = Client(sentinels.master_client(), durable=True)
    primary = sentinels.primary()
    ids = [client.submit("sleep", {"seconds": 1.0}) for _ in range(BURST)]
    wait_until(lambda: sum(1 for e in ids if client.result(e)) >= 2, timeout=30, what="the burst to be under way")

    deletes = acl_operator.metric("workerpool_scale_events_total", namespace=namespace, pool="p", action="delete")
    pools.annotate("p", "*@before-the-kill")  # handled before, during or after the outage: once
    old = sentinels.kill_primary()
    assert old.port == primary.port
    stalled = pools.wait_condition("p", "Stalled", timeout=FOLLOW)
    assert stalled["reason"] == "RedisFailover", stalled
    sentinels.wait_promoted(old, timeout=FOLLOW)
    pools.wait_condition("p", "Stalled", status="False", timeout=FOLLOW)
    pools.wait_condition("p", "Ready", timeout=FOLLOW)
    after = acl_operator.metric("workerpool_scale_events_total", namespace=namespace, pool="p", action="delete")
    assert after == deletes, "a pod was deleted while the primary was away"

    results = {e: client.wait_result(e, timeout=FOLLOW + 30) for e in ids}
    assert all(r.success for r in results.values()), [r for r in results.values() if not r.success]
    pods = {p["metadata"]["name"]: p for p in pools.live_pods("p")}
    runs = sum(executions(worker_samples(p)) for p in pods.values())
    assert runs >= BURST, runs
    print(f"\n{BURST} executions, {runs:.0f} runs ({runs - BURST:.0f} re-runs from at-least-once delivery)")

    # The recycle: handled once (the record), heard once by each worker it names (their counters).
    request = "*@before-the-kill"
    last = pools.wait_status("p", lambda s: (s.get("lastRecycle") or {}).get("request") == request, "the recycle")
    requested = sorted(r["workerId"] for r in last["lastRecycle"]["results"] if r["status"] == "recycle_requested")
    assert set(workers) <= set(requested) <= set(pods), last["lastRecycle"]  # every worker then (a burst may add one)
    heard = wait_until(
        lambda: h if all((h := {w: commands_heard(worker_samples(pods[w])) for w in requested}).values()) else None,
        timeout=FOLLOW,
        what="each worker the recycle names to hear it",
    )
    assert heard == dict.fromkeys(requested, 1.0), heard

    # The old primary comes back: no client of ours, no write tried on it, while the pool lives on.
    sentinels.rejoin(old)
    client.wait_result(client.submit("noop"), timeout=FOLLOW)
    gen = pools.status("p")["observedGeneration"]
    pools.apply({**manifest, "spec": {**manifest["spec"], "maxWorkers": 4}})  # type: ignore[dict-item]
    pools.wait_status("p", lambda s: s.get("observedGeneration", 0) > gen, "a reconcile after the rejoin", STATUS)
    stale = sentinels.node_client(old)
    assert our_clients(stale) == [], "a client of ours connected to the demoted primary"
    assert "errorstat_READONLY" not in stale.info("errorstats"), "a write reached the demoted primary"
    everything = acl_operator.logs() + str(pools.get("p")) + str(pools.events("p"))
    assert all(pw not in everything for pw in sentinels.passwords.values())
    assert "Traceback" not in acl_operator.logs()


def test_a_ca_that_does_not_verify_the_server_stalls_the_pool_with_the_reason(
    pools: Pools,
    acl_operator: OperatorProcess,
    sentinels: SentinelSet,
    stack: DevStack,
    namespace: str,
    tmp_path: Path,
) -> None:
    wrong = make_redis_tls(tmp_path / "wrong", (network.GATEWAY,), name="not-the-test-beds-ca")
    put_secret(stack, namespace, "redis", url=sentinels.url(WORKER.user))
    put_secret(stack, namespace, "wrong-ca", **{"ca.crt": f"@{wrong.ca}"})
    pools.apply(sentinel_pool("q", "wrong-ca", minWorkers=0))
    stalled = pools.wait_condition("q", "Stalled", timeout=READY)
    assert stalled["reason"] == "RedisTLSFailed" and "certificate verify failed" in stalled["message"], stalled
    assert sentinels.passwords[WORKER.user] not in str(pools.get("q"))
    assert not pools.live_pods("q")
