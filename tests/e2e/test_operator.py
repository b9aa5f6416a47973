"""The operator end to end: real kube-apiserver + etcd, real worker processes
(containers of the project's image on the real node), real redis-server. Assertions go through kubectl
and a separate Redis client."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from devcluster.client import Client
from devcluster.harness import READY, RECYCLE, SCALE, STATUS, OperatorProcess, Pools, pool_manifest, wait_until
from devcluster.heartbeat_log import HeartbeatLog, running
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack
from devcluster.watch import Objects, Watch
from workerpool.contracts.names import HEARTBEAT_CHANNEL, worker_key
from workerpool.contracts.wire import WorkerInfo, parse_registration
from workerpool.protocols.base import fresh_window

from ..shapes import HEARTBEAT_KEYS, WORKER_INFO_KEYS

pytestmark = pytest.mark.cluster


def ready_pool(pools: Pools, name: str, workers: int = 1) -> dict[str, Any]:
    return pools.wait_status(
        name,
        lambda s: (
            s.get("readyWorkers") == workers
            and s.get("workers") == workers
            and any(c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", []))
        ),
        f"{workers} ready workers",
        timeout=READY,
    )


def registrations(client: Client, ids: list[str]) -> dict[str, WorkerInfo]:
    out = {}
    for wid in ids:
        fields = client.r.hgetall(worker_key(wid))
        if fields:
            out[wid] = parse_registration(wid, fields).info
    return out


def test_status_mirrors_what_the_workers_report(
    pools: Pools, operator: OperatorProcess, client: Client, redis_server: RedisServer
) -> None:
    """The seed's test_get_workers_returns_pool_info, through the Kubernetes API."""
    pools.apply(pool_manifest("p", redis_server.url, minWorkers=2, processes={"min": 2, "max": 3}))
    ready_pool(pools, "p", 2)

    def matches() -> dict[str, Any] | None:
        status = pools.status("p")
        details = {w["workerId"]: WorkerInfo.model_validate(w) for w in status.get("workerDetails", [])}
        reported = registrations(client, list(details))
        same = len(details) == 2 and all(
            [(p.pid, p.state) for p in details[w].processes] == [(p.pid, p.state) for p in reported[w].processes]
            and details[w].pool_size == reported[w].pool_size
            for w in details
            if w in reported
        )
        return status if same and set(reported) == set(details) else None

    status = wait_until(matches, timeout=STATUS, what="status.workerDetails == the workers' reports")
    assert (status["poolSize"], status["idleCount"], status["busyCount"]) == (4, 4, 0)
    assert status["queue"] == {"depth": 0, "oldestAgeSeconds": 0.0}
    assert status["observedGeneration"] == pools.get("p")["metadata"]["generation"]


def test_status_and_heartbeat_schemas_match_the_seed(
    pools: Pools, operator: OperatorProcess, redis_server: RedisServer
) -> None:
    """The seed's test_heartbeat_schema_matches: camelCase WorkerInfo in status, snake_case on the wire."""
    r = redis.Redis.from_url(redis_server.url)
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(HEARTBEAT_CHANNEL)
    pools.apply(pool_manifest("p", redis_server.url))
    status = ready_pool(pools, "p")
    detail = status["workerDetails"][0]
    assert set(detail) == {
        "workerId",
        "startedAt",
        "hostname",
        "minWorkers",
        "maxWorkers",
        "poolSize",
        "idleCount",
        "busyCount",
        "processes",
    }
    assert set(detail["processes"][0]) == {
        "pid",
        "processId",
        "state",
        "memoryMb",
        "uptimeSeconds",
        "executionsCompleted",
    }  # execution: null is omitted
    hb = wait_until(lambda: sub.get_message(timeout=1), timeout=STATUS, what="a heartbeat")
    wire = json.loads(hb["data"])
    assert set(wire) == HEARTBEAT_KEYS
    assert WorkerInfo.model_validate(detail).model_dump(mode="json").keys() == WORKER_INFO_KEYS


