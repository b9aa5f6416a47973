"""Shared helpers for e2e tests: named deadlines, reading objects."""

from __future__ import annotations

import json
from typing import Any

from devcluster.controlplane import LocalCluster

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
