#!/usr/bin/env python3
"""Executions lost when Bifrost's worker is stopped, and the scale-up reaction, on the real node.

The worker is the test bed's Bifrost-wire worker (it speaks the recorded wire
and, like Bifrost's, kills what runs on SIGTERM and reports nothing), on a real
Redis and a real RabbitMQ, in pods on the real kubelet.

(a) as Bifrost deploys it today: a Deployment (replicas 3, terminationGracePeriod
    360 s, as its manifests), changed as its users do: `kubectl scale`,
    `kubectl rollout restart`, `kubectl drain`;
(b) the same worker under a `protocol: bifrost` WorkerPool (min 1, max 3, the
    eviction webhook on): a scale-down after the burst, a rollout (a template
    change), `kubectl drain`.
Each scenario: a burst of 6 executions of 20 s on 3 workers of capacity 2, the
change made while all 6 run. Lost = delivered to a pod that is gone, no result.

The race (b) cannot close: an execution delivered after the worker's last
heartbeat and before its pod is deleted. Measured with a trickle of 1 s
executions against a pool that scales down at once (scaleDownDelaySeconds 0),
for heartbeat intervals of 10 s and 2 s: deliveries to each deleted pod in the
heartbeat interval before its deletion, and the executions lost.

Scale-up reaction: RabbitMQ message published -> the pod's ADDED watch event,
20 trials; the anchor is KEDA's documented polling default (30 s).

Usage: python bench/bifrost_bench.py [--trials 20] [--race-seconds 90]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testbed"))

from bench.stats import pct  # noqa: E402
from devcluster import binaries  # noqa: E402
from devcluster.bifrost_wire import (  # noqa: E402
    Ledger,
    configmap,
    execution,
    pool_manifest,
    publish_executions,
    ready_messages,
    worker_container,
)
from devcluster.harness import OperatorProcess, Pools, wait_until  # noqa: E402
from devcluster.procs import free_port  # noqa: E402
from devcluster.rabbitmq_server import RabbitMQServer  # noqa: E402
from devcluster.stack import DevStack, project_image  # noqa: E402
from devcluster.watch import Watch  # noqa: E402
from devcluster.webhooks import apply_configuration, wait_served, webhook_env  # noqa: E402

NS = "bench"
NODE = "wpo-node"
BURST, LENGTH = 6, 20.0
KEDA_POLLING_DEFAULT = 30.0  # s: keda.sh/docs/latest/reference/scaledobject-spec (pollingInterval)
SETTLE = 120.0


class Bench:
    def __init__(self, stack: DevStack, rabbit: RabbitMQServer, image: str, op: OperatorProcess) -> None:
        assert stack.redis is not None
        self.stack, self.rabbit, self.image, self.op = stack, rabbit, image, op
        self.redis_url = stack.redis.url
        self.ledger = Ledger(self.redis_url)
        self.pools = Pools(stack, NS)

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.stack.cluster.kubectl(*args, check=check, timeout=180).stdout

    def pods(self, selector: str) -> set[str]:
        out = json.loads(self.kubectl("get", "pods", "-n", NS, "-l", selector, "-o", "json"))
        return {p["metadata"]["name"] for p in out["items"] if not p["metadata"].get("deletionTimestamp")}

    def all_pods(self, selector: str) -> set[str]:
        out = json.loads(self.kubectl("get", "pods", "-n", NS, "-l", selector, "-o", "json"))
        return {p["metadata"]["name"] for p in out["items"]}

    # --- one scenario: a burst, a change while it runs, what was lost ------------------------

    def scenario(self, selector: str, change: Callable[[], None], busy: Callable[[], bool]) -> tuple[int, int]:
        """(executions lost, executions in the burst)."""
        ids = [execution(LENGTH) for _ in range(BURST)]
        wanted = {e["execution_id"] for e in ids}
        publish_executions(self.rabbit.local_url, ids)
        wait_until(
            lambda: wanted <= {d["execution_id"] for d in self.ledger.deliveries()} and busy(),
            timeout=SETTLE,
            what="the whole burst running",
            interval=0.5,
        )
        change()

        def settled() -> bool:
            live = self.pods(selector)
            delivered = {d["execution_id"]: d["worker_id"] for d in self.ledger.deliveries()}
            finished = self.ledger.finished()
            return all(e in finished or delivered.get(e) not in live for e in wanted)

        wait_until(settled, timeout=SETTLE + LENGTH, what="every execution finished or its pod gone", interval=1)
        finished = self.ledger.finished()
        return sum(1 for e in wanted if e not in finished), len(wanted)

    def drain(self, selector: str) -> None:
        try:
            subprocess.run(
                [
                    str(binaries.find("kubectl")),
                    "drain",
                    NODE,
                    f"--pod-selector={selector}",
                    "--delete-emptydir-data",
                    "--ignore-daemonsets",
                    "--timeout=180s",
                ],
                env=self.stack.cluster.env(),
                capture_output=True,
                check=False,
                timeout=240,
            )
        finally:
            self.kubectl("uncordon", NODE)

    # --- (a) the Deployment, as Bifrost runs it --------------------------------------------------

    def deployment(self) -> dict[str, Any]:
        env = {
            "BIFROST_REDIS_URL": self.redis_url,
            "BIFROST_RABBITMQ_URL": self.rabbit.url,
            "BIFROST_MAX_WORKERS": 2,
            "BIFROST_MAX_CONCURRENCY": 2,
            "BIFROST_WORKER_HEARTBEAT_INTERVAL_SECONDS": 10,
        }
        container = worker_container(self.image, **env)
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "bifrost-worker", "namespace": NS},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "bifrost-worker"}},
                "template": {
                    "metadata": {"labels": {"app": "bifrost-worker"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 360,
                        "automountServiceAccountToken": False,
                        "containers": [container],
                        "volumes": [{"name": "bifrost-wire", "configMap": {"name": "bifrost-wire-worker"}}],
                    },
                },
            },
        }

    def deployment_at(self, replicas: int) -> None:
        body = self.deployment()
        body["spec"]["replicas"] = replicas
        self.stack.cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(body))
        self.kubectl("rollout", "status", "deployment/bifrost-worker", "-n", NS, "--timeout=180s")
        wait_until(lambda: len(self.all_pods("app=bifrost-worker")) == replicas, timeout=SETTLE, what="old pods gone")

    def deployment_scenarios(self) -> dict[str, tuple[int, int]]:
        sel = "app=bifrost-worker"
        busy = lambda: True  # noqa: E731 - the deliveries say it: each worker takes 2
        out: dict[str, tuple[int, int]] = {}
        self.deployment_at(3)
        out["scale down (kubectl scale 3 -> 1)"] = self.scenario(
            sel, lambda: self.kubectl("scale", "deployment/bifrost-worker", "-n", NS, "--replicas=1"), busy
        )
        self.deployment_at(3)
        out["rollout (kubectl rollout restart)"] = self.scenario(
            sel, lambda: self.kubectl("rollout", "restart", "deployment/bifrost-worker", "-n", NS), busy
        )
        self.deployment_at(3)
        out["node drain (kubectl drain)"] = self.scenario(sel, lambda: self.drain(sel), busy)
        self.kubectl("delete", "deployment", "bifrost-worker", "-n", NS, "--wait=true")
        return out

    # --- (b) the WorkerPool ----------------------------------------------------------------------

    def pool(self, name: str, **spec: Any) -> None:
        self.pools.apply(pool_manifest(name, self.redis_url, self.image, **spec))

    def pool_busy(self, name: str, count: int) -> Callable[[], bool]:
        return lambda: (self.pools.status(name).get("busyCount") or 0) >= count

    def pool_scenarios(self) -> dict[str, tuple[int, int]]:
        sel = "bifrost.dev/pool=b"
        spec: dict[str, Any] = {"maxWorkers": 3, "heartbeatIntervalSeconds": 2, "scaling": {"scaleDownDelaySeconds": 5}}
        self.pool("b", **spec)
        one = lambda: self.pools.wait_status(  # noqa: E731
            "b", lambda s: s.get("workers") == 1 and s.get("readyWorkers") == 1, "one ready worker", timeout=SETTLE
        )
        one()
        out: dict[str, tuple[int, int]] = {}
        out["scale down (after the burst)"] = self.scenario(sel, lambda: None, self.pool_busy("b", BURST))
        one()
        rollout = dict(spec, template={**pool_manifest("b", "", self.image)["spec"]["template"]})
        rollout["template"]["metadata"] = {"labels": {"rollout": str(time.time_ns())}}
        out["rollout (a template change)"] = self.scenario(
            sel, lambda: self.pool("b", **rollout), self.pool_busy("b", BURST)
        )
        one()
        out["node drain (kubectl drain)"] = self.scenario(sel, lambda: self.drain(sel), self.pool_busy("b", BURST))
        self.kubectl("delete", "wp", "b", "-n", NS, "--wait=true")
        wait_until(lambda: not self.all_pods(sel), timeout=SETTLE, what="the pool's pods gone")
        return out

    # --- the race ----------------------------------------------------------------------------------

    def race(self, heartbeat: int, seconds: float, every: float = 0.7, size: int = 1) -> dict[str, float]:
        """`size` executions of 1 s every `every` s for `seconds` s, on a pool that scales down at once."""
        name = f"race{heartbeat}-{size}"
        sel = f"bifrost.dev/pool={name}"
        watch = Watch(self.stack.cluster, NS, "pods", "-l", sel)
        offset = time.time() - time.monotonic()
        self.pool(
            name,
            minWorkers=1,
            maxWorkers=4,
            processes={"max": 1},
            heartbeatIntervalSeconds=heartbeat,
            scaling={"scaleDownDelaySeconds": 0},
        )
        self.pools.wait_status(name, lambda s: s.get("readyWorkers") == 1, "one ready worker", timeout=SETTLE)
        before = {d["execution_id"] for d in self.ledger.deliveries()}
        sent: set[str] = set()
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # demand moving between 1 and 2 workers all the time
            jobs = [execution(1.0) for _ in range(size)]
            sent |= {job["execution_id"] for job in jobs}
            publish_executions(self.rabbit.local_url, jobs)
            time.sleep(every)
        wait_until(lambda: ready_messages(self.rabbit.local_url) == 0, timeout=SETTLE, what="the trickle consumed")
        time.sleep(3)  # the last executions (1 s) finish or are lost
        watch.stop()
        deleted: dict[str, float] = {}
        for t, event in watch.events:
            meta = event["object"]["metadata"]
            if meta.get("deletionTimestamp") and meta["name"] not in deleted:
                deleted[meta["name"]] = t + offset
        deliveries = [d for d in self.ledger.deliveries() if d["execution_id"] in sent - before]
        in_window = sum(
            1 for d in deliveries if d["worker_id"] in deleted and 0 <= deleted[d["worker_id"]] - d["at"] <= heartbeat
        )
        finished = self.ledger.finished()
        lost = sum(1 for d in deliveries if d["execution_id"] not in finished and d["worker_id"] in deleted)
        averted = self.op.metric("workerpool_deletes_averted_total", namespace=NS, pool=name)
        self.kubectl("delete", "wp", name, "-n", NS, "--wait=true")
        wait_until(lambda: not self.all_pods(sel), timeout=SETTLE, what="the race pool's pods gone")
        return {
            "averted": averted,
            "executions": len(sent),
            "deletions": len(deleted),
            "delivered in the last interval": in_window,
            "lost": lost,
        }

    # --- scale-up reaction -----------------------------------------------------------------------------

    def reaction(self, trials: int) -> list[float]:
        sel = "bifrost.dev/pool=r"
        self.pool("r", minWorkers=0, maxWorkers=trials + 1, processes={"max": 1}, executionTimeoutSeconds=600)
        self.pools.wait_status("r", lambda s: "queue" in s, "the queue read", timeout=SETTLE)
        watch = Watch(self.stack.cluster, NS, "pods", "-l", sel)
        out: list[float] = []
        seen: set[str] = set()
        for _ in range(trials):
            t0 = time.monotonic()
            publish_executions(self.rabbit.local_url, [execution(600)])

            def added(t0: float = t0) -> float | None:
                for t, event in watch.since(t0):
                    name = event["object"]["metadata"]["name"]
                    if event["type"] == "ADDED" and name not in seen:
                        seen.add(name)
                        return t - t0
                return None

            out.append(wait_until(added, timeout=30, what="a new pod", interval=0.005))
        watch.stop()
        self.kubectl("delete", "wp", "r", "-n", NS, "--wait=true")
        return out


def report(
    a: dict[str, tuple[int, int]],
    b: dict[str, tuple[int, int]],
    races: dict[str, dict[str, float]],
    reaction: list[float],
) -> None:
    print(f"\nexecutions lost ({BURST} executions of {LENGTH:.0f} s running at the change)")
    print(f"{'change':<36} {'Deployment (Bifrost today)':>27} {'WorkerPool protocol: bifrost':>29}")
    for (what_a, (lost_a, n_a)), (what_b, (lost_b, n_b)) in zip(a.items(), b.items(), strict=True):
        print(f"{what_a:<36} {f'{lost_a} of {n_a}':>27}   ({what_b}) {f'{lost_b} of {n_b}':>10}")
    print("\nthe race (a delivery after the last heartbeat, before the delete), trickle of 1 s executions")
    print("(trickle: one 1 s execution every 0.7 s; pairs: two every 3 s)")
    print(
        f"{'heartbeat, load':<18} {'executions':>10} {'deletions':>10} {'called off':>10} "
        f"{'in last interval':>17} {'lost':>6}"
    )
    for what, r in races.items():
        print(
            f"{what:<18} {r['executions']:>10.0f} {r['deletions']:>10.0f} {r['averted']:>10.0f} "
            f"{r['delivered in the last interval']:>17.0f} {r['lost']:>6.0f}"
        )
    ms = [x * 1000 for x in reaction]
    if not ms:
        return
    print(
        f"\nscale-up reaction, RabbitMQ message -> pod ADDED, {len(ms)} trials: p50 {pct(ms, 50):.0f} ms, "
        f"p99 {pct(ms, 99):.0f} ms; KEDA's RabbitMQ scaler polls every {KEDA_POLLING_DEFAULT:.0f} s by default "
        f"(mean wait {KEDA_POLLING_DEFAULT / 2:.0f} s before its HPA even sees the message): "
        f"p50 ratio {KEDA_POLLING_DEFAULT / 2 * 1000 / pct(ms, 50):.0f}x"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--race-seconds", type=float, default=90)
    ap.add_argument("--only", choices=("lost", "race", "reaction"), help="one part (default: all, in one run)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wpo-bench-bifrost-"))
    with DevStack(work / "stack") as stack, stack.new_rabbitmq(work / "rabbitmq") as rabbit:
        stack.restricted_namespace(NS)
        stack.cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(configmap(NS)))
        stack.cluster.kubectl("create", "secret", "generic", "rabbitmq", "-n", NS, f"--from-literal=url={rabbit.url}")
        publish_executions(rabbit.local_url, [])  # the work queue, declared as Bifrost's API does
        port, hook = free_port(), "wpo-evictions-bench"
        apply_configuration(stack, hook, NS, port, work)
        op = OperatorProcess(stack, NS, work, **webhook_env(hook, port)).start()
        try:
            wait_served(stack, hook, port)
            bench = Bench(stack, rabbit, project_image(build=False)[0], op)
            part = args.only
            lost_a = bench.deployment_scenarios() if part in (None, "lost") else {}
            lost_b = bench.pool_scenarios() if part in (None, "lost") else {}
            races = {}
            if part in (None, "race"):
                for hb in (10, 2):
                    races[f"{hb} s, trickle"] = bench.race(hb, args.race_seconds)
                    races[f"{hb} s, pairs"] = bench.race(hb, args.race_seconds, every=3.0, size=2)
            reaction = bench.reaction(args.trials) if part in (None, "reaction") else []
        finally:
            op.stop()
        report(lost_a, lost_b, races, reaction)
    return 0


if __name__ == "__main__":
    sys.exit(main())
