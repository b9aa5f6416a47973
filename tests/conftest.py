"""Fixtures: a real redis-server per test; a real rabbitmq-server per session, with a
virtual host per test that needs one (`rabbitmq_server`), and a broker of its own for
a test that stops it (`rabbitmq_own`); one real local cluster per session
(etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and a real node:
containerd, kubelet, kube-proxy on a CNI bridge) with a fresh namespace per test.
Nothing here is a mock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.procs import pid_alive
from devcluster.rabbitmq_server import RabbitMQServer, RabbitMQVhost
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack

NAMESPACE_READY = 30.0


@pytest.fixture
def redis_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of this test's own (isolated data and port); pods reach it when the test has a cluster."""
    if "stack" in request.fixturenames:
        server = request.getfixturevalue("stack").new_redis(tmp_path / "redis").start()
    else:
        server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
        assert not pid_alive(server.proc.pid if server.proc else -1), "redis-server leaked"


def stopped_cleanly(server: RabbitMQServer) -> None:
    server.stop()
    for proc in (server.proc, server.epmd):
        assert not pid_alive(proc.pid if proc else -1), "rabbitmq-server or its epmd leaked"


@pytest.fixture(scope="session")
def rabbitmq_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    """The session's broker on loopback (for tests without the cluster)."""
    server = RabbitMQServer(tmp_path_factory.mktemp("rabbitmq")).start()
    yield server
    stopped_cleanly(server)


@pytest.fixture(scope="session")
def rabbitmq_cluster(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    """The session's broker that pods reach (the bridge's gateway)."""
    server = stack.new_rabbitmq(tmp_path_factory.mktemp("rabbitmq-cluster")).start()
    yield server
    stopped_cleanly(server)


@pytest.fixture
def rabbitmq_server(request: pytest.FixtureRequest) -> Iterator[RabbitMQVhost]:
    """A virtual host of this test's own on the session's broker (the one pods reach, with a cluster):
    its queues and messages apart from every other test's, at no broker start-up."""
    shared = "rabbitmq_cluster" if "stack" in request.fixturenames else "rabbitmq_local"
    server: RabbitMQServer = request.getfixturevalue(shared)
    vhost = server.new_vhost()
    yield vhost
    server.delete_vhost(vhost.name)


@pytest.fixture
def rabbitmq_own(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RabbitMQServer]:
    """A broker of this test's own, for a test that stops and starts it."""
    if "stack" in request.fixturenames:
        server = request.getfixturevalue("stack").new_rabbitmq(tmp_path / "rabbitmq").start()
    else:
        server = RabbitMQServer(tmp_path / "rabbitmq").start()
    yield server
    stopped_cleanly(server)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The local cluster, started once per test session; at the end nothing of it may remain."""
    s = DevStack(tmp_path_factory.mktemp("stack"), redis=False).start()
    pids = s.pids()
    try:
        yield s
    finally:
        s.stop()
        leftovers = s.leftovers(pids)
        assert not leftovers, f"left behind by the local cluster: {leftovers}"


@pytest.fixture
def namespace(stack: DevStack) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (the namespace controller empties it).

    Pod Security admission enforces "restricted" in it, as a careful cluster would:
    a worker pod that violates it fails the test. Yielded once its `default`
    ServiceAccount exists (pods are refused before that).
    """
    name = f"t-{uuid.uuid4().hex[:8]}"
    stack.restricted_namespace(name, timeout=NAMESPACE_READY)
    try:
        yield name
    finally:
        stack.cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
