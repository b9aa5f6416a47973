"""Generate the WorkerPool CustomResourceDefinition from the pydantic models.

The CRD in `crds/` is this module's output (`hack/gen-crd.py` writes it; a test
fails when the committed file and the models drift apart). The pod template's
schema is Kubernetes' own PodTemplateSpec, taken from the API server's
OpenAPI v3 document and vendored as JSON (`hack/fetch-pod-template-schema.py`).
"""

from __future__ import annotations

import datetime as dt
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .contracts import names
from .contracts.resource import (
    MAX_POOL_NAME,
    POD_TEMPLATE_SCHEMA_MARK,
    ResourceModel,
    WorkerPoolSpec,
    WorkerPoolStatus,
)

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Min", "type": "integer", "jsonPath": ".spec.minWorkers"},
    {"name": "Max", "type": "integer", "jsonPath": ".spec.maxWorkers"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredWorkers"},
    {"name": "Workers", "type": "integer", "jsonPath": ".status.workers"},
    {"name": "Busy", "type": "integer", "jsonPath": ".status.busyCount"},
    {"name": "Idle", "type": "integer", "jsonPath": ".status.idleCount"},
    {"name": "Queue", "type": "integer", "jsonPath": ".status.queue.depth"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _constraints(metadata: list[Any], schema: dict[str, Any]) -> None:
    is_int = schema.get("type") == "integer"
    for m in metadata:
        if isinstance(m, at.Ge):
            schema["minimum"] = m.ge
        elif isinstance(m, at.Gt):
            if is_int:
                schema["minimum"] = m.gt + 1  # type: ignore[operator]
            else:
                schema["minimum"] = m.gt
                schema["exclusiveMinimum"] = True
        elif isinstance(m, at.Le):
            schema["maximum"] = m.le
        elif isinstance(m, at.Lt):
            schema["maximum"] = m.lt
            schema["exclusiveMaximum"] = True
        elif isinstance(m, at.MinLen):
            schema["minLength" if schema.get("type") == "string" else "minItems"] = m.min_length
        elif isinstance(m, at.MaxLen):
            schema["maxLength" if schema.get("type") == "string" else "maxItems"] = m.max_length
        elif getattr(m, "pattern", None) is not None:
            schema["pattern"] = m.pattern


def _type_schema(tp: Any, pod_template: dict[str, Any]) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin is typing.Annotated:
        inner, *metadata = get_args(tp)
        schema = _type_schema(inner, pod_template)
        # `Annotated[str, Field(...)]` (a list's items, say) carries a FieldInfo: its constraints.
        for m in metadata:
            if isinstance(m, FieldInfo) and m.description:
                schema["description"] = m.description
        _constraints([c for m in metadata for c in (m.metadata if isinstance(m, FieldInfo) else [m])], schema)
        return schema
    if origin in (Union, types.UnionType):
        non_null = [a for a in get_args(tp) if a is not type(None)]
        if len(non_null) != 1:
            raise TypeError(f"unsupported union {tp!r}")
        return _type_schema(non_null[0], pod_template)
    if origin is Literal:
        values = list(get_args(tp))
        return {"type": "string", "enum": values}
    if origin is list:
        (item,) = get_args(tp)
        return {"type": "array", "items": _type_schema(item, pod_template)}
    if origin is dict:
        _key, value = get_args(tp)
        if value is str:
            return {"type": "object", "additionalProperties": {"type": "string"}}
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return model_schema(tp, pod_template)
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp is dt.datetime:
        return {"type": "string", "format": "date-time"}
    if tp is Any:
        return {"x-kubernetes-preserve-unknown-fields": True}
    raise TypeError(f"no CRD schema for type {tp!r}")


def _field_schema(field: FieldInfo, pod_template: dict[str, Any]) -> dict[str, Any]:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get(POD_TEMPLATE_SCHEMA_MARK):
        schema = dict(pod_template)
    else:
        schema = _type_schema(field.annotation, pod_template)
        _constraints(field.metadata, schema)
    if field.description:
        schema["description"] = field.description
    if field.default is not PydanticUndefined and field.default is not None:
        schema["default"] = field.default
    elif field.default_factory is not None and schema.get("type") == "object":
        # The whole default object, not `{}`: CEL rules on the object are checked
        # against the default itself, before nested defaults would fill it.
        value = field.default_factory()  # type: ignore[call-arg]
        schema["default"] = (
            value.model_dump(mode="json", by_alias=True, exclude_none=True) if isinstance(value, BaseModel) else value
        )
    return schema


def model_schema(model: type[BaseModel], pod_template: dict[str, Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model, keyed by its camelCase aliases."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        props[key] = _field_schema(field, pod_template)
        if field.is_required():
            required.append(key)
    schema: dict[str, Any] = {"type": "object"}
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    if doc:
        schema["description"] = doc
    schema["properties"] = props
    if required:
        schema["required"] = required
    if issubclass(model, ResourceModel) and model.cel_rules:
        schema["x-kubernetes-validations"] = [{"rule": r.rule, "message": r.message} for r in model.cel_rules]
    return schema


def build_crd(pod_template_schema: dict[str, Any]) -> dict[str, Any]:
    """The complete CRD manifest."""
    spec = model_schema(WorkerPoolSpec, pod_template_schema)
    status = model_schema(WorkerPoolStatus, pod_template_schema)
    # Conditions are a map keyed by type, as in metav1.Condition lists.
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names.PLURAL}.{names.GROUP}",
            "labels": {"app.kubernetes.io/name": "workerpool-operator"},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": ["all", "bifrost"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A pool of workflow worker pods, scaled with the work queue.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {
                                    "rule": f"size(self.metadata.name) <= {MAX_POOL_NAME}",
                                    "message": f"a WorkerPool's name is at most {MAX_POOL_NAME} characters: its pods"
                                    " carry it as a label value",
                                }
                            ],
                        }
                    },
                }
            ],
        },
    }


def render_crd_yaml(pod_template_schema_path: Path) -> str:
    """The CRD as the YAML text committed in `crds/` (stable key order)."""
    schema = json.loads(Path(pod_template_schema_path).read_text())
    header = (
        "# Generated by hack/gen-crd.py from operator/workerpool/contracts/resource.py.\n"
        "# Do not edit by hand: change the models and regenerate.\n"
    )
    return header + yaml.safe_dump(build_crd(schema), sort_keys=False, width=120)
