"""TEST INFRASTRUCTURE — fake nodes from upstream kwok, next to the real node.

`kwok` (sigs.k8s.io/kwok, built by hack/build-control-plane.sh) plays the
kubelet of every Node annotated `kwok.x-k8s.io/node: fake`, with kwok's own
upstream stages (copied from its module at build time): a node is initialised
and heart-beats through its Lease; a pod bound to one is Running and Ready at
once, and its deletion is finished at once. The real kube-scheduler binds the
pods, so the API server carries a real cluster's load. The pods run no
container: their workers' heartbeats come from the test bed's generator
(`devcluster.heartbeats`).

Each fake node is tainted `kwok.x-k8s.io/node=fake:NoSchedule`, so only pods
that tolerate it (`TOLERATION`, `NODE_SELECTOR`) land there: every other test
keeps running on the real node. Karpenter's kwok provider makes nodes with the
same annotation, and this same kwok plays them too.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from . import binaries
from .controlplane import LocalCluster
from .procs import check_alive, spawn, stop
from .waiting import wait_until

log = logging.getLogger(__name__)

ANNOTATION = "kwok.x-k8s.io/node"
FAKE = "fake"
NODE_LABEL = "type"  # kwok's own examples select their nodes by type=kwok
TAINT = {"key": ANNOTATION, "value": FAKE, "effect": "NoSchedule"}
TOLERATION = {"key": ANNOTATION, "operator": "Equal", "value": FAKE, "effect": "NoSchedule"}
NODE_SELECTOR = {NODE_LABEL: "kwok"}
NODE_LEASE_SECONDS = 40  # the kubelet's default
# A node that is not Ready this long after it was created is a broken test bed, not a slow one.
READY_TIMEOUT = 120.0


def node_manifest(name: str, *, cpu: str = "32", memory: str = "256Gi", pods: str = "110") -> dict[str, Any]:
    capacity = {"cpu": cpu, "memory": memory, "pods": pods}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {ANNOTATION: FAKE, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                NODE_LABEL: "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
            },
        },
        "spec": {"taints": [TAINT]},
        "status": {"allocatable": capacity, "capacity": capacity},
    }


def tolerate_kwok(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template's copy that is scheduled on kwok nodes only."""
    spec = dict(template.get("spec") or {})
    spec["tolerations"] = [*spec.get("tolerations", []), TOLERATION]
    spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **NODE_SELECTOR}
    return {**template, "spec": spec}


class KwokNodes:
    """`count` fake nodes named `{prefix}-0` ..., played by one kwok process."""

    def __init__(self, workdir: Path, cluster: LocalCluster, count: int = 0, *, prefix: str = "kwok-node") -> None:
        self.workdir, self.cluster, self.initial, self.prefix = workdir, cluster, count, prefix
        self.names: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "kwok.log"

    def start(self) -> KwokNodes:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "kwok.yaml"
        stages = sorted((binaries.find("kwok").parent / "stages").glob("*.yaml"))
        config.write_text("\n---\n".join(p.read_text() for p in stages))
        self.proc = spawn(
            [
                str(binaries.find("kwok")),
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--config={config}",
                f"--manage-nodes-with-annotation-selector={ANNOTATION}={FAKE}",
                # kwok renews each node's Lease itself (the heartbeat-with-lease stage updates the
                # node's status only every 10-20 minutes). Without this the node lifecycle
                # controller marks every node Unknown 40-50 s after it joined: Karpenter then
                # treats a draining node as gone and drops it with its pods (docs/local-cluster.md).
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                "--cidr=10.250.0.0/16",  # pod IPs nothing routes: these pods run nothing
                "--node-ip=10.249.0.1",
            ],
            log_path=self.log_path,
        )
        self.add(self.initial)
        return self

    def add(self, count: int, *, prefix: str | None = None) -> list[str]:
        """`count` more nodes (named `{prefix}-N`, by default the nodes' prefix), once all are Ready."""
        prefix = prefix or self.prefix
        taken = sum(1 for n in self.names if n.rsplit("-", 1)[0] == prefix)
        names = [f"{prefix}-{i}" for i in range(taken, taken + count)]
        self.names += names
        if names:
            items = [node_manifest(n) for n in names]
            body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            self.cluster.kubectl("apply", "-f", "-", input=body)
            wait_until(lambda: self._all_ready(names), timeout=READY_TIMEOUT, what=f"{len(names)} kwok nodes Ready")
            log.info("%d kwok nodes Ready", len(names))
        return names

    def _all_ready(self, names: list[str]) -> bool:
        assert self.proc is not None
        check_alive(self.proc, "kwok", self.log_path)
        out = self.cluster.kubectl(
            "get", "nodes", "-l", f"{NODE_LABEL}=kwok", "-o",
            'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        ).stdout  # fmt: skip
        ready = {line.split("=")[0] for line in out.splitlines() if line.endswith("=True")}
        return ready >= set(names)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
