"""The WorkerPool resource models: defaults, admission rules, parsing raw bodies."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from workerpool.contracts.names import DEFAULT_QUEUE_KEY
from workerpool.contracts.resource import (
    LastRecycle,
    RecycleResult,
    WorkerPool,
    WorkerPoolSpec,
    WorkerPoolStatus,
)
from workerpool.contracts.wire import to_status


def body(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "bifrost.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {
            "name": "default",
            "namespace": "bifrost",
            "uid": "u-1",
            "generation": 3,
            "annotations": {"bifrost.dev/recycle": "*"},
        },
        "spec": spec,
        "status": status or {},
    }


def test_defaults_match_the_design() -> None:
    spec = WorkerPoolSpec.model_validate({"redis": {"url": "redis://redis:6379/0"}})
    assert (spec.min_workers, spec.max_workers) == (1, 10)
    assert (spec.processes.min, spec.processes.max) == (2, 10)
    assert spec.execution_timeout_seconds == 300
    assert spec.graceful_shutdown_seconds == 5
    assert spec.recycle_after_executions == 0
    assert spec.heartbeat_interval_seconds == 10
    assert spec.redis.queue_key == DEFAULT_QUEUE_KEY
    assert spec.scaling.scale_down_delay_seconds == 300
    assert spec.template == {}


def test_from_body_reads_camel_case() -> None:
    wp = WorkerPool.from_body(
        body(
            {
                "minWorkers": 2,
                "maxWorkers": 4,
                "processes": {"min": 1, "max": 3},
                "redis": {"urlSecretRef": {"name": "redis"}, "queueKey": "q"},
                "scaling": {"scaleDownDelaySeconds": 7},
            }
        )
    )
    assert (wp.name, wp.namespace, wp.uid, wp.generation) == ("default", "bifrost", "u-1", 3)
    assert wp.annotations["bifrost.dev/recycle"] == "*"
    assert wp.spec.redis.url_secret_ref is not None
    assert (wp.spec.redis.url_secret_ref.name, wp.spec.redis.url_secret_ref.key) == ("redis", "url")
    assert wp.spec.scaling.scale_down_delay_seconds == 7


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"minWorkers": 5, "maxWorkers": 2, "redis": {"url": "redis://r"}},
            "maxWorkers must be >= minWorkers",
        ),
        (
            {"processes": {"min": 4, "max": 2}, "redis": {"url": "redis://r"}},
            "processes.max must be >= processes.min",
        ),
        ({"redis": {"url": "redis://r", "urlSecretRef": {"name": "s"}}}, "exactly one of redis.url"),
        ({"redis": {}}, "exactly one of redis.url"),
        ({"redis": {"url": "http://r"}}, "url"),
        ({"minWorkers": -1, "redis": {"url": "redis://r"}}, "min_workers"),
        ({"redis": {"url": "redis://r", "queueKey": "worker:q"}}, "key space"),
        ({"redis": {"url": "redis://r", "queueKey": "bifrost:pool:q"}}, "key space"),
        (
            {
                "protocol": "bifrost",
                "redis": {"url": "redis://r"},
                "rabbitmq": {"url": "amqp://r", "queues": ["exécutions"]},
                "template": {"spec": {"containers": [{"name": "w"}]}},
            },
            "pattern",
        ),
        (
            {
                "protocol": "bifrost",
                "redis": {"url": "redis://r"},
                "rabbitmq": {"url": "amqp://r", "queues": ["q"]},
                "template": {"spec": {"hostname": "same", "containers": [{"name": "w"}]}},
            },
            "hostname and subdomain are not allowed",
        ),
    ],
)
def test_invalid_specs_are_rejected_with_the_admission_message(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkerPoolSpec.model_validate(spec)


def test_status_renders_camel_case() -> None:
    status = WorkerPoolStatus(
        observed_generation=3,
        desired_workers=2,
        last_recycle=LastRecycle(
            request="*",
            handled_at="2026-11-26T10:00:00Z",  # type: ignore[arg-type]
            results=[RecycleResult(worker_id="w", pid=None, status="recycle_requested")],
        ),
    )
    out = to_status(status)
    assert out["observedGeneration"] == 3
    assert out["lastRecycle"]["handledAt"] == "2026-11-26T10:00:00Z"
    assert out["lastRecycle"]["results"][0] == {
        "workerId": "w",
        "pid": None,
        "status": "recycle_requested",
        "reason": "",
    }
