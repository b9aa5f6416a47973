"""The install's template policy (decide/template_policy.py): what it refuses, and a refused pool
gets no pod change and says why."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.contracts.resource import WorkerPool
from workerpool.contracts.wire import QueueStatus
from workerpool.decide.observation import Observation, PodView
from workerpool.decide.plan import Context, PoolMemory, decide
from workerpool.decide.reasons import Reason
from workerpool.decide.status import Stall
from workerpool.decide.template_policy import TemplatePolicy, template_refusal, violations

from .test_scaling import worker

ON = TemplatePolicy(enabled=True, service_accounts=frozenset({"default", "workers"}))
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
CLEAN = {
    "containers": [{"name": "w", "image": "i", "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}]
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"hostNetwork": True}, "spec.hostNetwork"),
        ({"hostPID": True}, "spec.hostPID"),
        ({"hostIPC": True}, "spec.hostIPC"),
        ({"nodeName": "control-plane"}, "spec.nodeName"),
        ({"serviceAccountName": "cluster-admin-sa"}, "spec.serviceAccountName 'cluster-admin-sa'"),
        ({"serviceAccount": "other"}, "spec.serviceAccountName 'other'"),
        ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, "spec.volumes[0] hostPath"),
        ({"containers": [{"name": "w", "securityContext": {"privileged": True}}]}, "spec.containers[0] privileged"),
        (
            {"initContainers": [{"name": "i", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
            "spec.initContainers[0] capabilities.add ['SYS_ADMIN']",
        ),
        (
            {"containers": [{"name": "w", "ports": [{"containerPort": 80, "hostPort": 80}]}]},
            "spec.containers[0] hostPort",
        ),
    ],
)
def test_each_refused_field_is_named(spec: dict[str, Any], expected: str) -> None:
    found = violations(spec, ON)
    assert len(found) == 1 and found[0].startswith(expected)
    assert template_refusal({"spec": spec}, TemplatePolicy()) is None  # off: nothing refused


def test_a_worker_template_the_policy_allows() -> None:
    assert violations(CLEAN, ON) == [] and violations({**CLEAN, "serviceAccountName": "workers"}, ON) == []


KEYS = st.sampled_from(
    ["spec", "serviceAccountName", "serviceAccount", "containers", "initContainers", "securityContext",
     "capabilities", "add", "privileged", "volumes", "hostPath", "ports", "hostPort", "nodeName", "hostPID"]
) | st.text(max_size=8)  # fmt: skip
ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(KEYS, kids, max_size=5),
    max_leaves=25,
)


@given(ANY)
def test_any_shape_of_template_is_judged_without_an_error(template: Any) -> None:
    """An admitted template is a PodTemplateSpec; the policy never relies on that."""
    template_refusal(template if isinstance(template, dict) else {"spec": template}, ON)


def observed() -> Observation:
    pod = PodView("w0", "u0", "Running", True, False, 0.0, "h")
    return Observation(
        pods=(pod,),
        workers={"w0": worker("w0", busy=2, idle=0)},
        queue=QueueStatus(depth=10, oldest_age_seconds=0.0),
        redis_error=None,
        now=NOW.timestamp(),
    )


def refused_pool() -> WorkerPool:
    template = {"spec": {"hostNetwork": True, "containers": [{"name": "w", "image": "i"}]}}
    spec = {"minWorkers": 1, "maxWorkers": 4, "processes": {"max": 2}, "redis": {"url": "redis://r:6379/0"}}
    body = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {**spec, "template": template},
    }
    return WorkerPool.from_body(body)


def test_a_refused_template_gets_no_pod_and_the_pool_says_why() -> None:
    pool = refused_pool()
    allowed = decide(pool, observed(), Context("h"), PoolMemory(), NOW)
    assert allowed.scale.create > 0  # the demand wants more workers...
    plan = decide(pool, observed(), Context("h", template_policy=ON), PoolMemory(), NOW)
    assert plan.scale.create == 0 and plan.scale.delete == []  # ...and a refused template gets none
    assert plan.status is not None
    stalled = next(c for c in plan.status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "TemplateRefused")
    assert "spec.hostNetwork" in stalled["message"]
    assert [e.reason for e in plan.events] == ["TemplateRefused"]


def test_a_refused_template_gets_no_pod_during_a_redis_outage_either() -> None:
    """An outage keeps at least minWorkers; it must not do so from a refused template."""
    pool, obs = refused_pool(), observed()
    no_pods = Observation(pods=(), workers={}, queue=None, redis_error="connection refused", now=obs.now)
    ctx = Context("h", stall=Stall(Reason.REDIS_UNAVAILABLE, "connection refused"), template_policy=ON)
    plan = decide(pool, no_pods, ctx, PoolMemory(), NOW)
    assert plan.scale.create == 0
    assert "TemplateRefused" in [e.reason for e in plan.events]
