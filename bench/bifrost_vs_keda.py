#!/usr/bin/env python3
"""Bifrost's worker under a WorkerPool and under KEDA, side by side, in one run.

The worker is the test bed's Bifrost-wire worker (testbed/devcluster/bifrost_worker.py)
as Bifrost's newer worker behaves: 4 child slots, prefetch 4, a message acknowledged
only once a child runs it (a delivery waits up to 30 s for a slot, then fails to the
poison queue), 6 s of start-up before it consumes, and a SIGTERM drain (deliveries
stop, running executions finish up to the drain deadline, what is left fails
durably as `WorkerShutdown`). The same container, the same settings, in pods on the
real kubelet, on one RabbitMQ and one Redis, under:

  workerpool      a `protocol: bifrost` WorkerPool (min 1, max 4, drainsOnSigterm,
                  the broker's management API for held deliveries);
  keda-runbook    KEDA on a Deployment exactly as Bifrost's runbook configures it
                  (docs/runbooks/kubernetes-worker-deployment.md in gobifrost/bifrost:
                  the RabbitMQ scaler, AMQP, QueueLength, value 1, pollingInterval 5,
                  cooldownPeriod 3600, min 1, max 4, scale-in disabled);
  keda-scale-in   the same with scale-in enabled (the HPA's defaults), what KEDA's
                  users want; for each KEDA version asked for (2.16.1, Bifrost's pin,
                  and the newest served).

Scenarios (Bifrost's experiment suite, plus two the real worker showed), each from a
fresh workload: warm (100 sequential), cold (from zero workers), burst (32 x 4 s),
load (96 x 4 s), a busy worker's pod deleted, a drain deadline, 12 x 40 s on one
worker, and a steady trickle after a burst. Reported per scenario and setup:
producer-to-result p50/p95/p99, the time to N Ready pods and to N registered workers
(their Redis registration), executions lost (delivered, no result, pod gone) and
failed (a result that says so), worker-pod-seconds (from each pod's ADDED to its
DELETED watch event, within the scenario's window: its work plus a tail of
`--tail` seconds, where an autoscaler that cannot shrink keeps paying), and the
workers left at the end.

Usage: python bench/bifrost_vs_keda.py [--keda-versions v2.16.1,v2.21.1]
       [--scenarios warm,cold,...] [--setups workerpool,keda-runbook,keda-scale-in]
       [--trickle-seconds 330] [--tail 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testbed"))

from bench.stats import pct  # noqa: E402
from devcluster import bifrost_worker  # noqa: E402
from devcluster.bifrost_wire import (  # noqa: E402
    QUEUE,
    Ledger,
    Trickle,
    configmap,
    execution,
    pool_manifest,
    publish_executions,
    worker_template,
)
from devcluster.harness import OperatorProcess, Pools, wait_until  # noqa: E402
from devcluster.keda import Keda, built, scaled_object  # noqa: E402
from devcluster.rabbitmq_server import RabbitMQServer  # noqa: E402
from devcluster.stack import DevStack, project_image  # noqa: E402
from devcluster.watch import Watch  # noqa: E402

NS = "bench"
T = TypeVar("T")
SLOTS = 4  # BIFROST_MAX_WORKERS = BIFROST_MAX_CONCURRENCY, `processes.max`
MIN, MAX = 1, 4
STARTUP = 6.0  # s: the real worker's own start, measured alone (docs/bifrost.md)
HEARTBEAT = 2
TIMEOUT, GRACEFUL = 60, 5  # the drain deadline is their sum, as the operator sets it
SCALE_DOWN_DELAY = 30
SETTLE = 240.0

BIFROST_2025 = {  # Bifrost's published figures (its local-kubernetes-spike-results.md; Kind, KEDA 2.16.1)
    "load": "96/96, p50 74.1 s, p95 78.1 s, p99 78.2 s, 4 ready workers at ~65 s",
    "cold": "first execution 9.6 s",
    "warm": "p50 135 ms, p99 386 ms",
}


def worker_env(redis_url: str, amqp_url: str) -> dict[str, Any]:
    """What the operator injects into a `protocol: bifrost` pool's worker, written out for the
    Deployment, plus the Bifrost-wire worker's own switches (its slot pool, the drain, its start)."""
    return {
        "BIFROST_REDIS_URL": redis_url,
        "BIFROST_RABBITMQ_URL": amqp_url,
        "BIFROST_MAX_WORKERS": SLOTS,
        "BIFROST_MAX_CONCURRENCY": SLOTS,
        "BIFROST_EXECUTION_TIMEOUT_SECONDS": TIMEOUT,
        "BIFROST_GRACEFUL_SHUTDOWN_SECONDS": GRACEFUL,
        "BIFROST_WORKER_HEARTBEAT_INTERVAL_SECONDS": HEARTBEAT,
        "BIFROST_DRAIN_DEADLINE_SECONDS": TIMEOUT + GRACEFUL,
        **wire_switches(),
    }


