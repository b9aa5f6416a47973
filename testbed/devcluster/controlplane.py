"""TEST INFRASTRUCTURE — etcd + kube-apiserver + kube-controller-manager (all
controllers) + kube-scheduler on free ports in a temporary directory.

Used through DevStack (the pytest fixtures, `make cluster-up`, the demo), which
binds the API server to the node's bridge gateway so that pods reach it through
the `kubernetes` Service; the scale benchmark runs it alone on loopback.
Authorization is Node + RBAC; the admin identity is a client certificate in
system:masters; service-account signing keys are configured so TokenRequest
works and pods get their ServiceAccount token.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import ssl
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from . import binaries
from .certs import FRONT_PROXY_CLIENT, Pki, make_pki
from .procs import check_alive, free_port, spawn, stop, wait_for

log = logging.getLogger(__name__)

READY_TIMEOUT = 90.0


class LocalCluster:
    """A real control plane for tests. `with LocalCluster() as c: c.kubectl("get", "ns")`."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        node_name: str = "",
        service_range: str = "10.96.0.0/24",
        kubernetes_service_ip: str = "10.96.0.1",
        apiserver_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="wpo-cluster-"))
        # More kube-apiserver flags (a benchmark's slowed server: --max-mutating-requests-inflight=...).
        self.apiserver_args = apiserver_args
        self.host = host
        self.node_name = node_name
        self.service_range = service_range
        self.kubernetes_service_ip = kubernetes_service_ip
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.api_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pki: Pki | None = None

    # --- public -------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    def env(self) -> dict[str, str]:
        """Environment for child processes: KUBECONFIG and kubectl/helm on PATH."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": binaries.path_with_binaries()}

    def start(self) -> LocalCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # Reverse order: controllers before the API server before its storage.
        for name in reversed(list(self.procs)):
            stop(self.procs[name], grace=10)

    def stop_controllers(self) -> None:
        """kube-scheduler and kube-controller-manager: nothing new is created or bound after this."""
        for name in ("kube-scheduler", "kube-controller-manager"):
            if name in self.procs:
                stop(self.procs[name], grace=10)

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port (fault tests)."""
        stop(self.procs["kube-apiserver"], grace=10)
        self.procs["kube-apiserver"] = spawn(
            self._apiserver_argv(), log_path=self.workdir / "logs" / "kube-apiserver.log"
        )
        wait_for(self._apiserver_ready, timeout=READY_TIMEOUT, what="kube-apiserver /readyz", interval=0.2)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        kubectl = binaries.find("kubectl")
        res = subprocess.run(
            [str(kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def apply(self, manifest: str | Path, *, server_side: bool = True) -> None:
        args = ["apply", "--server-side", "--force-conflicts"] if server_side else ["apply"]
        if isinstance(manifest, Path):
            self.kubectl(*args, "-f", str(manifest))
        else:
            self.kubectl(*args, "-f", "-", input=manifest)

    def install_crd(self, path: Path) -> None:
        """Apply a CRD and wait until it is Established and its objects can be listed.

        Established is not enough: the first request for the new resource right after it
        could get `429 Too Many Requests: storage is (re)initializing` (its watch cache is
        still filling), which is what a user's first `kubectl get` after `make cluster-up` met.
        """
        self.apply(path)
        crd = yaml.safe_load(path.read_text())
        name, plural = crd["metadata"]["name"], crd["spec"]["names"]["plural"]
        self.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        wait_for(
            lambda: self.kubectl("get", plural, "-A", "--request-timeout=5s", check=False).returncode == 0,
            timeout=READY_TIMEOUT,
            what=f"{plural} to be listable",
            interval=0.2,
        )

    def write_kubeconfig(self, path: Path, *, user: dict[str, Any], name: str = "local") -> Path:
        """A kubeconfig for this cluster with the given user entry (cert or token)."""
        assert self.pki is not None
        ca = base64.b64encode(self.pki.ca_crt.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "workerpool-local",
                    "cluster": {"server": self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": "workerpool-local", "user": name}}],
            "current-context": name,
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # --- internals ------------------------------------------------------------------

    def _start(self) -> None:
        ips = tuple(dict.fromkeys(("127.0.0.1", self.host, self.kubernetes_service_ip)))
        self.pki = make_pki(self.workdir / "pki", server_ips=ips, node_name=self.node_name)
        logs = self.workdir / "logs"
        self.procs["etcd"] = spawn(self._etcd_argv(), log_path=logs / "etcd.log")
        wait_for(self._etcd_ready, timeout=30, what="etcd /health")
        self.procs["kube-apiserver"] = spawn(self._apiserver_argv(), log_path=logs / "kube-apiserver.log")
        self.write_kubeconfig(
            self.kubeconfig,
            name="admin",
            user={
                "client-certificate-data": base64.b64encode(self.pki.admin_crt.read_bytes()).decode(),
                "client-key-data": base64.b64encode(self.pki.admin_key.read_bytes()).decode(),
            },
        )
        wait_for(self._apiserver_ready, timeout=READY_TIMEOUT, what="kube-apiserver /readyz", interval=0.2)
        self.procs["kube-controller-manager"] = spawn(self._kcm_argv(), log_path=logs / "kube-controller-manager.log")
        self.procs["kube-scheduler"] = spawn(self._scheduler_argv(), log_path=logs / "kube-scheduler.log")
        log.info("local cluster up: %s (kubeconfig %s)", self.server, self.kubeconfig)

    def _check_alive(self, name: str) -> None:
        check_alive(self.procs[name], name, self.workdir / "logs" / f"{name}.log")

    def _etcd_argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        return [
            str(binaries.find("etcd")),
            "--name",
            "default",
            "--data-dir",
            str(self.workdir / "etcd"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"default={peer}",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ]

    def _etcd_ready(self) -> bool:
        self._check_alive("etcd")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health", timeout=2) as r:
            return bool(json.loads(r.read()).get("health") == "true")

    def _apiserver_argv(self) -> list[str]:
        assert self.pki is not None
        return [
            str(binaries.find("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            # The `kubernetes` Service's endpoint: kube-proxy cannot DNAT pod
            # traffic to 127.0.0.1, so the node's gateway when there is a node.
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.api_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={self.pki.serving_crt}",
            f"--tls-private-key-file={self.pki.serving_key}",
            f"--client-ca-file={self.pki.ca_crt}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={self.pki.kubelet_client_crt}",
            f"--kubelet-client-key={self.pki.kubelet_client_key}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",  # as kubeadm: Pod Security admission, not this flag, says no
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki.sa_pub}",
            f"--service-account-signing-key-file={self.pki.sa_key}",
            f"--service-cluster-ip-range={self.service_range}",
            # The aggregation layer, as kubeadm configures it, for extension API servers
            # (KEDA's external metrics, bench/bifrost_vs_keda.py); they run as local
            # processes, so the API server dials their endpoint, not a Service IP.
            f"--requestheader-client-ca-file={self.pki.front_proxy_ca_crt}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={self.pki.front_proxy_crt}",
            f"--proxy-client-key-file={self.pki.front_proxy_key}",
            "--enable-aggregator-routing=true",
            "--profiling=false",
            "--v=1",
            # Since v1.37 the `kubernetes` Service's endpoint may not be a loopback address
            # ("may not be in the loopback range"); without a node nothing uses that endpoint.
            *(["--endpoint-reconciler-type=none"] if ipaddress.ip_address(self.host).is_loopback else []),
            *self.apiserver_args,
        ]

    def _apiserver_ready(self) -> bool:
        self._check_alive("kube-apiserver")
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        ctx.load_cert_chain(str(self.pki.admin_crt), str(self.pki.admin_key))
        with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=5) as r:
            return bool(r.status == 200)

    def _kcm_argv(self) -> list[str]:
        assert self.pki is not None
        return [
            str(binaries.find("kube-controller-manager")),
            f"--kubeconfig={self.kubeconfig}",
            "--controllers=*",
            # The `default` ServiceAccount, its tokens and the kube-root-ca.crt
            # ConfigMap: pods do not start without them.
            f"--root-ca-file={self.pki.ca_crt}",
            f"--service-account-private-key-file={self.pki.sa_key}",
            f"--cluster-signing-cert-file={self.pki.ca_crt}",
            f"--cluster-signing-key-file={self.pki.ca_key}",
            f"--service-cluster-ip-range={self.service_range}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            "--v=1",
        ]

    def _scheduler_argv(self) -> list[str]:
        return [
            str(binaries.find("kube-scheduler")),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--v=1",
        ]

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
