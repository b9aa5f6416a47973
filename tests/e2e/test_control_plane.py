"""The local control plane itself: CRD admission, the harness kubelet, GC, no leaks."""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from workerpool.devcluster.procs import wait_for
from workerpool.devcluster.stack import DevStack

from .helpers import GC, POD_GONE, POD_START, get_json, processes_with

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


def pod_manifest(name: str, marker: str, script: str, grace: int = 5) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "terminationGracePeriodSeconds": grace,
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "main",
                    "image": "ignored",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "command": ["python", "-c", textwrap.dedent(script), marker],
                    "env": [
                        {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "PLAIN", "value": "v"},
                    ],
                }
            ],
        },
    }
    return json.dumps(body)


def test_harness_kubelet_runs_a_pod_and_stops_it_on_deletion(stack: DevStack, namespace: str) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    script = """
        import os, signal, sys, time
        out = os.path.join(os.environ["HOME"], "unused")
        print("env", os.environ["MY_POD"], os.environ["PLAIN"], flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        time.sleep(3600)
    """
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("p1", marker, script))
    wait_for(lambda: processes_with(marker), timeout=POD_START, what="the pod's process")
    wait_for(
        lambda: get_json(stack.cluster, "pod", "p1", "-n", namespace)["status"].get("phase") == "Running",
        timeout=POD_START,
        what="phase Running",
    )
    pod = get_json(stack.cluster, "pod", "p1", "-n", namespace)
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert pod["status"]["containerStatuses"][0]["state"]["running"]
    log = stack.kubelet_log_dir / f"{namespace}_p1.log"
    wait_for(lambda: "env p1 v" in log.read_text(), timeout=POD_START, what="the resolved env in the log")

    t0 = time.monotonic()
    stack.cluster.kubectl("delete", "pod", "p1", "-n", namespace, "--wait=true", timeout=POD_GONE)
    assert not processes_with(marker)
    assert time.monotonic() - t0 < 5  # SIGTERM was honoured well within the grace period


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(stack: DevStack, namespace: str) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(3600)
    """
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("p2", marker, script, grace=2))
    wait_for(lambda: processes_with(marker), timeout=POD_START, what="the pod's process")
    t0 = time.monotonic()
    stack.cluster.kubectl("delete", "pod", "p2", "-n", namespace, "--wait=true", timeout=POD_GONE)
    elapsed = time.monotonic() - t0
    assert not processes_with(marker)
    assert 1.5 <= elapsed < 2 + 10, elapsed


def test_restart_policy_always_restarts_a_crashed_container(stack: DevStack, namespace: str) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    script = """
        import os, sys, time
        flag = "/tmp/" + sys.argv[1]
        if not os.path.exists(flag):
            open(flag, "w").close()
            sys.exit(3)
        time.sleep(3600)
    """
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("p3", marker, script))
    try:
        wait_for(
            lambda: (
                get_json(stack.cluster, "pod", "p3", "-n", namespace)["status"]["containerStatuses"][0]["restartCount"]
                >= 1
                and processes_with(marker)
            ),
            timeout=POD_START,
            what="a restart",
        )
    finally:
        Path(f"/tmp/{marker}").unlink(missing_ok=True)


def test_deleting_an_owner_garbage_collects_its_pods(stack: DevStack, namespace: str) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    stack.cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = get_json(stack.cluster, "configmap", "owner", "-n", namespace)
    pod = json.loads(pod_manifest("owned", marker, "import time; time.sleep(3600)", grace=1))
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]
    stack.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    wait_for(lambda: processes_with(marker), timeout=POD_START, what="the owned pod's process")
    stack.cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(
        lambda: get_json(stack.cluster, "pod", "owned", "-n", namespace) is None,
        timeout=GC,
        what="garbage collection of the owned pod",
    )
    wait_for(lambda: not processes_with(marker), timeout=POD_GONE, what="the owned pod's process to end")


def test_stack_leaves_no_process_behind(tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    with DevStack(tmp_path / "stack", redis=True) as s:
        pids = s.pids()
        assert len(pids) == 5  # etcd, kube-apiserver, kube-controller-manager, kubelet, redis
        s.cluster.kubectl("create", "namespace", "leak")
        s.cluster.kubectl(
            "apply", "-n", "leak", "-f", "-", input=pod_manifest("p", marker, "import time; time.sleep(3600)")
        )
        wait_for(lambda: processes_with(marker), timeout=POD_START, what="the pod's process")
        pids += processes_with(marker)
    wait_for(lambda: not s.leaked(pids), timeout=10, what=f"no leaked processes among {pids}")
