"""The Helm chart on the local cluster, as users deploy it: lint, server-side
dry run, `helm install` of the project's image with the operator running
in-cluster (its ServiceAccount token, in-cluster config, probes, read-only
root, metrics through its Service) and doing the full flow with least
privilege, and a GitOps round trip with server-side apply."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster import binaries
from devcluster.client import Client
from devcluster.harness import READY, RECYCLE, SCALE, OperatorProcess, Pools, pool_manifest, wait_until
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack, project_image

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "workerpool-operator"
# The operator pod's Deployment becomes Available (probes passing) within this.
DEPLOYED = 120.0


# helm v4 is the test bed's `helm`; the chart must keep working with helm v3 (`helm3`) too.
HELMS = ("helm", "helm3")


def helm(stack: DevStack, *args: str, binary: str = "helm") -> str:
    out = subprocess.run(
        [str(binaries.find(binary)), "--kubeconfig", str(stack.cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=stack.cluster.env(),
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def release(stack: DevStack) -> Iterator[tuple[str, str]]:
    """A unique release name and its namespace; uninstalled afterwards."""
    name, ns = f"r{uuid.uuid4().hex[:6]}", f"wpo-{uuid.uuid4().hex[:6]}"
    yield name, ns
    subprocess.run(
        [str(binaries.find("helm")), "--kubeconfig", str(stack.cluster.kubeconfig), "uninstall", name, "-n", ns],
        capture_output=True,
        timeout=120,
    )
    stack.cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def image_values() -> list[str]:
    """`--set` for the image `make image` built (the only values a user must give here)."""
    repository, _, tag = project_image(build=False)[0].rpartition(":")
    return ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]


class InClusterOperator:
    """The operator as the chart deploys it: the Deployment's pods, read through kubectl."""

    def __init__(self, stack: DevStack, release: tuple[str, str]) -> None:
        self.stack = stack
        self.name, self.ns = release
        self.deployment = f"{self.name}-workerpool-operator"

    def pods(self) -> list[dict[str, Any]]:
        out = self.stack.cluster.kubectl(
            "get", "pods", "-n", self.ns, "-l", f"app.kubernetes.io/instance={self.name}", "-o", "json"
        )
        return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]

    def logs(self) -> str:
        return "".join(
            self.stack.cluster.kubectl("logs", p["metadata"]["name"], "-n", self.ns, check=False).stdout
            for p in self.pods()
        )

    def leader(self) -> str | None:
        lease = self.stack.cluster.kubectl(
            "get", "lease", self.deployment, "-n", self.ns, "-o", "jsonpath={.spec.holderIdentity}", check=False
        )
        return lease.stdout.strip() or None


def install(stack: DevStack, release: tuple[str, str], *values: str) -> InClusterOperator:
    name, ns = release
    helm(stack, "install", name, str(CHART), "-n", ns, "--create-namespace", *image_values(), *values)
    stack.cluster.kubectl(
        "rollout",
        "status",
        f"deployment/{name}-workerpool-operator",
        "-n",
        ns,
        f"--timeout={DEPLOYED:.0f}s",
        timeout=DEPLOYED + 10,
    )
    return InClusterOperator(stack, release)


SEPARATOR = "\n--- next ---\n"


