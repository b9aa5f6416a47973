"""TEST INFRASTRUCTURE — Karpenter with its kwok cloud provider: a node autoscaler.

`karpenter-kwok` (sigs.k8s.io/karpenter/kwok, built by
hack/build-control-plane.sh) runs as a local process against the local API
server, as its Helm chart would run it in the cluster: the same environment,
leader election off (one replica). It launches a Node (annotated
`kwok.x-k8s.io/node: fake`, so `devcluster.kwok` plays it) for each NodeClaim
it makes, and consolidates: it picks nodes to empty, taints them
`karpenter.sh/disrupted`, evicts their pods through the Eviction API, and
deletes them. `node_pool()` makes a NodePool whose nodes carry the kwok taint
and label, so the pods `devcluster.kwok.tolerate_kwok` made land there.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from . import binaries
from .controlplane import LocalCluster
from .kwok import NODE_SELECTOR, TAINT
from .procs import check_alive, free_port, spawn, stop
from .waiting import wait_until

NAMESPACE = "karpenter"
DISRUPTED_TAINT = "karpenter.sh/disrupted"
NODE_CLASS = {"apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass", "metadata": {"name": "default"}}


def node_pool(
    name: str = "default", *, instance_type: str = "c-4x-amd64-linux", consolidate_after: str = "15s"
) -> dict[str, Any]:
    """On-demand nodes of one instance type, consolidated when empty or underutilized."""
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": dict(NODE_SELECTOR)},
                "spec": {
                    "requirements": [
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [instance_type]},
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                    ],
                    "taints": [TAINT],
                    "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"},
                    "expireAfter": "Never",
                },
            },
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": consolidate_after,
                "budgets": [{"nodes": "100%"}],
            },
            "limits": {"cpu": "1000"},
        },
    }


class Karpenter:
    def __init__(self, workdir: Path, cluster: LocalCluster) -> None:
        self.workdir, self.cluster = workdir, cluster
        self.log_path = workdir / "karpenter.log"
        self.health_port, self.metrics_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *pools: dict[str, Any]) -> Karpenter:
        """Its CRDs, then the controller, then `pools` (NodePools) and the KWOKNodeClass they name."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for crd in sorted((binaries.find("karpenter-kwok").parent / "crds").glob("*.yaml")):
            self.cluster.install_crd(crd)
        self.cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "SYSTEM_NAMESPACE": NAMESPACE,
            "DISABLE_LEADER_ELECTION": "true",
            "KUBERNETES_MIN_VERSION": "1.19.0-0",  # the chart's value
            "METRICS_PORT": str(self.metrics_port),
            "HEALTH_PROBE_PORT": str(self.health_port),
            "LOG_LEVEL": "info",
        }
        self.proc = spawn([str(binaries.find("karpenter-kwok"))], log_path=self.log_path, env=env)
        wait_until(self._ready, timeout=60, what="Karpenter's /readyz", interval=0.2)
        items = [NODE_CLASS, *pools]
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        check_alive(self.proc, "karpenter", self.log_path)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
