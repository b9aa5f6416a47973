"""Shared helpers for e2e tests: named deadlines, reading objects."""

from __future__ import annotations

import json
from typing import Any

from devcluster.controlplane import LocalCluster
from devcluster.harness import READY, Pools

# Named deadlines: how long the tests wait for each kind of thing.
POD_START = 30.0
POD_GONE = 30.0
GC = 60.0


def get_json(cluster: LocalCluster, *args: str) -> Any:
    out = cluster.kubectl("get", *args, "-o", "json", check=False)
    if out.returncode != 0:
        if "NotFound" in out.stderr:
            return None
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)


def ready_workers(pools: Pools, name: str, count: int) -> list[str]:
    """The pool's worker ids once `count` workers are ready and reported."""
    status = pools.wait_status(
        name,
        lambda s: s.get("readyWorkers") == count and len(s.get("workerDetails", [])) == count,
        f"{count} ready workers",
        timeout=READY,
    )
    return sorted(w["workerId"] for w in status["workerDetails"])


def terminating(cluster: LocalCluster, namespace: str, pod: str) -> bool:
    body = get_json(cluster, "pod", pod, "-n", namespace)
    return body is None or body["metadata"].get("deletionTimestamp") is not None
