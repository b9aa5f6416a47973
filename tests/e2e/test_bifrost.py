"""`protocol: bifrost` end to end: Bifrost-wire workers (the test bed's, speaking the
recorded wire) in pods on the real node, a real Redis and a real RabbitMQ.

The safety property is asserted on the event itself: the Bifrost-wire worker,
like Bifrost's, loses whatever runs when its pod is stopped, and records every
delivery and every result. So a worker deleted, evicted or replaced while busy
shows up as a delivery without a result (`lost`), whatever the status says.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from devcluster import binaries
from devcluster.bifrost_wire import Ledger, configmap, execution, lost, pool_manifest, publish_executions
from devcluster.client import Client
from devcluster.harness import READY, SCALE, OperatorProcess, Pools, wait_until
from devcluster.harness import pool_manifest as seed_pool_manifest
from devcluster.rabbitmq_server import RabbitMQServer, RabbitMQVhost
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack, project_image

from .helpers import ready_workers, terminating

pytestmark = pytest.mark.cluster

NODE = "wpo-node"
RUN = 60.0  # executions of a few seconds, on a few workers


def prepare(stack: DevStack, namespace: str, broker: RabbitMQServer | RabbitMQVhost) -> str:
    """The namespace ready for Bifrost-wire pools: the worker's ConfigMap, the RabbitMQ URL in a Secret,
    and the work queue declared (Bifrost's API declares it, with its dead-letter arguments)."""
    publish_executions(broker.local_url, [])
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(configmap(namespace)))
    stack.cluster.kubectl(
        "create", "secret", "generic", "rabbitmq", "-n", namespace, f"--from-literal=url={broker.url}"
    )
    return project_image(build=False)[0]


def manifest(name: str, redis_server: RedisServer, image: str, **spec: Any) -> dict[str, Any]:
    return pool_manifest(name, redis_server.url, image, **spec)


def processes(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for w in status.get("workerDetails", []) for p in w.get("processes", [])]


def test_bifrost_workers_are_mirrored_scale_with_rabbitmq_and_only_idle_ones_are_removed(
    pools: Pools,
    operator: OperatorProcess,
    redis_server: RedisServer,
    rabbitmq_server: RabbitMQVhost,
    bifrost: str,
    namespace: str,
) -> None:
    pools.apply(manifest("b", redis_server, bifrost, executionTimeoutSeconds=6, gracefulShutdownSeconds=3))
    ready_workers(pools, "b", 1)
    detail = pools.status("b")["workerDetails"][0]
    assert (detail["minWorkers"], detail["maxWorkers"], detail["busyCount"], detail["processes"]) == (0, 2, 0, [])
    pools.wait_status("b", lambda s: s.get("queue", {}).get("depth") == 0, "the queue read: empty")

    # One execution outlives the timeout and ignores SIGTERM: it is `killed`, still carrying its execution.
    stuck = execution(30, ignore_term=True)
    burst = [execution(4) for _ in range(5)]
    publish_executions(rabbitmq_server.local_url, [stuck, *burst])
    pools.wait_status("b", lambda s: s.get("desiredWorkers") == 3 and s.get("workers") == 3, "scaled up to 3", SCALE)
    killed = pools.wait_status(
        "b",
        lambda s: any(p["state"] == "killed" and p.get("execution") for p in processes(s)),
        "a killed process with its execution",
        timeout=RUN,
    )
    assert any(p["execution"]["executionId"] == stuck["execution_id"] for p in processes(killed) if p.get("execution"))

    ledger = Ledger(redis_server.url)
    wait_until(lambda: ledger.finished() >= {e["execution_id"] for e in [stuck, *burst]}, timeout=RUN, what="results")
    pools.wait_status("b", lambda s: s.get("workers") == 1 and s.get("desiredWorkers") == 1, "scaled down", SCALE)
    assert lost(ledger) == [], "a worker was stopped while it ran an execution"
    assert len(ledger.deliveries()) == 6, "each execution delivered once"
    reasons = [e["reason"] for e in pools.events("b")]
    assert "ScalingUp" in reasons and "ScalingDown" in reasons
    assert operator.metric("workerpool_scale_events_total", namespace=namespace, pool="b", action="delete") >= 2


