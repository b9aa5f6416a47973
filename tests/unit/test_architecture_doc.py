"""docs/architecture.md stays true: every file, directory and symbol it names in
backticks exists where it says (and a signature it writes out has those
parameters). The layer claims it makes are tests/unit/test_layers.py's rules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "workerpool"
DOC = ROOT / "docs" / "architecture.md"
# Where a relative name in the page is looked for: the repository, the package, the controller.
BASES = (ROOT, PACKAGE, PACKAGE / "controller")
PATH_REF = re.compile(r"^(?P<path>[\w./]+\.py)(?::(?P<symbol>[\w.]+)(?:\((?P<params>[^)]*)\))?)?$")
DIR_REF = re.compile(r"^(?P<path>[\w./]+)/$")
MODULE_SYMBOL = re.compile(r"^(?P<module>[a-z_]+)\.(?P<symbol>[A-Z]\w*)$")  # e.g. ports.Broker


def spans(text: str) -> list[str]:
    """The page's inline code spans (code blocks are prose drawings, not references)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def find(path: str) -> Path | None:
    return next((base / path for base in BASES if (base / path).exists()), None)


def defined(tree: ast.Module, dotted: str) -> ast.AST | None:
    """The definition `dotted` names (a class, function or assignment; `A.b` inside class A)."""
    scope: list[ast.stmt] = tree.body
    node: ast.AST | None = None
    for part in dotted.split("."):
        node = next((n for n in scope if _names(n) and part in _names(n)), None)
        if node is None:
            return None
        scope = getattr(node, "body", [])
    return node


def _names(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def problems(text: str) -> list[str]:
    """Every reference in `text` that does not hold, with why."""
    out = []
    for span in spans(text):
        if m := PATH_REF.match(span):
            out += _check_file(span, m["path"], m["symbol"], m["params"])
        elif (m := DIR_REF.match(span)) and find(m["path"]) is None:
            out.append(f"`{span}`: no such directory")
        elif m := MODULE_SYMBOL.match(span):
            module = find(f"{m['module']}.py")
            if module is None or defined(ast.parse(module.read_text()), m["symbol"]) is None:
                out.append(f"`{span}`: not defined")
    return out


def _check_file(span: str, path: str, symbol: str | None, params: str | None) -> list[str]:
    file = find(path)
    if file is None:
        return [f"`{span}`: no such file"]
    if symbol is None:
        return []
    node = defined(ast.parse(file.read_text()), symbol)
    if node is None:
        return [f"`{span}`: {symbol} is not defined in {file.relative_to(ROOT)}"]
    if params is not None and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        written = [p.strip() for p in params.split(",") if p.strip()]
        actual = [a.arg for a in node.args.args + node.args.kwonlyargs]
        if written != actual:
            return [f"`{span}`: the signature is ({', '.join(actual)})"]
    return []


def test_every_file_directory_and_symbol_the_page_names_exists() -> None:
    text = DOC.read_text()
    assert len(spans(text)) > 40  # the page still names what it describes
    assert problems(text) == []


def test_the_check_catches_what_drifted() -> None:
    text = (
        "`loop/gone.py` `decide/plan.py:nothing` `decide/plan.py:decide(pool, obs)` "
        "`vanished/` `ports.Nowhere` `decide/plan.py:decide` `loop/` `ports.HubRegistry`"
    )
    found = problems(text)
    assert [f.split(":")[0] for f in found] == [
        "`loop/gone.py`",
        "`decide/plan.py",
        "`decide/plan.py",
        "`vanished/`",
        "`ports.Nowhere`",
    ], found