def test_queue_depth_appears_in_status(
    pools: Pools, operator: OperatorProcess, client: Client, redis_server: RedisServer
) -> None:
    """The seed's test_queue_endpoint_returns_status."""
    pools.apply(pool_manifest("p", redis_server.url, maxWorkers=1, processes={"min": 1, "max": 1}))
    ready_pool(pools, "p")
    for _ in range(4):
        client.submit("sleep", {"seconds": 2})
    status = pools.wait_status(
        "p",
        lambda s: s.get("queue", {}).get("depth") == 3 and s.get("busyCount") == 1,
        "queue depth 3 with one busy process",
    )
    assert status["desiredWorkers"] == 1  # maxWorkers caps the demand
    # The queue drains (one process, one execution at a time) and the status follows.
    # (Each execution's own result is checked by the tests about executions. Here, in
    # some full runs on the real node, the first of these had no result within 30 s;
    # the cause is not found yet: see docs/local-cluster.md, "Open".)
    pools.wait_status(
        "p", lambda s: s.get("queue", {}).get("depth") == 0 and s.get("busyCount") == 0, "an empty queue", 120
    )


def test_scales_up_under_a_burst_and_back_to_min_without_killing_work(
    pools: Pools,
    operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
    stack: DevStack,
    namespace: str,
) -> None:
    # Executions of 1 to 5.5 s against a scale-down delay of 1 s: the pool shrinks while some
    # workers still run, so a wrong choice of whom to delete would show.
    pools.apply(pool_manifest("p", redis_server.url, maxWorkers=4, scaling={"scaleDownDelaySeconds": 1}))
    first = ready_pool(pools, "p")["workerDetails"][0]["workerId"]
    # Every creation and deletion as the API server streams them (sampling would miss a
    # short-lived pod), and every heartbeat, both stamped on arrival.
    watch, beats = Watch(stack.cluster, namespace, "pods", "-l", "bifrost.dev/pool=p"), HeartbeatLog(client.r)
    try:
        ids = [client.submit("sleep", {"seconds": 1.0 + (i % 4) * 1.5}) for i in range(14)]
        pools.wait_status("p", lambda s: s.get("desiredWorkers") == 4, "desired 4", timeout=SCALE)
        results = [client.wait_result(i, timeout=60) for i in ids]
        assert all(r.success for r in results), [r for r in results if not r.success]
        status = pools.wait_status(
            "p",
            lambda s: s.get("workers") == 1 and s.get("readyWorkers") == 1 and s.get("desiredWorkers") == 1,
            "back to minWorkers, that one ready",
            timeout=SCALE,
        )
    finally:
        watch.stop()
        beats.stop()
    seen = Objects(watch)
    seen.update()
    events = [e["reason"] for e in pools.events("p")]
    assert "ScalingUp" in events and "ScalingDown" in events
    created = [n for n in seen.added if n != first]
    assert len(created) == 3 and seen.peak_live == 4, (created, seen.peak_live)  # 1 -> 4, never more
    deleted = {n: at for n, at in seen.going.items()}
    # The operator never deleted a busy worker: each pod it deleted was idle by the last
    # heartbeat its worker sent before the deletion (a busy one would still finish its
    # execution on SIGTERM, so the results alone could not tell).
    for pod, at in deleted.items():
        last = beats.last_before(pod, at)
        assert last is not None, f"{pod} deleted before its worker ever reported"
        assert running(last) == [] and last["busy_count"] == 0, f"{pod} deleted while busy: {last}"
    survivors = [n for n in seen.latest if n not in deleted]  # (workerDetails may still list a draining pod)
    assert len(deleted) == 3 and len(survivors) == 1 and status["workers"] == 1, (deleted, survivors)