def test_kubectl_drain_of_busy_bifrost_workers_is_held_until_their_executions_finish(
    pools: Pools,
    webhook_operator: OperatorProcess,
    redis_server: RedisServer,
    rabbitmq_server: RabbitMQVhost,
    bifrost: str,
    stack: DevStack,
    namespace: str,
) -> None:
    pools.apply(manifest("b", redis_server, bifrost, minWorkers=2, maxWorkers=2, processes={"max": 1}))
    names = ready_workers(pools, "b", 2)
    running = [execution(8) for _ in names]
    publish_executions(rabbitmq_server.local_url, running)
    pools.wait_status("b", lambda s: s.get("busyCount") == 2, "both workers busy", timeout=SCALE)
    ledger = Ledger(redis_server.url)
    drain = subprocess.Popen(
        [
            str(binaries.find("kubectl")),
            "drain",
            NODE,
            "--pod-selector=bifrost.dev/pool=b",
            "--delete-emptydir-data",
            "--ignore-daemonsets",
            "--timeout=90s",
        ],
        env=stack.cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while drain.poll() is None:
            assert time.monotonic() < deadline, "the drain did not finish"
            going = {w for w in names if terminating(stack.cluster, namespace, w)}
            assert not lost(ledger, going), f"evicted while busy: {lost(ledger, going)}"
            time.sleep(0.2)
        out = drain.communicate()[0]
    finally:
        if drain.poll() is None:
            drain.kill()
        stack.cluster.kubectl("uncordon", NODE)
    assert drain.returncode == 0, out
    assert ledger.finished() >= {e["execution_id"] for e in running}
    assert lost(ledger) == []
    assert "Too Many Requests" in out or "will retry" in out, out  # the drain was told to wait
    held = [e["message"] for e in pools.events("b") if e["reason"] == "EvictionHeld"]
    assert held and all("1 running execution" in m for m in held), held
    assert any(e["execution_id"] in out for e in running), out  # the drain was told what it waits for


def test_a_template_change_replaces_only_workers_with_nothing_running(
    pools: Pools,
    operator: OperatorProcess,
    redis_server: RedisServer,
    rabbitmq_server: RabbitMQVhost,
    bifrost: str,
) -> None:
    spec: dict[str, Any] = {"minWorkers": 2, "maxWorkers": 2, "processes": {"max": 1}}
    pools.apply(manifest("b", redis_server, bifrost, **spec))
    old = set(ready_workers(pools, "b", 2))
    job = execution(10)
    publish_executions(rabbitmq_server.local_url, [job])
    status = pools.wait_status("b", lambda s: s.get("busyCount") == 1, "one worker busy", timeout=SCALE)
    (busy,) = [w["workerId"] for w in status["workerDetails"] if w["busyCount"] == 1]
    changed = manifest("b", redis_server, bifrost, **spec)
    changed["spec"]["template"]["metadata"] = {"labels": {"rollout": "2"}}
    pools.apply(changed)
    ledger = Ledger(redis_server.url)
    # The idle one is replaced while the busy one runs; the busy one goes only once it is done.
    wait_until(
        lambda: not ({p["metadata"]["name"] for p in pools.live_pods("b")} & (old - {busy})),
        timeout=SCALE,
        what="the idle outdated worker replaced",
    )
    assert job["execution_id"] not in ledger.finished()
    assert busy in {p["metadata"]["name"] for p in pools.live_pods("b")}
    wait_until(
        lambda: not ({p["metadata"]["name"] for p in pools.live_pods("b")} & old),
        timeout=RUN,
        what="every outdated worker replaced",
    )
    ready_workers(pools, "b", 2)
    assert ledger.finished() == {job["execution_id"]} and lost(ledger) == []


def test_a_recycle_goes_once_to_an_idle_worker_also_across_a_restart_and_a_busy_one_is_rejected(
    pools: Pools,
    redis_server: RedisServer,
    rabbitmq_server: RabbitMQVhost,
    bifrost: str,
    stack: DevStack,
    namespace: str,
    tmp_path: Path,
) -> None:
    op = OperatorProcess(stack, namespace, tmp_path).start()
    try:
        pools.apply(manifest("b", redis_server, bifrost, minWorkers=2, maxWorkers=2, processes={"max": 1}))
        ready_workers(pools, "b", 2)
        publish_executions(rabbitmq_server.local_url, [execution(20)])
        status = pools.wait_status("b", lambda s: s.get("busyCount") == 1, "one worker busy", timeout=SCALE)
        (busy,) = [w["workerId"] for w in status["workerDetails"] if w["busyCount"] == 1]
        (idle,) = [w["workerId"] for w in status["workerDetails"] if w["busyCount"] == 0]
        request = f"{idle},{busy}"
        pools.annotate("b", request)
        record = pools.wait_status("b", lambda s: s.get("lastRecycle", {}).get("request") == request, "recycle")
        results = {r["workerId"]: r for r in record["lastRecycle"]["results"]}
        assert results[idle]["status"] == "recycle_requested"
        assert results[busy]["status"] == "rejected"
        assert "kills running executions" in results[busy]["reason"]
        ledger = Ledger(redis_server.url)
        got = wait_until(lambda: ledger.commands(), timeout=10, what="the command at the idle worker")
        op.stop()
        op = OperatorProcess(stack, namespace, tmp_path).start()
        wait_until(
            lambda: op.metric("workerpool_reconcile_duration_seconds_count", namespace=namespace, pool="b") >= 3,
            timeout=READY,
            what="the restarted operator to reconcile the pool",
        )
        assert ledger.commands() == got and len(got) == 1
        assert got[0]["worker_id"] == idle and got[0]["handled"]
        assert json.loads(got[0]["raw"]) == {"action": "recycle_all", "reason": request}
        reasons = [e["reason"] for e in pools.events("b")]
        assert "RecycleRequested" in reasons and "RecycleRejected" in reasons
    finally:
        op.stop()


def test_rabbitmq_down_during_a_burst_stalls_without_scale_down_and_converges_after(
    pools: Pools,
    operator: OperatorProcess,
    redis_server: RedisServer,
    rabbitmq_own: RabbitMQServer,
    stack: DevStack,
    namespace: str,
) -> None:
    rabbitmq_server = rabbitmq_own  # stopped and started here: a broker of its own
    bifrost = prepare(stack, namespace, rabbitmq_own)
    window = 2
    spec = {"maxWorkers": 3, "processes": {"max": 1}, "scaling": {"scaleDownDelaySeconds": window}}
    pools.apply(manifest("b", redis_server, bifrost, **spec))
    ready_workers(pools, "b", 1)
    burst = [execution(6) for _ in range(3)]
    publish_executions(rabbitmq_server.local_url, burst)
    pools.wait_status("b", lambda s: s.get("workers") == 3 and s.get("busyCount") == 3, "3 busy workers", SCALE)

    rabbitmq_server.stop_broker()
    stalled = pools.wait_condition("b", "Stalled", timeout=SCALE)
    assert stalled["reason"] == "RabbitMQUnavailable", stalled
    assert "no scale-down" in stalled["message"] and "guest" not in stalled["message"]
    # The heartbeats are still shown: the executions finish and the workers read idle...
    pools.wait_status("b", lambda s: s.get("busyCount") == 0, "idle workers shown while RabbitMQ is down", RUN)
    rounds = operator.metric("workerpool_reconcile_duration_seconds_count", namespace=namespace, pool="b")
    idle_since = time.monotonic()
    # ...and the operator goes on deciding (rounds), well past the scale-down window, without removing any.
    wait_until(
        lambda: (
            time.monotonic() - idle_since > 3 * window
            and operator.metric("workerpool_reconcile_duration_seconds_count", namespace=namespace, pool="b")
            > rounds + 3
        ),
        timeout=RUN,
        what="rounds past the scale-down window",
    )
    assert operator.metric("workerpool_scale_events_total", namespace=namespace, pool="b", action="delete") == 0
    assert len(pools.live_pods("b")) == 3

    rabbitmq_server.start()
    pools.wait_condition("b", "Stalled", status="False", timeout=SCALE)
    pools.wait_status("b", lambda s: s.get("workers") == 1, "scaled down after the outage", SCALE)
    ledger = Ledger(redis_server.url)
    assert ledger.finished() >= {e["execution_id"] for e in burst} and lost(ledger) == []


def test_a_seed_pool_and_a_bifrost_pool_share_one_operator_and_one_redis(
    pools: Pools,
    operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
    rabbitmq_server: RabbitMQVhost,
    bifrost: str,
) -> None:
    pools.apply(manifest("b", redis_server, bifrost, minWorkers=2, maxWorkers=2))
    pools.apply(seed_pool_manifest("s", redis_server.url, minWorkers=2, maxWorkers=2))
    mine = {name: set(ready_workers(pools, name, 2)) for name in ("b", "s")}
    for name in ("b", "s"):
        pods = {p["metadata"]["name"] for p in pools.live_pods(name)}
        assert mine[name] == pods, f"{name} reports only its own workers"
    eid = client.submit("sleep", {"seconds": 0.5})
    assert client.wait_result(eid, timeout=30).worker_id in mine["s"]
    job = execution(0.5)
    publish_executions(rabbitmq_server.local_url, [job])
    ledger = Ledger(redis_server.url)
    wait_until(lambda: job["execution_id"] in ledger.finished(), timeout=30, what="the Bifrost execution")
    assert {d["worker_id"] for d in ledger.deliveries()} <= mine["b"]
    assert pools.status("s")["workerDetails"][0]["minWorkers"] == 1  # the seed's own bounds, from its wire


def test_the_api_server_admits_the_example_and_refuses_what_a_bifrost_pool_cannot_run(
    pools: Pools, stack: DevStack, namespace: str
) -> None:
    example = (Path(__file__).resolve().parents[2] / "examples" / "bifrost-workerpool.yaml").read_text()
    example = example.replace("namespace: bifrost", f"namespace: {namespace}")
    stack.cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=example)

    def refused(spec: dict[str, Any]) -> str:
        body = {"apiVersion": "bifrost.dev/v1alpha1", "kind": "WorkerPool", "metadata": {"name": "x"}, "spec": spec}
        out = stack.cluster.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(body), check=False
        )
        assert out.returncode != 0, f"admitted: {spec}"
        return out.stderr

    redis = {"url": "redis://r:6379/0"}
    rabbitmq = {"url": "amqp://r:5672/", "queues": ["workflow-executions"]}
    containers = {"spec": {"containers": [{"name": "worker", "image": "bifrost"}]}}
    assert "rabbitmq is required" in refused({"protocol": "bifrost", "redis": redis, "template": containers})
    assert "not allowed otherwise" in refused({"redis": redis, "rabbitmq": rabbitmq})
    assert "needs template.spec.containers" in refused({"protocol": "bifrost", "redis": redis, "rabbitmq": rabbitmq})
    assert "queues" in refused(
        {"protocol": "bifrost", "redis": redis, "rabbitmq": {**rabbitmq, "queues": []}, "template": containers}
    )
    assert "Unsupported value" in refused({"protocol": "celery", "redis": redis})
