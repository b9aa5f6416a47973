"""The operator under its own identity, so that a fault can be aimed at its requests only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devcluster.controlplane import LocalCluster


@dataclass(frozen=True)
class Identity:
    name: str  # the ServiceAccount's, also used to name what the test creates for it
    namespace: str
    kubeconfig: Path

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"


@contextmanager
def service_account(cluster: LocalCluster, namespace: str, directory: Path, prefix: str) -> Iterator[Identity]:
    """A fresh ServiceAccount with a token kubeconfig, bound to cluster-admin: these
    tests are about faults, not RBAC (the chart's RBAC has its own e2e test)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
    cluster.kubectl(
        "create", "clusterrolebinding", name, "--clusterrole=cluster-admin", f"--serviceaccount={namespace}:{name}"
    )
    try:
        token = cluster.kubectl("create", "token", name, "-n", namespace).stdout.strip()
        kubeconfig = cluster.write_kubeconfig(directory / f"{name}.kubeconfig", user={"token": token}, name=name)
        yield Identity(name, namespace, kubeconfig)
    finally:
        cluster.kubectl("delete", "clusterrolebinding", name, check=False)
