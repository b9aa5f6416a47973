"""TEST INFRASTRUCTURE — the whole local stack: control plane, harness kubelet, Redis.

One implementation for the pytest fixtures, `make cluster-up` and the demo.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from .binaries import REPO_ROOT
from .cluster import LocalCluster
from .procs import pid_alive, spawn, stop, wait_for
from .redis_server import RedisServer

CRD_PATH = REPO_ROOT / "crds" / "workerpool.yaml"


class DevStack:
    def __init__(
        self, workdir: Path | None = None, *, redis: bool = True, kubelet_namespaces: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="wpo-stack-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster = LocalCluster(self.workdir / "cluster")
        self.redis = RedisServer(self.workdir / "redis") if redis else None
        self.kubelet_namespaces = kubelet_namespaces
        self.kubelet: subprocess.Popen[bytes] | None = None

    @property
    def kubelet_log_dir(self) -> Path:
        return self.workdir / "pods"

    def start(self) -> DevStack:
        try:
            self.cluster.start()
            self.cluster.install_crd(CRD_PATH)
            argv = [
                sys.executable,
                "-m",
                "workerpool.devcluster.kubelet",
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "--log-dir",
                str(self.kubelet_log_dir),
            ]
            for ns in self.kubelet_namespaces:
                argv += ["--namespace", ns]
            self.kubelet = spawn(argv, log_path=self.workdir / "logs" / "harness-kubelet.log", env=self.cluster.env())
            wait_for(self._node_ready, timeout=30, what="the harness kubelet's Node", interval=0.2)
            if self.redis is not None:
                self.redis.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _node_ready(self) -> bool:
        if self.kubelet is not None and self.kubelet.poll() is not None:
            raise RuntimeError(f"harness kubelet exited: see {self.workdir / 'logs' / 'harness-kubelet.log'}")
        out = self.cluster.kubectl(
            "get",
            "node",
            "harness-kubelet",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )
        return out.stdout.strip() == "True"

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.kubelet is not None:
            stop(self.kubelet, grace=10)
        self.cluster.stop()

    def pids(self) -> list[int]:
        pids = self.cluster.pids()
        if self.kubelet is not None:
            pids.append(self.kubelet.pid)
        if self.redis is not None and self.redis.proc is not None:
            pids.append(self.redis.proc.pid)
        return pids

    def leaked(self, pids: list[int]) -> list[int]:
        return [p for p in pids if pid_alive(p)]

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
