"""The Helm chart on the real control plane: lint, server-side dry run, least
privilege proven by running the operator as the chart's ServiceAccount, and a
GitOps round trip with server-side apply."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster import binaries
from devcluster.harness import READY, RECYCLE, SCALE, OperatorProcess, Pools, pool_manifest
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack

from ..integration.workers import Client

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "workerpool-operator"
KUBE_VERSION = "1.35.4"


def helm(stack: DevStack, *args: str) -> str:
    out = subprocess.run(
        [str(binaries.find("helm")), "--kubeconfig", str(stack.cluster.kubeconfig), *args],
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


def operator_as_service_account(
    stack: DevStack, release: tuple[str, str], namespace: str, tmp_path: Path
) -> OperatorProcess:
    """TokenRequest for the chart's ServiceAccount; the operator runs with exactly that identity."""
    name, ns = release
    sa = f"{name}-workerpool-operator"
    token = stack.cluster.kubectl("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    kubeconfig = stack.cluster.write_kubeconfig(tmp_path / "sa.kubeconfig", user={"token": token}, name=sa)
    return OperatorProcess(stack, namespace, tmp_path, kubeconfig=kubeconfig).start()


def can_i(stack: DevStack, sa: str, *args: str) -> bool:
    out = stack.cluster.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
    return out.stdout.strip() == "yes"


def test_helm_lint_is_clean(stack: DevStack) -> None:
    out = helm(stack, "lint", str(CHART), "--strict")
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", [[], ["--set", "watchNamespaces={a,b}"], ["--set", "metrics.service.enabled=false"]])
def test_rendered_chart_is_accepted_by_the_api_server(stack: DevStack, values: list[str]) -> None:
    ns = f"dry-{uuid.uuid4().hex[:6]}"
    stack.cluster.kubectl("create", "namespace", ns)
    for extra in ("a", "b"):
        stack.cluster.kubectl("create", "namespace", extra, check=False)
    rendered = helm(stack, "template", "dry", str(CHART), "-n", ns, "--kube-version", KUBE_VERSION, *values)
    # Every rendered object names its namespace, so no -n: Roles go to the watched namespaces.
    out = stack.cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert "deployment.apps/dry-workerpool-operator created (server dry run)" in out.stdout


def test_values_schema_rejects_bad_values(stack: DevStack) -> None:
    out = subprocess.run(
        [
            str(binaries.find("helm")),
            "template",
            "x",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            "watchNamespaces={Not_A_Namespace}",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "watchNamespaces" in out.stderr


def test_operator_as_the_chart_service_account_runs_the_full_flow(
    stack: DevStack,
    namespace: str,
    release: tuple[str, str],
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    name, ns = release
    helm(
        stack,
        "install",
        name,
        str(CHART),
        "-n",
        ns,
        "--create-namespace",
        "--skip-crds",
        "--set",
        f"watchNamespaces={{{namespace}}}",
    )
    sa = f"system:serviceaccount:{ns}:{name}-workerpool-operator"
    # What it needs, in its namespace only.
    assert can_i(stack, sa, "create", "pods", "-n", namespace)
    assert can_i(stack, sa, "patch", "workerpools.bifrost.dev", "--subresource=status", "-n", namespace)
    assert can_i(stack, sa, "get", "secrets", "-n", namespace)
    # What it does not need.
    assert not can_i(stack, sa, "get", "secrets", "-n", "default")
    assert not can_i(stack, sa, "list", "secrets", "-n", namespace)
    assert not can_i(stack, sa, "create", "pods", "-n", "default")
    assert not can_i(stack, sa, "delete", "nodes")
    assert not can_i(stack, sa, "update", "pods", "-n", namespace)
    assert not can_i(stack, sa, "patch", "workerpools.bifrost.dev", "-n", namespace)  # never writes spec
    assert not can_i(stack, sa, "list", "customresourcedefinitions.apiextensions.k8s.io")

    op = operator_as_service_account(stack, release, namespace, tmp_path)
    client = Client(redis_server.url)
    pools = Pools(stack, namespace)
    try:
        pools.apply(pool_manifest("p", redis_server.url, maxWorkers=3))
        status = pools.wait_status("p", lambda s: s.get("readyWorkers") == 1, "1 ready worker", timeout=READY)
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
        assert "Forbidden" not in op.logs() and "403" not in op.logs()
    finally:
        op.stop()


def test_cluster_wide_rbac_is_still_least_privilege(stack: DevStack, release: tuple[str, str]) -> None:
    name, ns = release
    helm(stack, "install", name, str(CHART), "-n", ns, "--create-namespace", "--skip-crds")
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
    chart.write_text(helm(stack, "template", name, str(CHART), "-n", ns, "--kube-version", KUBE_VERSION))
    manifest = pool_manifest("p", redis_server.url, maxWorkers=3)
    manifest["metadata"]["annotations"] = {"team": "workflows", "bifrost.dev/recycle": "*@initial"}
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(manifest))
    ssa = ("apply", "--server-side", "--field-manager=gitops")
    stack.cluster.kubectl(*ssa, "-n", ns, "-f", str(chart))
    stack.cluster.kubectl(*ssa, "-n", namespace, "-f", str(pool))
    op = operator_as_service_account(stack, release, namespace, tmp_path)
    pools = Pools(stack, namespace)
    client = Client(redis_server.url)
    try:
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
        stack.cluster.kubectl(*ssa, "-n", ns, "-f", str(chart))
        stack.cluster.kubectl(*ssa, "-n", namespace, "-f", str(pool))
        after = pools.get("p")
        assert after["spec"] == before["spec"]
        assert after["metadata"]["generation"] == before["metadata"]["generation"]
        assert after["metadata"]["annotations"] == {"team": "workflows", "bifrost.dev/recycle": "*@second-commit"}
        assert not [k for k in after["metadata"].get("annotations", {}) if k.startswith("kopf")]
        assert not after["metadata"].get("finalizers")
        for path, target_ns in ((chart, ns), (pool, namespace)):
            diff = stack.cluster.kubectl(
                "diff", "--server-side", "--field-manager=gitops", "-n", target_ns, "-f", str(path), check=False
            )
            assert diff.returncode == 0, diff.stdout + diff.stderr
    finally:
        op.stop()


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
