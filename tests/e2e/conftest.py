"""Fixtures the e2e modules share: the pools of the test's namespace (through kubectl),
an operator process for it, and a Redis client of the test's own redis-server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.client import Client
from devcluster.harness import OperatorProcess, Pools
from devcluster.procs import free_port
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack
from devcluster.webhooks import apply_configuration, wait_served, webhook_env


@pytest.fixture
def pools(stack: DevStack, namespace: str) -> Pools:
    return Pools(stack, namespace)


@pytest.fixture
def operator(stack: DevStack, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(stack, namespace, tmp_path).start()
    yield op
    op.stop()


@pytest.fixture
def client(redis_server: RedisServer) -> Client:
    return Client(redis_server.url)


@contextlib.contextmanager
def webhook_serving_operator(
    stack: DevStack, namespace: str, tmp_path: Path, **env: str
) -> Iterator[OperatorProcess]:
    """An operator for `namespace` that serves the eviction webhook, the apiserver calling it."""
    port, name = free_port(), f"wpo-evictions-{namespace}"
    apply_configuration(stack, name, namespace, port, tmp_path)
    op = OperatorProcess(stack, namespace, tmp_path, **webhook_env(name, port), **env).start()
    try:
        wait_served(stack, name, port)
        yield op
    finally:
        op.stop()
        stack.cluster.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")


@pytest.fixture
def webhook_operator(stack: DevStack, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with webhook_serving_operator(stack, namespace, tmp_path) as op:
        yield op
