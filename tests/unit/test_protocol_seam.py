"""The protocol seam holds: outside `workerpool.protocols` (and the reference worker,
which *is* the seed's wire), nothing names a worker's Redis keys or wire models.
A new protocol then touches one module, and a seed detail cannot leak into the
decisions a Bifrost pool takes (or the other way round)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "workerpool"
CHECKED = ("controller", "decide", "plugin")
# What the rest may take from the contract modules: Kubernetes names, generic wire helpers.
ALLOWED = {
    "names": {
        "GROUP", "VERSION", "API_VERSION", "KIND", "PLURAL", "SINGULAR", "SHORT_NAMES", "POOL_LABEL",
        "MANAGED_BY_LABEL", "MANAGED_BY_VALUE", "TEMPLATE_HASH_LABEL", "RECYCLE_ANNOTATION",
        "EVICTING_ANNOTATION", "KOPF_PREFIX", "DEFAULT_QUEUE_KEY",
        "DO_NOT_DISRUPT_ANNOTATION", "SAFE_TO_EVICT_ANNOTATION", "BUSY_MARKS",  # node autoscalers: Kubernetes names
        "REDIS_CA_VOLUME", "REDIS_CA_DIR",  # the pool's CA bundle in its pods: any protocol's
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


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_protocols_name_the_wire(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1] in ALLOWED:
            kind = node.module.split(".")[-1]
            if not node.module.endswith(f"contracts.{kind}"):
                continue
            taken = {a.name for a in node.names} - ALLOWED[kind]
            assert not taken, f"{path.name} imports {sorted(taken)} from contracts.{kind}: that is a protocol's"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "names":
            assert node.attr in ALLOWED["names"], f"{path.name} uses names.{node.attr}: that is a protocol's"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            hits = [p for p in WIRE_PREFIXES if node.value.startswith(p)] + [p for p in WIRE_PARTS if p in node.value]
            assert not hits, f"{path.name} spells a wire key ({hits}) in {node.value[:60]!r}"


def test_the_check_would_catch_a_leak(tmp_path: Path) -> None:
    leaky = tmp_path / "leak.py"
    leaky.write_text("from ..contracts.names import worker_key\n")
    with pytest.raises(AssertionError, match="worker_key"):
        test_only_the_protocols_name_the_wire(leaky)
    leaky.write_text("CHANNEL = 'bifrost:platform_workers'\n")
    with pytest.raises(AssertionError, match="spells a wire key"):
        test_only_the_protocols_name_the_wire(leaky)
