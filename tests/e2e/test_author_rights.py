"""A WorkerPool grants no more than its author has, checked by the API server itself (the
chart's ValidatingAdmissionPolicy, rendered by helm and applied as a user installs it):
a user who may create WorkerPools but not pods is refused, naming the missing right; one
who may create pods but not get the Secret the pool names is refused too; with both (and a
token for the template's ServiceAccount when it names one), admitted. An annotation alone
(a recycle request) is never checked."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster import binaries
from devcluster.harness import pool_manifest, wait_until
from devcluster.stack import DevStack

pytestmark = pytest.mark.cluster

CHART = str(Path(__file__).resolve().parents[2] / "charts" / "workerpool-operator")


@pytest.fixture
def policy(stack: DevStack, namespace: str) -> Iterator[None]:
    """The chart's author-rights policy and binding, as `helm install` would create them, once the
    API server enforces them (its admission plugin loads a new policy a moment after it is stored:
    the first test of a session once raced it)."""
    release = f"p{uuid.uuid4().hex[:6]}"
    rendered = subprocess.run(
        [str(binaries.find("helm")), "template", release, CHART, "-s", "templates/admission-policy.yaml"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    stack.cluster.apply(rendered)
    grant(stack, namespace, "policy-probe", [WORKERPOOLS])
    probe = json.dumps(pool_manifest("probe", redis_url="redis://r:6379/0"))

    def enforced() -> bool:
        out = stack.cluster.kubectl("create", "--dry-run=server", "--as", "policy-probe", "-n", namespace,
                                    "-f", "-", input=probe, check=False)  # fmt: skip
        return out.returncode != 0 and "may not create pods" in out.stderr

    wait_until(enforced, timeout=30, what="the author-rights policy enforced")
    try:
        yield
    finally:
        stack.cluster.kubectl("delete", "-f", "-", input=rendered, check=False)


def grant(stack: DevStack, namespace: str, user: str, rules: list[dict[str, Any]]) -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": user, "namespace": namespace},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": user, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    stack.cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]}))


WORKERPOOLS = {"apiGroups": ["bifrost.dev"], "resources": ["workerpools"], "verbs": ["create", "get", "patch"]}
PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}


def create_as(stack: DevStack, namespace: str, user: str, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return stack.cluster.kubectl(
        "create", "--as", user, "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False
    )


def secret_pool(name: str) -> dict[str, Any]:
    manifest = pool_manifest(name)
    manifest["spec"]["redis"] = {"urlSecretRef": {"name": "team-redis", "key": "url"}}
    return manifest


def test_a_pool_is_admitted_only_within_its_authors_rights(stack: DevStack, namespace: str, policy: None) -> None:
    stack.cluster.kubectl("create", "secret", "generic", "team-redis", "-n", namespace, "--from-literal=url=redis://x")

    grant(stack, namespace, "pool-only", [WORKERPOOLS])
    refused = create_as(stack, namespace, "pool-only", pool_manifest("a", redis_url="redis://r:6379/0"))
    assert refused.returncode != 0
    assert "may not create pods" in refused.stderr and "pool-only" in refused.stderr, refused.stderr

    grant(stack, namespace, "no-secret", [WORKERPOOLS, PODS])
    refused = create_as(stack, namespace, "no-secret", secret_pool("b"))
    assert refused.returncode != 0
    assert "may not get every one of Secret(s) team-redis" in refused.stderr, refused.stderr
    admitted = create_as(stack, namespace, "no-secret", pool_manifest("c", redis_url="redis://r:6379/0"))
    assert admitted.returncode == 0, admitted.stderr

    secret = {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["team-redis"], "verbs": ["get"]}
    grant(stack, namespace, "full", [WORKERPOOLS, PODS, secret])
    admitted = create_as(stack, namespace, "full", secret_pool("d"))
    assert admitted.returncode == 0, admitted.stderr

    mounted = pool_manifest("e", redis_url="redis://r:6379/0")
    mounted["spec"]["template"]["spec"]["volumes"] = [{"name": "s", "secret": {"secretName": "other"}}]
    refused = create_as(stack, namespace, "full", mounted)
    assert refused.returncode != 0 and "mounts a Secret" in refused.stderr, refused.stderr

    as_robot = pool_manifest("f", redis_url="redis://r:6379/0")
    as_robot["spec"]["template"]["spec"]["serviceAccountName"] = "robot"
    refused = create_as(stack, namespace, "full", as_robot)
    assert refused.returncode != 0 and "ServiceAccount robot" in refused.stderr, refused.stderr

    # A recycle request is an annotation: who may patch the pool may ask for one.
    annotated = stack.cluster.kubectl(
        "annotate", "--as", "pool-only", "-n", namespace, "workerpool/c", "bifrost.dev/recycle=*", check=False
    )
    assert annotated.returncode == 0, annotated.stderr
