"""The Argo CD health check (charts/workerpool-operator/argocd/health.lua), run by a real Lua."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "charts" / "workerpool-operator" / "argocd" / "health.lua"
LUA = shutil.which("lua5.4") or shutil.which("lua")


def to_lua(value: Any) -> str:
    """A Lua table literal for a JSON-like value (what Argo CD hands the script as `obj`)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{json.dumps(k)}] = {to_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def health(obj: dict[str, Any]) -> tuple[str, str]:
    assert LUA is not None, "lua5.4 is installed by hack/install-system-packages.sh"
    program = (
        f"obj = {to_lua(obj)}\nlocal hs = (function()\n{SCRIPT.read_text()}\nend)()\n"
        "print(hs.status)\nprint(hs.message)"
    )
    out = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True, check=True).stdout
    status, _, message = out.partition("\n")
    return status, message.strip()


def pool(generation: int = 2, observed: int | None = 2, **conditions: tuple[str, str]) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if observed is not None:
        status["observedGeneration"] = observed
    status["conditions"] = [
        {"type": t, "status": s, "reason": r, "message": f"{t} says {r}"} for t, (s, r) in conditions.items()
    ]
    return {"metadata": {"generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"metadata": {"generation": 1}}, "Progressing"),
        (pool(observed=None), "Progressing"),
        (pool(generation=3, observed=2, Ready=("True", "WorkersReady")), "Progressing"),
        (
            pool(Ready=("False", "ScalingUp"), Reconciling=("True", "ScalingUp"), Stalled=("False", "Progressing")),
            "Progressing",
        ),
        (
            pool(
                Ready=("False", "RedisUnavailable"),
                Reconciling=("False", "Reconciled"),
                Stalled=("True", "RedisUnavailable"),
            ),
            "Degraded",
        ),
        (
            pool(Ready=("True", "WorkersReady"), Reconciling=("False", "Reconciled"), Stalled=("False", "Progressing")),
            "Healthy",
        ),
        (pool(Ready=("False", "WaitingForWorkers"), Reconciling=("False", "Reconciled")), "Progressing"),
    ],
)
def test_health(obj: dict[str, Any], expected: str) -> None:
    status, message = health(obj)
    assert status == expected
    assert message


def test_degraded_message_names_the_reason() -> None:
    _, message = health(pool(Stalled=("True", "PodsRejected")))
    assert message.startswith("PodsRejected")
