"""Event reasons are one vocabulary (`decide/events.py:EventReason`): no Event in the
product is posted with a reason written inline, and docs/operator.md lists each one."""

from __future__ import annotations

import ast
from pathlib import Path

from workerpool.decide.events import EventReason

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "workerpool"


def inline_reasons(source: str) -> list[str]:
    """The reasons written as string literals in `Event(...)` calls."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Event" and len(node.args) >= 2:
            reason = node.args[1]
            for part in [reason.body, reason.orelse] if isinstance(reason, ast.IfExp) else [reason]:
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    found.append(part.value)
    return found


def test_no_event_reason_is_written_inline() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if (found := inline_reasons(path.read_text()))
    }
    assert offenders == {}


def test_the_check_catches_an_inline_reason() -> None:
    source = 'Event("Normal", "Made", "m")\nEvent("Normal", EventReason.SCALING_UP if x else "Other", "m")\n'
    assert inline_reasons(source) == ["Made", "Other"]


def test_every_event_reason_is_documented() -> None:
    doc = (ROOT / "docs" / "operator.md").read_text()
    assert [r.value for r in EventReason if f"`{r.value}`" not in doc] == []