def test_recycle_annotation_publishes_the_exact_command_and_replaces_the_process(
    pools: Pools,
    operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
) -> None:
    """The seed's test_recycle_endpoint_publishes_command."""
    pools.apply(pool_manifest("p", redis_server.url))
    status = ready_pool(pools, "p")
    worker = status["workerDetails"][0]
    wid, pid = worker["workerId"], worker["processes"][0]["pid"]
    sub = client.r.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe("worker:*:commands")
    pools.annotate("p", f"{wid}:{pid}")
    msg = wait_until(lambda: sub.get_message(timeout=1), timeout=RECYCLE, what="the recycle command")
    assert msg["channel"].decode() == f"worker:{wid}:commands"
    assert json.loads(msg["data"]) == {"type": "recycle", "pid": pid}
    status = pools.wait_status(
        "p", lambda s: s.get("lastRecycle", {}).get("request") == f"{wid}:{pid}", "status.lastRecycle"
    )
    assert status["lastRecycle"]["results"] == [
        {"workerId": wid, "pid": pid, "status": "recycle_requested", "reason": ""}
    ]
    pools.wait_status(
        "p",
        lambda s: (
            pid not in [p["pid"] for w in s.get("workerDetails", []) for p in w["processes"]] and s.get("poolSize") == 1
        ),
        "the process replaced",
    )
    # Any idle process of every worker, then a rejected unknown worker.
    pools.annotate("p", "*")
    msg = wait_until(lambda: sub.get_message(timeout=1), timeout=RECYCLE, what="the * command")
    assert json.loads(msg["data"]) == {"type": "recycle", "pid": None}
    pools.annotate("p", "p-nosuchpod")
    status = pools.wait_status("p", lambda s: s.get("lastRecycle", {}).get("request") == "p-nosuchpod", "rejection")
    assert status["lastRecycle"]["results"][0]["status"] == "rejected"
    assert sub.get_message(timeout=1) is None  # nothing published for it
    assert pools.get("p")["metadata"]["annotations"]["bifrost.dev/recycle"] == "p-nosuchpod"  # never removed
    sub.close()


def test_malformed_annotation_gives_a_warning_event_and_publishes_nothing(
    pools: Pools,
    operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
) -> None:
    pools.apply(pool_manifest("p", redis_server.url))
    ready_pool(pools, "p")
    sub = client.r.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe("worker:*:commands")
    pools.annotate("p", "p-abc:notapid")
    wait_until(
        lambda: [e for e in pools.events("p") if e["reason"] == "RecycleRejected" and e["type"] == "Warning"],
        timeout=RECYCLE,
        what="a RecycleRejected warning",
    )
    status = pools.wait_status("p", lambda s: "lastRecycle" in s, "lastRecycle")
    assert "not a process id" in status["lastRecycle"]["results"][0]["reason"]
    assert sub.get_message(timeout=1) is None
    sub.close()


def test_operator_restart_neither_resends_a_recycle_nor_duplicates_pods(
    pools: Pools,
    stack: DevStack,
    namespace: str,
    tmp_path: Path,
    client: Client,
    redis_server: RedisServer,
) -> None:
    op = OperatorProcess(stack, namespace, tmp_path).start()
    try:
        pools.apply(pool_manifest("p", redis_server.url, minWorkers=2))
        status = ready_pool(pools, "p", 2)
        sub = client.r.pubsub(ignore_subscribe_messages=True)
        sub.psubscribe("worker:*:commands")
        wid = status["workerDetails"][0]["workerId"]
        pools.annotate("p", wid)
        wait_until(
            lambda: pools.status("p").get("lastRecycle", {}).get("request") == wid,
            timeout=RECYCLE,
            what="the recycle handled",
        )
        pods_before = sorted(p["metadata"]["name"] for p in pools.live_pods("p"))
        op.kill()
        op = OperatorProcess(stack, namespace, tmp_path).start()
        # The restarted operator has reconciled (it writes status) and did nothing twice.
        wait_until(
            lambda: op.metric("workerpool_reconcile_duration_seconds_count", namespace=namespace, pool="p") >= 3,
            timeout=READY,
            what="the restarted operator to reconcile the pool",
        )
        ready_pool(pools, "p", 2)
        messages = []
        deadline = time.monotonic() + 3  # a duplicate would come right after the restart
        while time.monotonic() < deadline:
            m = sub.get_message(timeout=0.5)
            if m is not None:
                messages.append(m)
        assert len(messages) == 1, messages
        assert sorted(p["metadata"]["name"] for p in pools.live_pods("p")) == pods_before
        sub.close()
    finally:
        op.stop()


