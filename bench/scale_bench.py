#!/usr/bin/env python3
"""One operator, many pools: CPU, memory, status lag and API writes at steady state.

100 WorkerPools x 10 workers (pods are real API objects; no kubelet runs them,
so they stay Pending) and a load generator that publishes every worker's
heartbeat through a real Redis every `--interval` seconds, flipping a process
idle<->busy in a fraction of them (state changes the status must show).

During the measurement window it also creates `--new-pools` pools one by one
and times each one's first pod (no head-of-line blocking behind the churn of
the others), and it reads the API server's request counters (by verb and
resource) and Redis's command counters before and after the window.

Usage: python bench/scale_bench.py [--pools 100] [--workers 10] [--seconds 60] [--new-pools 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testbed"))

from bench.stats import pct  # noqa: E402
from devcluster.controlplane import LocalCluster  # noqa: E402
from devcluster.harness import OperatorProcess, parse_series, wait_until  # noqa: E402
from devcluster.heartbeats import heartbeat_payload  # noqa: E402
from devcluster.kwok import KwokNodes, tolerate_kwok  # noqa: E402
from devcluster.redis_server import RedisServer  # noqa: E402
from devcluster.stack import CRD_PATH  # noqa: E402
from devcluster.watch import Watch  # noqa: E402

NS = "scale"
MARK_WRITES = "workerpool_busy_mark_writes_total"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pools", type=int, default=100)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--flip", type=float, default=0.05, help="fraction of heartbeats that change state")
    ap.add_argument("--api-writes", type=float, help="the operator's API write budget a second (default: its own)")
    ap.add_argument("--new-pools", type=int, default=20, help="pools created during the window, one by one")
    ap.add_argument("--kwok-nodes", type=int, default=100, help="kwok nodes the pods run on (0: left unscheduled)")
    ap.add_argument(
        "--apiserver-arg",
        action="append",
        default=[],
        help="a kube-apiserver flag (repeatable), e.g. a slower server: --max-mutating-requests-inflight=20",
    )
    ap.add_argument(
        "--operator-env",
        action="append",
        default=[],
        help="KEY=VALUE for the operator (repeatable), e.g. WORKERPOOL_API_WRITES_IN_FLIGHT=0 (before it existed)",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wpo-scale-"))
    rng = random.Random(7)
    cluster_ = LocalCluster(work / "cluster", apiserver_args=tuple(args.apiserver_arg))
    with cluster_ as cluster, RedisServer(work / "redis") as server:
        cluster.install_crd(CRD_PATH)
        cluster.kubectl("create", "namespace", NS)
        kwok = KwokNodes(work / "kwok", cluster, args.kwok_nodes).start() if args.kwok_nodes else None
        r = redis.Redis.from_url(server.url)
        op = OperatorProcess.__new__(OperatorProcess)
        # Cluster-wide, as the chart installs it by default.
        OperatorProcess.__init__(op, _StackShim(cluster), NS, work)  # type: ignore[arg-type]
        op.env["WORKERPOOL_NAMESPACES"] = ""
        if args.api_writes:
            op.env["WORKERPOOL_API_WRITES_PER_SECOND"] = str(args.api_writes)
        op.env.update(kv.split("=", 1) for kv in args.operator_env)
        op.start()
        try:
            on_kwok = kwok is not None
            docs = [pool_doc(f"p{i:03d}", args.workers, args.interval, server.url, on_kwok) for i in range(args.pools)]
            t0 = time.monotonic()
            cluster.kubectl(
                "apply",
                "--server-side",
                "-f",
                "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
                timeout=300,
            )

            def pods() -> list[tuple[str, str]]:
                out = cluster.kubectl(
                    "get",
                    "pods",
                    "-n",
                    NS,
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name} {.metadata.labels.bifrost\\.dev/pool}{'\\n'}{end}",
                    timeout=120,
                ).stdout
                return [tuple(line.split()) for line in out.splitlines() if line.strip()]  # type: ignore[misc]

            total = args.pools * args.workers
            all_pods = wait_until(lambda: (p := pods()) and len(p) >= total and p, timeout=600, what=f"{total} pods")
            print(f"{total} pods created in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
            if on_kwok:
                wait_until(lambda: running_pods(cluster) >= total, timeout=900, what="every pod Running", interval=2)
                print(f"{total} pods Running in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)

            started = dt.datetime.now(dt.UTC)
            state = dict.fromkeys((name for name, _ in all_pods), False)
            pool_of = dict(all_pods)
            flips: list[tuple[float, str, bool]] = []
            stop = threading.Event()

            def generate() -> None:
                heartbeats(r, HeartbeatLoad(state, pool_of, started, NS, args.interval, args.flip), flips, stop, rng)

            watch = Watch(cluster, NS, "workerpools")
            new_names = [f"new{i:03d}" for i in range(args.new_pools)]
            new_pods = Watch(cluster, NS, "pods", "-l", f"bifrost.dev/pool in ({','.join(new_names) or 'none'})")
            gen = threading.Thread(target=generate, daemon=True)
            gen.start()
            time.sleep(2 * args.interval)  # warm-up: every worker registered once
            samples0 = op.samples()
            api0, redis0 = api_requests(cluster), redis_commands(r)
            cpu0, w0 = cpu_seconds(op.proc.pid), time.monotonic()  # type: ignore[union-attr]
            first_flip = len(flips)
            for name in new_names:  # the window: new pools one by one while the others churn
                new = pool_doc(name, 1, args.interval, server.url, on_kwok)
                cluster.kubectl("create", "-f", "-", input=json.dumps(new))
                time.sleep(args.seconds / max(1, len(new_names)))
            time.sleep(max(0.0, w0 + args.seconds - time.monotonic()))
            cpu1, w1 = cpu_seconds(op.proc.pid), time.monotonic()  # type: ignore[union-attr]
            w1_wall = time.time()
            api1, redis1 = api_requests(cluster), redis_commands(r)
            samples1 = op.samples()
            rss = rss_mib(op.proc.pid)  # type: ignore[union-attr]
            stop.set()
            time.sleep(5)  # let the last flips land before judging them
            watch_events, watch_ended = len(watch.since(w0)), list(watch.restarts)
            watch.stop()
            new_pods.stop()
            lag = flip_lags(flips, first_flip, transitions(watch.since(0.0)))
            first_pod = first_pod_delays(new_names, watch.since(0.0), new_pods.since(0.0))
            measured = len(flips) - first_flip
        finally:
            op.stop()
            if kwok is not None:
                kwok.stop()
    core = (cpu1 - cpu0) / (w1 - w0)
    window = w1 - w0
    writes1, writes0 = (summed(x, "workerpool_status_writes_total") for x in (samples1, samples0))
    reactions = pool_values(samples1, "workerpool_scale_up_reaction_seconds_sum", new_names)
    stalls = [b - a for a, b in zip(loop_stalls(samples0), loop_stalls(samples1), strict=True)]
    full_gcs, full_gc_seconds = (b - a for a, b in zip(gen2(samples0), gen2(samples1), strict=True))
    print(
        f"\none operator, {args.pools} pools x {args.workers} workers, heartbeats every {args.interval:g} s "
        f"({total / args.interval:.0f}/s), {args.flip:.0%} of them change state, {args.seconds:.0f} s window; "
        + (f"pods Running on {args.kwok_nodes} kwok nodes" if args.kwok_nodes else "pods left unscheduled")
    )
    big = args.pools >= 1000
    print(f"{'metric':<44}{'value':>12}{'target':>14}")
    print(f"{'operator CPU (cores)':<44}{core:>12.3f}{'< 1' if big else '< 0.25':>14}")
    print(f"{'operator RSS (MiB)':<44}{rss:>12.0f}{'< 500' if big else '< 200':>14}")
    if lag:
        print(f"{'status lag p50 (s)':<44}{statistics.median(lag):>12.2f}")
        print(f"{'status lag p99 (s)':<44}{pct(lag, 99):>12.2f}{'< 5':>14}")
    print(f"{'state changes observed in status':<44}{len(lag):>7}/{measured:<4}")
    writes = (writes1 - writes0) * 60 / window
    print(f"{'status writes / minute (all pools)':<44}{writes:>12.0f}")
    print(f"{'status writes / minute per pool':<44}{writes / (args.pools + len(new_names)):>12.2f}{'<= 60':>14}")
    marks = (summed(samples1, MARK_WRITES) - summed(samples0, MARK_WRITES)) * 60 / window
    print(f"{'busy-mark writes / minute (all pools)':<44}{marks:>12.0f}")
    if first_pod:
        print(f"{'new pool -> first pod p50 (s)':<44}{statistics.median(first_pod):>12.2f}")
        print(f"{'new pool -> first pod p99 (s)':<44}{pct(first_pod, 99):>12.2f}{'< 2':>14}")
    print(f"{'new pools that got their first pod':<44}{len(first_pod):>7}/{len(new_names):<4}")
    if reactions:  # the operator's own share: from the pool's first trigger to the pod's creation
        share = f"{statistics.median(reactions):.2f} / {max(reactions):.2f}"
        print(f"{'  of which the operator (p50 / max, s)':<44}{share:>12}")
    wait_n = summed(samples1, "workerpool_api_write_wait_seconds_count") - summed(
        samples0, "workerpool_api_write_wait_seconds_count"
    )
    wait_s = summed(samples1, "workerpool_api_write_wait_seconds_sum") - summed(
        samples0, "workerpool_api_write_wait_seconds_sum"
    )
    print(f"{'writes that waited for a turn / mean wait (s)':<44}{wait_n:>7.0f}  {wait_s / max(wait_n, 1):.2f}")
    backlog = [
        samples[k] for samples in (samples0, samples1) for k in samples if k.startswith("workerpool_api_writes_queued")
    ]
    print(f"{'write backlog at the window start / end':<44}{' / '.join(f'{b:.0f}' for b in backlog):>12}")
    ages = [
        w1_wall - v for k, v in samples1.items() if k.startswith("workerpool_status_pending_since_seconds{") and v > 0
    ]
    print(f"{'status writes waiting at the end, oldest (s)':<44}{len(ages):>7}  {max(ages, default=0):.1f}")
    print(f"{'event loop late > 0.1 s / > 0.5 s / > 1 s':<44}{' / '.join(f'{n:.0f}' for n in stalls):>12}")
    print(f"{'full garbage collections, seconds stopped':<44}{full_gcs:>7.0f}  {full_gc_seconds:.2f}")
    print(f"{'status watch: events in the window, restarts':<44}{watch_events:>7}  {len(watch_ended)}")
    print("\nAPI requests a second in the window (the API server's counters, all clients):")
    for (verb, resource), count in sorted(rate_of(api0, api1, window).items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {verb:<8}{resource:<36}{count:>10.2f}")
    print("Redis commands a second in the window (load generator: hset, expire, publish):")
    for command, count in sorted(rate_of(redis0, redis1, window).items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {command:<44}{count:>10.1f}")
    return 0


@dataclass
class HeartbeatLoad:
    """Every worker's heartbeat once per `interval`, a `flip` share of them changing state."""

    state: dict[str, bool]  # worker -> busy
    pool_of: dict[str, str]
    started: dt.datetime
    namespace: str
    interval: float
    flip: float


