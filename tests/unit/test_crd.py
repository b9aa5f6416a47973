"""The committed CRD agrees with the models it is generated from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from workerpool.contracts.names import PROTOCOL_KEY_SPACES
from workerpool.contracts.resource import QUEUE_NAME_PATTERN, WorkerPoolSpec
from workerpool.crd import build_crd, render_crd_yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "crds" / "schemas" / "podtemplatespec.json"
CRD = ROOT / "crds" / "workerpool.yaml"


def crd() -> dict[str, Any]:
    return build_crd(json.loads(SCHEMA.read_text()))


def version_schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def test_committed_crd_matches_the_models() -> None:
    assert CRD.read_text() == render_crd_yaml(SCHEMA), "crds/ is stale: run `make crd`"


def test_identity_and_subresources() -> None:
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "workerpools.bifrost.dev"
    assert (spec["group"], spec["scope"]) == ("bifrost.dev", "Namespaced")
    assert spec["names"]["plural"] == "workerpools"
    assert spec["names"]["shortNames"] == ["wp"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    cols = [c["name"].upper() for c in crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols == ["MIN", "MAX", "DESIRED", "WORKERS", "BUSY", "IDLE", "QUEUE", "READY", "AGE"]


def test_cel_rules_are_declared() -> None:
    spec = version_schema()["properties"]["spec"]
    rules = {r["rule"] for r in spec["x-kubernetes-validations"]}
    rules |= {r["rule"] for r in spec["properties"]["redis"]["x-kubernetes-validations"]}
    rules |= {r["rule"] for r in spec["properties"]["rabbitmq"]["x-kubernetes-validations"]}
    assert rules == {
        "self.maxWorkers >= self.minWorkers",
        "self.protocol == 'bifrost' || self.processes.max >= self.processes.min",
        "has(self.url) != has(self.urlSecretRef)",
        "self.protocol == 'bifrost' ? has(self.rabbitmq) : !has(self.rabbitmq)",
        "self.protocol != 'bifrost' || (has(self.template.spec) && size(self.template.spec.containers) > 0)",
        "self.protocol != 'bifrost' || !has(self.redis.tls) || !has(self.redis.tls.caSecretRef)",
        "self.protocol != 'bifrost' || !has(self.allowedModules)",
        " && ".join(f"!self.queueKey.startsWith('{p}')" for p in PROTOCOL_KEY_SPACES),
        "self.protocol != 'bifrost' || !has(self.template.spec)"
        " || (!has(self.template.spec.hostname) && !has(self.template.spec.subdomain))",
        "!has(self.managementUrl) || !has(self.managementUrlSecretRef)",
        "self.protocol == 'bifrost' || !self.drainsOnSigterm",
        "!self.drainsOnSigterm || !has(self.template.spec)"
        " || !has(self.template.spec.terminationGracePeriodSeconds)"
        " || self.template.spec.terminationGracePeriodSeconds"
        " > self.executionTimeoutSeconds + self.gracefulShutdownSeconds",
    }
    root = version_schema()["x-kubernetes-validations"]
    assert root == [{"rule": "size(self.metadata.name) <= 63", "message": root[0]["message"]}]
    queue = spec["properties"]["rabbitmq"]["properties"]["queues"]["items"]
    assert (queue["minLength"], queue["maxLength"], queue["pattern"]) == (1, 255, QUEUE_NAME_PATTERN)
    assert spec["properties"]["protocol"] == {
        "type": "string",
        "enum": ["seed", "bifrost"],
        "default": "seed",
        "description": spec["properties"]["protocol"]["description"],
    }


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, child in node.items():
            out += walk(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += walk(child, f"{path}[{i}]")
    return out


def test_schema_is_structural() -> None:
    for path, node in walk(version_schema()):
        assert "$ref" not in node, path
        if "properties" in node and not path.endswith("/properties"):
            assert node.get("type") == "object", path
        if "anyOf" in node and not path.endswith("/properties"):
            assert node.get("x-kubernetes-int-or-string") is True, path


def test_template_is_a_real_pod_template_schema() -> None:
    template = version_schema()["properties"]["spec"]["properties"]["template"]
    pod_spec = template["properties"]["spec"]
    assert "containers" in pod_spec["required"]
    container = pod_spec["properties"]["containers"]["items"]
    assert {"name", "image", "command", "env", "resources", "securityContext"} <= set(container["properties"])
    assert set(template["properties"]["metadata"]["properties"]) == {"labels", "annotations"}


def test_crd_defaults_equal_model_defaults() -> None:
    spec_schema = version_schema()["properties"]["spec"]

    def defaults(schema: dict[str, Any]) -> Any:
        if schema.get("type") == "object" and "properties" in schema and "default" in schema:
            return {k: defaults(v) for k, v in schema["properties"].items() if "default" in v}
        return schema["default"]

    crd_defaults = {k: defaults(v) for k, v in spec_schema["properties"].items() if "default" in v}
    model = WorkerPoolSpec.model_validate({"redis": {"url": "redis://x"}}).model_dump(by_alias=True)
    for key, value in crd_defaults.items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                assert model[key][sub] == sub_value, f"{key}.{sub}"
        else:
            assert model[key] == value, key


def test_committed_yaml_is_the_generated_object() -> None:
    assert yaml.safe_load(CRD.read_text()) == crd()
