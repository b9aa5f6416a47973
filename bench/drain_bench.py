#!/usr/bin/env python3
"""Drains at scale: 10 kwok nodes drained at once while their workers run executions.

The local stack (control plane, the real node, Redis, the operator serving the
eviction webhook) plus kwok: `--pools` pools of `--workers` workers land on the
first `--nodes` kwok nodes (the only ones there are when the pods are placed),
then as many spare nodes join. A fraction (`--busy`) of the workers run an
execution of known length (devcluster.fake_workers holds it in Redis as the
reference worker does); then every one of the first nodes is drained at once,
one `kubectl drain` each.

Measured: busy workers evicted before their execution ended (from the pod
watch, against what each pod ran when it was first seen going: must be 0);
every drain's outcome and duration; the eviction answers as the drains saw
them (`kubectl -v=6` logs each POST .../eviction with its status and time),
held (429) and allowed (201) apart; and where the replacements run.

Usage: python bench/drain_bench.py [--pools 100] [--workers 10] [--nodes 10] [--busy 0.3]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testbed"))

from bench.scale_bench import cpu_seconds  # noqa: E402
from bench.stats import pct  # noqa: E402
from devcluster import binaries  # noqa: E402
from devcluster.fake_workers import FakeWorkers  # noqa: E402
from devcluster.harness import pool_manifest, wait_until, worker_container  # noqa: E402
from devcluster.kwok import KwokNodes, tolerate_kwok  # noqa: E402
from devcluster.stack import DevStack  # noqa: E402
from devcluster.watch import Objects, Watch  # noqa: E402
from devcluster.webhooks import webhook_serving_operator  # noqa: E402

NS = "drains"
# kubectl -v=6: `"Response" verb="POST" url=".../pods/NAME/eviction" status="429 Too Many Requests" milliseconds=12`
# (older kubectl: `POST https://.../eviction 429 Too Many Requests in 12 milliseconds`).
ANSWER = re.compile(r'eviction"?\s.*?(?:status="|\s)(\d{3})[^\n]*?(?:milliseconds=|in )(\d+)')


def pools_manifest(args: argparse.Namespace, url: str) -> dict[str, Any]:
    template = tolerate_kwok({"spec": {"containers": [worker_container()]}})
    items = [
        pool_manifest(
            f"p{i:03d}",
            url,
            minWorkers=args.workers,
            maxWorkers=args.workers,
            processes={"min": 1, "max": 1},
            heartbeatIntervalSeconds=5,
            template=template,
        )
        for i in range(args.pools)
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def live(pods: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        n: p
        for n, p in pods.items()
        if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


def ready_workers(stack: DevStack) -> int:
    """readyWorkers summed over the namespace's pools, as `kubectl get wp` shows them."""
    out = stack.cluster.kubectl("get", "wp", "-n", NS, "-o", "json", timeout=60).stdout
    return sum(int((p.get("status") or {}).get("readyWorkers") or 0) for p in json.loads(out)["items"])


