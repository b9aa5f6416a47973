"""Fault tests: the operator and the workers under kill -9, Redis and API
server restarts, and arbitrary input. Each asserts that nothing was lost.
Run alone with `pytest -m faults`."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.client import Client
from devcluster.harness import (
    READY,
    RECYCLE,
    SCALE,
    STATUS,
    OperatorProcess,
    Pools,
    pool_manifest,
    wait_until,
    worker_container,
)
from devcluster.podlogs import PodLogs
from devcluster.procs import pid_alive
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack

pytestmark = [pytest.mark.faults, pytest.mark.cluster]

SEED = int(os.environ.get("FAULT_SEED", "20261126"))


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)


@pytest.fixture
def pools(stack: DevStack, namespace: str) -> Pools:
    return Pools(stack, namespace)


@pytest.fixture
def client(redis_server: RedisServer) -> Client:
    return Client(redis_server.url)


@pytest.fixture
def operator(stack: DevStack, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(stack, namespace, tmp_path).start()
    yield op
    op.stop()


def worker_ids(status: dict[str, Any]) -> list[str]:
    return [w["workerId"] for w in status.get("workerDetails", [])]


def busy_deletions(logs: PodLogs) -> list[str]:
    """Pods whose worker was told to stop while it was running something (from the pods' logs)."""
    return [
        f"{pod}: {line}"
        for pod, lines in logs.lines().items()
        for line in lines
        if "stopping: no new work; waiting for" in line and "waiting for 0 " not in line
    ]


def stops(logs: PodLogs) -> list[str]:
    return [pod for pod, lines in logs.lines().items() if any("stopping: no new work" in li for li in lines)]


def test_operator_killed_at_random_points(
    stack: DevStack,
    namespace: str,
    tmp_path: Path,
    pools: Pools,
    client: Client,
    redis_server: RedisServer,
    rng: random.Random,
) -> None:
    """kill -9 during scale-up, scale-down and recycle handling; every restart must
    not duplicate or orphan pods, delete a busy worker, or publish a recycle twice."""
    logs = PodLogs(stack.node.pod_logs_dir, namespace).start()
    op = OperatorProcess(stack, namespace, tmp_path).start()
    manifest = pool_manifest(
        "p",
        redis_server.url,
        minWorkers=1,
        maxWorkers=4,
        processes={"min": 1, "max": 1},
        scaling={"scaleDownDelaySeconds": 1},
    )
    pools.apply(manifest)
    pools.wait_status("p", lambda s: s.get("readyWorkers") == 1, "a ready worker", timeout=READY)
    sub = client.r.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe("worker:*:commands")
    submitted: list[str] = []
    try:
        for round_ in range(5):
            status = pools.wait_status("p", lambda s: bool(s.get("workerDetails")), "a live worker", timeout=READY)
            target = status["workerDetails"][0]["workerId"]
            submitted += [client.submit("sleep", {"seconds": rng.uniform(0.5, 2.0)}) for _ in range(rng.randint(2, 6))]
            value = f"{target}@round{round_}"
            pools.annotate("p", value)
            time.sleep(rng.uniform(0.0, 1.5))  # the injected fault's timing, not a wait for a condition
            op.kill()
            op = OperatorProcess(stack, namespace, tmp_path).start()
            status = pools.wait_status(
                "p",
                lambda s, v=value: s.get("lastRecycle", {}).get("request") == v,
                f"round {round_} recycle handled",
                timeout=RECYCLE + READY,
            )
            published = [r for r in status["lastRecycle"]["results"] if r["status"] == "recycle_requested"]
            deadline = time.monotonic() + 2
            messages = []
            while time.monotonic() < deadline:
                m = sub.get_message(timeout=0.2)
                if m is not None:
                    messages.append(m)
            assert len(messages) == len(published), (round_, messages, status["lastRecycle"])
        results = [client.wait_result(i, timeout=90) for i in submitted]
        assert all(r.success for r in results), [r for r in results if not r.success]
        status = pools.wait_status(
            "p",
            lambda s: s.get("workers") == 1 and s.get("desiredWorkers") == 1,
            "settled at minWorkers",
            timeout=SCALE,
        )
        # The status may lag the last round's creates by its write interval: the pods themselves
        # decide. Duplicates or orphans left by a kill would never go, and this would time out.
        wait_until(lambda: len(pools.live_pods("p")) == 1, timeout=SCALE, what="one pod left: no duplicate survives")
        assert all(p["metadata"]["ownerReferences"][0]["name"] == "p" for p in pools.pods("p"))
        assert stops(logs), "no worker logged its stop: the log collection sees nothing"
        assert busy_deletions(logs) == []
    finally:
        logs.stop()
        sub.close()
        op.stop()


def test_redis_restart_recovers_within_one_resync(
    pools: Pools,
    operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
) -> None:
    manifest = pool_manifest("p", redis_server.url, minWorkers=2, maxWorkers=3)
    manifest["spec"]["scaling"] = {"scaleDownDelaySeconds": 1}
    pools.apply(manifest)
    pools.wait_status("p", lambda s: s.get("readyWorkers") == 2, "2 ready workers", timeout=READY)
    assert operator.proc is not None
    redis_server.stop()
    pools.wait_condition("p", "Stalled")
    # Demand is unknown, so lowering minWorkers must not remove a worker: the
    # reconcile of the new generation keeps both (its decision is in the status).
    manifest["spec"]["minWorkers"] = 1
    pools.apply(manifest)
    status = pools.wait_status("p", lambda s: s.get("observedGeneration") == 2, "generation 2 handled", STATUS)
    assert status["desiredWorkers"] == 2, status
    assert len(pools.live_pods("p")) == 2, "scaled down while Redis was gone"

    redis_server.start()  # same port, data gone (no persistence): every registration must come back
    pools.wait_status(
        "p",
        lambda s: (
            s.get("readyWorkers", 0) >= 1
            and s.get("readyWorkers") == s.get("workers")
            and all(c["status"] == "False" for c in s.get("conditions", []) if c["type"] == "Stalled")
        ),
        "the pool recovered",
        timeout=STATUS,
    )
    # Demand is known again: the lowered minWorkers now takes effect.
    pools.wait_status("p", lambda s: s.get("workers") == 1 and s.get("desiredWorkers") == 1, "scaled to 1", SCALE)
    assert operator.proc.poll() is None  # no crash, no restart loop
    assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in pools.live_pods("p"))
    assert client.wait_result(client.submit("noop"), timeout=30).success


