"""TEST INFRASTRUCTURE — the local node's network: one Linux bridge with the
pod subnet, and the rules that keep pods inside this machine.

The network rule (../shared/notes/real-node.md): pods reach only their own
subnet, the Service range and the bridge gateway. So: the CNI bridge never
masquerades, pods get no default route (host-local routes only to the Service
range), and a guard rule drops anything forwarded from the pod subnet to
anywhere else. IP forwarding is on while the node runs (Service traffic from a
pod to another pod is DNATed and forwarded); its previous value is restored.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "wpo0"
POD_SUBNET = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
BRIDGE_MAC = "02:42:0a:f4:00:01"  # locally administered; 0a:f4:00:01 = 10.244.0.1
SERVICE_RANGE = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CNI_NETWORK = "wpo-pods"
_GUARD_COMMENT = "wpo-guard: pods reach only this machine"
_GUARD = [
    "FORWARD",
    "-s",
    POD_SUBNET,
    "!",
    "-d",
    POD_SUBNET,
    "-m",
    "comment",
    "--comment",
    _GUARD_COMMENT,
    "-j",
    "DROP",
]
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def bridge_exists() -> bool:
    return _run("ip", "link", "show", BRIDGE, check=False).returncode == 0


def guard_installed() -> bool:
    return _run("iptables", "-C", *_GUARD, check=False).returncode == 0


@dataclass
class NodeNetwork:
    """Creates and removes the bridge, the guard rule and ip_forward, and writes the CNI config."""

    workdir: Path
    ip_forward_before: str | None = None

    @property
    def cni_conf_dir(self) -> Path:
        return self.workdir / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.workdir / "ipam"

    def up(self) -> None:
        if leftovers():
            raise RuntimeError(
                f"{', '.join(leftovers())} already on this machine: another local node runs here "
                "(make cluster-down, or a test session in progress); one node per machine"
            )
        # The guard goes in before forwarding is switched on: no window without it.
        _run("iptables", "-I", *_GUARD)
        self.ip_forward_before = _IP_FORWARD.read_text().strip()
        _IP_FORWARD.write_text("1")
        # A fixed MAC: a bridge otherwise takes the lowest MAC of its ports and changes
        # it whenever a pod's veth comes or goes, and every pod's ARP entry for the
        # gateway (where Redis and the apiserver listen) points at a MAC nobody answers
        # to until it expires: the running workers' connections time out for ~30 s.
        _run("ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge")
        _run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        self._write_cni_config()

    def _write_cni_config(self) -> None:
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,  # the gateway address is on the bridge; NOT isDefaultGateway
                    "ipMasq": False,  # never NAT pod traffic to the outside
                    "hairpinMode": True,  # a pod may reach itself through a Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                        "routes": [{"dst": SERVICE_RANGE}],  # and no default route
                        "dataDir": str(self.ipam_dir),
                    },
                }
            ],
        }
        (self.cni_conf_dir / "10-wpo.conflist").write_text(json.dumps(conflist, indent=2))

    def down(self) -> None:
        if bridge_exists():
            _run("ip", "link", "delete", BRIDGE, check=False)
        if self.ip_forward_before is not None:
            _IP_FORWARD.write_text(self.ip_forward_before)
            self.ip_forward_before = None
        while guard_installed():
            _run("iptables", "-D", *_GUARD, check=False)


_TABLES = ("filter", "nat", "mangle")


def _kube_chains(table: str) -> list[str]:
    rules = _run("iptables", "-t", table, "-S", check=False).stdout
    return sorted({line.split()[1] for line in rules.splitlines() if line.startswith("-N KUBE-")})


def remove_kube_chains() -> None:
    """Whatever `kube-proxy --cleanup` leaves (the kubelet's own KUBE-* canary and firewall chains).

    Only called after checking at start-up that no KUBE-* chain existed: they are all ours.
    """
    for table in _TABLES:
        for line in _run("iptables", "-t", table, "-S", check=False).stdout.splitlines():
            if line.startswith("-A ") and " -j KUBE-" in line and not line.split()[1].startswith("KUBE-"):
                # shlex: the rules carry quoted comments ("kubernetes service portals").
                _run("iptables", "-t", table, "-D", *shlex.split(line)[1:], check=False)
        chains = _kube_chains(table)
        for chain in chains:
            _run("iptables", "-t", table, "-F", chain, check=False)
        for chain in chains:
            _run("iptables", "-t", table, "-X", chain, check=False)


def leftovers() -> list[str]:
    """What of the node's network is still on this machine (empty when torn down)."""
    found = []
    if bridge_exists():
        found.append(f"bridge {BRIDGE}")
    if guard_installed():
        found.append("the guard iptables rule")
    for table in _TABLES:
        if kube := _kube_chains(table):
            found.append(f"KUBE-* chains in {table}: {', '.join(kube[:5])}")
    return found