def drain(node: str, env: dict[str, str], timeout: int, log: Path) -> subprocess.Popen[str]:
    """`kubectl drain` with its -v=6 log in a file (a pipe read after it ends would fill and stall it)."""
    with log.open("w") as out:
        return subprocess.Popen(
            [
                str(binaries.find("kubectl")),
                "drain",
                node,
                "--pod-selector=app.kubernetes.io/managed-by=workerpool-operator",
                "--delete-emptydir-data",
                "--ignore-daemonsets",
                f"--timeout={timeout}s",
                "-v=6",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pools", type=int, default=100)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--busy", type=float, default=0.3)
    ap.add_argument("--min-seconds", type=float, default=10)
    ap.add_argument("--max-seconds", type=float, default=40)
    ap.add_argument("--drain-timeout", type=int, default=180)
    args = ap.parse_args()
    rng = random.Random(5)
    work = Path(tempfile.mkdtemp(prefix="wpo-drains-"))
    total = args.pools * args.workers
    with DevStack(work / "stack") as stack:
        assert stack.redis is not None
        kwok = KwokNodes(work / "kwok", stack.cluster, args.nodes, prefix="drained").start()
        stack.cluster.kubectl("create", "namespace", NS)
        r = redis.Redis.from_url(stack.redis.url)
        workers = FakeWorkers(r, NS, interval=5).start()
        with webhook_serving_operator(stack, NS, work) as op:
            pods_watch = Watch(stack.cluster, NS, "pods")
            pods = Objects(pods_watch)
            manifest = json.dumps(pools_manifest(args, stack.redis.url))
            stack.cluster.kubectl("apply", "--server-side", "-n", NS, "-f", "-", input=manifest, timeout=300)
            placed = wait_until(
                lambda: (p := live(pods.update())) and len(p) >= total and p,
                timeout=600,
                what=f"{total} pods Running",
                interval=1,
            )
            pool_of = {n: p["metadata"]["labels"]["bifrost.dev/pool"] for n, p in placed.items()}
            node_of = {n: p["spec"]["nodeName"] for n, p in placed.items()}
            drained = list(kwok.names)
            kwok.add(args.nodes, prefix="spare")  # room for the replacements, after the pods were placed
            workers.set_pods(pool_of)
            wait_until(lambda: ready_workers(stack) >= total, timeout=120, what="every worker reported", interval=1)
            busy = rng.sample(sorted(pool_of), round(total * args.busy))
            lengths = {p: rng.uniform(args.min_seconds, args.max_seconds) for p in busy}
            for pod, seconds in lengths.items():
                workers.run(pod, seconds)
            cpu0, t0 = cpu_seconds(op.proc.pid), time.monotonic()  # type: ignore[union-attr]
            drains = {n: drain(n, stack.cluster.env(), args.drain_timeout, work / f"drain-{n}.log") for n in drained}
            ended: dict[str, float] = {}
            while len(ended) < len(drains):
                ended |= {
                    n: time.monotonic() - t0 for n, d in drains.items() if n not in ended and d.poll() is not None
                }
                time.sleep(0.2)
            outputs = {n: (work / f"drain-{n}.log").read_text() for n in drains}
            cpu = (cpu_seconds(op.proc.pid) - cpu0) / (time.monotonic() - t0)  # type: ignore[union-attr]
            codes = {n: d.returncode for n, d in drains.items()}
            try:
                wait_until(lambda: len(live(pods.update())) >= total, timeout=300, what="the workers Running again")
            except AssertionError as exc:
                print(exc, file=sys.stderr)
            after = live(pods.update())
            phases: dict[str, int] = {}
            for p in pods.latest.values():
                phase = "Terminating" if p["metadata"].get("deletionTimestamp") else p.get("status", {}).get("phase")
                phases[str(phase)] = phases.get(str(phase), 0) + 1
            print(f"pods by phase after the drains: {phases}", file=sys.stderr)
            pods.update()
            pods_watch.stop()
            workers.stop()
            held = sum(op.metric("workerpool_evictions_total", pool=p, outcome="held") for p in set(pool_of.values()))
        kwok.stop()
    drained_pods = [p for p, n in node_of.items() if n in drains]
    early = {p: e for p in drained_pods if (at := pods.going.get(p)) is not None and (e := workers.running_at(p, at))}
    answers: dict[str, list[float]] = {"429": [], "201": []}
    for out in outputs.values():
        for code, ms in ANSWER.findall(out):
            answers.setdefault(code, []).append(float(ms))
    on_drained = sum(1 for p in after.values() if p["spec"]["nodeName"] in drains)
    print(
        f"\n{args.nodes} kwok nodes drained at once: {len(drained_pods)} workers on them, "
        f"{len(busy)} ({args.busy:.0%}) running executions of {args.min_seconds:g}-{args.max_seconds:g} s"
    )
    print(f"{'busy workers evicted before their execution ended':<58}{len(early):>10}")
    print(f"{'drains finished (exit 0)':<58}{sum(c == 0 for c in codes.values()):>7}/{len(codes)}")
    print(f"{'drain duration p50 / max (s)':<58}{statistics.median(ended.values()):>7.1f} / {max(ended.values()):.1f}")
    print(f"{'longest execution (s)':<58}{max(lengths.values()):>10.1f}")
    for code, name in (("429", "held (429)"), ("201", "allowed (201)")):
        ms = answers.get(code, [])
        if ms:
            summary = f"{statistics.median(ms):.0f} / {pct(ms, 99):.0f}"
            print(f"{'eviction answers ' + name + ': count, p50 / p99 (ms)':<58}{len(ms):>7}  {summary}")
    print(f"{'evictions held (operator metric)':<58}{held:>10.0f}")
    print(f"{'workers Running after the drains / on drained nodes':<58}{len(after):>7} / {on_drained}")
    print(f"{'operator CPU during the drains (cores)':<58}{cpu:>10.3f}")
    for n, c in codes.items():
        if c != 0:
            print(f"drain {n} exited {c}: {outputs[n][-500:]}")
    return 0 if not early and all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
