#!/usr/bin/env python3
"""Worker runtime vs Celery's prefork worker, side by side in one run, same Redis.

Dispatch latency: enqueue -> the function starts running in a pool process
(sequential executions; p50/p99). Throughput: N no-op executions enqueued at
once -> all results stored. Both with the same number of processes.

Usage: python bench/worker_vs_celery.py [--processes 2] [--latency-runs 300] [--noops 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testbed"))

from bench.stats import pct  # noqa: E402
from devcluster.redis_server import RedisServer  # noqa: E402

FUNCS = "workerpool.worker.functions"


def ours(url: str, processes: int, runs: int, noops: int) -> dict[str, float]:
    r = redis.Redis.from_url(url)
    env = {
        **os.environ,
        "REDIS_URL": url,
        "WORKER_ID": "bench",
        "MIN_WORKERS": str(processes),
        "MAX_WORKERS": str(processes),
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "workerpool.cli", "worker"], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not r.exists("worker:bench") or int(r.hget("worker:bench", "pool_size") or 0) < processes:
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not start")
            time.sleep(0.05)
        sub = r.pubsub(ignore_subscribe_messages=True)
        sub.subscribe("bifrost:executions:results")

        def enqueue(ids: list[str], function: str) -> None:
            with r.pipeline(transaction=False) as p:
                ctx = json.dumps({"function": f"{FUNCS}:{function}", "parameters": {}})
                for eid in ids:
                    p.set(f"bifrost:exec:{eid}:context", ctx)
                for eid in ids:
                    p.zadd("bifrost:queue:pending", {eid: time.time()})
                    p.lpush("bifrost:queue:pending:notify", "1")
                p.execute()

        def wait(n: int) -> list[dict[str, object]]:
            out: list[dict[str, object]] = []
            deadline = time.monotonic() + 60
            while len(out) < n:
                m = sub.get_message(timeout=1)  # None also for the (ignored) subscribe reply
                if m is not None:
                    out.append(json.loads(m["data"]))
                elif time.monotonic() > deadline:
                    raise RuntimeError("results stopped arriving")
            return out

        latencies = []
        for _ in range(runs):
            eid = uuid.uuid4().hex
            t0 = time.time()
            enqueue([eid], "started_at")
            (res,) = wait(1)
            latencies.append((float(res["result"]) - t0) * 1000)  # type: ignore[arg-type]
        ids = [uuid.uuid4().hex for _ in range(noops)]
        t0 = time.perf_counter()
        enqueue(ids, "noop")
        wait(noops)
        elapsed = time.perf_counter() - t0
        return {"p50_ms": statistics.median(latencies), "p99_ms": pct(latencies, 99), "per_s": noops / elapsed}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def celery(url: str, processes: int, runs: int, noops: int) -> dict[str, float]:
    base = url.rsplit("/", 1)[0]
    env = {**os.environ, "BENCH_CELERY_REDIS": base, "PYTHONPATH": str(ROOT)}
    celery_bin = Path(sys.executable).parent / "celery"
    proc = subprocess.Popen(
        [
            str(celery_bin),
            "-A",
            "bench.celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(processes),
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    os.environ["BENCH_CELERY_REDIS"] = base
    from bench import celery_app

    try:
        celery_app.noop.delay().get(timeout=60)  # warm: the worker is up
        latencies = []
        for _ in range(runs):
            t0 = time.time()
            started = celery_app.started_at.delay().get(timeout=10)
            latencies.append((started - t0) * 1000)
        t0 = time.perf_counter()
        results = [celery_app.noop.delay() for _ in range(noops)]
        for res in results:
            res.get(timeout=120)
            res.forget()
        elapsed = time.perf_counter() - t0
        return {"p50_ms": statistics.median(latencies), "p99_ms": pct(latencies, 99), "per_s": noops / elapsed}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--latency-runs", type=int, default=300)
    ap.add_argument("--noops", type=int, default=3000)
    args = ap.parse_args()
    server = RedisServer().start()
    print("measuring workerpool ...", file=sys.stderr, flush=True)
    a = ours(server.url, args.processes, args.latency_runs, args.noops)
    print("measuring celery ...", file=sys.stderr, flush=True)
    b = celery(server.url, args.processes, args.latency_runs, args.noops)
    print(
        f"\nworker runtime vs Celery prefork, {args.processes} processes, same redis-server, "
        f"{args.latency_runs} sequential dispatches, {args.noops} no-ops"
    )
    print(f"{'metric':<28}{'workerpool':>12}{'celery':>12}{'ratio':>10}")
    print(f"{'dispatch p50 (ms)':<28}{a['p50_ms']:>12.2f}{b['p50_ms']:>12.2f}{b['p50_ms'] / a['p50_ms']:>9.2f}x")
    print(f"{'dispatch p99 (ms)':<28}{a['p99_ms']:>12.2f}{b['p99_ms']:>12.2f}{b['p99_ms'] / a['p99_ms']:>9.2f}x")
    print(f"{'no-op throughput (/s)':<28}{a['per_s']:>12.0f}{b['per_s']:>12.0f}{a['per_s'] / b['per_s']:>9.2f}x")
    print("(ratios > 1 mean workerpool is better)", flush=True)
    server.stop()
    # Celery's result consumer reconnects from __del__ at interpreter exit; skip that.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
