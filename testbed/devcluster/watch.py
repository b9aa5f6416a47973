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
    """`kubectl get -w -o json` lines, timestamped on arrival.

    The API server may end a watch (its timeout, or a watcher that falls behind
    under load); `kubectl get -w` then exits 0. Like a user who runs it again,
    this starts kubectl again: the new list shows every object once more, as
    ADDED, which the benchmarks' transition logic treats as no change.
    """

    def __init__(self, cluster: LocalCluster, namespace: str, *args: str) -> None:
        self.argv = [
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
        ]
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.restarts: list[str] = []  # why each previous kubectl ended
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.proc = self._start()
        threading.Thread(target=self._read, daemon=True).start()

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _read(self) -> None:
        while not self.stopped.is_set():
            assert self.proc.stdout is not None
            for line in self.proc.stdout:  # one compact JSON event per line
                if line.strip():
                    event = json.loads(line)
                    with self.lock:
                        self.events.append((time.monotonic(), event))
            if self.stopped.is_set():
                return
            code = self.proc.wait()
            assert self.proc.stderr is not None
            self.restarts.append(f"exit {code}: {self.proc.stderr.read().strip()[-200:]}")
            self.proc = self._start()

    def since(self, t0: float) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return [(t, e) for t, e in self.events if t >= t0]

    def stop(self) -> None:
        self.stopped.set()
        self.proc.terminate()


class Objects:
    """The latest state of each object a watch showed, and when each was first seen going."""

    def __init__(self, watch: Watch, taint: str | None = None) -> None:
        self.watch, self.taint, self.seen = watch, taint, 0
        self.latest: dict[str, dict[str, Any]] = {}
        self.going: dict[str, float] = {}  # name -> when first seen being deleted
        self.tainted: dict[str, float] = {}  # name -> when first seen with the taint `taint`
        self.added: dict[str, float] = {}  # name -> when first seen at all (creations, in order)
        self.removed: dict[str, float] = {}  # name -> when its DELETED event came (gone from the API)
        self.peak_live = 0  # the most objects not being deleted at any one event

    def update(self) -> dict[str, dict[str, Any]]:
        events = self.watch.since(0.0)
        for at, event in events[self.seen :]:
            obj = event.get("object") or {}
            name = obj.get("metadata", {}).get("name")
            if not name:
                continue
            self.added.setdefault(name, at)
            if event.get("type") == "DELETED" or obj["metadata"].get("deletionTimestamp"):
                self.going.setdefault(name, at)
            if self.taint and any(t.get("key") == self.taint for t in (obj.get("spec") or {}).get("taints") or []):
                self.tainted.setdefault(name, at)
            if event.get("type") == "DELETED":
                self.removed.setdefault(name, at)
                self.latest.pop(name, None)
            else:
                self.latest[name] = obj
            self.peak_live = max(self.peak_live, sum(1 for n in self.latest if n not in self.going))
        self.seen = len(events)
        return self.latest
