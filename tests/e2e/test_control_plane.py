"""The local cluster itself: CRD admission, and the real node as users' clusters
have it: Pod Security "restricted" enforced on the project's image, the kubelet's
SIGTERM/grace handling, restarts, garbage collection, and the network rule
(pods reach the gateway and the Service range, nothing else). That the session
leaves nothing behind is asserted by the `stack` fixture's teardown.

The test bed's checks of itself (the kubelet, restarts, garbage collection, the
network rule) are the nightly tier (`make test-nightly`): they prove the bed,
not a promise of the product, and need not run on every change."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from devcluster import network
from devcluster.harness import worker_container
from devcluster.procs import wait_for
from devcluster.stack import DevStack

from .helpers import GC, POD_GONE, POD_START, get_json

pytestmark = pytest.mark.cluster


def workerpool(name: str, **spec: object) -> str:
    body = {
        "apiVersion": "bifrost.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {"redis": {"url": "redis://127.0.0.1:6379/0"}, **spec},
    }
    return json.dumps(body)


def test_crd_is_established(stack: DevStack) -> None:
    out = stack.cluster.kubectl(
        "get",
        "crd",
        "workerpools.bifrost.dev",
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Established')].status}",
    )
    assert out.stdout == "True"


def test_kubectl_get_prints_the_contract_columns(stack: DevStack, namespace: str) -> None:
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=workerpool("pool"))
    out = stack.cluster.kubectl("get", "workerpools", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "MIN", "MAX", "DESIRED", "WORKERS", "BUSY", "IDLE", "QUEUE", "READY", "AGE"]
    assert out.splitlines()[1].split()[:3] == ["pool", "1", "10"]  # defaults applied by the API server
    short = stack.cluster.kubectl("get", "wp", "pool", "-n", namespace, "-o", "json").stdout
    spec = json.loads(short)["spec"]
    assert spec["processes"] == {"min": 2, "max": 10}
    assert spec["redis"]["queueKey"] == "bifrost:queue:pending"
    assert spec["scaling"] == {"scaleDownDelaySeconds": 300}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"minWorkers": 5, "maxWorkers": 2}, "maxWorkers must be >= minWorkers"),
        ({"processes": {"min": 4, "max": 2}}, "processes.max must be >= processes.min"),
        (
            {"redis": {"url": "redis://r:6379/0", "urlSecretRef": {"name": "redis"}}},
            "exactly one of redis.url or redis.urlSecretRef must be set",
        ),
        ({"redis": {"queueKey": "q"}}, "exactly one of redis.url or redis.urlSecretRef must be set"),
        (
            {"template": {"spec": {"containers": [{"name": "w", "ports": [{"containerPort": "x"}]}]}}},
            "containerPort",
        ),
    ],
)
def test_api_server_rejects_invalid_specs(
    stack: DevStack, namespace: str, spec: dict[str, object], message: str
) -> None:
    out = stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=workerpool("bad", **spec), check=False)
    assert out.returncode != 0
    assert message in out.stderr


def test_template_labels_survive_pruning(stack: DevStack, namespace: str) -> None:
    template = {
        "metadata": {"labels": {"team": "a"}},
        "spec": {"containers": [{"name": "w", "image": "x", "resources": {"limits": {"cpu": "1"}}}]},
    }
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=workerpool("t", template=template))
    got = get_json(stack.cluster, "wp", "t", "-n", namespace)["spec"]["template"]
    assert got == template


def pod_manifest(name: str, script: str, grace: int = 5, **pod_spec: object) -> str:
    """A pod of the project's image running `script`, as hardened as the operator makes worker pods."""
    container = worker_container(
        name="main",
        command=["python3", "-c", textwrap.dedent(script)],
        env=[
            {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "PLAIN", "value": "v"},
        ],
        securityContext={
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}],
    )
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "terminationGracePeriodSeconds": grace,
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
            "containers": [container],
            **pod_spec,
        },
    }
    return json.dumps(body)


def run_pod(stack: DevStack, namespace: str, name: str, script: str, **kw: object) -> dict[str, object]:
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest(name, script, **kw))
    wait_for(
        lambda: get_json(stack.cluster, "pod", name, "-n", namespace)["status"].get("phase") == "Running",
        timeout=POD_START,
        what=f"pod {name} Running",
        interval=0.2,
    )
    return get_json(stack.cluster, "pod", name, "-n", namespace)  # type: ignore[no-any-return]


def pod_log(stack: DevStack, namespace: str, name: str) -> str:
    return stack.cluster.kubectl("logs", name, "-n", namespace, check=False).stdout


def wait_log(stack: DevStack, namespace: str, name: str, text: str) -> str:
    wait_for(lambda: text in pod_log(stack, namespace, name), timeout=POD_START, what=f"{text!r} in {name}'s log")
    return pod_log(stack, namespace, name)


