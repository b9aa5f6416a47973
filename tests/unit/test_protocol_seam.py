"""The protocol seam holds: outside `workerpool.protocols` (and the reference worker,
which *is* the seed's wire), nothing names a worker's Redis keys or wire models.
A new protocol then touches one module, and a seed detail cannot leak into the
decisions a Bifrost pool takes (or the other way round)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "workerpool"
CHECKED = ("controller", "decide", "plugin")
# What the rest may take from the contract modules: Kubernetes names, generic wire helpers.
ALLOWED = {
    "names": {
        "GROUP", "VERSION", "API_VERSION", "KIND", "PLURAL", "SINGULAR", "SHORT_NAMES", "POOL_LABEL",
        "MANAGED_BY_LABEL", "MANAGED_BY_VALUE", "TEMPLATE_HASH_LABEL", "RECYCLE_ANNOTATION",
        "EVICTING_ANNOTATION", "EVICTING_SINCE_ANNOTATION", "KOPF_PREFIX", "DEFAULT_QUEUE_KEY",
        "DO_NOT_DISRUPT_ANNOTATION", "SAFE_TO_EVICT_ANNOTATION", "BUSY_MARKS",  # node autoscalers: Kubernetes names
        "REDIS_CA_VOLUME", "REDIS_CA_DIR",  # the pool's CA bundle in its pods: any protocol's
        "REGISTERED_CONDITION",  # the worker pods' readiness gate: a Kubernetes name
        "RETIRE_FINALIZER",  # the pool's finalizer: a Kubernetes name
    },
    "wire": {
        "ContractModel", "QueueStatus", "WireFormatError", "describe_validation_error", "to_status", "to_wire",
        "parse_json_message",
        "MAX_MESSAGE_BYTES", "TooLargeError", "check_size", "reply_size",  # the byte bound: any protocol's
    },
}  # fmt: skip
# Key and channel literals of either wire: how they begin, and the seed's handshake suffixes.
WIRE_PREFIXES = ("worker:", "bifrost:workers:", "bifrost:pool:", "bifrost:platform_workers", "bifrost:exec:")
WIRE_PARTS = (":held:", ":retiring")


def modules() -> list[Path]:
    return [p for sub in CHECKED for p in sorted((PACKAGE / sub).rglob("*.py"))]


def leaks(path: Path) -> list[str]:
    """Where the module at `path` names a worker's wire (a key, a wire model, a protocol's name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1] in ALLOWED:
            kind = node.module.split(".")[-1]
            if not node.module.endswith(f"contracts.{kind}"):
                continue
            if taken := {a.name for a in node.names} - ALLOWED[kind]:
                found.append(f"{path.name} imports {sorted(taken)} from contracts.{kind}: that is a protocol's")
        named = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "names"
        if named and node.attr not in ALLOWED["names"]:  # type: ignore[attr-defined]
            found.append(f"{path.name} uses names.{node.attr}: that is a protocol's")  # type: ignore[attr-defined]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            hits = [p for p in WIRE_PREFIXES if node.value.startswith(p)] + [p for p in WIRE_PARTS if p in node.value]
            if hits:
                found.append(f"{path.name} spells a wire key ({hits}) in {node.value[:60]!r}")
    return found


def test_only_the_protocols_name_the_wire() -> None:
    """One test that lists every leak in controller/, decide/ and plugin/."""
    assert [leak for path in modules() for leak in leaks(path)] == []


def test_the_check_would_catch_a_leak(tmp_path: Path) -> None:
    leaky = tmp_path / "leak.py"
    leaky.write_text("from ..contracts.names import worker_key\n")
    assert any("worker_key" in leak for leak in leaks(leaky))
    leaky.write_text("CHANNEL = 'bifrost:platform_workers'\n")
    assert any("spells a wire key" in leak for leak in leaks(leaky))
