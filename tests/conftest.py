"""Fixtures: a real redis-server per test; one real control plane per session
(etcd + kube-apiserver + GC/namespace controllers + the harness kubelet) with a
fresh namespace per test. Nothing here is a mock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from workerpool.devcluster.procs import pid_alive
from workerpool.devcluster.redis_server import RedisServer
from workerpool.devcluster.stack import DevStack


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of this test's own (isolated data and port)."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
        assert not pid_alive(server.proc.pid if server.proc else -1), "redis-server leaked"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The local control plane, started once per test session."""
    s = DevStack(tmp_path_factory.mktemp("stack"), redis=False).start()
    pids = s.pids()
    try:
        yield s
    finally:
        s.stop()
        leaked = s.leaked(pids)
        assert not leaked, f"processes left behind by the local cluster: {leaked}"


@pytest.fixture
def namespace(stack: DevStack) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (the namespace controller empties it).

    Pod Security admission enforces "restricted" in it, as a careful cluster would:
    a worker pod that violates it fails the test.
    """
    name = f"t-{uuid.uuid4().hex[:8]}"
    stack.cluster.kubectl("create", "namespace", name)
    stack.cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    try:
        yield name
    finally:
        stack.cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
