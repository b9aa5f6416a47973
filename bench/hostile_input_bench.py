#!/usr/bin/env python3
"""One operator, 100 pools, and a Redis that a hostile (or broken) worker floods.

Two phases in one run, side by side: a quiet one, then the same for as long with a
publisher that sends, at a fixed rate, the inputs that stalled or broke the operator
before (docs/operator.md, "Bad input"): 1 MB heartbeats of invalid processes, counts of
2^64 and 1e400, naive timestamps, megabyte pool names, and keys of the wrong type under
worker names and the queue key. Meanwhile the pools' own workers heartbeat as usual,
a few changing state, so the status has something to show.

Reported per phase: the operator's event-loop lag (the share of its 250 ms timer's
wake-ups later than 50 ms and 250 ms), the leader's Lease (drops of leadership, the
longest gap between renewals), the status lag (flip to status) p50/p99 and how many
flips the status showed, status writes a minute, RSS at the end, CPU, and the refusals
counted by kind and reason.

Usage: python bench/hostile_input_bench.py [--pools 100] [--workers 2] [--seconds 600] [--rate 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testbed"))

from bench.scale_bench import (  # noqa: E402
    HeartbeatLoad,
    _StackShim,
    cpu_seconds,
    flip_lags,
    heartbeats,
    pool_doc,
    rss_mib,
    summed,
    transitions,
)
from bench.stats import pct  # noqa: E402
from devcluster.controlplane import LocalCluster  # noqa: E402
from devcluster.harness import OperatorProcess, wait_until  # noqa: E402
from devcluster.redis_server import RedisServer  # noqa: E402
from devcluster.stack import CRD_PATH  # noqa: E402
from devcluster.watch import Watch  # noqa: E402

NS = "hostile"
CHANNEL = "bifrost:workers:heartbeat"
LAG = "workerpool_event_loop_lag_seconds"


class HostileInputs:
    """The worst inputs: ("publish", bytes) or ("set"/"hset", key, value). The large payloads are
    encoded once: encoding two 1 MB documents 20 times a second cost the benchmark's own process
    more CPU than the operator spends refusing them, on the cores the operator runs on."""

    def __init__(self, started: str) -> None:
        self.started = started
        base = {"type": "worker_heartbeat", "worker_id": "evil", "timestamp": started, "started_at": started,
                "hostname": "h", "pool_size": 1, "idle_count": 1, "processes": []}  # fmt: skip
        self.messages = [
            json.dumps({**base, "processes": [{"pid": -1}] * 100_000}).encode(),  # ~1 MB
            json.dumps({**base, "pool_size": 2**64, "busy_count": 10**30}).encode(),
            json.dumps({**base, "timestamp": "2026-01-01T00:00:00"}).encode(),
            json.dumps({**base, "pool": "p" * 1_000_000, "namespace": NS}).encode(),
        ]
        self.nul = b"\x00" * 300_000

    def pick(self, rng: random.Random, n: int) -> tuple[Any, ...]:
        kind = rng.randrange(len(self.messages) + 3)
        if kind < len(self.messages):
            return ("publish", self.messages[kind])
        if kind == len(self.messages):
            return ("publish", self.nul[: rng.randint(1, len(self.nul))])
        if kind == len(self.messages) + 1:
            return ("set", f"worker:evil-{n % 50}", "1")
        return ("hset", f"worker:evil-x{n % 50}", {"started_at": self.started, "pool_size": "9" * 5000})


def half_growth(samples: list[float]) -> float:
    """Mean RSS of the second half minus that of the first: growth, not a one-off step."""
    half = len(samples) // 2
    if half == 0:
        return 0.0
    return statistics.mean(samples[half:]) - statistics.mean(samples[:half])


def lag_shares(samples: dict[str, float]) -> tuple[float, float, float]:
    """(wake-ups, of them later than 50 ms, later than 250 ms): cumulative."""
    count = samples.get(f"{LAG}_count", 0.0)
    return (
        count,
        count - samples.get(f'{LAG}_bucket{{le="0.05"}}', 0.0),
        count - samples.get(f'{LAG}_bucket{{le="0.25"}}', 0.0),
    )


class LeaseWatch(threading.Thread):
    """Reads the leader Lease every half second: leadership drops and the longest renewal gap."""

    def __init__(self, cluster: LocalCluster, name: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.name = cluster, name
        self.renewals: list[tuple[float, str | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            out = self.cluster.kubectl("get", "lease", self.name, "-n", NS, "-o", "json", check=False)
            if out.returncode == 0:
                spec = json.loads(out.stdout).get("spec", {})
                holder = spec.get("holderIdentity")
                renew = spec.get("renewTime")
                if not self.renewals or self.renewals[-1][1] != f"{holder} {renew}":
                    self.renewals.append((time.monotonic(), f"{holder} {renew}"))
            time.sleep(0.5)

    def between(self, t0: float, t1: float) -> tuple[float, int]:
        """The longest gap between observed renewals, and the holder changes, within [t0, t1]."""
        seen = [(t, v) for t, v in self.renewals if t0 <= t <= t1]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
        holders = {v.split(" ")[0] for _, v in seen if v}
        return (max(gaps) if gaps else 0.0), max(0, len(holders) - 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pools", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=600, help="each phase's length")
    ap.add_argument("--interval", type=float, default=5, help="the good workers' heartbeat interval")
    ap.add_argument("--rate", type=float, default=20, help="hostile inputs a second in the flood")
    ap.add_argument("--operator-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra env var for the operator (experiments, e.g. malloc tuning)")  # fmt: skip
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wpo-hostile-"))
    rng = random.Random(11)
    with LocalCluster(work / "cluster") as cluster, RedisServer(work / "redis") as server:
        cluster.install_crd(CRD_PATH)
        cluster.kubectl("create", "namespace", NS)
        r = redis.Redis.from_url(server.url)
        op = OperatorProcess.__new__(OperatorProcess)
        OperatorProcess.__init__(op, _StackShim(cluster), NS, work)  # type: ignore[arg-type]
        op.env.update(WORKERPOOL_LEADER_ELECTION="true", WORKERPOOL_LEASE_NAMESPACE=NS, WORKERPOOL_IDENTITY="bench")
        op.env.update(dict(item.split("=", 1) for item in args.operator_env))
        op.start()
        leases = LeaseWatch(cluster, "workerpool-operator")
        leases.start()
        try:
            docs = [pool_doc(f"p{i:03d}", args.workers, args.interval, server.url) for i in range(args.pools)]
            for doc in docs:
                doc["metadata"]["namespace"] = NS
            cluster.kubectl("apply", "--server-side", "-f", "-", timeout=300,
                            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))  # fmt: skip
            total = args.pools * args.workers

            def pods() -> list[tuple[str, str]]:
                out = cluster.kubectl(
                    "get", "pods", "-n", NS, "-o",
                    "jsonpath={range .items[*]}{.metadata.name} {.metadata.labels.bifrost\\.dev/pool}{'\\n'}{end}",
                    timeout=120,
                ).stdout  # fmt: skip
                return [tuple(line.split()) for line in out.splitlines() if line.strip()]  # type: ignore[misc]

            all_pods = wait_until(lambda: (p := pods()) and len(p) >= total and p, timeout=600, what=f"{total} pods")
            started = dt.datetime.now(dt.UTC)
            state = dict.fromkeys((name for name, _ in all_pods), False)
            pool_of = dict(all_pods)
            flips: list[tuple[float, str, bool]] = []
            stop, flood = threading.Event(), threading.Event()
            sent: list[int] = [0]

            def good() -> None:
                heartbeats(r, HeartbeatLoad(state, pool_of, started, NS, args.interval, 0.05), flips, stop, rng)

            def hostile() -> None:
                bad = redis.Redis.from_url(server.url)
                inputs, own = HostileInputs(started.isoformat()), random.Random(12)
                # The attacker's own CPU is on another node in real life: here it yields the shared cores.
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
                while not stop.is_set():
                    if not flood.is_set():
                        time.sleep(0.1)
                        continue
                    op_ = inputs.pick(own, sent[0])
                    if op_[0] == "publish":
                        bad.publish(CHANNEL, op_[1])
                    elif op_[0] == "set":
                        bad.delete(op_[1])
                        bad.set(op_[1], op_[2])
                    else:
                        bad.delete(op_[1])
                        bad.hset(op_[1], mapping=op_[2])
                    sent[0] += 1
                    time.sleep(1 / args.rate)

            rss: list[tuple[float, float]] = []

            def sample_rss() -> None:
                while not stop.is_set():
                    rss.append((time.monotonic(), rss_mib(op.proc.pid)))  # type: ignore[union-attr]
                    time.sleep(5)

            watch = Watch(cluster, NS, "workerpools")
            threading.Thread(target=good, daemon=True).start()
            threading.Thread(target=hostile, daemon=True).start()
            threading.Thread(target=sample_rss, daemon=True).start()
            time.sleep(3 * args.interval)  # warm-up: every worker registered and shown once
            phases: dict[str, dict[str, Any]] = {}
            for phase in ("quiet", "flood"):
                if phase == "flood":
                    flood.set()
                samples0, t0, cpu0, first = op.samples(), time.monotonic(), cpu_seconds(op.proc.pid), len(flips)  # type: ignore[union-attr]
                time.sleep(args.seconds)
                samples1, t1, cpu1 = op.samples(), time.monotonic(), cpu_seconds(op.proc.pid)  # type: ignore[union-attr]
                phases[phase] = {
                    "t": (t0, t1), "samples": (samples0, samples1), "cpu": (cpu1 - cpu0) / (t1 - t0),
                    "rss": [m for t, m in rss if t0 <= t <= t1], "flips": (first, len(flips)),
                }  # fmt: skip
            stop.set()
            time.sleep(2 * args.interval)  # the last flips land
            shown = transitions(watch.since(0.0))
            watch.stop()
        finally:
            leases.stop.set()
            op.stop()
    report(args, phases, flips, shown, leases, sent[0])
    return 0


def report(
    args: argparse.Namespace,
    phases: dict[str, dict[str, Any]],
    flips: list[tuple[float, str, bool]],
    shown: dict[str, list[tuple[bool, float]]],
    leases: LeaseWatch,
    sent: int,
) -> None:
    print(
        f"\none operator, {args.pools} pools x {args.workers} workers, heartbeats every {args.interval:g} s; "
        f"two phases of {args.seconds:.0f} s: quiet, then {args.rate:g} hostile inputs a second ({sent} in all)"
    )
    print(f"{'metric':<46}{'quiet':>12}{'flood':>12}{'target (flood)':>22}")
    rows: dict[str, list[str]] = {}
    for p in phases.values():
        (s0, s1), (t0, t1) = p["samples"], p["t"]
        first, last = p["flips"]
        lags = flip_lags(flips[:last], first, shown)
        wakes, late50, late250 = (b - a for a, b in zip(lag_shares(s0), lag_shares(s1), strict=True))
        gap, drops = leases.between(t0, t1)
        writes = summed(s1, "workerpool_status_writes_total") - summed(s0, "workerpool_status_writes_total")
        refused = summed(s1, "workerpool_malformed_redis_data_total") - summed(
            s0, "workerpool_malformed_redis_data_total"
        )
        values = {
            "event loop wake-ups later than 50 ms (%)": f"{100 * late50 / max(wakes, 1):.2f}",
            "event loop wake-ups later than 250 ms": f"{late250:.0f}",
            "leadership drops": f"{drops}",
            "longest gap between Lease renewals (s)": f"{gap:.1f}",
            "status lag p50 (s)": f"{statistics.median(lags):.2f}" if lags else "-",
            "status lag p99 (s)": f"{pct(lags, 99):.2f}" if lags else "-",
            "flips shown in the status": f"{len(lags)}/{last - first}",
            "status writes / minute": f"{writes * 60 / (t1 - t0):.0f}",
            "operator CPU (cores)": f"{p['cpu']:.3f}",
            "operator RSS first / last in the phase (MiB)": f"{p['rss'][0]:.0f} / {p['rss'][-1]:.0f}",
            "operator RSS highest in the phase (MiB)": f"{max(p['rss']):.0f}",
            "RSS of the phase's 2nd half minus its 1st (MiB)": f"{half_growth(p['rss']):.1f}",
            "inputs refused (all kinds)": f"{refused:.0f}",
        }
        for k, v in values.items():
            rows.setdefault(k, []).append(v)
    targets = {
        "event loop wake-ups later than 50 ms (%)": "< 1 (p99 < 50 ms)",
        "event loop wake-ups later than 250 ms": "0",
        "leadership drops": "0",
        "status lag p99 (s)": "within 10 % of quiet",
        "operator RSS first / last in the phase (MiB)": "last < quiet's + 10",
    }
    for k, (quiet, flood) in rows.items():
        print(f"{k:<46}{quiet:>12}{flood:>12}{targets.get(k, ''):>22}")
    name = "workerpool_malformed_redis_data_total"
    refusals = {k: v for k, v in phases["flood"]["samples"][1].items() if k.startswith(name)}
    print("refusals by kind and reason (cumulative):")
    for series, value in sorted(refusals.items()):
        print(f"  {series:<90}{value:>8.0f}")


if __name__ == "__main__":
    sys.exit(main())
