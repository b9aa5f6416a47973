"""A pool's spec is parsed once per generation: an annotation (a recycle request) changes
the pool the round sees without parsing its template again."""

from __future__ import annotations

import copy
from typing import Any

from workerpool.controller.loop.derived import ParsedPool

BODY: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u", "generation": 1, "annotations": {}},
    "spec": {
        "redis": {"url": "redis://r:6379/0"},
        "template": {
            "spec": {"containers": [{"name": "w", "env": [{"name": f"E{i}", "value": "x"} for i in range(50)]}]}
        },
    },
}


def test_an_annotation_change_keeps_the_parsed_spec_and_a_generation_change_parses_again() -> None:
    parsed = ParsedPool()
    first = parsed.of(BODY)
    annotated = copy.deepcopy(BODY)
    annotated["metadata"]["annotations"] = {"bifrost.dev/recycle": "*"}
    second = parsed.of(annotated)
    assert second.annotations == {"bifrost.dev/recycle": "*"}
    assert second.spec is first.spec  # not parsed again
    assert parsed.of(annotated) is second  # nor copied again
    changed = copy.deepcopy(annotated)
    changed["metadata"]["generation"] = 2
    changed["spec"]["maxWorkers"] = 7
    third = parsed.of(changed)
    assert third.spec is not first.spec and third.spec.max_workers == 7
    assert third.annotations == {"bifrost.dev/recycle": "*"}
