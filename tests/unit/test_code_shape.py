"""The product stays easy to change: small functions and classes in every package
(contracts, decide, controller, worker, plugin, protocols and the modules beside them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "workerpool"
MAX_FUNCTION_LINES, MAX_CLASS_LINES = 60, 200
PARTS = ("contracts", "decide", "controller", "worker", "plugin", "protocols")


def definitions() -> list[tuple[str, ast.AST]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found.append((f"{path.relative_to(PACKAGE)}:{node.name}", node))
    return found


def test_every_part_is_measured() -> None:
    measured = {where.split("/")[0] for where, _ in definitions() if "/" in where}
    assert measured >= set(PARTS)


def length(node: ast.AST) -> int:
    assert isinstance(node, ast.stmt) and node.end_lineno is not None
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return node.end_lineno - first + 1


@pytest.mark.parametrize(("where", "node"), definitions(), ids=lambda v: v if isinstance(v, str) else "")
def test_small(where: str, node: ast.AST) -> None:
    limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
    assert length(node) <= limit, f"{where} is {length(node)} lines (limit {limit})"