def test_redis_restarted_empty_under_a_live_pool_deletes_no_pod_and_the_workers_come_back(
    pools: Pools,
    operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
) -> None:
    """A Redis with no persistence (or a new managed instance) restarts at once: every
    registration, lease and queued execution is gone. No fresh heartbeat is not idle:
    no pod is deleted (the operator's delete counter), the same workers re-register,
    and the status is back to Ready with them."""
    manifest = pool_manifest("p", redis_server.url, minWorkers=2, maxWorkers=3)
    manifest["spec"]["scaling"] = {"scaleDownDelaySeconds": 300}  # no scale-down is ever due here
    pools.apply(manifest)
    status = pools.wait_status("p", lambda s: s.get("readyWorkers") == 2, "2 ready workers", timeout=READY)
    before = sorted(w["workerId"] for w in status["workerDetails"])
    deletes = operator.metric("workerpool_scale_events_total", pool="p", action="delete")
    redis_server.restart()
    back = pools.wait_status(
        "p",
        lambda s: (
            s.get("readyWorkers") == 2
            and sorted(w["workerId"] for w in s.get("workerDetails", [])) == before
            and any(c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", []))
        ),
        "the same two workers re-registered and Ready",
        timeout=STATUS + READY,
    )
    assert back["workers"] == 2
    assert operator.metric("workerpool_scale_events_total", pool="p", action="delete") == deletes
    assert sorted(p["metadata"]["name"] for p in pools.live_pods("p")) == before
    assert client.wait_result(client.submit("noop"), timeout=30).success


def test_apiserver_restart_operator_reconnects(
    stack: DevStack,
    pools: Pools,
    operator: OperatorProcess,
    redis_server: RedisServer,
) -> None:
    pools.apply(pool_manifest("p", redis_server.url))
    pools.wait_status("p", lambda s: s.get("readyWorkers") == 1, "a ready worker", timeout=READY)
    stack.cluster.restart_apiserver()
    # A change made after the restart must reach the operator through its (re-established) watches.
    pools.apply(pool_manifest("p", redis_server.url, minWorkers=2))
    pools.wait_status(
        "p",
        lambda s: s.get("readyWorkers") == 2 and s.get("observedGeneration") == 2,
        "scaled to the new minWorkers after the restart",
        timeout=READY,
    )
    assert operator.proc is not None and operator.proc.poll() is None


def test_killing_processes_and_pods_under_load_loses_no_execution(
    stack: DevStack,
    namespace: str,
    pools: Pools,
    operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
    rng: random.Random,
) -> None:
    template = {"spec": {"containers": [worker_container(env=[{"name": "REGISTRATION_TTL_SECONDS", "value": "3"}])]}}
    pools.apply(
        pool_manifest(
            "p", redis_server.url, minWorkers=3, maxWorkers=3, processes={"min": 2, "max": 2}, template=template
        )
    )
    pools.wait_status("p", lambda s: s.get("readyWorkers") == 3, "3 ready workers", timeout=READY)
    ids = [client.submit("sleep", {"seconds": rng.uniform(0.2, 1.0)}) for _ in range(60)]
    pods = {p["metadata"]["name"]: p for p in pools.pods("p")}
    killed_processes = killed_pods = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and client.r.zcard(client.queue) > 5:
        status = pools.status("p")
        busy = [
            (w["workerId"], p["pid"])
            for w in status.get("workerDetails", [])
            for p in w["processes"]
            if p["state"] == "busy"
        ]
        if busy and rng.random() < 0.6:
            wid, pid = rng.choice(busy)  # the pid as the pod sees it
            host_pid = stack.node.host_pid(pods.get(wid, {}), pid)
            if host_pid is None:  # a pod new since the last read
                pods = {p["metadata"]["name"]: p for p in pools.pods("p")}
                host_pid = stack.node.host_pid(pods.get(wid, {}), pid)
            if host_pid is not None and pid_alive(host_pid):
                os.kill(host_pid, signal.SIGKILL)
                killed_processes += 1
        elif rng.random() < 0.3:
            pod = rng.choice(pools.live_pods("p"))["metadata"]["name"]
            stack.cluster.kubectl(
                "delete", "pod", pod, "-n", namespace, "--grace-period=0", "--force", "--wait=false", check=False
            )
            killed_pods += 1
        time.sleep(rng.uniform(0.2, 0.6))  # the injected fault's timing
    results = {i: client.wait_result(i, timeout=120) for i in ids}
    outcomes = {r.error_type or "ok" for r in results.values()}
    # Every execution ended with a result: success, or the crash of the process running it.
    assert outcomes <= {"ok", "ProcessCrashed"}, outcomes
    assert len(results) == len(ids)
    assert client.r.zcard(client.queue) == 0
    assert client.r.zcard(f"{client.queue}:leases") == 0
    assert killed_processes + killed_pods > 0
    print(
        f"killed {killed_processes} processes and {killed_pods} pods; {len(ids)} executions, "
        f"{sum(1 for r in results.values() if r.success)} succeeded"
    )


def junk_text(rng: random.Random, size: int = 40) -> str:
    alphabet = 'abc:,*@{}[]"0123456789-_ \\\u00e9\u2603\ufffd\x01'
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, size)))


