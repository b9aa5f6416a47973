"""An optional policy on what a WorkerPool's pod template may ask for (pure).

Whoever may create a WorkerPool gets the pods its template describes, created by the
operator's ServiceAccount. Admission keeps a pool within its author's own rights (the
chart's ValidatingAdmissionPolicy, docs/security.md), and Pod Security Admission judges
what it can see; this policy, set at install (chart `templatePolicy`), refuses outright
what a platform never wants in a worker: the node's namespaces, host paths and ports,
privileged containers and added capabilities, a pinned node, and any ServiceAccount off
its list. A pool whose template breaks it gets no new pod: Stalled, reason
TemplateRefused, naming each offending field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .reasons import Reason
from .status import Stall

HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")
ALLOWED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})  # the one Pod Security "restricted" allows too


@dataclass(frozen=True)
class TemplatePolicy:
    enabled: bool = False
    service_accounts: frozenset[str] = field(default_factory=lambda: frozenset({"default"}))


def template_refusal(template: Mapping[str, Any], policy: TemplatePolicy) -> Stall | None:
    """Why the policy refuses this pod template (None: it does not, or the policy is off)."""
    if not policy.enabled:
        return None
    found = violations(_mapping(template.get("spec")), policy)
    if not found:
        return None
    return Stall(
        Reason.TEMPLATE_REFUSED,
        f"the operator's template policy refuses {'; '.join(found)}: no pod is created from this template"
        " (what runs keeps running); change spec.template or ask the platform team",
    )


def violations(spec: Mapping[str, Any], policy: TemplatePolicy) -> list[str]:
    """Each field of a pod spec the policy refuses, as a path and why."""
    found = [f"spec.{name}" for name in HOST_NAMESPACES if spec.get(name) is True]
    if spec.get("nodeName"):
        found.append("spec.nodeName (the scheduler places workers)")
    account = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    if account not in policy.service_accounts:
        allowed = ", ".join(sorted(policy.service_accounts))
        found.append(f"spec.serviceAccountName {str(account)[:63]!r} (allowed: {allowed})")
    for i, volume in enumerate(_items(spec.get("volumes"))):
        if "hostPath" in volume:
            found.append(f"spec.volumes[{i}] hostPath")
    for kind in CONTAINER_KINDS:
        for i, container in enumerate(_items(spec.get(kind))):
            found.extend(f"spec.{kind}[{i}] {why}" for why in _container_violations(container))
    return found


def _container_violations(container: Mapping[str, Any]) -> list[str]:
    context = _mapping(container.get("securityContext"))
    found = ["privileged"] if context.get("privileged") is True else []
    asked = _mapping(context.get("capabilities")).get("add")
    added = {str(c) for c in asked if str(c) not in ALLOWED_CAPABILITIES} if isinstance(asked, list) else set()
    if added:
        found.append(f"capabilities.add {sorted(str(c)[:32] for c in added)}")
    if any(isinstance(p, Mapping) and p.get("hostPort") for p in _items(container.get("ports"))):
        found.append("hostPort")
    return found


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
