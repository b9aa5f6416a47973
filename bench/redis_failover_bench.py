#!/usr/bin/env python3
"""A Sentinel failover under a trickle of work: how long until the operator acts again
and the workers claim again, next to Celery workers on the same kind of Sentinel set-up.

One Sentinel topology (a primary, a replica, three Sentinels on the bridge gateway,
down-after 2 s). Each trial: `kill -9` of the primary while executions trickle in
(one every 50 ms, submitted through Sentinel); the Sentinels promote the replica
(the anchor: the moment a majority names the new primary); the killed node comes
back as a replica of the new one before the next trial.

- operator: promotion -> the pool's first status write (kubectl watch, timestamped on
  arrival) that is correct again: Stalled=False and Ready=True with both workers;
- workers: promotion -> the first execution started after the kill (its own clock);
- Celery (the peer, as its docs set it up: `sentinel://` broker URLs, `master_name`,
  retrying for ever; prefork, concurrency 2): promotion -> the first task started
  after the kill. A trial with no task started within the deadline is "not
  recovered" (the worker is then restarted, as its users do, for the next trial).
Lost: submitted executions with no result (no task start, for Celery) at the end.

Usage: python bench/redis_failover_bench.py [--failovers 10] [--deadline 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testbed"))

from bench.stats import pct  # noqa: E402
from devcluster.client import Client  # noqa: E402
from devcluster.harness import READY, OperatorProcess, Pools, pool_manifest, wait_until  # noqa: E402
from devcluster.sentinel_set import MASTER, SentinelSet  # noqa: E402
from devcluster.stack import DevStack  # noqa: E402
from devcluster.watch import Watch  # noqa: E402

NS = "bench"
TRICKLE = 0.05  # s between submissions


class Trickle:
    """Submits one execution every TRICKLE s through `submit` (retrying through a failover)."""

    def __init__(self, submit: Callable[[], str]) -> None:
        self.submit = submit
        self.ids: list[str] = []
        self.stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.wait(TRICKLE):
            try:
                self.ids.append(self.submit())
            except Exception:
                continue


def failover(s: SentinelSet) -> tuple[float, float, float]:
    """Kill the primary; (kill time, promotion time) as time.time(), promotion as monotonic; it rejoins."""
    old = s.kill_primary()
    killed = time.time()
    new, promoted = s.wait_promoted(old)
    mono = time.monotonic() - (time.time() - promoted)
    s.rejoin(old, replica_of=new)
    return killed, promoted, mono


def trial(s: SentinelSet, client: Client, watch: Watch, trickle: Trickle, deadline: float) -> tuple[float, float]:
    """One failover: (promotion -> the operator's first correct status, promotion -> the first claim)."""
    wait_until(lambda: len(trickle.ids) > 20 and client.result(trickle.ids[-10]), timeout=deadline, what="work")
    killed, promoted, mono = failover(s)
    at = wait_until(lambda: first_correct_write(watch, mono, 2), timeout=deadline, what="a correct status")
    start = wait_until(lambda: first_start_after(client, trickle.ids, killed), timeout=deadline, what="a claim")
    return at - mono, start - promoted


def first_correct_write(watch: Watch, after: float, workers: int) -> float | None:
    """Monotonic arrival of the first status (after `after`) that is right again."""
    with watch.lock:
        events = list(watch.events)
    for at, event in events:
        if at < after:
            continue
        status = event["object"].get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
        if conds.get("Stalled") == "False" and conds.get("Ready") == "True" and status.get("readyWorkers") == workers:
            return at
    return None


def ours(failovers: int, deadline: float, work: Path) -> dict[str, Any]:
    # The Sentinels on the bridge gateway (pods reach them): it exists once the stack is up.
    with DevStack(work / "stack") as stack, stack.new_sentinel_set(work / "sentinel-ours", tls=False, acl=False) as s:
        stack.restricted_namespace(NS)
        stack.cluster.kubectl("create", "secret", "generic", "redis", "-n", NS, f"--from-literal=url={s.url(None)}")
        op = OperatorProcess(stack, NS, work).start()
        pools = Pools(stack, NS)
        manifest = pool_manifest("p", minWorkers=2, maxWorkers=2, processes={"min": 2, "max": 2})
        manifest["spec"]["redis"] = {"urlSecretRef": {"name": "redis", "key": "url"}}
        manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [
            {"name": "REGISTRATION_TTL_SECONDS", "value": "15"}
        ]
        pools.apply(manifest)
        pools.wait_status("p", lambda st: st.get("readyWorkers") == 2, "2 ready workers", timeout=READY)
        client = Client(s.master_client(), durable=True)
        watch = Watch(stack.cluster, NS, "wp", "p")
        trickle = Trickle(lambda: client.submit("started_at"))
        operator_s: list[float] = []
        workers_s: list[float] = []
        try:
            for i in range(failovers):
                op_s, w_s = trial(s, client, watch, trickle, deadline)
                operator_s.append(op_s)
                workers_s.append(w_s)
                print(f"  ours {i + 1}: operator {op_s:.2f} s, workers {w_s:.2f} s", file=sys.stderr)
        finally:
            trickle.stopped.set()
            watch.stop()
            op.stop()
        ids = list(trickle.ids)
        lost = len(not_finished(client, ids, 60))
        return {"operator": operator_s, "workers": workers_s, "lost": lost, "submitted": len(ids)}


def results(client: Client, ids: list[str]) -> list[Any]:
    """The results of `ids` (None: none yet), read in one MGET."""
    if not ids:
        return []
    raws = client.r.mget([f"bifrost:exec:{e}:result" for e in ids])
    return [json.loads(raw) if raw else None for raw in raws]


def first_start_after(client: Client, ids: list[str], killed: float) -> float | None:
    """The earliest start (the execution's own clock) after `killed` among the recent results."""
    starts = [r["result"] for r in results(client, ids[-400:]) if r is not None and isinstance(r["result"], float)]
    after = [t for t in starts if t > killed]
    return min(after) if after else None


def not_done(client: Client, ids: list[str]) -> list[str]:
    return [e for e, r in zip(ids, results(client, ids), strict=True) if r is None]


def not_finished(client: Client, ids: list[str], within: float) -> list[str]:
    """The executions still without a result after `within` s."""
    deadline = time.monotonic() + within
    left = not_done(client, ids)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = not_done(client, left)
    return left


def celery(s: SentinelSet, failovers: int, deadline: float, work: Path) -> dict[str, Any]:
    starts = work / "celery-starts"
    env = {
        **os.environ,
        "BENCH_CELERY_SENTINELS": ";".join(f"{s.host}:{n.port}" for n in s.sentinels),
        "BENCH_CELERY_MASTER": MASTER,
        "BENCH_CELERY_STARTS": str(starts),
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("BENCH_CELERY")})
    from bench import celery_sentinel_app as app

    def start_worker() -> subprocess.Popen[bytes]:
        argv = [str(Path(sys.executable).parent / "celery"), "-A", "bench.celery_sentinel_app", "worker"]
        argv += ["--pool", "prefork", "--concurrency", "2", "--without-heartbeat", "--without-gossip"]
        argv += ["--without-mingle", "--loglevel", "WARNING"]
        log = open(work / "celery.log", "ab")  # noqa: SIM115 - the child's
        return subprocess.Popen(argv, env=env, cwd=ROOT, start_new_session=True, stdout=log, stderr=log)

    def started() -> dict[str, float]:
        if not starts.exists():
            return {}
        rows = (line.split() for line in starts.read_text().splitlines() if line.strip())
        return {tid: float(at) for tid, at in rows}

    def send() -> str:
        tid = uuid.uuid4().hex
        app.record_start.apply_async(args=[tid], retry=True)
        return tid

    worker = start_worker()
    trickle = Trickle(send)
    recovered: list[float] = []
    not_recovered = restarts = 0
    try:
        for i in range(failovers):
            wait_until(lambda: len(started()) > 20, timeout=deadline, what="celery to run tasks")
            killed, promoted, _ = failover(s)
            try:
                first: float = wait_until(
                    lambda k=killed: min((t for t in started().values() if t > k), default=None),  # type: ignore[misc]
                    timeout=deadline,
                    what="celery to run a task",
                )
                recovered.append(first - promoted)
                print(f"  celery {i + 1}: {recovered[-1]:.2f} s", file=sys.stderr)
            except AssertionError:
                not_recovered += 1
                print(f"  celery {i + 1}: no task started within {deadline:.0f} s; restarting it", file=sys.stderr)
                worker.kill()
                worker.wait(10)
                worker, restarts = start_worker(), restarts + 1
    finally:
        trickle.stopped.set()
    ids = list(trickle.ids)
    deadline_at = time.monotonic() + 60
    while time.monotonic() < deadline_at and len(set(ids) - set(started())) > 0:
        time.sleep(0.5)
    lost = len(set(ids) - set(started()))
    os.killpg(worker.pid, 9)
    return {
        "recovered": recovered,
        "not_recovered": not_recovered,
        "restarts": restarts,
        "lost": lost,
        "submitted": len(ids),
    }


def summary(values: list[float]) -> str:
    return f"{pct(values, 50):6.2f} {pct(values, 99):6.2f}" if values else "     -      -"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--failovers", type=int, default=10)
    ap.add_argument("--deadline", type=float, default=30.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wpo-bench-redis-failover-"))
    a = ours(args.failovers, args.deadline, work)
    with SentinelSet(work / "sentinel-celery", host="127.0.0.1") as s:
        b = celery(s, args.failovers, args.deadline, work)
    print(f"\nSentinel failover (kill -9 of the primary), {args.failovers} trials, from the promotion; p50 / p99 s")
    print(f"{'':<40}{'p50':>7}{'p99':>7}")
    print(f"{'operator: first correct status write':<40}{summary(a['operator'])}")
    print(f"{'workerpool workers: claiming again':<40}{summary(a['workers'])}")
    print(f"{'celery workers: consuming again':<40}{summary(b['recovered'])}")
    print(f"celery trials not recovered within {args.deadline:.0f} s: {b['not_recovered']} (restarted each time)")
    print(f"lost: workerpool {a['lost']} of {a['submitted']}, celery {b['lost']} of {b['submitted']}")
    print(json.dumps({"ours": a, "celery": b}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
