#!/usr/bin/env python3
"""Karpenter consolidating a pool's nodes as its demand drops: with the busy marks, and without.

The local stack (control plane, the real node, Redis) plus kwok and Karpenter
with its kwok provider (devcluster.karpenter): one NodePool of 4-CPU nodes; the
pool's workers request 1 CPU each, so Karpenter launches about one node per 3
workers. A queue of executions of known length, a few long ones first, (devcluster.fake_workers
runs them in the workers' names, claiming from the queue as the reference
worker does) drains; the operator scales the idle workers down; Karpenter
consolidates the nodes left underused. The eviction webhook is on in both runs.

Each run is measured from the watches (pods, nodes) and the operator's metrics:
- busy workers disrupted: pods deleted while they ran an execution (must be 0);
- evictions of busy workers held: what Karpenter tried on busy workers;
- nodes tainted karpenter.sh/disrupted while a busy worker ran there, and how
  long such a node stays stuck (taint to removal);
- for each removed node, the time from the last execution on it to its removal;
- the marks' writes a minute.
The second run is the peer: the same cluster with the marks off
(`WORKERPOOL_BUSY_MARKS=false`), as the operator behaved before them.

Usage: python bench/consolidation_bench.py [--workers 24] [--jobs 48] [--long-jobs 12] [--only both|marked|peer]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testbed"))

from bench.stats import pct  # noqa: E402
from devcluster.fake_workers import FakeWorkers  # noqa: E402
from devcluster.harness import OperatorProcess, pool_manifest, wait_until, worker_container  # noqa: E402
from devcluster.karpenter import DISRUPTED_TAINT, Karpenter, node_pool  # noqa: E402
from devcluster.kwok import KwokNodes, tolerate_kwok  # noqa: E402
from devcluster.stack import DevStack  # noqa: E402
from devcluster.watch import Objects, Watch  # noqa: E402
from devcluster.webhooks import webhook_serving_operator  # noqa: E402

NS = "consolidation"
QUEUE = "bifrost:queue:pending"


@dataclass
class Run:
    label: str
    seconds: float
    peak_nodes: int
    nodes_left: int
    executions: int
    busy_disrupted: dict[str, str]
    held: float
    allowed: float
    stuck: list[float]  # taint -> gone from the API, nodes tainted while a busy worker ran there
    idle_to_removal: list[float]  # last execution on a node -> its removal
    mark_writes_per_minute: float


def worker_pool(args: argparse.Namespace, url: str) -> dict[str, Any]:
    container = worker_container(resources={"requests": {"cpu": "1", "memory": "1Gi"}})
    return pool_manifest(
        "work",
        url,
        minWorkers=0,
        maxWorkers=args.workers,
        processes={"min": 1, "max": 1},
        heartbeatIntervalSeconds=2,
        scaling={"scaleDownDelaySeconds": 10},
        template=tolerate_kwok({"spec": {"containers": [container]}}),
    )


def dispatch(r: redis.Redis, workers: FakeWorkers, pods: dict[str, dict[str, Any]]) -> None:
    """Live, Running pods are workers; each idle one claims the oldest queued execution."""
    live = {
        n: "work"
        for n, p in pods.items()
        if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }
    workers.set_pods(live)
    for pod in sorted(live.keys() - workers.running.keys()):
        popped = r.zpopmin(QUEUE)
        if not popped:
            return
        member = str(popped[0][0], "utf-8") if isinstance(popped[0][0], bytes) else str(popped[0][0])
        if workers.run(pod, float(member.rsplit("-", 1)[1])) is None:
            r.zadd(QUEUE, {member: popped[0][1]})  # it claims no more (retiring): back to the queue


def one_run(args: argparse.Namespace, marks: bool) -> Run:
    work = Path(tempfile.mkdtemp(prefix="wpo-consolidation-"))
    rng = random.Random(11)
    with DevStack(work / "stack") as stack:
        assert stack.redis is not None
        kwok = KwokNodes(work / "kwok", stack.cluster, 0).start()
        karpenter = Karpenter(work / "karpenter", stack.cluster).start(node_pool())
        stack.cluster.kubectl("create", "namespace", NS)
        r = redis.Redis.from_url(stack.redis.url)
        env = {"WORKERPOOL_BUSY_MARKS": str(marks).lower()}
        try:
            with webhook_serving_operator(stack, NS, work, **env) as op:
                return measure(args, stack, op, r, rng, "marked" if marks else "unmarked (peer)")
        finally:
            karpenter.stop()
            kwok.stop()


def measure(
    args: argparse.Namespace, stack: DevStack, op: OperatorProcess, r: redis.Redis, rng: random.Random, label: str
) -> Run:
    assert stack.redis is not None
    pods_watch = Watch(stack.cluster, NS, "pods", "-l", "bifrost.dev/pool=work")
    nodes_watch = Watch(stack.cluster, NS, "nodes", "-l", "type=kwok")
    pods, nodes = Objects(pods_watch), Objects(nodes_watch, taint=DISRUPTED_TAINT)
    workers = FakeWorkers(r, NS, interval=2).start()
    # The long ones are claimed first: when the short ones are done and their workers scaled
    # down, the nodes are left underused by a busy worker or two each, what consolidation packs.
    lengths = [rng.uniform(args.long_min, args.long_max) for _ in range(args.long_jobs)] + [
        rng.uniform(args.min_seconds, args.max_seconds) for _ in range(args.jobs - args.long_jobs)
    ]
    jobs = {f"job-{i}-{seconds:.1f}": float(i) for i, seconds in enumerate(lengths)}
    r.zadd(QUEUE, jobs)
    t0 = time.monotonic()
    pool = json.dumps(worker_pool(args, stack.redis.url))
    stack.cluster.kubectl("apply", "--server-side", "-n", NS, "-f", "-", input=pool)
    peak = 0

    def settled() -> bool:
        nonlocal peak
        dispatch(r, workers, pods.update())
        live_nodes = nodes.update()
        peak = max(peak, len(live_nodes))
        done = len(workers.finished) >= args.jobs
        return done and not live_nodes

    try:
        wait_until(settled, timeout=args.deadline, what="every execution done and every node removed", interval=0.25)
    except AssertionError as exc:
        print(f"[{label}] {exc}", file=sys.stderr)
    elapsed = time.monotonic() - t0
    print(f"[{label}] Karpenter's events: {karpenter_events(stack)}", file=sys.stderr)
    workers.stop()
    pods_watch.stop()
    nodes_watch.stop()
    return summarize(label, elapsed, peak, pods, nodes, workers, op)


def karpenter_events(stack: DevStack) -> dict[str, int]:
    """Events Karpenter posted (on nodes and NodeClaims), counted by reason and message start."""
    out = stack.cluster.kubectl("get", "events", "-A", "-o", "json", timeout=60).stdout
    counts: dict[str, int] = {}
    for e in json.loads(out)["items"]:
        if e.get("involvedObject", {}).get("kind") in ("Node", "NodeClaim", "Pod"):
            source = e.get("reportingComponent") or e.get("source", {}).get("component", "")
            if "karpenter" in source:
                key = f"{e['reason']}: {e.get('message', '')[:70]}"
                counts[key] = counts.get(key, 0) + int(e.get("count") or 1)
    return counts


def summarize(
    label: str, elapsed: float, peak: int, pods: Objects, nodes: Objects, workers: FakeWorkers, op: OperatorProcess
) -> Run:
    node_of = {}
    for _, event in pods.watch.since(0.0):
        obj = event.get("object") or {}
        if (obj.get("spec") or {}).get("nodeName"):
            node_of[obj["metadata"]["name"]] = obj["spec"]["nodeName"]
    busy_disrupted = {p: e for p, at in pods.going.items() if (e := workers.running_at(p, at)) is not None}
    stuck = []
    for node, tainted_at in nodes.tainted.items():
        on_node = [p for p, n in node_of.items() if n == node]
        if any(workers.running_at(p, tainted_at) for p in on_node):
            stuck.append(nodes.removed.get(node, time.monotonic()) - tainted_at)
    idle_to_removal = []
    for node, gone_at in nodes.removed.items():
        ends = [f.at for f in workers.finished if node_of.get(f.pod) == node]
        if ends:
            idle_to_removal.append(gone_at - max(ends))
    marks = op.metric("workerpool_busy_mark_writes_total", pool="work", change="mark") + op.metric(
        "workerpool_busy_mark_writes_total", pool="work", change="unmark"
    )
    return Run(
        label=label,
        seconds=elapsed,
        peak_nodes=peak,
        nodes_left=len(nodes.latest),
        executions=len(workers.finished),
        busy_disrupted=busy_disrupted,
        held=op.metric("workerpool_evictions_total", pool="work", outcome="held"),
        allowed=op.metric("workerpool_evictions_total", pool="work", outcome="allowed"),
        stuck=stuck,
        idle_to_removal=idle_to_removal,
        mark_writes_per_minute=marks * 60 / elapsed,
    )


def row(name: str, *values: str) -> None:
    print(f"{name:<58}" + "".join(f"{v:>18}" for v in values))


def p50_p99(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} / {pct(values, 99):.1f}" if values else "-"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=24)
    ap.add_argument("--jobs", type=int, default=48)
    ap.add_argument("--min-seconds", type=float, default=20)
    ap.add_argument("--max-seconds", type=float, default=40)
    ap.add_argument("--long-jobs", type=int, default=12, help="of --jobs, this many long ones, claimed first")
    ap.add_argument("--long-min", type=float, default=180)
    ap.add_argument("--long-max", type=float, default=240)
    ap.add_argument("--deadline", type=float, default=900)
    ap.add_argument("--only", choices=["both", "marked", "peer"], default="both")
    args = ap.parse_args()
    runs = [one_run(args, marks=m) for m in {"both": (True, False), "marked": (True,), "peer": (False,)}[args.only]]
    print(
        f"\nKarpenter (kwok provider) consolidating 4-CPU nodes under one pool: up to {args.workers} workers "
        f"of 1 CPU, {args.jobs} executions: {args.long_jobs} of {args.long_min:g}-{args.long_max:g} s first, "
        f"then {args.min_seconds:g}-{args.max_seconds:g} s"
    )
    row("", *(r.label for r in runs))
    row("executions finished", *(f"{r.executions}/{args.jobs}" for r in runs))
    row("busy workers disrupted (deleted while running)", *(str(len(r.busy_disrupted)) for r in runs))
    row("evictions of busy workers held by the webhook", *(f"{r.held:.0f}" for r in runs))
    row("evictions allowed (idle workers)", *(f"{r.allowed:.0f}" for r in runs))
    row("nodes tainted disrupted while a worker ran", *(str(len(r.stuck)) for r in runs))
    row("  stuck: taint -> removal p50 / max (s)", *(p50_p99(r.stuck) if r.stuck else "-" for r in runs))
    row("nodes: peak / left at the end", *(f"{r.peak_nodes} / {r.nodes_left}" for r in runs))
    row("last execution on a node -> node removed p50 / p99 (s)", *(p50_p99(r.idle_to_removal) for r in runs))
    row("busy-mark writes a minute", *(f"{r.mark_writes_per_minute:.1f}" for r in runs))
    row("run time (s)", *(f"{r.seconds:.0f}" for r in runs))
    for r in runs:
        if r.busy_disrupted:
            print(f"[{r.label}] deleted while running: {r.busy_disrupted}")
    return 0 if not any(r.busy_disrupted for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
