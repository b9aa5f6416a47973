#!/usr/bin/env python3
"""Vendor Kubernetes' PodTemplateSpec schema for the WorkerPool CRD.

Reads the API server's OpenAPI v3 document for core/v1 (from a running local
cluster, `make cluster-up`, or a saved file) and writes a self-contained,
structural schema: every $ref inlined, descriptions and defaults dropped
(the API server defaults pods itself; descriptions would triple the CRD's size),
list/patch markers dropped, Quantity and IntOrString as int-or-string.

Usage:
  hack/fetch-pod-template-schema.py --kubeconfig PATH   # fetch /openapi/v3/api/v1
  hack/fetch-pod-template-schema.py --from-file v1.json
Writes crds/schemas/podtemplatespec.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crds" / "schemas" / "podtemplatespec.json"
PREFIX = "#/components/schemas/"
INT_OR_STRING = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
SPECIAL = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": INT_OR_STRING,
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": INT_OR_STRING,
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": {"type": "string", "format": "date-time"},
    # Only labels and annotations of a pod template's metadata are used.
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
        "type": "object",
        "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}
DROP = {
    "description",
    "default",
    "x-kubernetes-patch-strategy",
    "x-kubernetes-patch-merge-key",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-unions",
    "x-kubernetes-group-version-kind",
}


def inline(node: Any, components: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    if isinstance(node, list):
        return [inline(n, components, stack) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if ref is None and isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        ref = node["allOf"][0].get("$ref")
    if ref is not None:
        name = ref.removeprefix(PREFIX)
        if name in SPECIAL:
            return dict(SPECIAL[name])
        if name in stack:
            raise SystemExit(f"recursive schema at {' -> '.join((*stack, name))}")
        return inline(components[name], components, (*stack, name))
    return {k: inline(v, components, stack) for k, v in node.items() if k not in DROP}


def main() -> int:
    ap = argparse.ArgumentParser()
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--kubeconfig")
    src.add_argument("--from-file")
    args = ap.parse_args()
    if args.from_file:
        doc = json.loads(Path(args.from_file).read_text())
    else:
        out = subprocess.run(
            ["kubectl", "--kubeconfig", args.kubeconfig, "get", "--raw", "/openapi/v3/api/v1"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        doc = json.loads(out)
    components = doc["components"]["schemas"]
    schema = inline(components["io.k8s.api.core.v1.PodTemplateSpec"], components)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
