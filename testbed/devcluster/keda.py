"""TEST INFRASTRUCTURE — KEDA, the peer of bench/bifrost_vs_keda.py.

KEDA (github.com/kedacore/keda/v2, built by hack/build-keda.sh at the versions
hack/versions.env pins) runs as two local processes against the local API
server, as its manifests (`config/manager`, `config/metrics-server`) run them in
the cluster: the operator (`keda`: ScaledObjects, the HPA it makes, the scalers,
the gRPC metrics service) and the metrics API server (`keda-adapter`), registered
as the `v1beta1.external.metrics.k8s.io` APIService. The API server reaches the
adapter through the aggregation layer (LocalCluster configures kubeadm's
front-proxy) at the endpoint of a selector-less Service, the host's bridge
address; the HPA controller of the local kube-controller-manager reads the
external metric from there at its default sync period (15 s), as in Kind.

The certificates KEDA's cert rotation would make (`kedaorg-certs`: ca.crt,
tls.crt, tls.key, for the operator's gRPC server and the adapter's client and
serving ends) are made here once, by one CA of their own.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from .certs import make_serving_tls
from .controlplane import LocalCluster
from .procs import check_alive, free_port, spawn, stop
from .waiting import wait_until

NAMESPACE = "keda"
ADAPTER_SERVICE = "keda-metrics-apiserver"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "build-keda.sh"


def bin_dir(version: str) -> Path:
    out = subprocess.run([str(BUILD_SCRIPT), "--print-bin-dir", version], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def built(version: str) -> bool:
    d = bin_dir(version)
    return (d / "keda").is_file() and (d / "keda-adapter").is_file()


def scaled_object(
    name: str,
    *,
    deployment: str,
    queue: str,
    secret: str,
    scale_in: bool,
    min_replicas: int = 1,
    max_replicas: int = 4,
    polling: int = 5,
    cooldown: int = 3600,
    value: str = "1",
) -> list[dict[str, Any]]:
    """A ScaledObject on `deployment` as Bifrost's runbook configures it (the RabbitMQ
    scaler in AMQP QueueLength mode, value 1, pollingInterval 5, cooldown 3600, min 1,
    max 4), its URL from `secret` (key `url`) through a TriggerAuthentication; with
    `scale_in=False` the HPA never scales down (`selectPolicy: Disabled`), the runbook's
    setting; with True, the HPA's own defaults (what KEDA's users get)."""
    auth = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": f"{name}-rabbitmq"},
        "spec": {"secretTargetRef": [{"parameter": "host", "name": secret, "key": "url"}]},
    }
    spec: dict[str, Any] = {
        "scaleTargetRef": {"name": deployment},
        "pollingInterval": polling,
        "cooldownPeriod": cooldown,
        "minReplicaCount": min_replicas,
        "maxReplicaCount": max_replicas,
        "triggers": [
            {
                "type": "rabbitmq",
                "metadata": {"protocol": "amqp", "queueName": queue, "mode": "QueueLength", "value": value},
                "authenticationRef": {"name": f"{name}-rabbitmq"},
            }
        ],
    }
    if not scale_in:
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"selectPolicy": "Disabled"}}}}
    so = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name}, "spec": spec}
    return [auth, so]


class Keda:
    """KEDA `version` against `cluster` (which must have a node: the adapter's endpoint
    is the host's bridge address, and an endpoint may not be a loopback address)."""

    def __init__(self, workdir: Path, cluster: LocalCluster, version: str) -> None:
        self.workdir, self.cluster, self.version = workdir, cluster, version
        self.bin = bin_dir(version)
        self.grpc_port, self.adapter_port = free_port(), free_port()
        self.health_port, self.metrics_port, self.adapter_metrics_port = free_port(), free_port(), free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> Keda:
        if not built(self.version):
            subprocess.run([str(BUILD_SCRIPT)], check=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for crd in sorted((self.bin / "crds").glob("*.yaml")):
            self.cluster.install_crd(crd)
        self.cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        tls = make_serving_tls(
            self.workdir / "certs",
            name="keda-local",
            ips=(self.cluster.host,),
            dns=(f"{ADAPTER_SERVICE}.{NAMESPACE}.svc", f"keda-operator.{NAMESPACE}.svc"),
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "POD_NAMESPACE": NAMESPACE,
            # Read from the pod's ServiceAccount mount in the cluster; out of it, from here.
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
            "WATCH_NAMESPACE": "",
            "KEDA_HTTP_DEFAULT_TIMEOUT": "3000",
        }
        self.procs["keda"] = spawn(self._operator_argv(tls.dir), log_path=self.workdir / "keda-operator.log", env=env)
        wait_until(self._operator_ready, timeout=90, what="the KEDA operator's /readyz", interval=0.3)
        self._register_adapter(tls.ca.read_bytes())
        self.procs["keda-adapter"] = spawn(
            self._adapter_argv(tls.dir), log_path=self.workdir / "keda-adapter.log", env=env
        )
        wait_until(self._api_available, timeout=90, what=f"the APIService {API_SERVICE} Available", interval=0.5)
        return self

    def stop(self) -> None:
        for name in ("keda-adapter", "keda"):
            if name in self.procs:
                stop(self.procs.pop(name))
        self.cluster.kubectl("delete", "apiservice", API_SERVICE, "--ignore-not-found", check=False)

    def _operator_argv(self, certs: Path) -> list[str]:
        return [
            str(self.bin / "keda"),
            "--leader-elect=false",
            f"--cert-dir={certs}",
            f"--ca-dir={certs}",
            f"--metrics-service-bind-address=127.0.0.1:{self.grpc_port}",
            f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{self.health_port}",
            "--zap-log-level=info",
            "--zap-encoder=console",
        ]

    def _adapter_argv(self, certs: Path) -> list[str]:
        kubeconfig = str(self.cluster.kubeconfig)
        return [
            str(self.bin / "keda-adapter"),
            f"--bind-address={self.cluster.host}",
            f"--secure-port={self.adapter_port}",
            f"--port={self.adapter_metrics_port}",
            f"--client-ca-file={certs / 'ca.crt'}",
            f"--tls-cert-file={certs / 'tls.crt'}",
            f"--tls-private-key-file={certs / 'tls.key'}",
            f"--cert-dir={certs}",
            f"--metrics-service-address=127.0.0.1:{self.grpc_port}",
            f"--lister-kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--v=0",
        ]

    def _register_adapter(self, ca: bytes) -> None:
        """The Service the APIService names, its endpoint (the adapter on the host's
        bridge address) and the APIService, trusting the adapter's CA."""
        port = {"name": "https", "port": 443, "targetPort": self.adapter_port, "protocol": "TCP"}
        items: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE},
                "spec": {"ports": [port]},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{ADAPTER_SERVICE}-host",
                    "namespace": NAMESPACE,
                    "labels": {"kubernetes.io/service-name": ADAPTER_SERVICE},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [self.cluster.host], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": self.adapter_port, "protocol": "TCP"}],
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": API_SERVICE},
                "spec": {
                    "service": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE, "port": 443},
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "caBundle": base64.b64encode(ca).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ]
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    def _operator_ready(self) -> bool:
        check_alive(self.procs["keda"], "keda", self.workdir / "keda-operator.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _api_available(self) -> bool:
        check_alive(self.procs["keda-adapter"], "keda-adapter", self.workdir / "keda-adapter.log")
        out = self.cluster.kubectl("get", "apiservice", API_SERVICE, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    def __enter__(self) -> Keda:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
