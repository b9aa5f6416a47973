"""Render worker pods from a WorkerPool (DESIGN §2) and classify existing ones."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..contracts import names
from ..contracts.resource import WorkerPoolSpec
from ..protocols import protocol_for
from ..protocols.base import DEFAULT_CONTAINER_NAME, PoolRef

__all__ = [
    "DEFAULT_CONTAINER_NAME",
    "PoolRef",
    "has_password",
    "redact",
    "render_pod",
    "render_template",
    "template_hash",
]

METRICS_PORT_NAME = "metrics"  # what a PodMonitor selects (the chart's)
# The image's user (Dockerfile): numeric, so the kubelet can prove runAsNonRoot.
IMAGE_UID = 10001
# Writable scratch for a read-only root: multiprocessing's forkserver socket,
# tempfile, anything workflow code writes. Bounded so a runaway writer gets
# its pod evicted rather than filling the node's disk.
TMP_VOLUME = "workerpool-tmp"
TMP_SIZE_LIMIT = "256Mi"


def _restricted_defaults(pod_spec: dict[str, Any]) -> None:
    """Pod Security Standards "restricted" plus a read-only root, unless the template says otherwise."""
    psc = pod_spec.setdefault("securityContext", {})
    psc.setdefault("runAsNonRoot", True)
    psc.setdefault("runAsUser", IMAGE_UID)
    psc.setdefault("runAsGroup", IMAGE_UID)
    psc.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    containers = pod_spec.get("containers", []) + pod_spec.get("initContainers", [])
    for container in containers:
        csc = container.setdefault("securityContext", {})
        csc.setdefault("allowPrivilegeEscalation", False)
        csc.setdefault("capabilities", {"drop": ["ALL"]})
        csc.setdefault("readOnlyRootFilesystem", True)
    _writable_tmp(pod_spec, [c for c in containers if c["securityContext"]["readOnlyRootFilesystem"]])


def _writable_tmp(pod_spec: dict[str, Any], read_only: list[dict[str, Any]]) -> None:
    """/tmp on a size-limited emptyDir for each read-only container that mounts nothing there."""
    needing = [c for c in read_only if not any(m.get("mountPath") == "/tmp" for m in c.get("volumeMounts", []))]
    if not needing:
        return
    volumes = pod_spec.setdefault("volumes", [])
    if not any(v.get("name") == TMP_VOLUME for v in volumes):
        volumes.append({"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}})
    for container in needing:
        container.setdefault("volumeMounts", []).append({"name": TMP_VOLUME, "mountPath": "/tmp"})


def render_template(pool: PoolRef, spec: WorkerPoolSpec, default_image: str) -> dict[str, Any]:
    """The pod template the operator would create now (without per-pod metadata)."""
    protocol = protocol_for(spec.protocol)
    template = copy.deepcopy(spec.template)
    pod_spec: dict[str, Any] = template.setdefault("spec", {})
    containers = pod_spec.setdefault("containers", [])
    if not containers:
        default = protocol.default_container(default_image)
        if default is None:  # admission refuses such a spec; a pod without a container would be refused too
            raise ValueError(f"protocol {protocol.name} needs template.spec.containers")
        containers.append(default)
    worker = next((c for c in containers if c.get("name") == DEFAULT_CONTAINER_NAME), containers[0])
    ours = protocol.pod_env(pool, spec)
    taken = {e["name"] for e in ours}
    worker["env"] = [e for e in worker.get("env", []) if e.get("name") not in taken] + ours
    _mount_redis_ca(pod_spec, worker, spec)
    if spec.metrics_port is not None:
        ports = [p for p in worker.get("ports", []) if p.get("name") != METRICS_PORT_NAME]
        worker["ports"] = [*ports, {"name": METRICS_PORT_NAME, "containerPort": spec.metrics_port, "protocol": "TCP"}]
    gates = [g for g in pod_spec.get("readinessGates", []) if g.get("conditionType") != names.REGISTERED_CONDITION]
    pod_spec["readinessGates"] = [*gates, {"conditionType": names.REGISTERED_CONDITION}]
    pod_spec.setdefault("terminationGracePeriodSeconds", protocol.termination_grace_seconds(spec))
    pod_spec.setdefault("restartPolicy", "Always")
    # Workers never call the API server: no token to steal from a worker pod.
    pod_spec.setdefault("automountServiceAccountToken", False)
    _restricted_defaults(pod_spec)
    return template


def _mount_redis_ca(pod_spec: dict[str, Any], worker: dict[str, Any], spec: WorkerPoolSpec) -> None:
    """The pool's Redis CA bundle, read-only at names.REDIS_CA_FILE in the worker container."""
    ref = spec.redis.ca_secret_ref
    if ref is None:
        return
    volume = {
        "name": names.REDIS_CA_VOLUME,
        "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": "ca.crt"}], "defaultMode": 0o444},
    }
    pod_spec["volumes"] = [v for v in pod_spec.get("volumes", []) if v.get("name") != names.REDIS_CA_VOLUME] + [volume]
    mounts = [m for m in worker.get("volumeMounts", []) if m.get("name") != names.REDIS_CA_VOLUME]
    mount = {"name": names.REDIS_CA_VOLUME, "mountPath": names.REDIS_CA_DIR, "readOnly": True}
    worker["volumeMounts"] = [*mounts, mount]


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


# The API server names a pod from its generateName cut to 58 characters plus 5 random ones
# (apiserver's names.SimpleNameGenerator: 63 - 5): pools whose cut names agree name pods alike.
GENERATED_BASE_MAX = 58


def generate_name(pool_name: str) -> str:
    return f"{pool_name}-"


def pod_name_prefix(pool_name: str) -> str:
    """What every pod of the pool's name starts with, and all the API server keeps of the pool's name."""
    return generate_name(pool_name)[:GENERATED_BASE_MAX]


def render_pod(pool: PoolRef, spec: WorkerPoolSpec, default_image: str) -> dict[str, Any]:
    """A complete Pod manifest for a new worker (the API server picks the name suffix)."""
    template = render_template(pool, spec, default_image)
    meta = template.get("metadata", {})
    labels = {
        **meta.get("labels", {}),
        names.POOL_LABEL: pool.name,
        names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE,
        names.TEMPLATE_HASH_LABEL: template_hash(template),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": generate_name(pool.name),
            "namespace": pool.namespace,
            "labels": labels,
            "annotations": dict(meta.get("annotations", {})),
            "ownerReferences": [
                {
                    "apiVersion": names.API_VERSION,
                    "kind": names.KIND,
                    "name": pool.name,
                    "uid": pool.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }


def has_password(url: str | None) -> bool:
    """True when a URL carries a password (redis://:pw@host, amqp://user:pw@host)."""
    if not url:
        return False
    try:
        return bool(urlsplit(url).password)
    except ValueError:  # not a URL at all: the worker will say so; nothing to warn about here
        return False


def redact(url: str) -> str:
    """A redis URL safe for logs, events and status: user and password become ***.

    urllib splits the user info at the last '@', so a password containing '@' is hidden whole.
    """
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # an unparsable port: hide everything between the scheme and the path
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***/{rest.partition('/')[2]}" if rest else "***"
    return urlunsplit(parts._replace(netloc=f"***@{host}{port}"))