def fetch_from_a_pod(stack: DevStack, namespace: str, *urls: str) -> list[str]:
    """GET each URL from inside a pod of the cluster (the project's image, restricted): the bodies."""
    script = (
        "import urllib.request\n"
        f"for url in {list(urls)!r}:\n"
        f"    print(urllib.request.urlopen(url, timeout=10).read().decode(), end={SEPARATOR!r})\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "curl"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "get",
                    "image": project_image(build=False)[0],
                    "command": ["python3", "-c", script],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    phase = wait_until(
        lambda: (
            (
                stack.cluster.kubectl("get", "pod", "curl", "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
                in ("Succeeded", "Failed")
            )
            and stack.cluster.kubectl("get", "pod", "curl", "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
        ),
        timeout=READY,
        what="the client pod to finish",
    )
    out = stack.cluster.kubectl("logs", "curl", "-n", namespace).stdout
    assert phase == "Succeeded", out
    return out.split(SEPARATOR)[: len(urls)]


def can_i(stack: DevStack, sa: str, *args: str) -> bool:
    out = stack.cluster.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
    return out.stdout.strip() == "yes"


@pytest.mark.parametrize("binary", HELMS)
def test_helm_lint_is_clean(stack: DevStack, binary: str) -> None:
    out = helm(stack, "lint", str(CHART), "--strict", binary=binary)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "watchNamespaces={a,b}"],
        ["--set", "metrics.service.enabled=false"],
        ["--set", "networkPolicy.enabled=true", "--set", "networkPolicy.metricsNamespaces={monitoring}"],
        [
            "--set",
            "networkPolicy.enabled=true",
            "--set-json",
            'networkPolicy.egress=[{"cidr":"10.96.0.1/32","ports":[443]},{"cidr":"10.8.0.0/24","ports":[6379,5672]}]',
        ],
        ["--set", "replicas=1", "--set", "evictionWebhook.enabled=false", "--set", "leaderElection.enabled=false"],
        ["--set", "shards=3"],
    ],
)
@pytest.mark.parametrize("binary", HELMS)
def test_rendered_chart_is_accepted_by_the_api_server(stack: DevStack, values: list[str], binary: str) -> None:
    ns = f"dry-{uuid.uuid4().hex[:6]}"
    stack.cluster.kubectl("create", "namespace", ns)
    for extra in ("a", "b"):
        stack.cluster.kubectl("create", "namespace", extra, check=False)
    # No --kube-version: helm v3 is built to default to the cluster's minor, v4 to its client-go's.
    rendered = helm(stack, "template", "dry", str(CHART), "-n", ns, *values, binary=binary)
    # Every rendered object names its namespace, so no -n: Roles go to the watched namespaces.
    out = stack.cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert "deployment.apps/dry-workerpool-operator" in out.stdout and "created (server dry run)" in out.stdout


