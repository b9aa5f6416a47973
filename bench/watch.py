"""Watch events from `kubectl get -w`, timestamped on arrival (what a user would see)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

from devcluster import binaries
from devcluster.controlplane import LocalCluster


class Watch:
    """`kubectl get -w -o json` lines, timestamped on arrival."""

    def __init__(self, cluster: LocalCluster, namespace: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [
                str(binaries.find("kubectl")),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "get",
                *args,
                "-n",
                namespace,
                "-w",
                "--output-watch-events",
                "-o",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # one compact JSON event per line
            if line.strip():
                event = json.loads(line)
                with self.lock:
                    self.events.append((time.monotonic(), event))

    def since(self, t0: float) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return [(t, e) for t, e in self.events if t >= t0]

    def ended(self) -> str | None:
        """Why kubectl stopped watching before `stop()` (None: it is still watching)."""
        code = self.proc.poll()
        if code is None:
            return None
        assert self.proc.stderr is not None
        return f"kubectl exited {code}: {self.proc.stderr.read().strip()[-300:]}"

    def stop(self) -> None:
        self.proc.terminate()