SELF_REPORT = """
    import os, signal, sys, time
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    try:
        open("/etc/probe", "w")
        root = "writable"
    except OSError as exc:
        root = f"errno {exc.errno}"
    open("/tmp/probe", "w").write("ok")
    print("env", os.environ["MY_POD"], os.environ["PLAIN"])
    print("uid", os.getuid(), os.getgid())
    print("root", root)
    for key in ("CapEff", "NoNewPrivs", "Seccomp"):
        print(key, status[key].strip())
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (print("got SIGTERM", flush=True), sys.exit(0)))
    time.sleep(3600)
"""


def test_the_image_runs_restricted_with_a_read_only_root(stack: DevStack, namespace: str) -> None:
    pod = run_pod(stack, namespace, "p1", SELF_REPORT)
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}  # type: ignore[index]
    assert ready["Ready"] == "True"
    log = wait_log(stack, namespace, "p1", "ready")
    assert "env p1 v" in log
    assert "uid 10001 10001" in log  # the image's user, not root
    assert "root errno 30" in log  # EROFS: read-only root; /tmp (emptyDir) was writable
    assert "CapEff 0000000000000000" in log
    assert "NoNewPrivs 1" in log
    assert "Seccomp 2" in log  # RuntimeDefault: a filter is on


def test_pod_security_restricted_rejects_a_root_pod(stack: DevStack, namespace: str) -> None:
    bad = json.loads(pod_manifest("root", "pass"))
    bad["spec"]["securityContext"] = {"runAsUser": 0}
    out = stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in out.stderr


@pytest.mark.nightly  # the test bed checking itself
def test_the_kubelet_sends_sigterm_on_deletion(stack: DevStack, namespace: str) -> None:
    run_pod(stack, namespace, "p2", SELF_REPORT, grace=30)
    wait_log(stack, namespace, "p2", "ready")
    t0 = time.monotonic()
    stack.cluster.kubectl("delete", "pod", "p2", "-n", namespace, "--wait=true", timeout=POD_GONE)
    # Gone well before the 30 s grace period: the process exited on SIGTERM.
    assert time.monotonic() - t0 < 30


@pytest.mark.nightly  # the test bed checking itself
def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(stack: DevStack, namespace: str) -> None:
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(3600)
    """
    run_pod(stack, namespace, "p3", script, grace=2)
    wait_log(stack, namespace, "p3", "ready")
    t0 = time.monotonic()
    stack.cluster.kubectl("delete", "pod", "p3", "-n", namespace, "--wait=true", timeout=POD_GONE)
    assert time.monotonic() - t0 >= 2


@pytest.mark.nightly  # the test bed checking itself
def test_restart_policy_always_restarts_a_crashed_container(stack: DevStack, namespace: str) -> None:
    script = """
        import sys, time
        print("crashing", flush=True)
        sys.exit(3)
    """
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("p4", script))
    wait_for(
        lambda: (
            get_json(stack.cluster, "pod", "p4", "-n", namespace)["status"]["containerStatuses"][0]["restartCount"] >= 1
        ),
        timeout=POD_START,
        what="a restart",
        interval=0.2,
    )


@pytest.mark.nightly  # the test bed checking itself
def test_pods_reach_the_gateway_and_services_but_not_the_outside(stack: DevStack, namespace: str) -> None:
    """The network rule: no default route, the guard rule, no NAT; the API server through its Service."""
    script = f"""
        import socket, subprocess
        def attempt(host, port):
            try:
                socket.create_connection((host, port), timeout=2).close()
                return "open"
            except OSError as exc:
                return type(exc).__name__ + ":" + str(exc.errno)
        routes = [line.split() for line in open("/proc/net/route").read().splitlines()[1:]]
        print("default_route", any(r[1] == "00000000" for r in routes))
        print("service", attempt("{network.KUBERNETES_SERVICE_IP}", 443))
        print("gateway", attempt("{network.GATEWAY}", {stack.cluster.api_port}))
        print("outside", attempt("192.0.2.1", 80), attempt("1.1.1.1", 443))
        print("ready", flush=True)
        import time; time.sleep(3600)
    """
    run_pod(stack, namespace, "net", script)
    log = wait_log(stack, namespace, "net", "ready")
    assert "service open" in log
    assert "gateway open" in log
    outside = next(line for line in log.splitlines() if line.startswith("outside"))
    assert "open" not in outside.split(" ", 1)[1], outside
    assert "default_route False" in log


@pytest.mark.nightly  # the test bed checking itself
def test_deleting_an_owner_garbage_collects_its_pods(stack: DevStack, namespace: str) -> None:
    stack.cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = get_json(stack.cluster, "configmap", "owner", "-n", namespace)
    pod = json.loads(pod_manifest("owned", "import time; time.sleep(3600)", grace=1))
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    stack.cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(
        lambda: get_json(stack.cluster, "pod", "owned", "-n", namespace) is None,
        timeout=GC,
        what="garbage collection of the owned pod",
    )
