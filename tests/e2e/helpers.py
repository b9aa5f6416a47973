"""Shared helpers for e2e tests: named deadlines, finding processes by marker."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from workerpool.devcluster.cluster import LocalCluster

# Named deadlines: how long the tests wait for each kind of thing.
POD_START = 30.0
POD_GONE = 30.0
GC = 60.0


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def get_json(cluster: LocalCluster, *args: str) -> Any:
    out = cluster.kubectl("get", *args, "-o", "json", check=False)
    if out.returncode != 0:
        if "NotFound" in out.stderr:
            return None
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)