def test_redis_down_means_no_scale_down_and_stalled_then_recovery(
    pools: Pools,
    operator: OperatorProcess,
    client: Client,
    redis_server: RedisServer,
    stack: DevStack,
    namespace: str,
) -> None:
    pools.apply(pool_manifest("p", redis_server.url, minWorkers=1, maxWorkers=3, scaling={"scaleDownDelaySeconds": 1}))
    ready_pool(pools, "p")
    # Load to reach 3 pods. Redis comes back empty (no persistence): these executions go with it.
    for _ in range(6):
        client.submit("sleep", {"seconds": 3})
    wait_until(lambda: len(pools.live_pods("p")) == 3, timeout=SCALE, what="3 pods")
    watch = Watch(stack.cluster, namespace, "pods", "-l", "bifrost.dev/pool=p")  # every deletion, none sampled
    try:
        redis_server.stop()
        stalled = pools.wait_condition("p", "Stalled")
        assert stalled["reason"] == "RedisUnavailable"
        assert "redis://" not in json.dumps(pools.status("p"))
        writes = operator.metric("workerpool_status_writes_total", namespace=namespace, pool="p")
        # A wrongful scale-down would come once the outage is seen (Stalled, to the second), every
        # heartbeat is past its trust window and scaleDownDelaySeconds has run: a round after that
        # moment must run and delete nothing. A pod event (a label, as any controller may set) makes
        # the pool run one, whatever its timers say.
        seen_at = dt.datetime.fromisoformat(stalled["lastTransitionTime"].replace("Z", "+00:00")).timestamp() + 1
        wait_until(
            lambda: time.time() > seen_at + fresh_window(1) + 1, timeout=SCALE, what="the moment a scale-down is due"
        )
        rounds = operator.metric("workerpool_reconcile_duration_seconds_count", namespace=namespace, pool="p")
        stack.cluster.kubectl("label", "pod", pools.live_pods("p")[0]["metadata"]["name"], "-n", namespace, "poked=1")
        wait_until(
            lambda: (
                operator.metric("workerpool_reconcile_duration_seconds_count", namespace=namespace, pool="p") > rounds
            ),
            timeout=STATUS,
            what="a round after it",
        )
    finally:
        watch.stop()
    seen = Objects(watch)
    seen.update()
    assert seen.going == {}, f"pods deleted during the outage: {seen.going}"  # unknown is not idle
    assert len(pools.live_pods("p")) == 3
    # And a stable status: one outage, one stable message, not a rewrite per failing Redis call.
    # At most one more write (the first failure's message, e.g. "connection closed", may
    # give way once to the steady one, "connection refused"); Stalled never flipped back.
    assert operator.metric("workerpool_status_writes_total", namespace=namespace, pool="p") - writes <= 1
    still = pools.condition("p", "Stalled")
    assert still is not None and still["status"] == "True"
    assert still["lastTransitionTime"] == stalled["lastTransitionTime"]
    redis_server.start()  # same port, empty data: the workers re-register
    pools.wait_status(
        "p",
        lambda s: any(c["type"] == "Stalled" and c["status"] == "False" for c in s.get("conditions", [])),
        "recovered",
        timeout=READY,
    )
    pools.wait_status("p", lambda s: s.get("workers") == 1, "scaled down after recovery", timeout=SCALE)


