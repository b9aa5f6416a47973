"""Values a pool's round derives from its spec or stored status, computed once
per change of their input instead of on every round (at 1000 pools the rounds
are the operator's main CPU cost; docs/performance.md)."""

from __future__ import annotations

from typing import Any

from ...contracts.resource import Condition, WorkerPool
from ...decide.pods import PoolRef, render_template, template_hash
from ...decide.status import previous_conditions


class ParsedPool:
    """The WorkerPool as decisions read it (metadata and spec): the spec parsed once per
    generation, the annotations (a recycle request) put in without parsing it again (a 1 MB
    template took 0.67 s to parse on every annotation change). The stored status is not
    parsed: nothing decides from it (the round's memory has its own reader), and at 1000
    pools parsing it every round cost 6 % of the operator's CPU."""

    def __init__(self) -> None:
        self.cached: tuple[tuple[Any, ...], WorkerPool] | None = None

    def of(self, body: dict[str, Any]) -> WorkerPool:
        meta = body.get("metadata") or {}
        key = (
            meta.get("uid"),
            meta.get("generation"),
            meta.get("deletionTimestamp"),
            tuple(meta.get("finalizers") or ()),
        )
        if self.cached is None or self.cached[0] != key:
            self.cached = (key, WorkerPool.from_body({"metadata": meta, "spec": body.get("spec")}))
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        if self.cached[1].annotations != annotations:
            self.cached = (key, self.cached[1].model_copy(update={"annotations": annotations}))
        return self.cached[1]


class TemplateHash:
    """The pod template's hash, rendered once per spec generation."""

    def __init__(self, worker_image: str) -> None:
        self.worker_image = worker_image
        self.cached: tuple[int, str] | None = None

    def of(self, pool: WorkerPool) -> str:
        if self.cached is None or self.cached[0] != pool.generation:
            rendered = render_template(PoolRef(pool.name, pool.namespace, pool.uid), pool.spec, self.worker_image)
            self.cached = (pool.generation, template_hash(rendered))
        return self.cached[1]


class StoredConditions:
    """The stored status's conditions, parsed once per stored status (the watch hands a new dict on change)."""

    def __init__(self) -> None:
        self.cached: tuple[dict[str, Any] | None, list[Condition]] | None = None

    def of(self, stored: dict[str, Any] | None) -> list[Condition]:
        if self.cached is None or self.cached[0] is not stored:
            self.cached = (stored, previous_conditions(stored))
        return self.cached[1]
