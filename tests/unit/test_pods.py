"""Rendering worker pods (DESIGN §2)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from workerpool.contracts.resource import WorkerPoolSpec
from workerpool.decide.pods import PoolRef, has_password, redact, render_pod, render_template, template_hash
from workerpool.worker.config import WorkerConfig

REF = PoolRef("default", "bifrost", "uid-1")


def spec(**kw: Any) -> WorkerPoolSpec:
    return WorkerPoolSpec.model_validate({"redis": {"url": "redis://r:6379/0"}, **kw})


def env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}


def test_pod_has_labels_owner_env_and_grace_period() -> None:
    pod = render_pod(
        REF, spec(executionTimeoutSeconds=60, gracefulShutdownSeconds=7, processes={"min": 3, "max": 5}), "img"
    )
    meta = pod["metadata"]
    assert meta["generateName"] == "default-"
    assert meta["labels"]["bifrost.dev/pool"] == "default"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "workerpool-operator"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "bifrost.dev/v1alpha1",
            "kind": "WorkerPool",
            "name": "default",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    e = env(pod)
    assert e["WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert e["POOL_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert {
        k: e[k]["value"]
        for k in (
            "POOL_NAME",
            "MIN_WORKERS",
            "MAX_WORKERS",
            "EXECUTION_TIMEOUT_SECONDS",
            "GRACEFUL_SHUTDOWN_SECONDS",
            "RECYCLE_AFTER_EXECUTIONS",
            "WORKER_HEARTBEAT_INTERVAL_SECONDS",
            "QUEUE_KEY",
            "REDIS_URL",
        )
    } == {
        "POOL_NAME": "default",
        "MIN_WORKERS": "3",
        "MAX_WORKERS": "5",
        "EXECUTION_TIMEOUT_SECONDS": "60",
        "GRACEFUL_SHUTDOWN_SECONDS": "7",
        "RECYCLE_AFTER_EXECUTIONS": "0",
        "WORKER_HEARTBEAT_INTERVAL_SECONDS": "10",
        "QUEUE_KEY": "bifrost:queue:pending",
        "REDIS_URL": "redis://r:6379/0",
    }
    assert pod["spec"]["terminationGracePeriodSeconds"] == 67
    assert pod["spec"]["containers"][0]["command"] == ["workerpool", "worker"]
    assert pod["spec"]["containers"][0]["image"] == "img"


def test_secret_url_stays_a_secret_ref() -> None:
    pod = render_pod(REF, spec(redis={"urlSecretRef": {"name": "redis", "key": "u"}}), "img")
    assert env(pod)["REDIS_URL"] == {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "u"}}}


def test_user_template_is_kept_and_restricted_defaults_fill_gaps() -> None:
    template = {
        "metadata": {"labels": {"team": "a"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsUser": 1000},
            "containers": [
                {"name": "side", "image": "s"},
                {
                    "name": "worker",
                    "image": "w",
                    "env": [{"name": "X", "value": "1"}, {"name": "MIN_WORKERS", "value": "9"}],
                    "securityContext": {"allowPrivilegeEscalation": True},
                },
            ],
        },
    }
    pod = render_pod(REF, spec(template=template), "img")
    assert pod["metadata"]["labels"]["team"] == "a"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 5
    assert pod["spec"]["securityContext"] == {
        "runAsUser": 1000,
        "runAsGroup": 10001,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    worker = pod["spec"]["containers"][1]
    names = [e["name"] for e in worker["env"]]
    assert names[0] == "X" and names.count("MIN_WORKERS") == 1  # ours wins
    assert worker["securityContext"]["allowPrivilegeEscalation"] is True  # the user's choice stands
    assert worker["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert "env" not in pod["spec"]["containers"][0]
    assert template["spec"]["containers"][1]["env"] == [
        {"name": "X", "value": "1"},  # type: ignore[index]
        {"name": "MIN_WORKERS", "value": "9"},
    ]  # input untouched


def test_workers_get_a_read_only_root_uid_10001_and_a_bounded_tmp() -> None:
    pod = render_pod(REF, spec(), "img")
    psc = pod["spec"]["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["runAsNonRoot"]) == (10001, 10001, True)
    worker = pod["spec"]["containers"][0]
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert worker["volumeMounts"] == [{"name": "workerpool-tmp", "mountPath": "/tmp"}]
    assert pod["spec"]["volumes"] == [{"name": "workerpool-tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_a_template_that_says_otherwise_keeps_its_root_and_its_tmp() -> None:
    template = {
        "spec": {
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [
                {"name": "worker", "image": "w", "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}]},
                {"name": "side", "image": "s", "securityContext": {"readOnlyRootFilesystem": False}},
            ],
        }
    }
    pod = render_pod(REF, spec(template=template), "img")
    worker, side = pod["spec"]["containers"]
    assert worker["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}]
    assert "volumeMounts" not in side
    assert pod["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {}}]


def test_hash_changes_with_what_reaches_the_pod() -> None:
    base = template_hash(render_template(REF, spec(), "img"))
    assert base == template_hash(render_template(REF, spec(), "img"))
    assert base != template_hash(render_template(REF, spec(processes={"min": 1, "max": 3}), "img"))
    assert base != template_hash(render_template(REF, spec(template={"metadata": {"labels": {"a": "b"}}}), "img"))
    assert base == template_hash(render_template(REF, spec(minWorkers=3, maxWorkers=9), "img"))  # pod count only


def test_password_detection_and_redaction() -> None:
    assert has_password("redis://:pw@host:6379/0")
    assert has_password("rediss://user:pw@host")
    assert not has_password("redis://host:6379/0")
    assert not has_password("redis://user@host")
    assert redact("redis://:pw@host:6379/0") == "redis://***@host:6379/0"
    # A password with '@' in it is hidden whole (urllib splits user info at the last '@').
    assert has_password("redis://:p@ss@host:6379/0")
    assert redact("redis://:p@ss@host:6379/0") == "redis://***@host:6379/0"
    assert redact("rediss://user:pw@host/2") == "rediss://***@host/2"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"
    assert "s3cret" not in redact("redis://:s3cret@host:notaport/0")


@given(st.text(min_size=1, alphabet=st.characters(blacklist_categories=("Cs",))))
def test_no_password_survives_redaction(password: str) -> None:
    url = f"redis://user:{password}@redis.example:6379/0"
    if has_password(url) and password not in ("user", "redis.example", "6379", "0", "redis", "/"):
        assert f":{password}@" not in redact(url)


def test_metrics_port_reaches_the_worker_as_env_and_a_named_container_port() -> None:
    pod = render_pod(REF, spec(metricsPort=9400), "img")
    (worker,) = pod["spec"]["containers"]
    assert env(pod)["WORKER_METRICS_PORT"]["value"] == "9400"
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    plain = render_pod(REF, spec(), "img")
    assert "WORKER_METRICS_PORT" not in env(plain) and "ports" not in plain["spec"]["containers"][0]
    # A user's own ports stay; a user's port named "metrics" gives way to the spec's.
    user = {
        "containers": [
            {
                "name": "worker",
                "image": "i",
                "ports": [{"name": "metrics", "containerPort": 1}, {"name": "http", "containerPort": 8080}],
            }
        ]
    }
    ports = render_pod(REF, spec(metricsPort=9400, template={"spec": user}), "img")["spec"]["containers"][0]["ports"]
    assert [(p["name"], p["containerPort"]) for p in ports] == [("http", 8080), ("metrics", 9400)]


def test_allowed_modules_reach_the_reference_worker_and_bifrost_pools_are_refused_them() -> None:
    pod = render_pod(REF, spec(allowedModules=["tasks", "billing.jobs"]), "img")
    assert env(pod)["WORKER_ALLOWED_MODULES"]["value"] == "tasks,billing.jobs"
    assert "WORKER_ALLOWED_MODULES" not in env(render_pod(REF, spec(), "img"))  # unset: any module
    for bad in (["os; rm"], ["a..b"], [".x"], ["x" * 201]):
        with pytest.raises(ValidationError):
            spec(allowedModules=bad)


@given(
    st.from_regex(r"[a-z_]{1,6}(\.[a-z_]{1,6}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z0-9_]{1,4}", fullmatch=True),
)
def test_a_function_runs_only_from_an_allowed_module_or_its_submodules(module: str, suffix: str) -> None:
    config = WorkerConfig(redis_url="redis://r:6379/0", WORKER_ALLOWED_MODULES=f" Other , {module} ")  # type: ignore[call-arg]
    assert config.allows(f"{module}:f") and config.allows(f"{module}.sub:f")
    assert not config.allows(f"{module}{suffix}:f")  # a longer name is another module
    assert not config.allows("subprocess:run")
    assert WorkerConfig(redis_url="redis://r:6379/0").allows("subprocess:run")  # unset: any module
