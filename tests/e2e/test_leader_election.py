"""Two operator replicas on one Lease, against the real API server, node and Redis:
one acts; kill -9 the leader during a burst with a recycle pending, and the
standby takes over with nothing done twice and no busy worker deleted."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from devcluster.client import Client
from devcluster.harness import (
    FAST_LEASE,
    READY,
    OperatorProcess,
    Pools,
    lease_holder,
    pool_manifest,
    start_replica,
    wait_until,
)
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack
from devcluster.watch import Objects, Watch

pytestmark = pytest.mark.cluster

MAX_WORKERS = 4


def replica(stack: DevStack, namespace: str, tmp_path: Path, identity: str) -> OperatorProcess:
    return start_replica(stack, namespace, tmp_path / identity, identity, "wpo-leader")


def test_the_standby_takes_over_a_burst_and_a_pending_recycle_exactly_once(
    stack: DevStack, namespace: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    pools, client = Pools(stack, namespace), Client(redis_server.url)
    a = replica(stack, namespace, tmp_path, "a")
    wait_until(lambda: lease_holder(stack, namespace, "wpo-leader") == "a", timeout=READY, what="a to lead")
    b = replica(stack, namespace, tmp_path, "b")
    try:
        pools.apply(pool_manifest("p", redis_server.url, maxWorkers=MAX_WORKERS, processes={"min": 1, "max": 1}))
        status = pools.wait_status("p", lambda s: s.get("readyWorkers") == 1, "1 ready worker", timeout=READY)
        first = status["workerDetails"][0]["workerId"]
        assert b.metric("workerpool_leader") == 0 and a.metric("workerpool_leader") == 1
        assert b.metric("workerpool_status_writes_total", namespace=namespace, pool="p") == 0  # the standby acts not

        commands = client.r.pubsub(ignore_subscribe_messages=True)
        commands.psubscribe("worker:*:commands")
        # Every pod the two replicas create, as the API server streams them: a short-lived
        # duplicate shows here even if it is gone before anyone looks.
        watch = Watch(stack.cluster, namespace, "pods", "-l", "bifrost.dev/pool=p")
        ids = [client.submit("sleep", {"seconds": 3}) for _ in range(6)]
        pools.wait_status("p", lambda s: s.get("busyCount", 0) >= 1, "the burst running", timeout=READY)
        pools.annotate("p", f"{first}@failover")
        # Until a dies, b only follows: it has run no round of the pool, so it cannot have
        # created, deleted, marked or written anything (a split brain shows here even when
        # the two happen not to race for the same pod).
        for counter in ("workerpool_reconcile_duration_seconds_count", "workerpool_scale_events_total"):
            assert b.metric(counter, namespace=namespace, pool="p") == 0, f"the standby acted: {counter}"
        a.kill()  # kill -9 with the recycle maybe handled, maybe not

        wait_until(lambda: lease_holder(stack, namespace, "wpo-leader") == "b", timeout=3 * FAST_LEASE["duration"],
                   what="b to take the lease")  # fmt: skip
        handled = pools.wait_status(
            "p",
            lambda s: s.get("lastRecycle", {}).get("request") == f"{first}@failover",
            "the pending recycle handled",
            timeout=READY,
        )
        assert [r["status"] for r in handled["lastRecycle"]["results"]] == ["recycle_requested"]
        results = [client.wait_result(i, timeout=60) for i in ids]
        assert all(r.success for r in results), results
        # The standby acts now: it writes the status, and the pool scales back to one worker.
        pools.wait_status("p", lambda s: s.get("workers") == 1 and s.get("busyCount") == 0, "scaled down", timeout=60)
        assert b.metric("workerpool_status_writes_total", namespace=namespace, pool="p") >= 1
        assert b.metric("workerpool_leader") == 1
        watch.stop()
        seen = Objects(watch)
        seen.update()
        # No duplicate pods from two actors: never more than maxWorkers at once, and never more
        # than maxWorkers in all (the first worker and the burst's; nothing is replaced here).
        assert seen.peak_live <= MAX_WORKERS, seen.peak_live
        assert len(seen.added) <= MAX_WORKERS, sorted(seen.added)
        sent: Counter[str] = Counter()
        quiet_until = time.monotonic() + 2  # everything published long before: already buffered
        while time.monotonic() < quiet_until:
            if (m := commands.get_message(timeout=0.2)) is not None:
                sent[m["channel"].decode()] += 1
                assert json.loads(m["data"])["type"] == "recycle"
        assert sent == Counter({f"worker:{first}:commands": 1}), sent  # published exactly once
        commands.close()
    finally:
        a.stop()
        b.stop()


def test_a_stopped_leader_hands_over_at_once(
    stack: DevStack, namespace: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """A clean shutdown (rolling update, drain) releases the lease: no wait for it to run out."""
    pools = Pools(stack, namespace)
    a = replica(stack, namespace, tmp_path, "a")
    wait_until(lambda: lease_holder(stack, namespace, "wpo-leader") == "a", timeout=READY, what="a to lead")
    b = replica(stack, namespace, tmp_path, "b")
    try:
        pools.apply(pool_manifest("p", redis_server.url))
        pools.wait_status("p", lambda s: s.get("readyWorkers") == 1, "1 ready worker", timeout=READY)
        a.stop()
        wait_until(
            lambda: lease_holder(stack, namespace, "wpo-leader") == "b",
            timeout=FAST_LEASE["duration"] - 1,  # sooner than a lease could run out
            what="b to take the released lease",
        )
        pools.apply(pool_manifest("p", redis_server.url, minWorkers=2))
        pools.wait_status("p", lambda s: s.get("readyWorkers") == 2, "b acting on a spec change", timeout=READY)
    finally:
        a.stop()
        b.stop()
