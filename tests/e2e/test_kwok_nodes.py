"""A pool on many nodes: kwok nodes next to the real one (devcluster.kwok).

The real kube-scheduler binds the pool's pods to kwok nodes, kwok runs them,
and simulated workers (devcluster.fake_workers) heart-beat and hold
executions in Redis as the reference worker does. Checked here: the pods are
placed and reported; a busy worker's pod carries the node-autoscaler marks and
loses them once idle for the hold-down; and `kubectl drain` of a kwok node
with busy workers is held until their executions end, with every deletion
compared to what its pod was running at that moment.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devcluster import binaries
from devcluster.fake_workers import FakeWorkers
from devcluster.harness import READY, OperatorProcess, Pools, pool_manifest, wait_until, worker_container
from devcluster.kwok import KwokNodes, tolerate_kwok
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack
from devcluster.watch import Objects, Watch
from devcluster.webhooks import webhook_serving_operator

from .helpers import get_json

pytestmark = pytest.mark.cluster

MARKS = {"karpenter.sh/do-not-disrupt": "true", "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
HOLD_DOWN = 3  # s: the operator's hold-down in these tests (the default is 60)
DRAIN_TIMEOUT = 90


@pytest.fixture(scope="module")
def kwok(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KwokNodes]:
    nodes = KwokNodes(tmp_path_factory.mktemp("kwok"), stack.cluster, 3, prefix="kwok-e2e").start()
    try:
        yield nodes
    finally:
        # Deleting the nodes lets the pod garbage collector remove whatever is still bound to them.
        stack.cluster.kubectl("delete", "nodes", *nodes.names, "--wait=false", check=False)
        nodes.stop()


@pytest.fixture
def kwok_operator(stack: DevStack, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    hold = {"WORKERPOOL_BUSY_MARKS_HOLD_DOWN_SECONDS": str(HOLD_DOWN)}
    with webhook_serving_operator(stack, namespace, tmp_path, **hold) as op:
        yield op


@pytest.fixture
def workers(redis_server: RedisServer, namespace: str) -> Iterator[FakeWorkers]:
    fake = FakeWorkers(redis.Redis.from_url(redis_server.url), namespace).start()
    yield fake
    fake.stop()


def kwok_pool(name: str, url: str, count: int) -> dict[str, Any]:
    template = tolerate_kwok({"spec": {"containers": [worker_container()]}})
    return pool_manifest(
        name, url, minWorkers=count, maxWorkers=count, processes={"min": 1, "max": 1}, template=template
    )


def placed_pods(pools: Pools, pool: str, count: int, nodes: KwokNodes) -> dict[str, str]:
    """pod -> its kwok node, once `count` pods run there."""

    def running() -> dict[str, str] | None:
        pods = [p for p in pools.live_pods(pool) if (p.get("status") or {}).get("phase") == "Running"]
        placed = {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in pods}
        return placed if len(placed) == count and set(placed.values()) <= set(nodes.names) else None

    return wait_until(running, timeout=READY, what=f"{count} pods Running on kwok nodes")


def started_pool(
    pools: Pools, workers: FakeWorkers, nodes: KwokNodes, url: str, name: str, count: int
) -> dict[str, str]:
    """A pool of `count` workers on kwok nodes, each heart-beating: pod -> its node."""
    pools.apply(kwok_pool(name, url, count))
    placed = placed_pods(pools, name, count, nodes)
    workers.set_pods(dict.fromkeys(placed, name))
    return placed


def marks(stack: DevStack, namespace: str, pod: str) -> dict[str, str]:
    body = get_json(stack.cluster, "pod", pod, "-n", namespace) or {"metadata": {}}
    return {k: v for k, v in (body["metadata"].get("annotations") or {}).items() if k in MARKS}


def test_pods_on_kwok_nodes_are_reported_and_a_busy_one_is_marked_until_idle(
    pools: Pools,
    kwok: KwokNodes,
    kwok_operator: OperatorProcess,
    workers: FakeWorkers,
    redis_server: RedisServer,
    stack: DevStack,
    namespace: str,
) -> None:
    placed = started_pool(pools, workers, kwok, redis_server.url, "p", 3)
    status = pools.wait_status("p", lambda s: s.get("readyWorkers") == 3 and s.get("idleCount") == 3, "3 idle")
    assert sorted(w["workerId"] for w in status["workerDetails"]) == sorted(placed)

    busy, *idle = sorted(placed)
    eid = workers.run(busy, seconds=4)
    assert eid is not None
    wait_until(lambda: marks(stack, namespace, busy) == MARKS, timeout=10, what="the busy worker's pod marked")
    assert all(marks(stack, namespace, p) == {} for p in idle)
    status = pools.wait_status("p", lambda s: s.get("busyCount") == 1, "one worker busy")

    wait_until(lambda: workers.running_at(busy, time.monotonic()) is None, timeout=10, what="the execution to end")
    ended = time.monotonic()
    wait_until(lambda: marks(stack, namespace, busy) == {}, timeout=HOLD_DOWN + 10, what="the idle worker unmarked")
    assert time.monotonic() - ended >= HOLD_DOWN - 0.5  # not before the hold-down
    assert kwok_operator.metric("workerpool_busy_mark_writes_total", pool="p", change="mark") == 1
    assert kwok_operator.metric("workerpool_busy_mark_writes_total", pool="p", change="unmark") == 1
    pool_annotations = pools.get("p")["metadata"].get("annotations") or {}
    assert not MARKS.keys() & pool_annotations.keys(), "the WorkerPool's annotations are the user's"


def test_draining_a_kwok_node_waits_for_its_busy_workers_and_deletes_none_while_busy(
    pools: Pools,
    kwok: KwokNodes,
    kwok_operator: OperatorProcess,
    workers: FakeWorkers,
    redis_server: RedisServer,
    stack: DevStack,
    namespace: str,
) -> None:
    placed = started_pool(pools, workers, kwok, redis_server.url, "d", 6)
    pools.wait_status("d", lambda s: s.get("readyWorkers") == 6, "6 ready workers")
    node = max(set(placed.values()), key=lambda n: list(placed.values()).count(n))
    on_node = sorted(p for p, n in placed.items() if n == node)
    ids = {p: workers.run(p, seconds=6) for p in on_node}
    assert None not in ids.values()
    pools.wait_status("d", lambda s: s.get("busyCount") == len(on_node), "the node's workers busy")

    watch = Watch(stack.cluster, namespace, "pods", "-l", "bifrost.dev/pool=d")
    wait_until(lambda: len(watch.since(0.0)) >= 6, timeout=30, what="the pod watch's first list")
    drain = subprocess.run(
        [
            str(binaries.find("kubectl")),
            "drain",
            node,
            "--pod-selector=bifrost.dev/pool=d",
            "--delete-emptydir-data",
            "--ignore-daemonsets",
            f"--timeout={DRAIN_TIMEOUT}s",
        ],
        env=stack.cluster.env(),
        capture_output=True,
        text=True,
        timeout=DRAIN_TIMEOUT + 30,
    )
    watch.stop()
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert kwok_operator.metric("workerpool_evictions_total", pool="d", outcome="held") >= 1
    seen = Objects(watch)
    seen.update()
    going = seen.going  # pod -> when the watch first showed it being deleted
    assert set(on_node) <= going.keys(), f"not evicted: {set(on_node) - going.keys()}"
    busy_when_deleted = {p: e for p, at in going.items() if (e := workers.running_at(p, at)) is not None}
    assert busy_when_deleted == {}, f"deleted while running: {busy_when_deleted}"
    assert {f.execution_id for f in workers.finished} >= set(ids.values())  # type: ignore[arg-type]
    # Replacements are placed on the other kwok nodes while the drained one is cordoned.
    after = placed_pods(pools, "d", 6, kwok)
    assert node not in after.values()
