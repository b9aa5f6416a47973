#!/usr/bin/env python3
"""Cold start on the real node: the queue grows -> the pod is created -> its
container runs -> the worker is registered in Redis (its first heartbeat).

Ours: a WorkerPool (min 1, max 2, one process per worker) with its one worker
idle; two executions are queued, so demand is 2 and the operator adds a pod.
Peer, measured in the same run on the same node: a Deployment of the same
worker container scaled 1 -> 2 with `kubectl scale`, which is what KEDA or an
HPA does once it has decided (so the peer's number has no queue-watching step
in it: it is the floor for any Deployment-based autoscaler).

Each trial starts from one idle worker: after it, the pool scales back down
(scaleDownDelaySeconds 1) and the Deployment back to 1 replica.

Usage: python bench/cold_start.py [--trials 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testbed"))

from bench.stats import pct  # noqa: E402
from devcluster.client import Client  # noqa: E402
from devcluster.harness import OperatorProcess, Pools, pool_manifest, wait_until, worker_container  # noqa: E402
from devcluster.stack import DevStack  # noqa: E402
from devcluster.watch import Watch  # noqa: E402
from workerpool.contracts.names import HEARTBEAT_CHANNEL  # noqa: E402

NS = "bench"
STAGES = ("created", "running", "registered")  # running: as the API shows it (after the kubelet reports)
Times = dict[str, float]


class FirstHeartbeats:
    """When each worker's first heartbeat arrived (its registration), from a pub/sub subscription."""

    def __init__(self, url: str) -> None:
        self.seen: dict[str, float] = {}
        self.sub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self.sub.subscribe(HEARTBEAT_CHANNEL)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(redis.ConnectionError):  # redis-server stops at the end
            for msg in self.sub.listen():
                wid = json.loads(msg["data"]).get("worker_id", "")
                self.seen.setdefault(wid, time.monotonic())


def new_pod_times(watch: Watch, t0: float, known: set[str], beats: FirstHeartbeats) -> dict[str, float] | None:
    """Stage times (s after t0) of the first pod not in `known`, once it has registered."""
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    for t, event in watch.since(t0):
        pod = event["object"]
        name = pod["metadata"]["name"]
        if name in known:
            continue
        created.setdefault(name, t)
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if statuses and "running" in (statuses[0].get("state") or {}):
            running.setdefault(name, t)
    for name in created:
        if name in running and name in beats.seen:
            return {"created": created[name] - t0, "running": running[name] - t0, "registered": beats.seen[name] - t0}
    return None


def peer_deployment(redis_url: str) -> dict[str, Any]:
    env = [
        {"name": "WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POOL_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POOL_NAME", "value": "peer"},
        {"name": "REDIS_URL", "value": redis_url},
        {"name": "QUEUE_KEY", "value": "peer:queue"},
        {"name": "MIN_WORKERS", "value": "1"},
        {"name": "MAX_WORKERS", "value": "1"},
        {"name": "WORKER_HEARTBEAT_INTERVAL_SECONDS", "value": "1"},
    ]
    container = worker_container(
        env=env,
        securityContext={
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}],
    )
    labels = {"app": "peer"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "peer"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 5,
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                    "containers": [container],
                },
            },
        },
    }


