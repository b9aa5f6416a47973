"""The operator under a ServiceAccount's identity, as the chart runs it: the API server's
priority and fairness then treats its requests as a workload's (the test bed's admin
identity is in system:masters, which priority and fairness exempts), and a fault or a
slower priority level can be aimed at its requests only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controlplane import LocalCluster


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
    """A fresh ServiceAccount with a token kubeconfig, bound to cluster-admin: its users
    (fault tests, benchmarks) are about load and faults, not RBAC (the chart's RBAC has its
    own e2e test)."""
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


def own_priority_level(cluster: LocalCluster, who: Identity, shares: int, limit_response: str = "Queue") -> None:
    """A priority-and-fairness level of its own for `who`'s requests, with `shares` nominal
    concurrency shares (1: one seat at the default server concurrency shares' sum), nothing
    lent or borrowed. "Queue": excess requests wait in the server's queues (a slow server);
    "Reject": they are refused with 429 at once (a throttling one)."""
    response: dict[str, Any] = {"type": limit_response}
    if limit_response == "Queue":  # one flow (ByUser): one queue, long enough never to reject
        response["queuing"] = {"queues": 1, "handSize": 1, "queueLengthLimit": 1000}
    limited: dict[str, Any] = {"nominalConcurrencyShares": shares, "lendablePercent": 0, "borrowingLimitPercent": 0}
    limited["limitResponse"] = response
    rule = {
        "subjects": [{"kind": "ServiceAccount", "serviceAccount": {"name": who.name, "namespace": who.namespace}}],
        "resourceRules": [
            {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"], "clusterScope": True}
        ],
    }
    apf = [
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": who.name},
            "spec": {"type": "Limited", "limited": limited},
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": who.name},
            "spec": {
                "priorityLevelConfiguration": {"name": who.name},
                "matchingPrecedence": 100,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [rule],
            },
        },
    ]
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": apf}))


def remove_priority_level(cluster: LocalCluster, who: Identity) -> None:
    cluster.kubectl("delete", "flowschema", who.name, check=False)
    cluster.kubectl("delete", "prioritylevelconfiguration", who.name, check=False)
