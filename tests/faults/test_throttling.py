"""API Priority and Fairness rejecting the operator's requests (429): retried, no decision lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from devcluster.harness import READY, SCALE, OperatorProcess, Pools, pool_manifest
from devcluster.identity import Identity, own_priority_level, remove_priority_level, service_account
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack

pytestmark = [pytest.mark.faults, pytest.mark.cluster]


def test_throttled_operator_still_converges(
    stack: DevStack, namespace: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    with service_account(stack.cluster, namespace, tmp_path, "throttled") as operator:
        run_throttled(stack, operator, tmp_path, redis_server)


def run_throttled(stack: DevStack, operator: Identity, tmp_path: Path, redis_server: RedisServer) -> None:
    """An APF priority level with one seat, Reject, for the operator's identity only."""
    cluster, namespace = stack.cluster, operator.namespace
    own_priority_level(cluster, operator, shares=1, limit_response="Reject")
    op = OperatorProcess(stack, namespace, tmp_path, kubeconfig=operator.kubeconfig).start()
    pools = Pools(stack, namespace)
    try:
        # Ten pools at once: their controllers' creates and status writes compete for one seat.
        for i in range(10):
            pools.apply(pool_manifest(f"p{i}", redis_server.url, minWorkers=2))
        for i in range(10):
            pools.wait_status(f"p{i}", lambda s: s.get("readyWorkers") == 2, f"pool p{i} ready", timeout=READY + SCALE)
        for i in range(10):
            assert len(pools.live_pods(f"p{i}")) == 2  # no duplicates from retried decisions
        throttled = sum(
            op.metric("workerpool_reconcile_errors_total", namespace=namespace, pool=f"p{i}", reason="api429")
            for i in range(10)
        )
        assert throttled > 0, "the API server never throttled the operator: the test proved nothing"
    finally:
        op.stop()
        remove_priority_level(cluster, operator)


def test_the_client_side_limit_spaces_writes_and_the_pool_still_converges(
    stack: DevStack, namespace: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two writes a second, a burst of one: six pods and their status still get there, the writes waited."""
    op = OperatorProcess(
        stack, namespace, tmp_path, WORKERPOOL_API_WRITES_PER_SECOND="2", WORKERPOOL_API_WRITE_BURST="1"
    ).start()
    pools = Pools(stack, namespace)
    try:
        pools.apply(pool_manifest("p", redis_server.url, minWorkers=6, maxWorkers=6, processes={"min": 1, "max": 1}))
        pools.wait_status("p", lambda s: s.get("readyWorkers") == 6, "6 ready workers", timeout=READY + SCALE)
        assert op.metric("workerpool_api_write_wait_seconds_count") >= 4  # the creates after the first waited
        assert op.metric("workerpool_reconcile_errors_total", namespace=namespace, pool="p", reason="api429") == 0
    finally:
        op.stop()
