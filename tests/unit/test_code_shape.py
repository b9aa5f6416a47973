"""The product stays easy to change: small functions and classes in every package
(contracts, decide, controller, worker, plugin, protocols and the modules beside them)."""

from __future__ import annotations

import ast
from pathlib import Path

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


def oversized(found: list[tuple[str, ast.AST]]) -> list[str]:
    """Every function over MAX_FUNCTION_LINES and class over MAX_CLASS_LINES, with its length."""
    out = []
    for where, node in found:
        limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
        if length(node) > limit:
            out.append(f"{where} is {length(node)} lines (limit {limit})")
    return out


def test_every_function_and_class_is_small() -> None:
    """One test that lists every offender (a test per definition counted 800 tests for one check)."""
    assert oversized(definitions()) == []


def test_the_check_catches_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (node,) = ast.parse(f"def long():\n{body}\n").body
    assert oversized([("m.py:long", node)]) == [f"m.py:long is {MAX_FUNCTION_LINES + 1} lines (limit 60)"]