def heartbeats(
    r: redis.Redis, load: HeartbeatLoad, flips: list[tuple[float, str, bool]], stop: threading.Event, rng: random.Random
) -> None:
    """Publish the load's heartbeats (and write the registrations) until `stop`, noting each flip."""
    names = sorted(load.state)
    per_tick = max(1, round(len(names) / load.interval / 10))
    i = 0
    while not stop.is_set():
        with r.pipeline(transaction=False) as p:
            for _ in range(per_tick):
                name = names[i % len(names)]
                i += 1
                if rng.random() < load.flip:
                    load.state[name] = not load.state[name]
                    flips.append((time.monotonic(), name, load.state[name]))
                busy = load.state[name]
                key, fields, payload = heartbeat_payload(name, busy, load.started, load.pool_of[name], load.namespace)
                p.hset(key, mapping=fields)  # type: ignore[arg-type]
                p.expire(key, int(3 * load.interval))
                p.publish("bifrost:workers:heartbeat", payload)
            p.execute()
        time.sleep(0.1)


def pool_doc(name: str, workers: int, interval: float, url: str, kwok: bool = False) -> dict[str, Any]:
    container = {"name": "w", "image": "x"}
    # Without kwok nodes the pods are left unscheduled: no scheduler claims them (the default one
    # would retry 10,000 unschedulable pods and post FailedScheduling Events, load no real cluster
    # has). With them, the real scheduler binds every pod to a kwok node and kwok runs it.
    template = (
        tolerate_kwok({"spec": {"containers": [container]}})
        if kwok
        else {"spec": {"schedulerName": "unscheduled", "containers": [container]}}
    )
    return {
        "apiVersion": "bifrost.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "minWorkers": workers,
            "maxWorkers": workers,
            "processes": {"min": 2, "max": 2},
            "heartbeatIntervalSeconds": int(interval),
            "redis": {"url": url},
            "template": template,
        },
    }


