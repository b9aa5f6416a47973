"""TEST INFRASTRUCTURE — the whole local stack on this machine: the node's
network, the control plane, one real node (containerd, kubelet, kube-proxy)
and a redis-server that pods reach on the bridge gateway.

One implementation for the pytest fixtures, `make cluster-up` and the demo.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from . import network
from .binaries import REPO_ROOT
from .certs import make_redis_tls
from .controlplane import LocalCluster
from .kwok import KwokNodes
from .node import NODE_NAME, LocalNode
from .procs import pid_alive
from .rabbitmq_server import RabbitMQServer
from .redis_server import RedisServer
from .sentinel_set import SentinelSet
from .waiting import wait_until

CRD_PATH = REPO_ROOT / "crds" / "workerpool.yaml"
IMAGE_DIR = REPO_ROOT / "build" / "image"
IMAGE_BUILD = REPO_ROOT / "hack" / "build-image.sh"


def project_image(*, build: bool = True) -> tuple[str, Path]:
    """The project's image reference and its docker-archive; built by `make image` (here: when missing)."""
    tar, ref = IMAGE_DIR / "workerpool.tar", IMAGE_DIR / "image.ref"
    if build and not (tar.is_file() and ref.is_file()):
        subprocess.run([str(IMAGE_BUILD)], check=True)
    return ref.read_text().strip(), tar


class DevStack:
    def __init__(
        self,
        workdir: Path | None = None,
        *,
        redis: bool = True,
        rabbitmq: bool = False,
        sentinel: bool = False,
        kwok_nodes: int = 0,
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="wpo-stack-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.network = network.NodeNetwork(self.workdir / "cni")
        self.cluster = LocalCluster(
            self.workdir / "cluster",
            host=network.GATEWAY,
            node_name=NODE_NAME,
            service_range=network.SERVICE_RANGE,
            kubernetes_service_ip=network.KUBERNETES_SERVICE_IP,
        )
        self.node = LocalNode(self.workdir / "node", self.cluster, self.network)
        self.redis = RedisServer(self.workdir / "redis", host=network.GATEWAY) if redis else None
        self.rabbitmq = RabbitMQServer(self.workdir / "rabbitmq", host=network.GATEWAY) if rabbitmq else None
        # Redis as production runs it: Sentinel, TLS from its own CA, the contract's ACL users.
        self.sentinel = self.new_sentinel_set(self.workdir / "sentinel") if sentinel else None
        # Fake nodes next to the real one, for what needs many (devcluster.kwok); 0: no kwok at all.
        self.kwok = KwokNodes(self.workdir / "kwok", self.cluster, kwok_nodes) if kwok_nodes else None
        self.image, self.image_tar = project_image()

    def start(self) -> DevStack:
        try:
            self.network.up()
            self.cluster.start()
            self.cluster.install_crd(CRD_PATH)
            self.node.start(images=[self.image_tar])
            if self.kwok is not None:
                self.kwok.start()
            if self.redis is not None:
                self.redis.start()
            if self.rabbitmq is not None:
                self.rabbitmq.start()
            if self.sentinel is not None:
                self.sentinel.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # Controllers first: no pod is recreated or bound while the node drains.
        self.cluster.stop_controllers()
        if self.kwok is not None:
            self.kwok.stop()
        self.node.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.rabbitmq is not None:
            self.rabbitmq.stop()
        if self.sentinel is not None:
            self.sentinel.stop()
        self.cluster.stop()
        self.network.down()

    def restricted_namespace(self, name: str, timeout: float = 30.0) -> None:
        """A namespace where Pod Security enforces "restricted", as a careful cluster has, with its
        `default` ServiceAccount (pods are refused before that exists).

        The ServiceAccount is applied with the namespace rather than waited for: the controller
        that makes it took up to 30 s while a test run kept the control plane busy. Server-side
        apply makes it or leaves the controller's alone, whichever comes first."""
        label = {"pod-security.kubernetes.io/enforce": "restricted"}
        items = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": label}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}},
        ]
        self.cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        wait_until(
            lambda: self.cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
            timeout=timeout,
            what=f"the default ServiceAccount in {name}",
            interval=0.1,
        )

    def new_redis(self, workdir: Path) -> RedisServer:
        """Another redis-server that pods can reach (the tests' own, one per test)."""
        return RedisServer(workdir, host=network.GATEWAY)

    def new_rabbitmq(self, workdir: Path) -> RabbitMQServer:
        """A rabbitmq-server that pods can reach (the tests' own, one per test that needs one)."""
        return RabbitMQServer(workdir, host=network.GATEWAY)

    def new_sentinel_set(self, workdir: Path, *, tls: bool = True, acl: bool = True) -> SentinelSet:
        """A primary, a replica and three Sentinels that pods reach (TLS from a CA of its own)."""
        pem = make_redis_tls(workdir / "tls", (network.GATEWAY,)) if tls else None
        return SentinelSet(workdir, host=network.GATEWAY, tls=pem, acl=acl)

    def pids(self) -> list[int]:
        pids = self.cluster.pids() + self.node.pids()
        if self.kwok is not None and self.kwok.proc is not None:
            pids.append(self.kwok.proc.pid)
        if self.redis is not None and self.redis.proc is not None:
            pids.append(self.redis.proc.pid)
        if self.rabbitmq is not None:
            pids += [p.pid for p in (self.rabbitmq.proc, self.rabbitmq.epmd) if p is not None]
        if self.sentinel is not None:
            pids += self.sentinel.pids()
        return pids

    def leftovers(self, pids: list[int]) -> list[str]:
        """Everything this stack made that is still on the machine (empty after a clean stop)."""
        found = [f"pid {p}" for p in pids if pid_alive(p)]
        return found + self.node.leftovers() + network.leftovers()

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
