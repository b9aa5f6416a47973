"""The operator's and the worker's environment: defaults, parsing, and errors that
name the variable without echoing its value."""

from __future__ import annotations

import pytest

from workerpool.controller.process.config import OperatorConfig, OperatorConfigError
from workerpool.worker.config import WorkerConfig, WorkerConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WORKERPOOL_") or name in ("REDIS_URL", "MIN_WORKERS", "MAX_WORKERS", "WORKER_ID"):
            monkeypatch.delenv(name)


def test_operator_defaults_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorConfig.from_env().namespaces == ()
    monkeypatch.setenv("WORKERPOOL_NAMESPACES", "a, b,")
    monkeypatch.setenv("WORKERPOOL_STATUS_REFRESH_SECONDS", "5")
    monkeypatch.setenv("WORKERPOOL_RESYNC_SECONDS", "")  # empty = the default (as the chart may render it)
    config = OperatorConfig.from_env()
    assert (config.namespaces, config.status_volatile_refresh, config.resync_seconds) == (("a", "b"), 5.0, 10.0)


def test_the_template_policy_is_off_unless_the_install_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not OperatorConfig.from_env().template_policy.enabled
    monkeypatch.setenv("WORKERPOOL_TEMPLATE_POLICY", "true")
    monkeypatch.setenv("WORKERPOOL_TEMPLATE_SERVICE_ACCOUNTS", "default, workers")
    policy = OperatorConfig.from_env().template_policy
    assert policy.enabled and policy.service_accounts == {"default", "workers"}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WORKERPOOL_QUEUE_POLL_SECONDS", "-1", "WORKERPOOL_QUEUE_POLL_SECONDS='-1': Input should be greater than 0"),
        ("WORKERPOOL_METRICS_PORT", "x", "WORKERPOOL_METRICS_PORT='x': Input should be a valid integer"),
        ("WORKERPOOL_STATUS_REFRESH_SECONDS", "0", "WORKERPOOL_STATUS_REFRESH_SECONDS='0': Input should be greater"),
    ],
)
def test_operator_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(OperatorConfigError, match=message):
        OperatorConfig.from_env()


def test_worker_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("WORKER_HEARTBEAT_INTERVAL_SECONDS", "20")
    config = WorkerConfig.from_env()
    assert (config.min_workers, config.max_workers) == (2, 10)
    assert config.ttl == 60  # three heartbeats, longer than the contract's 30 s
    assert config.worker_id  # the hostname when WORKER_ID is not set


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "REDIS_URL is required"),
        ({"REDIS_URL": "http://:s3cret@r/0"}, "REDIS_URL: unknown scheme"),
        ({"MIN_WORKERS": "4", "MAX_WORKERS": "2"}, "MAX_WORKERS=2 must be >= MIN_WORKERS=4"),
        ({"MIN_WORKERS": "two"}, "MIN_WORKERS='two': Input should be a valid integer"),
        ({"REGISTRATION_TTL_SECONDS": "5", "WORKER_HEARTBEAT_INTERVAL_SECONDS": "5"}, "must be longer than"),
    ],
)
def test_worker_errors_name_the_variable_and_never_the_url(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    if "REDIS_URL" not in env and message != "REDIS_URL is required":
        env = {"REDIS_URL": "redis://:s3cret@r/0", **env}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(WorkerConfigError, match=message) as caught:
        WorkerConfig.from_env()
    assert "s3cret" not in str(caught.value)


def test_the_operators_redis_identity_needs_the_hosts_it_may_go_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKERPOOL_REDIS_USERNAME", "workerpool-operator")
    monkeypatch.setenv("WORKERPOOL_REDIS_PASSWORD", "secret-pw")
    with pytest.raises(OperatorConfigError, match="WORKERPOOL_REDIS_IDENTITY_HOSTS") as refused:
        OperatorConfig.from_env()
    assert "secret-pw" not in str(refused.value)
    monkeypatch.setenv("WORKERPOOL_REDIS_IDENTITY_HOSTS", "redis-a, sentinel-1:26379")
    identity = OperatorConfig.from_env().redis_identity
    assert identity is not None and identity.hosts == {"redis-a", "sentinel-1:26379"} and not identity.plaintext
