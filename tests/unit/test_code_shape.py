"""The core stays easy to change: small functions and classes in controller/ and decide/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "workerpool"
MAX_FUNCTION_LINES, MAX_CLASS_LINES = 60, 200


def definitions() -> list[tuple[str, ast.AST]]:
    found = []
    for sub in ("controller", "decide"):
        for path in sorted((PACKAGE / sub).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    found.append((f"{sub}/{path.name}:{node.name}", node))
    return found


def length(node: ast.AST) -> int:
    assert isinstance(node, ast.stmt) and node.end_lineno is not None
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return node.end_lineno - first + 1


@pytest.mark.parametrize(("where", "node"), definitions(), ids=lambda v: v if isinstance(v, str) else "")
def test_small(where: str, node: ast.AST) -> None:
    limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
    assert length(node) <= limit, f"{where} is {length(node)} lines (limit {limit})"
