"""Fixtures the e2e modules share: the pools of the test's namespace (through kubectl),
an operator process for it, and a Redis client of the test's own redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.client import Client
from devcluster.harness import OperatorProcess, Pools
from devcluster.rabbitmq_server import RabbitMQVhost
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack
from devcluster.webhooks import webhook_serving_operator


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


@pytest.fixture
def webhook_operator(stack: DevStack, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with webhook_serving_operator(stack, namespace, tmp_path) as op:
        yield op


@pytest.fixture
def bifrost(stack: DevStack, namespace: str, rabbitmq_server: RabbitMQVhost) -> str:
    """The namespace ready for Bifrost-wire pools (test_bifrost.prepare); the image to run them on."""
    from .test_bifrost import prepare

    return prepare(stack, namespace, rabbitmq_server)
