"""The eviction webhook for operators that run as local processes: the
configuration the chart ships, pointed at the process on the bridge gateway
and scoped to one namespace, and waiting until it is served."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .harness import READY, OperatorProcess, wait_until
from .network import GATEWAY
from .procs import free_port
from .stack import DevStack


def webhook_configuration(name: str, namespace: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "evictions.workerpool.bifrost.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "NoneOnDryRun",
                "failurePolicy": "Ignore",
                "timeoutSeconds": 5,
                "matchPolicy": "Equivalent",
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods/eviction"],
                        "operations": ["CREATE"],
                        "scope": "Namespaced",
                    }
                ],
                "clientConfig": {"url": f"https://{GATEWAY}:{port}/eviction"},
            }
        ],
    }


def webhook_env(name: str, port: int) -> dict[str, str]:
    """The operator's environment to serve the webhook on `port` and keep `name`'s caBundle."""
    return {
        "WORKERPOOL_WEBHOOK_PORT": str(port),
        "WORKERPOOL_WEBHOOK_HOSTS": GATEWAY,
        "WORKERPOOL_WEBHOOK_CONFIGURATION": name,
    }


def apply_configuration(stack: DevStack, name: str, namespace: str, port: int, workdir: Path) -> None:
    manifest = workdir / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(webhook_configuration(name, namespace, port)))
    stack.cluster.kubectl("apply", "-f", str(manifest))


def serving(port: int) -> bool:
    try:
        with socket.create_connection((GATEWAY, port), timeout=1):
            return True
    except OSError:
        return False


def wait_served(stack: DevStack, name: str, port: int) -> None:
    """Until the operator injected its CA and listens (with failurePolicy Ignore, earlier evictions pass)."""

    def injected() -> bool:
        out = stack.cluster.kubectl("get", "validatingwebhookconfiguration", name, "-o", "json", check=False)
        hooks = json.loads(out.stdout).get("webhooks", []) if out.returncode == 0 else []
        return bool(hooks and hooks[0].get("clientConfig", {}).get("caBundle"))

    wait_until(injected, timeout=READY, what="the operator to inject its CA into the webhook configuration")
    wait_until(lambda: serving(port), timeout=READY, what="the webhook server")


def evict(stack: DevStack, namespace: str, pod: str) -> subprocess.CompletedProcess[str]:
    """POST an Eviction with kubectl; -v=6 logs the answer's status line (a held one is a 429)."""
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}}
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction"
    return stack.cluster.kubectl("create", "--raw", path, "-f", "-", "-v=6", input=json.dumps(eviction), check=False)


@contextlib.contextmanager
def webhook_serving_operator(stack: DevStack, namespace: str, workdir: Path, **env: str) -> Iterator[OperatorProcess]:
    """An operator for `namespace` that serves the eviction webhook, the apiserver calling it."""
    port, name = free_port(), f"wpo-evictions-{namespace}"
    apply_configuration(stack, name, namespace, port, workdir)
    op = OperatorProcess(stack, namespace, workdir, None, **{**webhook_env(name, port), **env}).start()
    try:
        wait_served(stack, name, port)
        yield op
    finally:
        op.stop()
        stack.cluster.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")
