"""`protocol: bifrost` under steady traffic: RabbitMQ hands deliveries to every consumer
in turn, so no worker of an over-sized pool stays idle for long.

- A worker that drains on SIGTERM (Bifrost's newer worker; `drainsOnSigterm: true`)
  is retired by its deletion: the pool shrinks to what the traffic needs while
  the traffic goes on, and every delivery still gets a successful result (the
  worker's own ledger, not the operator's word).
- A worker that kills on SIGTERM (the default): removals may be called off, but
  none is announced that did not happen, and nothing is lost; deleting its pool
  retires the workers first, so no running execution is killed.

The Bifrost-wire workers run the slot pool (a delivery waits unacknowledged for
a free child slot), as Bifrost's worker does.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from devcluster.bifrost_wire import Ledger, Trickle, execution, lost, publish_executions, worker_template
from devcluster.harness import SCALE, OperatorProcess, Pools, wait_until
from devcluster.rabbitmq_server import RabbitMQVhost
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack

from .helpers import ready_workers, terminating
from .test_bifrost import manifest

pytestmark = pytest.mark.cluster

RESULTS = 60.0  # the last trickled executions end and report


def over_sized_pool(redis_server: RedisServer, image: str, *, drains: bool, **env: Any) -> dict[str, Any]:
    """Three workers of 4 slots for a trickle that one worker carries (about 3 executions at once)."""
    extra: dict[str, Any] = {"drainsOnSigterm": True} if drains else {}
    return manifest(
        "b",
        redis_server,
        image,
        minWorkers=3,
        maxWorkers=3,
        processes={"max": 4},
        executionTimeoutSeconds=20,
        template=worker_template(image, BIFROSTWIRE_SLOTS=1, **env),
        **extra,
    )


def shrink(pools: Pools, body: dict[str, Any]) -> None:
    body["spec"]["minWorkers"] = 1
    pools.apply(body)


def removed_in_events(pools: Pools) -> list[str]:
    """The pods the ScalingDown Events say were removed."""
    names: list[str] = []
    for event in pools.events("b"):
        if event["reason"] == "ScalingDown":
            removed = event["message"].split(" removed ", 1)[1].rsplit(": demand", 1)[0]
            names += re.findall(r"(\S+) \([^)]*\)", removed)  # "pod (what it was), pod (...)"
    return names


def test_a_pool_of_draining_workers_shrinks_under_steady_traffic_and_every_delivery_succeeds(
    pools: Pools,
    operator: OperatorProcess,
    redis_server: RedisServer,
    rabbitmq_server: RabbitMQVhost,
    bifrost: str,
) -> None:
    image = bifrost
    body = over_sized_pool(redis_server, image, drains=True, BIFROSTWIRE_DRAIN=1)
    pools.apply(body)
    first = ready_workers(pools, "b", 3)
    ledger = Ledger(redis_server.url)
    with Trickle(rabbitmq_server.local_url, seconds=3, every=1.0) as trickle:
        wait_until(lambda: {d["worker_id"] for d in ledger.deliveries()} == set(first), timeout=SCALE,
                   what="every worker taking deliveries")  # fmt: skip
        shrink(pools, body)
        pools.wait_status("b", lambda s: s.get("desiredWorkers") == 1 and s.get("workers") == 1,
                          "shrunk to one worker under traffic", timeout=SCALE)  # fmt: skip
        kept = {p["metadata"]["name"] for p in pools.live_pods("b")}
        # The traffic goes on to the one worker left.
        wait_until(lambda: ledger.deliveries()[-1]["worker_id"] in kept, timeout=SCALE, what="deliveries after")
    published = {e["execution_id"] for e in trickle.published}
    wait_until(lambda: ledger.finished() >= published, timeout=RESULTS, what="a result for every execution")
    assert lost(ledger) == [], "a delivery without a result"
    failed = [r for r in ledger.results() if not r["success"]]
    assert failed == [], f"executions failed (a drain cut short, or a slot never freed): {failed}"
    removed = removed_in_events(pools)
    assert sorted(removed) == sorted(set(first) - kept), "each removal announced once, and only removals made"
    busy_when_removed = [name for name in removed if any(d["worker_id"] == name for d in ledger.deliveries())]
    assert busy_when_removed, "no removed worker had taken work: the test did not exercise the drain"


def test_a_pool_of_killing_workers_never_announces_a_removal_that_did_not_happen(
    pools: Pools,
    operator: OperatorProcess,
    redis_server: RedisServer,
    rabbitmq_server: RabbitMQVhost,
    bifrost: str,
    namespace: str,
) -> None:
    image = bifrost
    body = over_sized_pool(redis_server, image, drains=False)
    pools.apply(body)
    first = set(ready_workers(pools, "b", 3))
    ledger = Ledger(redis_server.url)

    def removals_tried() -> float:
        labels = {"namespace": namespace, "pool": "b"}
        made = operator.metric("workerpool_scale_events_total", action="delete", **labels)
        return made + operator.metric("workerpool_deletes_averted_total", **labels)

    # About 2 executions at a time over 3 workers: each is often idle, and soon busy again.
    with Trickle(rabbitmq_server.local_url, seconds=2, every=1.0):
        shrink(pools, body)
        wait_until(lambda: removals_tried() >= 3 or len(pools.live_pods("b")) == 1, timeout=2 * SCALE,
                   what="removals tried under traffic")  # fmt: skip

        def shrunk_or_said_why() -> bool:
            status = pools.status("b")
            if status.get("workers") == status.get("desiredWorkers"):
                return True
            reconciling = next(c for c in status["conditions"] if c["type"] == "Reconciling")
            return "drainsOnSigterm: true" in reconciling["message"]  # why, and what would fix it

        pools.wait_status("b", lambda _: shrunk_or_said_why(), "the pool shrunk, or saying why it cannot")
    live = {p["metadata"]["name"] for p in pools.live_pods("b")}
    removed = removed_in_events(pools)
    assert len(removed) == len(set(removed)), f"a removal announced twice: {removed}"
    assert set(removed) == first - live, "the ScalingDown Events name exactly the pods that went"
    wait_until(lambda: lost(ledger) == [], timeout=RESULTS, what="every delivery's result")


def test_deleting_a_pool_retires_its_workers_and_never_kills_a_running_execution(
    pools: Pools,
    operator: OperatorProcess,
    redis_server: RedisServer,
    rabbitmq_server: RabbitMQVhost,
    bifrost: str,
    stack: DevStack,
    namespace: str,
) -> None:
    image = bifrost
    pools.apply(manifest("b", redis_server, image, minWorkers=2, maxWorkers=2, processes={"max": 1}))
    ready_workers(pools, "b", 2)
    wait_until(lambda: "bifrost.dev/retire-workers" in pools.get("b")["metadata"].get("finalizers", []),
               timeout=SCALE, what="the retire-workers finalizer")  # fmt: skip
    running = execution(8)
    publish_executions(rabbitmq_server.local_url, [running])
    pools.wait_status("b", lambda s: s.get("busyCount") == 1, "one worker busy", timeout=SCALE)
    ledger = Ledger(redis_server.url)
    stack.cluster.kubectl("delete", "wp", "b", "-n", namespace, "--wait=false")

    def gone() -> bool:
        return stack.cluster.kubectl("get", "wp", "b", "-n", namespace, check=False).returncode != 0

    (busy,) = {d["worker_id"] for d in ledger.deliveries()}
    deadline = time.monotonic() + SCALE
    while not gone():
        assert time.monotonic() < deadline, "the pool's deletion did not finish"
        if running["execution_id"] not in ledger.finished():
            assert not terminating(stack.cluster, namespace, busy), "the busy worker's pod was deleted"
        time.sleep(0.2)
    assert lost(ledger) == [], "deleting the pool killed an execution"
    assert [r["success"] for r in ledger.results()] == [True]
    assert running["execution_id"] in ledger.finished()
    reasons = [e["reason"] for e in pools.events("b")]
    assert "RetiringWorkers" in reasons and "RetireBoundPassed" not in reasons


def test_deliveries_a_full_worker_holds_are_demand_and_the_pool_scales_for_them(
    pools: Pools,
    operator: OperatorProcess,
    redis_server: RedisServer,
    rabbitmq_server: RabbitMQVhost,
    bifrost: str,
    stack: DevStack,
    namespace: str,
) -> None:
    """Bifrost's 12 x 40 s on one idle worker of capacity 10, scaled down in time: 6 executions of
    12 s on one worker of 4 slots whose slot wait is 8 s. It runs 4, and holds 2 unacknowledged
    (neither ready nor busy): only the management API's count makes the pool scale to 2. The 2 held
    ones are the worker's own to fail (no slot frees within its wait; no scaler can take them back):
    exactly those fail, dead-lettered, and nothing is lost."""
    image = bifrost
    stack.cluster.kubectl("create", "secret", "generic", "rabbitmq-management", "-n", namespace,
                          f"--from-literal=url={rabbitmq_server.management_url}")  # fmt: skip
    body = manifest(
        "b",
        redis_server,
        image,
        minWorkers=1,
        maxWorkers=4,
        processes={"max": 4},
        executionTimeoutSeconds=30,
        scaling={"scaleDownDelaySeconds": 60},
        template=worker_template(image, BIFROSTWIRE_SLOTS=1, BIFROSTWIRE_SLOT_WAIT_SECONDS=8),
    )
    body["spec"]["rabbitmq"]["managementUrlSecretRef"] = {"name": "rabbitmq-management", "key": "url"}
    pools.apply(body)
    ready_workers(pools, "b", 1)
    burst = [execution(12) for _ in range(6)]
    publish_executions(rabbitmq_server.local_url, burst)
    ledger = Ledger(redis_server.url)
    wait_until(lambda: len(ledger.deliveries()) == 6, timeout=SCALE, what="all six delivered to the one worker")
    pools.wait_status("b", lambda s: s.get("desiredWorkers") == 2, "scaled for the held deliveries", timeout=SCALE)
    wait_until(lambda: ledger.finished() >= {e["execution_id"] for e in burst}, timeout=RESULTS, what="results")
    failed = [r for r in ledger.results() if not r["success"]]
    assert len(failed) == 2 and {r["error"] for r in failed} == {"No worker slot available after timeout"}, failed
    assert lost(ledger) == []
