"""Evictions of worker pods (what `kubectl drain`, cluster-autoscaler, Karpenter and
the descheduler do) on the real node: an idle worker goes at once, a busy one is
held with 429 until its executions finish, and no worker pod is deleted while
it runs one. The operator serves the webhook; the apiserver calls it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from devcluster import binaries
from devcluster.client import Client
from devcluster.harness import READY, OperatorProcess, Pools, pool_manifest, wait_until
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack
from devcluster.webhooks import evict

from .helpers import get_json, ready_workers, terminating

pytestmark = pytest.mark.cluster

NODE = "wpo-node"
DRAIN_TIMEOUT = 90


def events(stack: DevStack, namespace: str, reason: str) -> list[str]:
    out = get_json(stack.cluster, "events", "-n", namespace, "--field-selector", f"reason={reason}")
    return [e["message"] for e in (out or {}).get("items", [])]


def test_an_idle_worker_is_evicted_at_once_and_a_busy_one_is_held_with_429_and_replaced(
    pools: Pools,
    webhook_operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
    stack: DevStack,
    namespace: str,
    tmp_path: Path,
) -> None:
    pools.apply(pool_manifest("p", redis_server.url, minWorkers=2, maxWorkers=3, processes={"min": 1, "max": 1}))
    names = ready_workers(pools, "p", 2)
    eid = client.submit("sleep", {"seconds": 8})
    status = pools.wait_status("p", lambda s: s.get("busyCount") == 1, "one worker busy")
    busy = next(w["workerId"] for w in status["workerDetails"] if w["busyCount"] == 1)
    (idle,) = [w for w in names if w != busy]

    held = evict(stack, namespace, busy)
    assert held.returncode != 0
    assert "429 Too Many Requests" in held.stderr, held.stderr
    assert eid in held.stderr and "running 1 execution" in held.stderr
    assert not terminating(stack.cluster, namespace, busy)

    allowed = evict(stack, namespace, idle)
    assert allowed.returncode == 0, allowed.stderr
    assert terminating(stack.cluster, namespace, idle)

    # The held worker counts as leaving: a replacement is created while it finishes.
    wait_until(
        lambda: len([p for p in pools.live_pods("p") if p["metadata"]["name"] not in (idle, busy)]) >= 1,
        timeout=READY,
        what="a replacement for the worker being evicted",
    )
    result = client.wait_result(eid, timeout=30)
    assert result.success and result.worker_id == busy
    wait_until(
        lambda: evict(stack, namespace, busy).returncode == 0,
        timeout=30,
        what="the eviction of the finished worker to be allowed",
        interval=1.0,
    )
    assert any(busy in m for m in events(stack, namespace, "EvictionHeld"))
    assert any(idle in m for m in events(stack, namespace, "EvictionAllowed"))
    assert webhook_operator.metric("workerpool_evictions_total", pool="p", outcome="held") >= 1


def test_kubectl_drain_waits_for_running_executions_and_never_deletes_a_busy_worker(
    pools: Pools,
    webhook_operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
    stack: DevStack,
    namespace: str,
) -> None:
    pools.apply(pool_manifest("p", redis_server.url, minWorkers=2, maxWorkers=2, processes={"min": 1, "max": 1}))
    names = ready_workers(pools, "p", 2)
    ids = [client.submit("sleep", {"seconds": 6}) for _ in names]
    pools.wait_status("p", lambda s: s.get("busyCount") == 2, "both workers busy")
    drain = subprocess.Popen(
        [
            str(binaries.find("kubectl")),
            "drain",
            NODE,
            "--pod-selector=bifrost.dev/pool=p,app.kubernetes.io/managed-by=workerpool-operator",
            "--delete-emptydir-data",
            "--ignore-daemonsets",
            f"--timeout={DRAIN_TIMEOUT}s",
        ],
        env=stack.cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        finished: dict[str, Any] = {}
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while len(finished) < len(ids):
            assert time.monotonic() < deadline, "executions did not finish"
            # The pod first, then the results: a pod seen going while its execution has no
            # result yet was evicted while busy.
            going = {w for w in names if terminating(stack.cluster, namespace, w)}
            for eid in ids:
                if eid not in finished and (result := client.result(eid)) is not None:
                    finished[eid] = result
            running_on = set(names) - {r.worker_id for r in finished.values()}
            assert not going & running_on, f"evicted while busy: {going & running_on}"
            time.sleep(0.2)
        out, _ = drain.communicate(timeout=DRAIN_TIMEOUT)
    finally:
        if drain.poll() is None:
            drain.kill()
        stack.cluster.kubectl("uncordon", NODE)
    assert drain.returncode == 0, out
    assert all(r.success for r in finished.values()), finished
    assert {r.worker_id for r in finished.values()} == set(names)
    assert "Too Many Requests" in out or "will retry" in out, out  # the drain was told to wait
    assert len(events(stack, namespace, "EvictionHeld")) >= 1


def test_with_the_webhook_down_evictions_go_through_and_the_worker_still_drains(
    pools: Pools,
    webhook_operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
    stack: DevStack,
    namespace: str,
    tmp_path: Path,
) -> None:
    """failurePolicy Ignore: an operator outage never blocks a drain; the worker's SIGTERM drain remains."""
    pools.apply(pool_manifest("p", redis_server.url, processes={"min": 1, "max": 1}))
    (worker,) = ready_workers(pools, "p", 1)
    eid = client.submit("sleep", {"seconds": 4})
    pools.wait_status("p", lambda s: s.get("busyCount") == 1, "the worker busy")
    webhook_operator.stop()
    evicted = evict(stack, namespace, worker)
    assert evicted.returncode == 0, evicted.stderr
    result = client.wait_result(eid, timeout=30)
    assert result.success and result.worker_id == worker
