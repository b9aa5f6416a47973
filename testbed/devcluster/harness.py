"""E2E helpers: run `workerpool operator` as a real process against the local
cluster (the tests that kill or restart it; the deployed operator runs from the
chart), apply WorkerPools whose pods run the project's image on the node, read
status through a separate client (kubectl)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from . import waiting
from .cli_process import start_cli
from .procs import free_port
from .stack import DevStack, project_image

T = TypeVar("T")

# Named deadlines.
READY = 60.0
SCALE = 60.0
STATUS = 15.0
RECYCLE = 15.0


def wait_until(fn: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """`devcluster.waiting.wait_until`, tolerating a kubectl call that fails while things settle.

    Only that (RuntimeError, from LocalCluster.kubectl): a KeyError or TypeError in a
    predicate is a bug in the test and fails it at once, not after the whole timeout.
    """
    return waiting.wait_until(fn, timeout=timeout, what=what, interval=interval, tolerate=(RuntimeError,))


class OperatorProcess:
    def __init__(
        self, stack: DevStack, namespace: str, log_dir: Path, kubeconfig: Path | None = None, **env: str
    ) -> None:
        self.stack = stack
        self.kubeconfig = kubeconfig or stack.cluster.kubeconfig
        self.log = log_dir / "operator.log"
        self.metrics_port = free_port()
        self.env = {
            **stack.cluster.env(),
            "KUBECONFIG": str(self.kubeconfig),
            "WORKERPOOL_NAMESPACES": namespace,
            "WORKERPOOL_METRICS_PORT": str(self.metrics_port),
            "WORKERPOOL_LIVENESS_PORT": str(free_port()),
            "WORKERPOOL_RESYNC_SECONDS": "2",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        self.proc = start_cli("operator", self.env, self.log)
        return self

    def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def samples(self) -> dict[str, float]:
        """Every sample of the operator's /metrics by `name{labels}` (empty when it is not serving yet)."""
        return {series_key(name, labels): value for name, labels, value in self.series()}

    def metric(self, name: str, **labels: str) -> float:
        """A sample from the operator's /metrics whose labels include `labels` (0 when absent)."""
        for series, have, value in self.series():
            if series == name and all(have.get(k) == v for k, v in labels.items()):
                return value
        return 0.0

    def series(self) -> list[Series]:
        """Every sample of the operator's /metrics, parsed (empty when it is not serving yet)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                return parse_series(r.read().decode())
        except OSError:
            return []

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


Series = tuple[str, dict[str, str], float]  # (sample name, labels, value)


def parse_series(text: str) -> list[Series]:
    """Prometheus text exposition, parsed by prometheus_client's own parser (label values may
    hold commas, quotes and escapes)."""
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def series_key(name: str, labels: dict[str, str]) -> str:
    """`name{a="1",b="2"}`, labels sorted: how the tests name one series."""
    return name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")


def parse_samples(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {`name{labels}` (labels sorted): value}."""
    return {series_key(name, labels): value for name, labels, value in parse_series(text)}


# Shorter than the chart's 15/10/2 s so that failover tests take seconds, in the same ratios.
FAST_LEASE = {"duration": 6, "renew_deadline": 4, "retry_period": 1}


def replica_env(namespace: str, identity: str, lease: str, timing: dict[str, float] | None = None) -> dict[str, str]:
    """The environment of one of several operator replicas electing a leader on one Lease."""
    t = timing or FAST_LEASE
    return {
        "WORKERPOOL_LEADER_ELECTION": "true",
        "WORKERPOOL_LEASE_NAMESPACE": namespace,
        "WORKERPOOL_LEASE_NAME": lease,
        "WORKERPOOL_IDENTITY": identity,
        "WORKERPOOL_LEASE_DURATION_SECONDS": str(t["duration"]),
        "WORKERPOOL_LEASE_RENEW_DEADLINE_SECONDS": str(t["renew_deadline"]),
        "WORKERPOOL_LEASE_RETRY_PERIOD_SECONDS": str(t["retry_period"]),
    }


def start_replica(
    stack: DevStack,
    namespace: str,
    log_dir: Path,
    identity: str,
    lease: str,
    timing: dict[str, float] | None = None,
    **env: str,
) -> OperatorProcess:
    """One operator replica on `lease`, logging into `log_dir` (made here)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    op = OperatorProcess(stack, namespace, log_dir)
    op.env.update(replica_env(namespace, identity, lease, timing), **env)
    return op.start()


def lease_holder(stack: DevStack, namespace: str, lease: str) -> str | None:
    out = stack.cluster.kubectl(
        "get", "lease", lease, "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}", check=False
    )
    return out.stdout.strip() or None if out.returncode == 0 else None


def worker_container(**extra: Any) -> dict[str, Any]:
    """The worker container as a user writes it: the project's image, `workerpool worker`."""
    return {"name": "worker", "image": project_image(build=False)[0], "command": ["workerpool", "worker"], **extra}


def pool_manifest(name: str, redis_url: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "minWorkers": 1,
        "maxWorkers": 3,
        "processes": {"min": 1, "max": 2},
        "heartbeatIntervalSeconds": 1,
        "gracefulShutdownSeconds": 1,
        "executionTimeoutSeconds": 30,
        "scaling": {"scaleDownDelaySeconds": 3},
        "template": {"spec": {"containers": [worker_container()]}},
    }
    if redis_url is not None:
        body["redis"] = {"url": redis_url}
    body.update(spec)
    return {"apiVersion": "bifrost.dev/v1alpha1", "kind": "WorkerPool", "metadata": {"name": name}, "spec": body}


class Pools:
    """Read and write WorkerPools through kubectl (a client separate from the operator)."""

    def __init__(self, stack: DevStack, namespace: str) -> None:
        self.cluster = stack.cluster
        self.ns = namespace

    def apply(self, manifest: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "--server-side", "-n", self.ns, "-f", "-", input=json.dumps(manifest))

    def get(self, name: str) -> dict[str, Any]:
        return json.loads(self.cluster.kubectl("get", "wp", name, "-n", self.ns, "-o", "json").stdout)  # type: ignore[no-any-return]

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == type_), None)

    def pods(self, name: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl("get", "pods", "-n", self.ns, "-l", f"bifrost.dev/pool={name}", "-o", "json")
        return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]

    def live_pods(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(name) if not p["metadata"].get("deletionTimestamp")]

    def annotate(self, name: str, value: str) -> None:
        self.cluster.kubectl("annotate", "wp", name, "-n", self.ns, f"bifrost.dev/recycle={value}", "--overwrite")

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "events", "-n", self.ns, "--field-selector", f"involvedObject.name={name}", "-o", "json"
        )
        return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]

    def wait_status(
        self, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = STATUS
    ) -> dict[str, Any]:
        return wait_until(lambda: s if (s := self.status(name)) and check(s) else None, timeout=timeout, what=what)

    def wait_condition(self, name: str, type_: str, status: str = "True", timeout: float = STATUS) -> dict[str, Any]:
        """The pool's condition `type_` once it has `status`."""
        return wait_until(
            lambda: (c := self.condition(name, type_)) and c["status"] == status and c,
            timeout=timeout,
            what=f"{name}: {type_}={status}",
        )