def running_pods(cluster: LocalCluster) -> int:
    out = cluster.kubectl(
        "get", "pods", "-n", NS, "--field-selector=status.phase=Running", "-o", "name", timeout=120
    ).stdout  # fmt: skip
    return len(out.split())


def first_pod_delays(
    names: list[str], pools: list[tuple[float, dict[str, Any]]], pods: list[tuple[float, dict[str, Any]]]
) -> list[float]:
    """Per new pool: from its ADDED event to its first pod's, both as watches delivered them."""
    added: dict[str, float] = {}
    for at, e in pools:
        name = (e.get("object") or {}).get("metadata", {}).get("name")
        if e.get("type") == "ADDED" and name is not None:
            added.setdefault(name, at)
    first: dict[str, float] = {}
    for at, e in pods:
        pool = (e.get("object") or {}).get("metadata", {}).get("labels", {}).get("bifrost.dev/pool")
        if e.get("type") == "ADDED" and pool is not None:
            first.setdefault(pool, at)
    return [first[n] - added[n] for n in names if n in first and n in added]


def api_requests(cluster: LocalCluster) -> dict[tuple[str, str], float]:
    """apiserver_request_total summed by (verb, resource[/subresource])."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    out: dict[tuple[str, str], float] = {}
    for name, labels, value in parse_series(text):
        if name != "apiserver_request_total":
            continue
        resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        key = (labels.get("verb", ""), resource)
        out[key] = out.get(key, 0.0) + value
    return out


def redis_commands(r: redis.Redis) -> dict[str, float]:
    stats = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): float(v["calls"]) for name, v in stats.items()}


def rate_of(before: dict[Any, float], after: dict[Any, float], seconds: float) -> dict[Any, float]:
    return {k: (v - before.get(k, 0.0)) / seconds for k, v in after.items() if v > before.get(k, 0.0)}


def transitions(events: list[tuple[float, dict[str, Any]]]) -> dict[str, list[tuple[bool, float]]]:
    """worker -> the busy/idle transitions the status showed, timestamped on arrival."""
    shown: dict[str, list[tuple[bool, float]]] = {}
    for at, event in events:
        for w in (event["object"].get("status") or {}).get("workerDetails", []):
            busy = w.get("busyCount", 0) > 0
            history = shown.setdefault(w["workerId"], [])
            if not history or history[-1][0] != busy:
                history.append((busy, at))
    return shown


def flip_lags(
    flips: list[tuple[float, str, bool]], first: int, shown: dict[str, list[tuple[bool, float]]]
) -> list[float]:
    """Each measured flip's delay until the status showed it: the first transition to
    that state after the flip and before the worker's next flip (none: not shown)."""
    next_flip: dict[int, float] = {}
    last_by_worker: dict[str, int] = {}
    for i, (t, name, _) in enumerate(flips):
        if name in last_by_worker:
            next_flip[last_by_worker[name]] = t
        last_by_worker[name] = i
    lags = []
    for i in range(first, len(flips)):
        t, name, busy = flips[i]
        until = next_flip.get(i, float("inf"))
        hit = next((at for state, at in shown.get(name, []) if state == busy and t <= at < until), None)
        if hit is not None:
            lags.append(hit - t)
    return lags