def live_pod_names(stack: DevStack, selector: str) -> set[str]:
    out = stack.cluster.kubectl("get", "pods", "-n", NS, "-l", selector, "-o", "json").stdout
    return {p["metadata"]["name"] for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")}


def all_pod_names(stack: DevStack, selector: str) -> set[str]:
    out = stack.cluster.kubectl("get", "pods", "-n", NS, "-l", selector, "-o", "name").stdout
    return {line.split("/", 1)[1] for line in out.split()}


def trial(stack: DevStack, selector: str, beats: FirstHeartbeats, trigger: Callable[[], object]) -> dict[str, float]:
    """Stage times of the pod that `trigger` brings, from a watch started before it."""
    known = all_pod_names(stack, selector)
    watch = Watch(stack.cluster, NS, "pods", "-l", selector)
    time.sleep(0.5)  # the watch's initial list arrives before t0
    t0 = time.monotonic()
    trigger()
    try:
        return wait_until(partial(new_pod_times, watch, t0, known, beats), timeout=60, what=f"a new pod of {selector}")
    except AssertionError:
        print(stack.cluster.kubectl("get", "pods,wp", "-n", NS, "-o", "wide").stdout, file=sys.stderr)
        print(f"known {sorted(known)}; first heartbeats from {sorted(beats.seen)}", file=sys.stderr)
        raise
    finally:
        watch.stop()


def show(label: str, i: int, times: dict[str, float]) -> None:
    print(f"  {label} trial {i + 1:2d}: " + "  ".join(f"{k} {v * 1000:6.0f} ms" for k, v in times.items()), flush=True)


def submit_two(client: Client, ids: list[str]) -> None:
    """Two executions for one idle worker of one process: demand 2, so the pool needs a second worker."""
    ids.extend(client.submit("sleep", {"seconds": 2}) for _ in range(2))


def operator_trials(stack: DevStack, pools: Pools, client: Client, beats: FirstHeartbeats, n: int) -> list[Times]:
    out = []
    selector = "bifrost.dev/pool=p"
    for i in range(n):
        wait_until(
            lambda: len(live_pod_names(stack, selector)) == 1 and pools.status("p").get("idleCount") == 1,
            timeout=120,
            what="one idle worker",
            interval=0.2,
        )
        ids: list[str] = []
        times = trial(stack, selector, beats, partial(submit_two, client, ids))
        for eid in ids:
            client.wait_result(eid, timeout=60)
        out.append(times)
        show("ours", i, times)
    return out


def peer_trials(stack: DevStack, beats: FirstHeartbeats, n: int) -> list[Times]:
    out = []
    for i in range(n):
        wait_until(lambda: len(all_pod_names(stack, "app=peer")) == 1, timeout=120, what="one peer pod", interval=0.2)
        times = trial(
            stack,
            "app=peer",
            beats,
            lambda: stack.cluster.kubectl("scale", "deployment/peer", "-n", NS, "--replicas=2"),
        )
        stack.cluster.kubectl("scale", "deployment/peer", "-n", NS, "--replicas=1")
        out.append(times)
        show("peer", i, times)
    return out


def report(ours: list[Times], peer: list[Times]) -> None:
    print(f"\ncold start on the real node, {len(ours)} trials each (ms after the trigger)")
    print(f"{'stage':<12} {'ours p50':>9} {'ours p99':>9} {'peer p50':>9} {'peer p99':>9} {'p99 ratio':>10}")
    for stage in STAGES:
        a = [t[stage] * 1000 for t in ours]
        b = [t[stage] * 1000 for t in peer]
        print(
            f"{stage:<12} {pct(a, 50):9.0f} {pct(a, 99):9.0f} {pct(b, 50):9.0f} {pct(b, 99):9.0f} "
            f"{pct(a, 99) / pct(b, 99):9.2f}x"
        )
    print("target: ours registered p99 < 3000 ms; peer = `kubectl scale` of a Deployment (no queue watching)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wpo-bench-"))
    with DevStack(work / "stack") as stack:
        assert stack.redis is not None
        stack.restricted_namespace(NS)
        beats = FirstHeartbeats(stack.redis.url)
        op = OperatorProcess(stack, NS, work).start()
        try:
            pools = Pools(stack, NS)
            pools.apply(
                pool_manifest(
                    "p",
                    stack.redis.url,
                    minWorkers=1,
                    maxWorkers=2,
                    processes={"min": 1, "max": 1},
                    scaling={"scaleDownDelaySeconds": 1},
                )
            )
            ours = operator_trials(stack, pools, Client(stack.redis.url), beats, args.trials)
            stack.cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(peer_deployment(stack.redis.url)))
            peer = peer_trials(stack, beats, args.trials)
        finally:
            op.stop()
        report(ours, peer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
