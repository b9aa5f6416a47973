#!/usr/bin/env python3
"""Operator reaction times on the real control plane and a real Redis.

- scale-up reaction: one more execution queued -> the new pod's ADDED event
  (a watch from this process; includes watch delivery), N trials;
- status freshness: a worker's heartbeat changes idle -> busy -> the
  WorkerPool's status shows it (a watch on the WorkerPool), N trials;
- recycle latency: annotation written -> command received on the worker's
  channel, N trials;
- status writes per minute for a steady pool (heartbeats every second that
  change only volatile gauges), from the operator's metrics.

The pods stay unscheduled (a nodeSelector no node has: one node cannot run
35 pods of this 2-core machine and the benchmark is about the operator); their
heartbeats come from this process, so the operator sees exactly what a worker
would publish. bench/cold_start.py measures real pods on the real node.

Usage: python bench/operator_bench.py [--trials 30] [--steady-seconds 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testbed"))

from bench.stats import pct  # noqa: E402
from devcluster.harness import OperatorProcess, Pools, wait_until  # noqa: E402
from devcluster.heartbeats import heartbeat, heartbeat_payload  # noqa: E402
from devcluster.stack import DevStack  # noqa: E402
from devcluster.watch import Watch  # noqa: E402
from workerpool.contracts.names import HEARTBEAT_CHANNEL  # noqa: E402
from workerpool.contracts.wire import WorkerHeartbeat  # noqa: E402

NS = "bench"


def publish(r: redis.Redis, hb: WorkerHeartbeat) -> None:
    key, fields, payload = heartbeat_payload(
        hb.worker_id, hb.busy_count > 0, hb.started_at, hb.pool or "", hb.namespace or ""
    )
    with r.pipeline(transaction=True) as p:
        p.hset(key, mapping=fields)  # type: ignore[arg-type]
        p.expire(key, 30)
        p.publish(HEARTBEAT_CHANNEL, payload)
        p.execute()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--steady-seconds", type=float, default=60)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wpo-bench-"))
    with DevStack(work / "stack") as stack:
        assert stack.redis is not None
        r = redis.Redis.from_url(stack.redis.url)
        stack.cluster.kubectl("create", "namespace", NS)
        op = OperatorProcess(stack, NS, work).start()
        pools = Pools(stack, NS)
        manifest = {
            "apiVersion": "bifrost.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": "bench"},
            "spec": {
                "minWorkers": 1,
                "maxWorkers": args.trials + 5,
                "processes": {"min": 1, "max": 1},
                "heartbeatIntervalSeconds": 10,
                "redis": {"url": stack.redis.url},
                "scaling": {"scaleDownDelaySeconds": 3600},
                "template": {
                    "spec": {
                        "nodeSelector": {"bench.bifrost.dev/unschedulable": "true"},
                        "containers": [{"name": "worker", "image": "x", "command": ["sleep", "3600"]}],
                    }
                },
            },
        }
        try:
            pools.apply(manifest)
            wait_until(lambda: len(pools.live_pods("bench")) == 1, timeout=60, what="the first pod")
            pods_watch = Watch(stack.cluster, NS, "pods")
            time.sleep(1)

            # 1. scale-up reaction
            scale = []
            for i in range(args.trials):
                t0 = time.monotonic()
                r.zadd("bifrost:queue:pending", {f"q{i}": time.time()})
                want = i + 1  # pods wanted for a queue of i + 1 (1 per worker)
                if want == 1:
                    continue  # the min pod already exists
                hit = wait_until(
                    lambda t0=t0: [t for t, e in pods_watch.since(t0) if e["type"] == "ADDED"],
                    timeout=30,
                    what=f"pod {want}",
                )
                scale.append((hit[0] - t0) * 1000)
            pods_watch.stop()
            pods = [p["metadata"]["name"] for p in pools.live_pods("bench")]

            # 2. status freshness (heartbeats for every pod; one flips state per trial)
            started = dt.datetime.now(dt.UTC)
            for pod in pods:
                publish(r, heartbeat(pod, False, started, "bench", NS))
            wait_until(lambda: pools.status("bench").get("idleCount") == len(pods), timeout=30, what="all idle")
            wp_watch = Watch(stack.cluster, NS, "workerpools")
            time.sleep(1)
            fresh = []
            for i in range(args.trials):
                pod, busy = pods[i % len(pods)], (i // len(pods)) % 2 == 0
                expect = None
                t0 = time.monotonic()
                publish(r, heartbeat(pod, busy, started, "bench", NS))

                def seen(p: str = pod, b: bool = busy, t0: float = t0) -> list[float]:
                    out = []
                    for t, e in wp_watch.since(t0):
                        for w in (e["object"].get("status") or {}).get("workerDetails", []):
                            if w["workerId"] == p and w["busyCount"] == (1 if b else 0):
                                out.append(t)
                    return out

                expect = wait_until(seen, timeout=30, what="the status change")
                fresh.append((expect[0] - t0) * 1000)
            wp_watch.stop()

            # 3. recycle latency
            sub = r.pubsub(ignore_subscribe_messages=True)
            sub.psubscribe("worker:*:commands")
            time.sleep(0.5)
            sub.get_message(timeout=0.1)
            recycle = []
            for i in range(args.trials):
                pod = pods[i % len(pods)]
                publish(r, heartbeat(pod, False, started, "bench", NS))
                t0 = time.monotonic()
                pools.annotate("bench", f"{pod}:4242@t{i}")
                wait_until(lambda: sub.get_message(timeout=0.05), timeout=30, what="the command")
                recycle.append((time.monotonic() - t0) * 1000)

            # 4. status writes per minute, steady pool (after the last recycle's status write
            # landed, which would otherwise be counted in the window)
            last = f"{pods[(args.trials - 1) % len(pods)]}:4242@t{args.trials - 1}"
            pools.wait_status(
                "bench", lambda s: s.get("lastRecycle", {}).get("request") == last, "the last recycle recorded"
            )
            before = op.metric("workerpool_status_writes_total", namespace=NS, pool="bench")
            t_end = time.monotonic() + args.steady_seconds
            while time.monotonic() < t_end:
                for pod in pods:
                    publish(r, heartbeat(pod, False, started, "bench", NS))
                time.sleep(1)
            writes = op.metric("workerpool_status_writes_total", namespace=NS, pool="bench") - before
            per_min = writes * 60 / args.steady_seconds
        finally:
            op.stop()
    print(f"\noperator reaction times, {args.trials} trials, {len(pods)} worker pods, real kube-apiserver + redis")
    print(f"{'metric':<44}{'p50':>10}{'p99':>10}{'target':>12}")
    print(
        f"{'scale-up: queue grows -> pod ADDED (ms)':<44}{statistics.median(scale):>10.0f}{pct(scale, 99):>10.0f}"
        f"{'p99 < 1000':>12}"
    )
    print(
        f"{'status freshness: heartbeat -> status (ms)':<44}{statistics.median(fresh):>10.0f}"
        f"{pct(fresh, 99):>10.0f}{'p99 < 2000':>12}"
    )
    print(
        f"{'recycle: annotate -> command (ms)':<44}{statistics.median(recycle):>10.0f}{pct(recycle, 99):>10.0f}"
        f"{'p99 < 1000':>12}"
    )
    print(f"{'status writes / minute, steady pool':<44}{per_min:>10.1f}{'':>10}{'about 2':>12}")
    print("(recycle includes the kubectl annotate call itself)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