def summed(samples: dict[str, float], name: str) -> float:
    """One metric summed over its labelled series."""
    return sum(v for series, v in samples.items() if series.startswith(name + "{"))


def gen2(samples: dict[str, float]) -> list[float]:
    """Full (generation 2) collections so far, and the seconds they stopped the operator."""
    return [
        samples.get('python_gc_collections_total{generation="2"}', 0.0),
        samples.get('workerpool_gc_pause_seconds_sum{generation="2"}', 0.0),
    ]


def loop_stalls(samples: dict[str, float]) -> list[float]:
    """How often the operator's event loop woke a timer more than 0.1, 0.5 and 1 s late (cumulative)."""
    name = "workerpool_event_loop_lag_seconds"
    count = samples.get(f"{name}_count", 0.0)
    return [count - samples.get(f'{name}_bucket{{le="{le}"}}', 0.0) for le in ("0.1", "0.5", "1.0")]


def pool_values(samples: dict[str, float], name: str, pools: list[str]) -> list[float]:
    """One metric's value for each of `pools` (namespace NS) that has it."""
    keys = (f'{name}{{namespace="{NS}",pool="{p}"}}' for p in pools)
    return [samples[k] for k in keys if k in samples]


class _StackShim:
    """OperatorProcess wants a stack; the scale run needs only the cluster."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster


if __name__ == "__main__":
    sys.exit(main())