@pytest.mark.parametrize("binary", HELMS)
def test_values_schema_rejects_bad_values(stack: DevStack, binary: str) -> None:
    out = subprocess.run(
        [
            str(binaries.find(binary)),
            "template",
            "x",
            str(CHART),
            "--set",
            "watchNamespaces={Not_A_Namespace}",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "watchNamespaces" in out.stderr


def test_the_chart_runs_the_operator_in_cluster_through_the_full_flow(
    stack: DevStack,
    namespace: str,
    release: tuple[str, str],
    redis_server: RedisServer,
) -> None:
    name, ns = release
    op = install(stack, release, "--set", f"watchNamespaces={{{namespace}}}")
    sa = f"system:serviceaccount:{ns}:{name}-workerpool-operator"
    # What it needs, in its namespace only.
    assert can_i(stack, sa, "create", "pods", "-n", namespace)
    assert can_i(stack, sa, "patch", "workerpools.bifrost.dev", "--subresource=status", "-n", namespace)
    assert can_i(stack, sa, "get", "secrets", "-n", namespace)
    # Its Lease and its webhook's Secret and configuration: by name.
    assert can_i(stack, sa, "update", f"leases.coordination.k8s.io/{op.deployment}", "-n", ns)
    assert not can_i(stack, sa, "update", "leases.coordination.k8s.io/other", "-n", ns)
    assert not can_i(stack, sa, "create", "leases.coordination.k8s.io", "-n", namespace)
    assert can_i(stack, sa, "update", f"secrets/{op.deployment}-webhook-tls", "-n", ns)
    assert not can_i(stack, sa, "update", "secrets/other", "-n", ns)
    vwc = f"validatingwebhookconfigurations.admissionregistration.k8s.io/{op.deployment}-evictions"
    assert can_i(stack, sa, "patch", vwc)
    assert not can_i(stack, sa, "patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/other")
    assert not can_i(stack, sa, "create", "validatingwebhookconfigurations.admissionregistration.k8s.io")
    # What it does not need.
    assert not can_i(stack, sa, "get", "secrets", "-n", "default")
    assert not can_i(stack, sa, "list", "secrets", "-n", namespace)
    assert not can_i(stack, sa, "create", "pods", "-n", "default")
    assert not can_i(stack, sa, "delete", "nodes")
    assert not can_i(stack, sa, "update", "pods", "-n", namespace)
    # It patches a pool only for its finalizer: RBAC allows patch, the chart's policy refuses the rest.
    assert can_i(stack, sa, "patch", "workerpools.bifrost.dev", "-n", namespace)
    assert not can_i(stack, sa, "list", "customresourcedefinitions.apiextensions.k8s.io")

    # Two replicas, one leader. In each pod: restricted, read-only root, uid 10001, probes passing.
    pods = op.pods()
    assert len(pods) == 2
    leader = wait_until(op.leader, timeout=READY, what="a leader")
    assert leader in [p["metadata"]["name"] for p in pods]
    for pod in pods:
        container = pod["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
        assert container["livenessProbe"] != container["readinessProbe"]
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"

    client = Client(redis_server.url)
    pools = Pools(stack, namespace)
    pools.apply(pool_manifest("p", redis_server.url, maxWorkers=3))
    status = pools.wait_status("p", lambda s: s.get("readyWorkers") == 1, "1 ready worker", timeout=READY)
    for change in ({"spec": {"minWorkers": 2}}, {"metadata": {"annotations": {"x": "y"}}}):
        refused = stack.cluster.kubectl("patch", "wp", "p", "-n", namespace, f"--as={sa}", "--type=merge",
                                        "-p", json.dumps(change), check=False)  # fmt: skip
        assert refused.returncode != 0 and "may change only a WorkerPool's metadata.finalizers" in refused.stderr
    allowed = stack.cluster.kubectl("patch", "wp", "p", "-n", namespace, f"--as={sa}", "--type=merge",
                                    "-p", json.dumps({"metadata": {"finalizers": ["example.com/f"]}}))  # fmt: skip
    assert allowed.returncode == 0
    stack.cluster.kubectl("patch", "wp", "p", "-n", namespace, "--type=json",
                          "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]')  # fmt: skip
    ids = [client.submit("sleep", {"seconds": 1.5}) for _ in range(6)]
    pools.wait_status("p", lambda s: s.get("workers") == 3, "scaled up to 3", timeout=SCALE)
    wid = status["workerDetails"][0]["workerId"]
    pools.annotate("p", f"{wid}@rbac")
    pools.wait_status(
        "p",
        lambda s: s.get("lastRecycle", {}).get("results", [{}])[0].get("status") == "recycle_requested",
        "recycle handled",
        timeout=RECYCLE,
    )
    assert all(client.wait_result(i, timeout=60).success for i in ids)
    pools.wait_status("p", lambda s: s.get("workers") == 1, "scaled back down", timeout=SCALE)

    # Metrics from both replicas (through the Service and from each pod), from another pod: the
    # leader says it leads and has the pool's series; the standby says it does not lead.
    service = json.loads(
        stack.cluster.kubectl("get", "service", f"{op.deployment}-metrics", "-n", ns, "-o", "json").stdout
    )
    ip, port = service["spec"]["clusterIP"], service["spec"]["ports"][0]["port"]
    by_pod = {p["metadata"]["name"]: f"http://{p['status']['podIP']}:{port}/metrics" for p in op.pods()}
    through_service, *scrapes = fetch_from_a_pod(stack, namespace, f"http://{ip}:{port}/metrics", *by_pod.values())
    assert "workerpool_leader" in through_service
    leader = op.leader()
    for pod, text in zip(by_pod, scrapes, strict=True):
        series = f'workerpool_reconcile_duration_seconds_count{{namespace="{namespace}",pool="p"}}'
        assert (series in text) == (pod == leader), pod
        assert f"workerpool_leader {1.0 if pod == leader else 0.0}" in text, pod

    # The eviction webhook through its Service: the API server calls it with the injected CA.
    (worker,) = [p["metadata"]["name"] for p in pools.live_pods("p")]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": worker, "namespace": namespace}}
    stack.cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{namespace}/pods/{worker}/eviction",
        "-f",
        "-",
        input=json.dumps(eviction),
    )
    wait_until(
        lambda: [e for e in pools.events("p") if e["reason"] == "EvictionAllowed" and worker in e["message"]],
        timeout=READY,
        what="the webhook's EvictionAllowed event",
    )

    assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in op.pods())  # liveness held
    logs = op.logs()
    assert "Forbidden" not in logs
    assert not [line for line in logs.splitlines() if " 403 " in line or "status=403" in line]


def test_cluster_wide_rbac_is_still_least_privilege(stack: DevStack, release: tuple[str, str]) -> None:
    name, ns = release
    # Only the RBAC is under test: the operator pod stays unscheduled (a
    # cluster-wide operator would act on every other test's namespace).
    helm(
        stack,
        "install",
        name,
        str(CHART),
        "-n",
        ns,
        "--create-namespace",
        "--skip-crds",
        "--set-string",
        "nodeSelector.bench\\.bifrost\\.dev/unschedulable=true",
    )
    sa = f"system:serviceaccount:{ns}:{name}-workerpool-operator"
    assert can_i(stack, sa, "watch", "pods", "--all-namespaces")
    assert not can_i(stack, sa, "list", "secrets", "--all-namespaces")
    assert not can_i(stack, sa, "delete", "nodes")
    assert not can_i(stack, sa, "create", "deployments.apps", "-n", "default")
    assert not can_i(stack, sa, "delete", "workerpools.bifrost.dev", "-n", "default")


def test_gitops_round_trip_with_server_side_apply(
    stack: DevStack,
    namespace: str,
    release: tuple[str, str],
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    """Apply the chart and a WorkerPool as Argo CD / Flux do, let the operator work, re-apply: nothing changes."""
    name, ns = release
    stack.cluster.kubectl("create", "namespace", ns)
    chart = tmp_path / "chart.yaml"
    values = [*image_values(), "--set", f"watchNamespaces={{{namespace}}}"]
    chart.write_text(helm(stack, "template", name, str(CHART), "-n", ns, *values))
    manifest = pool_manifest("p", redis_server.url, maxWorkers=3)
    manifest["metadata"]["annotations"] = {"team": "workflows", "bifrost.dev/recycle": "*@initial"}
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(manifest))
    ssa = ("apply", "--server-side", "--field-manager=gitops")
    # Every rendered object names its namespace (Roles go to the watched one): no -n.
    stack.cluster.kubectl(*ssa, "-f", str(chart))
    stack.cluster.kubectl(*ssa, "-n", namespace, "-f", str(pool))
    # The operator is the chart's Deployment, running in-cluster.
    pools = Pools(stack, namespace)
    client = Client(redis_server.url)
    pools.wait_status("p", lambda s: s.get("readyWorkers") == 1, "1 ready worker", timeout=READY)
    ids = [client.submit("sleep", {"seconds": 1}) for _ in range(6)]
    pools.wait_status("p", lambda s: s.get("workers") == 3, "scaled up", timeout=SCALE)
    # The recycle request lives in Git too: a commit changes the annotation, the tool syncs.
    manifest["metadata"]["annotations"]["bifrost.dev/recycle"] = "*@second-commit"
    pool.write_text(json.dumps(manifest))
    stack.cluster.kubectl(*ssa, "-n", namespace, "-f", str(pool))
    pools.wait_status(
        "p", lambda s: s.get("lastRecycle", {}).get("request") == "*@second-commit", "recycle", timeout=RECYCLE
    )
    for i in ids:
        client.wait_result(i, timeout=60)
    before = pools.get("p")
    # The GitOps tool syncs again: same files, same field manager, no --force-conflicts.
    stack.cluster.kubectl(*ssa, "-f", str(chart))
    stack.cluster.kubectl(*ssa, "-n", namespace, "-f", str(pool))
    after = pools.get("p")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["metadata"]["annotations"] == {"team": "workflows", "bifrost.dev/recycle": "*@second-commit"}
    assert not [k for k in after["metadata"].get("annotations", {}) if k.startswith("kopf")]
    assert not after["metadata"].get("finalizers")
    for path, where in ((chart, []), (pool, ["-n", namespace])):
        diff = stack.cluster.kubectl(
            "diff", "--server-side", "--field-manager=gitops", *where, "-f", str(path), check=False
        )
        assert diff.returncode == 0, diff.stdout + diff.stderr


def test_pods_rejected_by_pod_security_make_the_pool_stalled(
    stack: DevStack,
    namespace: str,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    op = OperatorProcess(stack, namespace, tmp_path).start()
    pools = Pools(stack, namespace)
    try:
        template = {
            "spec": {
                "containers": [
                    {
                        "name": "worker",
                        "image": "x",
                        "command": ["workerpool", "worker"],
                        "securityContext": {"privileged": True},
                    }
                ]
            }
        }
        pools.apply(pool_manifest("p", redis_server.url, template=template))
        stalled = pools.wait_condition("p", "Stalled", timeout=READY)
        assert stalled["reason"] == "PodsRejected"
        assert "privileged" in stalled["message"]
        assert [e for e in pools.events("p") if e["reason"] == "PodCreateRejected"]
        # Fixing the template un-stalls it.
        pools.apply(pool_manifest("p", redis_server.url))
        pools.wait_status("p", lambda s: s.get("readyWorkers") == 1, "a ready worker after the fix", timeout=READY)
    finally:
        op.stop()
