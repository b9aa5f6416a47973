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
import contextlib
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
from devcluster.identity import own_priority_level, service_account  # noqa: E402
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
    ap.add_argument(
        "--scale-ups", type=int, default=20, help="existing pools grown by one worker during the window, one by one"
    )
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
    ap.add_argument(
        "--operator-src",
        type=Path,
        help="run the operator from this checkout (e.g. a git worktree of an older commit) instead of this one",
    )
    ap.add_argument(
        "--identity",
        choices=("service-account", "admin"),
        default="service-account",
        help="the operator's identity: a ServiceAccount, as the chart runs it (the API server's priority and "
        "fairness queues its requests as a workload's), or the test bed's admin (exempt from it)",
    )
    ap.add_argument(
        "--operator-shares",
        type=int,
        help="a priority level of the operator's own with this many concurrency shares, queuing "
        "(1: one seat, a slow API server as far as the operator can tell)",
    )
    ap.add_argument("--json", type=Path, help="also write the measured numbers here (bench/scale_speeds.py reads them)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wpo-scale-"))
    rng = random.Random(7)
    cluster_ = LocalCluster(work / "cluster", apiserver_args=tuple(args.apiserver_arg))
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(cluster_)
        server = stack.enter_context(RedisServer(work / "redis"))
        cluster.install_crd(CRD_PATH)
        cluster.kubectl("create", "namespace", NS)
        kubeconfig = None
        if args.identity == "service-account":
            who = stack.enter_context(service_account(cluster, NS, work, "workerpool-operator"))
            kubeconfig = who.kubeconfig
            if args.operator_shares:
                own_priority_level(cluster, who, args.operator_shares)
        kwok = KwokNodes(work / "kwok", cluster, args.kwok_nodes).start() if args.kwok_nodes else None
        r = redis.Redis.from_url(server.url)
        op = OperatorProcess.__new__(OperatorProcess)
        # Cluster-wide, as the chart installs it by default.
        OperatorProcess.__init__(op, _StackShim(cluster), NS, work, kubeconfig)  # type: ignore[arg-type]
        op.env["WORKERPOOL_NAMESPACES"] = ""
        if args.api_writes:
            op.env["WORKERPOOL_API_WRITES_PER_SECOND"] = str(args.api_writes)
        op.env.update(kv.split("=", 1) for kv in args.operator_env)
        if args.operator_src:  # ahead of this checkout's editable install on the path
            op.env["PYTHONPATH"] = str(args.operator_src.resolve() / "operator")
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
            created_s = running_s = time.monotonic() - t0
            print(f"{total} pods created in {created_s:.0f} s", file=sys.stderr, flush=True)
            if on_kwok:
                wait_until(lambda: running_pods(cluster) >= total, timeout=900, what="every pod Running", interval=2)
                running_s = time.monotonic() - t0
                print(f"{total} pods Running in {running_s:.0f} s", file=sys.stderr, flush=True)

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
            step = max(1, args.pools // max(1, args.scale_ups))
            grown = [f"p{i:03d}" for i in range(0, args.pools, step)][: args.scale_ups]
            grown_pods = Watch(cluster, NS, "pods", "-l", f"bifrost.dev/pool in ({','.join(grown) or 'none'})")
            grown_at: dict[str, float] = {}
            gen = threading.Thread(target=generate, daemon=True)
            gen.start()
            time.sleep(2 * args.interval)  # warm-up: every worker registered once
            samples0 = op.samples()
            api0, redis0, lat0 = api_requests(cluster), redis_commands(r), api_latencies(cluster)
            cpu0, w0 = cpu_seconds(op.proc.pid), time.monotonic()  # type: ignore[union-attr]
            first_flip = len(flips)
            steps = max(len(new_names), len(grown), 1)
            for i in range(steps):  # the window: new pools and scale-ups one by one while the others churn
                if i < len(new_names):
                    new = pool_doc(new_names[i], 1, args.interval, server.url, on_kwok)
                    cluster.kubectl("create", "-f", "-", input=json.dumps(new))
                if i < len(grown):
                    grown_at[grown[i]] = time.monotonic()
                    more = json.dumps({"spec": {"minWorkers": args.workers + 1, "maxWorkers": args.workers + 1}})
                    cluster.kubectl("patch", "workerpool", grown[i], "-n", NS, "--type=merge", "-p", more)
                time.sleep(args.seconds / steps)
            time.sleep(max(0.0, w0 + args.seconds - time.monotonic()))
            cpu1, w1 = cpu_seconds(op.proc.pid), time.monotonic()  # type: ignore[union-attr]
            w1_wall = time.time()
            api1, redis1, lat1 = api_requests(cluster), redis_commands(r), api_latencies(cluster)
            samples1 = op.samples()
            rss = rss_mib(op.proc.pid)  # type: ignore[union-attr]
            stop.set()
            time.sleep(5)  # let the last flips land before judging them
            watch_events, watch_ended = len(watch.since(w0)), list(watch.restarts)
            watch.stop()
            new_pods.stop()
            grown_pods.stop()
            scale_up = scale_up_delays(grown_at, grown_pods.since(0.0))
            lag = flip_lags(flips, first_flip, transitions(watch.since(0.0)))
            first_pod = first_pod_delays(new_names, watch.since(0.0), new_pods.since(0.0))
            measured = len(flips) - first_flip
        finally:
            op.stop()
            if kwok is not None:
                kwok.stop()
    window = w1 - w0
    n: dict[str, float] = {
        "pods_created_s": created_s,
        "pods_running_s": running_s,
        "cpu_cores": (cpu1 - cpu0) / window,
        "rss_mib": rss,
        "changes_measured": measured,
        "changes_shown": len(lag),
        "new_pools": len(new_names),
        "new_pools_with_pod": len(first_pod),
    }
    if lag:
        n |= {"lag_p50_s": statistics.median(lag), "lag_p99_s": pct(lag, 99)}
    if first_pod:
        n |= {"first_pod_p50_s": statistics.median(first_pod), "first_pod_p99_s": pct(first_pod, 99)}
    n |= {"scale_ups": len(grown), "scale_ups_with_pod": len(scale_up)}
    if scale_up:
        n |= {"scale_up_p50_s": statistics.median(scale_up), "scale_up_p99_s": pct(scale_up, 99)}
    reactions = pool_values(samples1, "workerpool_scale_up_reaction_seconds_sum", new_names)
    if reactions:  # the operator's own share: from the pool's first trigger to the pod's creation
        n |= {"operator_share_p50_s": statistics.median(reactions), "operator_share_max_s": max(reactions)}
    n |= window_numbers(samples0, samples1, window, w1_wall)
    n |= write_latency(lat0, lat1)
    n |= {"watch_events": watch_events, "watch_restarts": len(watch_ended)}
    print_table(args, n, total)
    rates = rate_of(api0, api1, window)
    print("\nAPI requests a second in the window (the API server's counters, all clients):")
    for (verb, resource), count in sorted(rates.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {verb:<8}{resource:<36}{count:>10.2f}")
    print("Redis commands a second in the window (load generator: hset, expire, publish):")
    for command, count in sorted(rate_of(redis0, redis1, window).items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {command:<44}{count:>10.1f}")
    for (verb, resource), key in ((("PATCH", "workerpools/status"), "api_patch_status_per_s"),
                                  (("PATCH", "pods"), "api_patch_pods_per_s"),
                                  (("POST", "pods"), "api_create_pods_per_s")):  # fmt: skip
        n[key] = rates.get((verb, resource), 0.0)
    if args.json:
        args.json.write_text(json.dumps(n, indent=1, sort_keys=True))
    return 0


def window_numbers(
    samples0: dict[str, float], samples1: dict[str, float], window: float, end_wall: float
) -> dict[str, float]:
    """The operator's own counters over the window: writes, marks, waits, backlog, loop lag, GC."""
    per_minute = 60 / window

    def delta(name: str) -> float:
        return summed(samples1, name) - summed(samples0, name)

    waited = delta("workerpool_api_write_wait_seconds_count")
    backlog = [summed(s, "workerpool_api_writes_queued") for s in (samples0, samples1)]
    ages = [
        end_wall - v for k, v in samples1.items() if k.startswith("workerpool_status_pending_since_seconds{") and v > 0
    ]
    late = [b - a for a, b in zip(loop_stalls(samples0), loop_stalls(samples1), strict=True)]
    gcs, gc_seconds = (b - a for a, b in zip(gen2(samples0), gen2(samples1), strict=True))
    return {
        "status_writes_per_min": delta("workerpool_status_writes_total") * per_minute,
        "mark_writes_per_min": delta(MARK_WRITES) * per_minute,
        "rounds_per_s": delta("workerpool_reconcile_duration_seconds_count") / window,
        "round_cpu_share": delta("workerpool_reconcile_duration_seconds_sum") / window,
        "writes_waited": waited,
        "write_wait_mean_s": delta("workerpool_api_write_wait_seconds_sum") / max(waited, 1),
        "backlog_start": backlog[0],
        "backlog_end": backlog[1],
        "status_pending_end": len(ages),
        "status_pending_oldest_s": max(ages, default=0.0),
        "loop_late_0_1": late[0],
        "loop_late_0_5": late[1],
        "loop_late_1": late[2],
        "full_gcs": gcs,
        "full_gc_s": gc_seconds,
    }


def print_table(args: argparse.Namespace, n: dict[str, float], total: int) -> None:
    print(
        f"\none operator, {args.pools} pools x {args.workers} workers, heartbeats every {args.interval:g} s "
        f"({total / args.interval:.0f}/s), {args.flip:.0%} of them change state, {args.seconds:.0f} s window; "
        + (f"pods Running on {args.kwok_nodes} kwok nodes" if args.kwok_nodes else "pods left unscheduled")
        + f"; the operator as {args.identity}"
        + (f" in a priority level of {args.operator_shares} shares" if args.operator_shares else "")
        + (f"; API server {' '.join(args.apiserver_arg)}" if args.apiserver_arg else "")
        + (f"; operator from {args.operator_src}" if args.operator_src else "")
    )
    big = args.pools >= 1000
    rows: list[tuple[str, str, str]] = [
        ("pods created / Running (s)", f"{n['pods_created_s']:.0f} / {n['pods_running_s']:.0f}", ""),
        ("operator CPU (cores)", f"{n['cpu_cores']:.3f}", "< 1" if big else "< 0.25"),
        ("operator RSS (MiB)", f"{n['rss_mib']:.0f}", "< 500" if big else "< 200"),
        ("status lag p50 / p99 (s)", _pair(n, "lag_p50_s", "lag_p99_s"), "p99 < 10" if big else "p99 < 0.2"),
        ("state changes observed in status", f"{n['changes_shown']:.0f}/{n['changes_measured']:.0f}", "all"),
        ("status writes / minute (all pools)", f"{n['status_writes_per_min']:.0f}", ""),
        ("busy-mark writes / minute (all pools)", f"{n['mark_writes_per_min']:.0f}", ""),
        ("pool rounds / s, seconds in rounds / s", f"{n['rounds_per_s']:.0f} / {n['round_cpu_share']:.2f}", ""),
        ("new pools that got their first pod", f"{n['new_pools_with_pod']:.0f}/{n['new_pools']:.0f}", "all"),
        ("new pool -> first pod p50 / p99 (s)", _pair(n, "first_pod_p50_s", "first_pod_p99_s"), "p99 < 2"),
        ("existing pools grown by one that got the pod", f"{n['scale_ups_with_pod']:.0f}/{n['scale_ups']:.0f}", "all"),
        ("pool grown -> its new pod p50 / p99 (s)", _pair(n, "scale_up_p50_s", "scale_up_p99_s"), "p99 < 2"),
        ("  of which the operator (p50 / max, s)", _pair(n, "operator_share_p50_s", "operator_share_max_s"), "< 1"),
        ("API server write latency mean (ms)", f"{1000 * n.get('api_write_latency_s', 0):.0f}", ""),
        (
            "writes that waited for a turn / mean wait (s)",
            f"{n['writes_waited']:.0f} / {n['write_wait_mean_s']:.2f}",
            "",
        ),
        ("write backlog at the window start / end", f"{n['backlog_start']:.0f} / {n['backlog_end']:.0f}", ""),
        (
            "status writes waiting at the end, oldest (s)",
            f"{n['status_pending_end']:.0f} / {n['status_pending_oldest_s']:.1f}",
            "",
        ),
        (
            "event loop late > 0.1 s / > 0.5 s / > 1 s",
            f"{n['loop_late_0_1']:.0f} / {n['loop_late_0_5']:.0f} / {n['loop_late_1']:.0f}",
            "",
        ),
        ("full garbage collections, seconds stopped", f"{n['full_gcs']:.0f} / {n['full_gc_s']:.2f}", ""),
        ("status watch: events in the window, restarts", f"{n['watch_events']:.0f} / {n['watch_restarts']:.0f}", ""),
    ]
    print(f"{'metric':<46}{'value':>16}{'target':>12}")
    for label, value, target in rows:
        print(f"{label:<46}{value:>16}{target:>12}")


def _pair(n: dict[str, float], a: str, b: str) -> str:
    return f"{n[a]:.2f} / {n[b]:.2f}" if a in n and b in n else "-"


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


def scale_up_delays(patched_at: dict[str, float], pods: list[tuple[float, dict[str, Any]]]) -> list[float]:
    """Per grown pool: from the patch to its first new pod's ADDED (as the watch delivered it; a pod
    seen before the patch and listed again by a restarted watch is not new)."""
    first: dict[str, float] = {}
    known: set[str] = set()
    for at, e in pods:
        meta = (e.get("object") or {}).get("metadata", {})
        pool, name = meta.get("labels", {}).get("bifrost.dev/pool"), meta.get("name")
        if pool not in patched_at or name is None:
            continue
        if at <= patched_at[pool]:
            known.add(name)
        elif e.get("type") == "ADDED" and name not in known:
            first.setdefault(pool, at)
    return [first[p] - t for p, t in patched_at.items() if p in first]


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


def api_latencies(cluster: LocalCluster) -> tuple[float, float]:
    """The API server's own time for the writes it served (PATCH/POST/PUT/DELETE): (seconds summed, count)."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    total = count = 0.0
    for name, labels, value in parse_series(text):
        if labels.get("verb") not in ("PATCH", "POST", "PUT", "DELETE"):
            continue
        if name == "apiserver_request_duration_seconds_sum":
            total += value
        elif name == "apiserver_request_duration_seconds_count":
            count += value
    return total, count


def write_latency(before: tuple[float, float], after: tuple[float, float]) -> dict[str, float]:
    served = after[1] - before[1]
    return {"api_write_latency_s": (after[0] - before[0]) / served} if served > 0 else {}


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
    """One metric summed over its series (labelled or not)."""
    return sum(v for series, v in samples.items() if series == name or series.startswith(name + "{"))


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