def junk_heartbeat(rng: random.Random, wid: str, namespace: str) -> str:
    """Shapes near the real one: the right routing fields, wrong or missing everything else."""
    body: dict[str, object] = {"type": "worker_heartbeat", "worker_id": wid, "pool": "p", "namespace": namespace}
    for key in ("pool_size", "idle_count", "busy_count", "timestamp", "started_at", "processes", "hostname"):
        if rng.random() < 0.6:
            body[key] = rng.choice([junk_text(rng, 8), -1, 2**70, None, [], {}, [{"pid": "x", "state": "draining"}]])
    return json.dumps(body)


def test_garbage_in_redis_and_annotations_never_crashes_the_operator(
    pools: Pools,
    operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
    rng: random.Random,
) -> None:
    pools.apply(pool_manifest("p", redis_server.url))
    status = pools.wait_status("p", lambda s: s.get("readyWorkers") == 1, "a ready worker", timeout=READY)
    wid = status["workerDetails"][0]["workerId"]
    samples = [junk_text(rng) if rng.random() < 0.4 else junk_heartbeat(rng, wid, pools.ns) for _ in range(500)]
    for raw in samples:
        client.r.publish("bifrost:workers:heartbeat", raw)
    for i in range(100):
        client.r.hset(
            f"worker:junk-{i}",
            mapping={
                "started_at": rng.choice(["x", "2026-01-01", ""]),
                "pool_size": rng.choice(["1", "-3", "many"]),
                "heartbeat": rng.choice(samples),
                "pool": "p",
                "namespace": pools.ns,
            },
        )
    values = [junk_text(rng, 30) for _ in range(20)] + ["*:1", "a,,b", "@", wid + ":0"]
    for value in values:
        out = pools.cluster.kubectl(
            "annotate", "wp", "p", "-n", pools.ns, f"bifrost.dev/recycle={value}", "--overwrite", check=False
        )
        del out  # some values are not even valid annotation values for the API server
    assert operator.proc is not None and operator.proc.poll() is None
    wait_until(
        lambda: operator.metric("workerpool_malformed_redis_data_total", kind="heartbeat") > 0,
        timeout=STATUS,
        what="malformed heartbeats counted",
    )
    # Still correct afterwards: the real worker's report wins, the pool is Ready.
    pools.wait_status(
        "p",
        lambda s: s.get("readyWorkers") == 1 and s.get("poolSize") == 1 and worker_ids(s) == [wid],
        "a correct status",
        timeout=STATUS,
    )
    assert client.wait_result(client.submit("noop"), timeout=30).success