def wire_switches() -> dict[str, Any]:
    return {"BIFROSTWIRE_SLOTS": 1, "BIFROSTWIRE_DRAIN": 1, "BIFROSTWIRE_STARTUP_SECONDS": STARTUP}


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


# --- what a scenario saw ------------------------------------------------------------------------


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # s, producer to result
    executions: int = 0
    lost: int = 0
    failed: int = 0
    ready_at: list[float] = field(default_factory=list)  # s after the start, the n-th pod Ready
    registered_at: list[float] = field(default_factory=list)  # s after the start, the n-th worker registered
    pod_seconds: float = 0.0
    workers_at_end: int = 0
    notes: list[str] = field(default_factory=list)


class Registrations:
    """When each worker first registered (`bifrost:pool:{id}` in Redis), polled every 0.2 s."""

    def __init__(self, redis_url: str) -> None:
        self.r = redis.Redis.from_url(redis_url)
        self.first: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registrations", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for key in self.r.scan_iter(match="bifrost:pool:*", count=500):
                parts = key.decode().split(":")
                if len(parts) == 3:
                    self.first.setdefault(parts[2], time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.r.close()


class PodTimeline:
    """Each pod's ADDED, first Ready and DELETED times (wall clock), from a watch."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.offset = time.time() - time.monotonic()
        self.added: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.seen = 0  # events already read (the waits call this often: each event is read once)

    def update(self) -> None:
        events = self.watch.since(0.0)
        for at, event in events[self.seen :]:
            obj = event["object"]
            name, t = obj["metadata"]["name"], at + self.offset
            self.added.setdefault(name, t)
            conditions = (obj.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                self.ready.setdefault(name, t)
            if event["type"] == "DELETED":
                self.gone.setdefault(name, t)
        self.seen = len(events)

    def live(self) -> set[str]:
        self.update()
        return set(self.added) - set(self.gone)

    def pod_seconds(self, start: float, end: float) -> float:
        self.update()
        return sum(max(0.0, min(self.gone.get(p, end), end) - max(a, start)) for p, a in self.added.items())


class Publisher:
    """One AMQP connection kept open (as Bifrost's API keeps one), on an event loop of its own
    that runs all the time in a thread (so the connection's heartbeats go out between publishes)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="publisher", daemon=True)
        self.thread.start()
        self.connection, self.channel = self._run(self._open(url))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    @staticmethod
    async def _open(url: str) -> tuple[aio_pika.abc.AbstractRobustConnection, aio_pika.abc.AbstractChannel]:
        connection = await aio_pika.connect_robust(url)
        channel = await connection.channel()
        await bifrost_worker.declare_queues(channel)
        return connection, channel

    def publish(self, jobs: list[dict[str, Any]]) -> None:
        async def go() -> None:
            for body in jobs:
                message = aio_pika.Message(json.dumps(body).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await self.channel.default_exchange.publish(message, routing_key=QUEUE)

        self._run(go())

    def close(self) -> None:
        self._run(self.connection.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# --- the workloads --------------------------------------------------------------------------------


class Workload:
    """One setup's worker pods for one scenario: made, scaled by someone, removed."""

    selector: str
    name: str

    def create(self, minimum: int) -> None:
        raise NotImplementedError

    def delete(self) -> None:
        raise NotImplementedError


class PoolWorkload(Workload):
    def __init__(self, bench: Bench, name: str) -> None:
        self.bench, self.name, self.selector = bench, name, f"bifrost.dev/pool={name}"

    def create(self, minimum: int) -> None:
        spec: dict[str, Any] = {
            "minWorkers": minimum,
            "maxWorkers": MAX,
            "processes": {"max": SLOTS},
            "heartbeatIntervalSeconds": HEARTBEAT,
            "executionTimeoutSeconds": TIMEOUT,
            "gracefulShutdownSeconds": GRACEFUL,
            "drainsOnSigterm": True,
            "scaling": {"scaleDownDelaySeconds": SCALE_DOWN_DELAY},
            "rabbitmq": {
                "urlSecretRef": {"name": "rabbitmq", "key": "url"},
                "managementUrlSecretRef": {"name": "rabbitmq", "key": "management"},
                "queues": [QUEUE],
            },
            "template": self.bench.restricted(worker_template(self.bench.image, **wire_switches())),
        }
        self.bench.pools.apply(pool_manifest(self.name, self.bench.redis_url, self.bench.image, **spec))

    def delete(self) -> None:
        self.bench.kubectl("delete", "wp", self.name, "-n", NS, "--wait=true", "--timeout=300s")


class KedaWorkload(Workload):
    def __init__(self, bench: Bench, name: str, *, scale_in: bool) -> None:
        self.bench, self.name, self.scale_in, self.selector = bench, name, scale_in, f"app={name}"

    def create(self, minimum: int) -> None:
        b = self.bench
        template = b.restricted(worker_template(b.image, **worker_env(b.redis_url, b.rabbit.url)))
        template["metadata"] = {"labels": {"app": self.name}}
        template["spec"]["terminationGracePeriodSeconds"] = TIMEOUT + GRACEFUL + 30
        template["spec"]["automountServiceAccountToken"] = False
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": self.name},
            "spec": {"replicas": minimum, "selector": {"matchLabels": {"app": self.name}}, "template": template},
        }
        so = scaled_object(
            self.name,
            deployment=self.name,
            queue=QUEUE,
            secret="rabbitmq",
            scale_in=self.scale_in,
            min_replicas=minimum,
        )
        b.apply([deployment, *so])
        wait_until(self._scaled_object_ready, timeout=SETTLE, what=f"ScaledObject {self.name} Ready", interval=0.5)

    def _scaled_object_ready(self) -> bool:
        out = json.loads(self.bench.kubectl("get", "scaledobject", self.name, "-n", NS, "-o", "json"))
        return any(c["type"] == "Ready" and c["status"] == "True" for c in out.get("status", {}).get("conditions", []))

    def delete(self) -> None:
        """The ScaledObject, its HPA (one left behind would scale a same-named Deployment to its last
        desired count at once; each scenario's workload has its own name too), the Deployment."""
        self.bench.kubectl("delete", "scaledobject", self.name, "-n", NS, "--wait=true")
        self.bench.kubectl("delete", "triggerauthentication", f"{self.name}-rabbitmq", "-n", NS, "--wait=true")
        self.bench.kubectl("delete", "hpa", f"keda-hpa-{self.name}", "-n", NS, "--ignore-not-found", "--wait=true")
        self.bench.kubectl("delete", "deployment", self.name, "-n", NS, "--wait=true")


# --- the bench ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, stack: DevStack, rabbit: RabbitMQServer, image: str, args: argparse.Namespace) -> None:
        assert stack.redis is not None
        self.stack, self.rabbit, self.image, self.args = stack, rabbit, image, args
        self.redis_url = stack.redis.url
        self.ledger = Ledger(self.redis_url)
        self.pools = Pools(stack, NS)
        self.results_seen = 0
        self.results: dict[str, dict[str, Any]] = {}
        self.publisher = Publisher(rabbit.local_url)

    def kubectl(self, *args: str) -> str:
        return self.stack.cluster.kubectl(*args, timeout=360).stdout

    def apply(self, items: list[dict[str, Any]]) -> None:
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        self.stack.cluster.kubectl("apply", "-n", NS, "-f", "-", input=body)

    @staticmethod
    def restricted(template: dict[str, Any]) -> dict[str, Any]:
        template["spec"]["containers"][0]["securityContext"] = dict(RESTRICTED)
        return template

    def new_results(self) -> dict[str, dict[str, Any]]:
        """Every result recorded so far, by execution id (the ledger read from where it was left)."""
        r = redis.Redis.from_url(self.redis_url)
        try:
            for raw in r.lrange(bifrost_worker.RESULTS, self.results_seen, -1):
                self.results_seen += 1
                result = json.loads(raw)
                self.results.setdefault(result["execution_id"], result)
        finally:
            r.close()
        return self.results

    def publish(self, jobs: list[dict[str, Any]]) -> dict[str, float]:
        """Publish `jobs` as Bifrost's API does (persistent, one open connection): when each was sent."""
        sent = time.time()
        self.publisher.publish(jobs)
        return {j["execution_id"]: sent for j in jobs}

    def wait_results(self, sent: dict[str, float]) -> None:
        wait_until(lambda: sent.keys() <= self.new_results().keys(), timeout=60, what="the results", interval=0.01)

    def registered(self, workload: Workload, regs: Registrations, pods: PodTimeline, n: int) -> None:
        wait_until(
            lambda: sum(1 for p in pods.live() if p in regs.first) >= n,
            timeout=SETTLE,
            what=f"{n} registered worker(s) of {workload.name}",
            interval=0.2,
        )

    def settle(self, sent: dict[str, float], pods: PodTimeline, timeout: float = SETTLE) -> None:
        """Until every execution has a result, or went with its pod (lost)."""

        def done() -> bool:
            results = self.new_results()
            live = pods.live()
            delivered = {
                d["execution_id"]: d["worker_id"] for d in self.ledger.deliveries() if d["execution_id"] in sent
            }
            return all(e in results or (e in delivered and delivered[e] not in live) for e in sent)

        wait_until(done, timeout=timeout, what="every execution finished or its pod gone", interval=0.5)

    def outcome(
        self, sent: dict[str, float], pods: PodTimeline, regs: Registrations, start: float, end: float
    ) -> Outcome:
        results = self.new_results()
        out = Outcome(executions=len(sent))
        for e, t in sent.items():
            if e not in results:
                out.lost += 1
                continue
            if not results[e]["success"]:
                out.failed += 1
                out.notes.append(str(results[e].get("error_type")))
            else:
                out.latencies.append(results[e]["at"] - t)
        pods.update()
        out.ready_at = sorted(t - start for t in pods.ready.values() if t >= start)
        out.registered_at = sorted(t - start for p, t in regs.first.items() if p in pods.added and t >= start)
        out.pod_seconds = pods.pod_seconds(start, end)
        out.workers_at_end = len(pods.live())
        return out

    # --- one scenario on one workload ----------------------------------------------------------

    def run(self, workload: Workload, scenario: Callable[[Workload, PodTimeline, Registrations], Outcome]) -> Outcome:
        """One scenario on a fresh `workload`; a scenario that fails is reported as such (the run goes on)."""
        watch = Watch(self.stack.cluster, NS, "pods", "-l", workload.selector)
        pods, regs = PodTimeline(watch), Registrations(self.redis_url)
        try:
            return scenario(workload, pods, regs)
        except Exception as exc:  # one scenario's failure is a result, not the end of the run
            return Outcome(notes=[f"scenario failed: {type(exc).__name__}: {exc}"])
        finally:
            workload.delete()
            wait_until(lambda: not pods.live(), timeout=SETTLE, what=f"{workload.name}'s pods gone", interval=0.5)
            watch.stop()
            regs.stop()

    def tail_window(self, sent: dict[str, float], pods: PodTimeline, regs: Registrations, start: float) -> Outcome:
        """Wait for the work, then `--tail` seconds more; the outcome over [start, that end]."""
        self.settle(sent, pods)
        end = time.time() + self.args.tail
        wait_until(lambda: time.time() >= end, timeout=self.args.tail + 5, what="the tail window", interval=0.5)
        return self.outcome(sent, pods, regs, start, end)

    def from_one(self, workload: Workload, pods: PodTimeline, regs: Registrations) -> float:
        workload.create(MIN)
        self.registered(workload, regs, pods, MIN)
        return time.time()

    # --- the scenarios ---------------------------------------------------------------------------

    def warm(self, workload: Workload, pods: PodTimeline, regs: Registrations) -> Outcome:
        start = self.from_one(workload, pods, regs)
        sent: dict[str, float] = {}
        for _ in range(100):
            one = self.publish([execution(0.0)])
            sent.update(one)
            self.wait_results(one)
        return self.outcome(sent, pods, regs, start, time.time())

    def cold(self, workload: Workload, pods: PodTimeline, regs: Registrations) -> Outcome:
        workload.create(0)
        start = time.time()
        sent = self.publish([execution(0.0)])
        self.settle(sent, pods)
        return self.outcome(sent, pods, regs, start, time.time())

    def burst(self, count: int, seconds: float) -> Callable[[Workload, PodTimeline, Registrations], Outcome]:
        def scenario(workload: Workload, pods: PodTimeline, regs: Registrations) -> Outcome:
            start = self.from_one(workload, pods, regs)
            sent = self.publish([execution(seconds) for _ in range(count)])
            return self.tail_window(sent, pods, regs, start)

        return scenario

    def busy_pod_deleted(self, workload: Workload, pods: PodTimeline, regs: Registrations) -> Outcome:
        """8 executions of 20 s on 2 workers; one busy worker's pod deleted while they run."""
        start = self.from_one(workload, pods, regs)
        sent = self.publish([execution(20.0) for _ in range(2 * SLOTS)])
        victim = self.busy_worker(sent, pods)
        self.kubectl("delete", "pod", victim, "-n", NS, "--wait=false")
        return self.tail_window(sent, pods, regs, start)

    def drain_deadline(self, workload: Workload, pods: PodTimeline, regs: Registrations) -> Outcome:
        """4 executions of 50 s, their pod deleted 10 s in: they end within the drain deadline
        (the execution timeout plus the graceful seconds, 65 s), so the worker's drain keeps them."""
        start = self.from_one(workload, pods, regs)
        sent = self.publish([execution(50.0) for _ in range(SLOTS)])
        victim = self.busy_worker(sent, pods)
        wait_until(lambda: time.time() >= start + 10, timeout=30, what="10 s into the executions", interval=0.5)
        self.kubectl("delete", "pod", victim, "-n", NS, "--wait=false")
        return self.tail_window(sent, pods, regs, start)

    def busy_worker(self, sent: dict[str, float], pods: PodTimeline) -> str:
        def running() -> str | None:
            live = pods.live()
            workers = [d["worker_id"] for d in self.ledger.deliveries() if d["execution_id"] in sent]
            return next((w for w in workers if w in live), None)

        return wait_until(running, timeout=SETTLE, what="a worker running the executions", interval=0.3)

    def trickle(self, workload: Workload, pods: PodTimeline, regs: Registrations) -> Outcome:
        """A burst brings the workload to its maximum, then one 2 s execution a second for
        `--trickle-seconds` (about half of one worker): does it come back to one worker?"""
        start = self.from_one(workload, pods, regs)
        sent = self.publish([execution(4.0) for _ in range(MAX * SLOTS * 2)])
        with Trickle(self.rabbit.local_url, seconds=2.0, every=1.0) as steady:
            end = time.time() + self.args.trickle_seconds
            wait_until(
                lambda: time.time() >= end, timeout=self.args.trickle_seconds + 5, what="the trickle", interval=1
            )
        sent.update(steady.sent_at)
        workers_at_end = len(pods.live())
        self.settle(sent, pods)  # the last trickled executions end
        out = self.outcome(sent, pods, regs, start, end)
        out.workers_at_end = workers_at_end
        return out


SCENARIOS = ("warm", "cold", "burst", "load", "busy-pod-deleted", "drain-deadline", "12x40s", "trickle")


def scenario_fn(bench: Bench, name: str) -> Callable[[Workload, PodTimeline, Registrations], Outcome]:
    return {
        "warm": bench.warm,
        "cold": bench.cold,
        "burst": bench.burst(32, 4.0),
        "load": bench.burst(96, 4.0),
        "busy-pod-deleted": bench.busy_pod_deleted,
        "drain-deadline": bench.drain_deadline,
        "12x40s": bench.burst(12, 40.0),
        "trickle": bench.trickle,
    }[name]


def row(setup: str, o: Outcome) -> str:
    ms = o.latencies
    lat = f"{pct(ms, 50):7.2f} {pct(ms, 95):7.2f} {pct(ms, 99):7.2f}" if ms else f"{'-':>7} {'-':>7} {'-':>7}"
    top = max(len(o.ready_at), 1)
    ready = f"{o.ready_at[-1]:.1f}" if o.ready_at else "-"
    reg = f"{o.registered_at[top - 1]:.1f}" if len(o.registered_at) >= top else "-"
    return (
        f"  {setup:<22} {lat} {o.executions:>5} {o.lost:>5} {o.failed:>6} {top:>3} {ready:>7} {reg:>7} "
        f"{o.pod_seconds:>8.0f} {o.workers_at_end:>4}"
    )


def report(results: dict[str, dict[str, Outcome]]) -> None:
    print("\nproducer-to-result (s), executions, lost, failed, pods Ready at most (N) and the time to the N-th Ready")
    print("pod and to the N-th registered worker (s from the start), worker-pod-seconds, workers at the end")
    header = (
        f"  {'setup':<22} {'p50':>7} {'p95':>7} {'p99':>7} {'execs':>5} {'lost':>5} {'failed':>6} {'N':>3} "
        f"{'ready':>7} {'regist.':>7} {'pod-s':>8} {'end':>4}"
    )
    for scenario, by_setup in results.items():
        print(
            f"\n{scenario}" + (f"   (Bifrost's figures: {BIFROST_2025[scenario]})" if scenario in BIFROST_2025 else "")
        )
        print(header)
        for setup, o in by_setup.items():
            print(row(setup, o))
            for note in sorted(set(o.notes)):
                print(f"    {setup}: {note} (x{o.notes.count(note)})")
        base = by_setup.get("workerpool")
        for setup, o in by_setup.items():
            if base is None or setup == "workerpool" or not o.latencies or not base.latencies:
                continue
            print(
                f"  {setup} / workerpool: p99 {pct(o.latencies, 99) / pct(base.latencies, 99):.1f}x, "
                f"pod-seconds {o.pod_seconds / max(base.pod_seconds, 1):.2f}x"
            )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keda-versions", default="v2.16.1,v2.21.1")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--setups", default="workerpool,keda-runbook,keda-scale-in")
    ap.add_argument("--trickle-seconds", type=float, default=330.0, help="over the HPA's 300 s scale-down window")
    ap.add_argument("--tail", type=float, default=60.0)
    args = ap.parse_args()
    # A SIGTERM (a timeout, a kill) unwinds the stack like Ctrl-C: the node's network and its
    # containers are removed, not left to block the next cluster on this machine.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scenarios = [s for s in args.scenarios.split(",") if s]
    setups = args.setups.split(",")
    versions = [v for v in args.keda_versions.split(",") if v]
    work = Path(tempfile.mkdtemp(prefix="wpo-bench-keda-"))
    results: dict[str, dict[str, Outcome]] = {s: {} for s in scenarios}
    with DevStack(work / "stack") as stack, stack.new_rabbitmq(work / "rabbitmq") as rabbit:
        stack.restricted_namespace(NS)
        stack.cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(configmap(NS)))
        stack.cluster.kubectl(
            "create", "secret", "generic", "rabbitmq", "-n", NS,
            f"--from-literal=url={rabbit.url}", f"--from-literal=management={rabbit.management_url}",
        )  # fmt: skip
        publish_executions(rabbit.local_url, [])  # the work queue, declared as Bifrost's API does
        bench = Bench(stack, rabbit, project_image(build=False)[0], args)
        try:
            run_setups(bench, stack, work, scenarios, setups, versions, results)
        finally:
            bench.publisher.close()
    report(results)
    return 0


def run_setups(
    bench: Bench,
    stack: DevStack,
    work: Path,
    scenarios: list[str],
    setups: list[str],
    versions: list[str],
    results: dict[str, dict[str, Outcome]],
) -> None:
    if "workerpool" in setups:
        op = OperatorProcess(stack, NS, work).start()
        try:
            for i, s in enumerate(scenarios):  # a name of its own each: no state of the last one carries over
                results[s]["workerpool"] = bench.run(PoolWorkload(bench, f"wp{i}"), scenario_fn(bench, s))
                print(s, "workerpool", row("workerpool", results[s]["workerpool"]), flush=True)
        finally:
            op.stop()
    for version in versions:
        if not built(version):
            print(f"KEDA {version}: building (hack/build-keda.sh)", flush=True)
        with Keda(work / f"keda-{version}", stack.cluster, version):
            for setup in (s for s in setups if s.startswith("keda")):
                if setup == "keda-runbook" and version != versions[0]:
                    continue  # the runbook pins one version: the first asked for
                label = f"{setup} {version}"
                for i, s in enumerate(scenarios):
                    name = f"kw{i}-{setup.removeprefix('keda-')}-{version.replace('.', '')}"
                    wl = KedaWorkload(bench, name, scale_in=setup == "keda-scale-in")
                    results[s][label] = bench.run(wl, scenario_fn(bench, s))
                    print(s, label, row(label, results[s][label]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