def test_kubectl_wait_for_ready(
    pools: Pools, operator: OperatorProcess, redis_server: RedisServer, stack: DevStack, namespace: str
) -> None:
    pools.apply(pool_manifest("p", redis_server.url, minWorkers=2))
    out = stack.cluster.kubectl("wait", "--for=condition=Ready", "wp/p", "-n", namespace, "--timeout=60s", timeout=90)
    assert "condition met" in out.stdout
    cond = pools.condition("p", "Ready")
    assert cond is not None
    assert cond["observedGeneration"] == pools.get("p")["metadata"]["generation"]


def test_pods_are_owned_labelled_and_configured(
    pools: Pools, operator: OperatorProcess, stack: DevStack, namespace: str, redis_server: RedisServer
) -> None:
    stack.cluster.kubectl(
        "create", "secret", "generic", "redis", "-n", namespace, f"--from-literal=url={redis_server.url}"
    )
    manifest = pool_manifest("p", None, redis={"urlSecretRef": {"name": "redis", "key": "url"}})
    pools.apply(manifest)
    ready_pool(pools, "p")
    pod = pools.live_pods("p")[0]
    assert pod["metadata"]["labels"]["bifrost.dev/pool"] == "p"
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "workerpool-operator"
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("WorkerPool", "p", True)
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis", "key": "url"}
    assert env["WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert (env["MIN_WORKERS"]["value"], env["MAX_WORKERS"]["value"]) == ("1", "2")
    assert pod["spec"]["terminationGracePeriodSeconds"] == 31
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # Deleting the pool deletes its pods (garbage collection through the ownerReference).
    stack.cluster.kubectl("delete", "wp", "p", "-n", namespace, "--wait=true", timeout=60)
    wait_until(lambda: not pools.pods("p"), timeout=SCALE, what="the pods to be garbage-collected")


def test_deleting_a_pool_while_the_operator_is_down_does_not_hang(
    pools: Pools,
    stack: DevStack,
    namespace: str,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    op = OperatorProcess(stack, namespace, tmp_path).start()
    pools.apply(pool_manifest("p", redis_server.url))
    ready_pool(pools, "p")
    op.kill()
    assert not pools.get("p")["metadata"].get("finalizers")
    out = stack.cluster.kubectl("delete", "wp", "p", "-n", namespace, "--timeout=20s", timeout=30)
    assert "deleted" in out.stdout


def test_template_change_replaces_pods_only_when_idle(
    pools: Pools, operator: OperatorProcess, client: Client, redis_server: RedisServer
) -> None:
    pools.apply(pool_manifest("p", redis_server.url, maxWorkers=2, processes={"min": 1, "max": 1}))
    status = ready_pool(pools, "p")
    old = status["workerDetails"][0]["workerId"]
    eid = client.submit("sleep", {"seconds": 4})
    pools.wait_status("p", lambda s: s.get("busyCount") == 1, "busy")
    pools.apply(
        pool_manifest("p", redis_server.url, maxWorkers=2, processes={"min": 1, "max": 1}, recycleAfterExecutions=100)
    )
    # A surge pod comes up; the busy outdated pod stays until its execution finished.
    wait_until(lambda: len(pools.live_pods("p")) == 2, timeout=SCALE, what="a surge pod")
    assert old in [p["metadata"]["name"] for p in pools.live_pods("p")]
    result = client.wait_result(eid, timeout=30)
    assert result.success
    assert result.worker_id == old
    wait_until(
        lambda: (
            [p["metadata"]["name"] for p in pools.live_pods("p")] not in ([], [old])
            and old not in [p["metadata"]["name"] for p in pools.live_pods("p")]
            and len(pools.live_pods("p")) == 1
        ),
        timeout=SCALE,
        what="the outdated pod replaced",
    )


def test_password_never_leaks(
    pools: Pools, operator: OperatorProcess, stack: DevStack, namespace: str, redis_server: RedisServer
) -> None:
    url = redis_server.url.replace("redis://", "redis://:s3cr3t-pw@")
    pools.apply(pool_manifest("p", url))
    wait_until(
        lambda: [e for e in pools.events("p") if e["reason"] == "PasswordInURL"],
        timeout=STATUS,
        what="the PasswordInURL warning",
    )
    pools.wait_status("p", lambda s: "conditions" in s, "a status")
    everything = json.dumps(pools.status("p")) + json.dumps(pools.events("p")) + operator.logs()
    assert "s3cr3t-pw" not in everything


def test_workers_run_executions_on_a_read_only_root(
    pools: Pools, operator: OperatorProcess, client: Client, redis_server: RedisServer, stack: DevStack
) -> None:
    pools.apply(pool_manifest("p", redis_server.url))
    status = ready_pool(pools, "p")
    pod = pools.live_pods("p")[0]
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    # The kernel's view of a pool process: its root is mounted read-only.
    pid = status["workerDetails"][0]["processes"][0]["pid"]
    host_pid = stack.node.host_pid(pod, pid)
    assert host_pid is not None
    root = next(
        line.split() for line in Path(f"/proc/{host_pid}/mountinfo").read_text().splitlines() if line.split()[4] == "/"
    )
    assert "ro" in root[5].split(","), root
    assert all(client.wait_result(client.submit("sleep", {"seconds": 0.2}), timeout=30).success for _ in range(3))


def test_a_worker_without_a_fresh_heartbeat_is_reported_and_not_ready(
    pools: Pools, operator: OperatorProcess, redis_server: RedisServer, stack: DevStack
) -> None:
    pools.apply(pool_manifest("p", redis_server.url))
    ready_pool(pools, "p")
    pod = pools.live_pods("p")[0]
    name = pod["metadata"]["name"]
    worker = stack.node.host_pid(pod, 1)  # the worker runtime is its container's pid 1
    assert worker is not None
    os.kill(worker, signal.SIGSTOP)  # alive to the kubelet (no liveness probe), silent to Redis
    try:
        status = pools.wait_status(
            "p", lambda s: s.get("readyWorkers") == 0, "the silent worker not counted as ready", timeout=READY
        )
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
        assert f"no fresh heartbeat from {name}" in ready["message"]
        assert len(pools.live_pods("p")) == 1  # unknown is not idle: nothing was deleted
    finally:
        os.kill(worker, signal.SIGCONT)
    ready_pool(pools, "p")


def test_deleting_a_busy_worker_pod_drains_its_execution_within_the_grace_period(
    pools: Pools, operator: OperatorProcess, client: Client, redis_server: RedisServer, stack: DevStack, namespace: str
) -> None:
    """`kubectl delete pod` on a busy worker: the real kubelet's SIGTERM stops new claims, the running
    execution finishes where it runs, then the container exits (before the grace period's SIGKILL)."""
    pools.apply(pool_manifest("p", redis_server.url, processes={"min": 1, "max": 1}))
    worker = ready_pool(pools, "p")["workerDetails"][0]["workerId"]
    grace = pools.live_pods("p")[0]["spec"]["terminationGracePeriodSeconds"]
    eid = client.submit("sleep", {"seconds": 4})
    pools.wait_status("p", lambda s: s.get("busyCount") == 1, "the worker busy")
    stack.cluster.kubectl("delete", "pod", worker, "-n", namespace, "--wait=false")
    sigkill_at = time.monotonic() + grace
    result = client.wait_result(eid, timeout=grace)
    assert result.success, result
    assert result.worker_id == worker  # finished by the worker that was told to stop
    wait_until(
        lambda: worker not in [p["metadata"]["name"] for p in pools.pods("p")],
        timeout=sigkill_at - time.monotonic() - 1,  # gone before the kubelet would have killed it
        what="the drained pod to exit on its own",
    )
