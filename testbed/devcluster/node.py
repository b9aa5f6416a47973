"""TEST INFRASTRUCTURE — one real Kubernetes node on this machine: containerd
(Debian's package) with runc and the CNI bridge, the upstream kubelet and
kube-proxy (iptables mode), all in one work directory.

The settings are the ones that work on these machines (cgroup v1 hybrid, no
CAP_SYS_RESOURCE, no registry); each is explained where it is set, and
../shared/notes/real-node.md has the measurements. Images come from
tarballs (the pause image, the project's image) imported at start.

Teardown removes everything the node made: pods' containers and shims,
mounts under the work directory, the kubelet's cgroups, kube-proxy's and the
kubelet's iptables chains, the bridge, the guard rule; `leftovers()` says
what is still there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import yaml

from . import binaries, network
from .controlplane import LocalCluster
from .procs import check_alive, free_port, pid_alive, processes_with, spawn, stop, wait_for

log = logging.getLogger(__name__)

NODE_NAME = "wpo-node"
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"  # the kubelet's cgroup (cgroupfs driver, default cgroupRoot "/")
PAUSE_BUILD = [str(binaries.REPO_ROOT / "hack" / "build-image.sh"), "--pause"]


def kubepods_cgroups() -> list[Path]:
    return [d / KUBEPODS for d in CGROUP_ROOT.iterdir() if (d / KUBEPODS).is_dir()]


def kill_pod_processes() -> None:
    """SIGKILL every process in the kubelet's cgroups (a shim's death does not end its container)."""
    for root in kubepods_cgroups():
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


class LocalNode:
    """containerd + kubelet + kube-proxy for `cluster`, on the bridge of `network`."""

    def __init__(self, workdir: Path, cluster: LocalCluster, net: network.NodeNetwork) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.net = net
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = workdir / "logs"

    # --- public -----------------------------------------------------------------

    @property
    def pod_logs_dir(self) -> Path:
        return self.workdir / "kubelet" / "pod-logs"

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def start(self, images: list[Path]) -> None:
        if kubepods_cgroups():
            raise RuntimeError(f"{kubepods_cgroups()[0]} exists: another kubelet runs (or ran) on this machine")
        pause_ref, pause_tar = self._pause_image()
        self.procs["containerd"] = spawn(self._containerd_argv(pause_ref), log_path=self.logs / "containerd.log")
        wait_for(self._containerd_ready, timeout=30, what="containerd", interval=0.1)
        for tar in [pause_tar, *images]:
            self.ctr("images", "import", str(tar))
        self.procs["kubelet"] = spawn(self._kubelet_argv(), log_path=self.logs / "kubelet.log")
        self.procs["kube-proxy"] = spawn(self._kube_proxy_argv(), log_path=self.logs / "kube-proxy.log")
        wait_for(self._node_ready, timeout=60, what=f"node {NODE_NAME} Ready", interval=0.2)

    def stop(self) -> None:
        """Pods first (through the kubelet, so CNI and mounts are undone), then the daemons, then what is left."""
        if self._alive("kubelet") and self._alive("containerd"):
            self._drain_pods()
        for name in ("kube-proxy", "kubelet"):
            if name in self.procs:
                stop(self.procs[name], grace=10)
        if self._alive("containerd"):
            self._remove_containers()
        kill_pod_processes()  # whatever survived: a crashed run, a runtime that did not answer
        if "containerd" in self.procs:
            stop(self.procs["containerd"], grace=10)
        self._kill_shims()
        self._unmount_all()
        self._remove_cgroups()
        subprocess.run([str(binaries.find("kube-proxy")), "--cleanup"], capture_output=True, timeout=60, check=False)
        network.remove_kube_chains()

    def leftovers(self) -> list[str]:
        found = [f"process {name}" for name in self.procs if self._alive(name)]
        found += [f"shim pid {p}" for p in self._shim_pids()]
        found += [f"mount {m}" for m in mounts_under(self.workdir)]
        found += [f"cgroup {c}" for c in kubepods_cgroups()]
        return found

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {res.stderr.strip()}")
        return res

    @staticmethod
    def host_pid(pod: dict[str, Any], pid_in_container: int, container: str = "worker") -> int | None:
        """The host's pid of a process as its container sees it (heartbeats report those pids).

        Found by the container's id in the process's cgroup path and the last field of
        its NSpid (each container, the pause one included, has a pid namespace of its own).
        """
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        cid = next((c.get("containerID", "") for c in statuses if c.get("name") == container), "")
        cid = cid.rpartition("://")[2]
        if not cid:
            return None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if cid not in (entry / "cgroup").read_text():
                    continue
                nspid = next(li for li in (entry / "status").read_text().splitlines() if li.startswith("NSpid:"))
            except (OSError, StopIteration):
                continue
            if int(nspid.split()[-1]) == pid_in_container:
                return int(entry.name)
        return None

    def restart_kubelet(self) -> None:
        stop(self.procs["kubelet"], grace=10)
        self.procs["kubelet"] = spawn(self._kubelet_argv(), log_path=self.logs / "kubelet.log")
        wait_for(self._node_ready, timeout=60, what=f"node {NODE_NAME} Ready", interval=0.2)

    # --- containerd -------------------------------------------------------------------

    def _pause_image(self) -> tuple[str, Path]:
        out = subprocess.run(PAUSE_BUILD, check=True, capture_output=True, text=True).stdout
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return values["PAUSE_IMAGE"], Path(values["PAUSE_TAR"])

    def _containerd_argv(self, pause_ref: str) -> list[str]:
        d = self.workdir / "containerd"
        d.mkdir(parents=True, exist_ok=True)
        spec = d / "base-runtime-spec.json"
        spec.write_text(json.dumps(self._base_runtime_spec()))
        cri = {
            "sandbox_image": pause_ref,
            # No CAP_SYS_RESOURCE here: a sandbox cannot get the kubelet's -998.
            "restrict_oom_score_adj": True,
            "disable_apparmor": True,
            "disable_hugetlb_controller": True,
            "tolerate_missing_hugetlb_controller": True,
            "enable_selinux": False,
            "stream_server_address": "127.0.0.1",
            "stream_server_port": str(free_port()),
            "containerd": {
                "snapshotter": "overlayfs",
                "default_runtime_name": "runc",
                "runtimes": {
                    "runc": {
                        "runtime_type": "io.containerd.runc.v2",
                        "base_runtime_spec": str(spec),
                        # crun refuses hybrid cgroups; runc with cgroupfs works.
                        "options": {"SystemdCgroup": False, "BinaryName": shutil.which("runc") or "runc"},
                    }
                },
            },
            "cni": {"bin_dir": "/usr/lib/cni", "conf_dir": str(self.net.cni_conf_dir), "max_conf_num": 1},
        }
        config = {
            "version": 2,
            "root": str(d / "root"),
            "state": str(d / "state"),
            "grpc": {"address": str(self.containerd_socket)},
            "ttrpc": {"address": str(d / "containerd.sock.ttrpc")},
            "debug": {"level": "warn"},
            "disabled_plugins": [
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.zfs",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.aufs",
                "io.containerd.internal.v1.tracing",
            ],
            "plugins": {
                "io.containerd.grpc.v1.cri": cri,
                "io.containerd.internal.v1.opt": {"path": str(d / "opt")},
            },
        }
        path = d / "config.toml"
        path.write_text(_toml(config))
        return [shutil.which("containerd") or "containerd", "--config", str(path)]

    def _base_runtime_spec(self) -> dict[str, object]:
        """`ctr oci spec` with rlimits only lowered: runtimes may not raise them here."""
        spec: dict[str, object] = json.loads(
            subprocess.run(["ctr", "oci", "spec"], check=True, capture_output=True, text=True).stdout
        )
        process = spec["process"]
        assert isinstance(process, dict)
        process["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        # The CRI sets it per container from allowPrivilegeEscalation.
        process["noNewPrivileges"] = False
        return spec

    def _containerd_ready(self) -> bool:
        self._check_alive("containerd")
        return self.ctr("version", check=False).returncode == 0

    def _remove_containers(self) -> None:
        """Whatever the kubelet did not stop (a crashed run): kill tasks, remove containers."""
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        for cid in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ctr("tasks", "delete", "-f", cid, check=False)
            self.ctr("containers", "rm", cid, check=False)

    def _shim_pids(self) -> list[int]:
        return processes_with(str(self.workdir / "containerd"))

    def _kill_shims(self) -> None:
        for pid in self._shim_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not [p for p in self._shim_pids() if pid_alive(p)], timeout=10, what="shims to exit")

    # --- kubelet --------------------------------------------------------------------

    def _kubelet_argv(self) -> list[str]:
        assert self.cluster.pki is not None
        d = self.workdir / "kubelet"
        d.mkdir(parents=True, exist_ok=True)
        pki = self.cluster.pki
        kubeconfig = self.cluster.write_kubeconfig(
            d / "kubeconfig",
            name=f"system:node:{NODE_NAME}",
            user={"client-certificate": str(pki.node_crt), "client-key": str(pki.node_key)},
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": network.GATEWAY,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca_crt)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            # cgroup v1 hybrid, no systemd: cgroupfs, and 1.35 refuses v1 unless told.
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "oomScoreAdj": 0,  # may not lower it here (no CAP_SYS_RESOURCE)
            "resolvConf": "/etc/resolv.conf",
            "podLogsDir": str(self.pod_logs_dir),
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "2s",
            "nodeStatusReportFrequency": "10s",
            "serializeImagePulls": False,
            # The images are imported, never pulled: never garbage-collect them,
            # and do not evict pods because a big shared disk is "full".
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": True,
            "shutdownGracePeriod": "0s",
            "maxPods": 110,
        }
        path = d / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return [
            str(binaries.find("kubelet")),
            f"--config={path}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={d / 'root'}",
            f"--cert-dir={d / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={network.GATEWAY}",
            "--v=1",
        ]

    def _node_ready(self) -> bool:
        for name in ("containerd", "kubelet", "kube-proxy"):
            self._check_alive(name)
        out = self.cluster.kubectl(
            "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
        )
        return out.stdout.strip() == "True"

    def _drain_pods(self) -> None:
        """Delete every pod at once and wait until the runtime has none (the kubelet tears them down).

        Called with the scheduler stopped, so a controller that recreates pods cannot keep it busy.
        """
        self.cluster.kubectl(
            "delete", "pods", "--all", "--all-namespaces", "--grace-period=0", "--force", "--wait=false", check=False
        )
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: not self.ctr("tasks", "ls", "-q", check=False).stdout.split(),
                timeout=30,
                what="the kubelet to stop every container",
                interval=0.5,
            )

    # --- kube-proxy -----------------------------------------------------------------

    def _kube_proxy_argv(self) -> list[str]:
        d = self.workdir / "kube-proxy"
        d.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.cluster.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "bindAddress": network.GATEWAY,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "clusterCIDR": network.POD_SUBNET,
            "nodePortAddresses": [f"{network.GATEWAY}/32"],
            # No route_localnet sysctl, no conntrack sysctls: leave the host alone.
            "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        path = d / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return [str(binaries.find("kube-proxy")), f"--config={path}", "--v=1"]

    # --- teardown helpers -------------------------------------------------------------

    def _unmount_all(self) -> None:
        for point in mounts_under(self.workdir):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def _remove_cgroups(self) -> None:
        """rmdir the kubelet's cgroup trees, deepest first (empty once their processes are gone)."""
        for root in kubepods_cgroups():
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()

    def _alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def _check_alive(self, name: str) -> None:
        check_alive(self.procs[name], name, self.logs / f"{name}.log")


def _toml(config: dict[str, object]) -> str:
    """containerd's config as TOML (Python 3.11 reads TOML but cannot write it)."""
    lines: list[str] = []

    def value(v: object) -> str:
        return json.dumps(v)  # strings, numbers, booleans and lists of strings are valid TOML in JSON form

    def table(prefix: str, body: dict[str, object]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in body.items() if isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            assert isinstance(v, dict)
            table(f"{prefix}.{json.dumps(k) if '.' in k else k}" if prefix else (json.dumps(k) if "." in k else k), v)

    table("", config)
    return "\n".join(lines) + "\n"
