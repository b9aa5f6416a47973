"""Imports only point down: the Kopf registry on top, the ports and the process below the
adapters that implement them, `decide/` and `contracts/` below everything. docs/architecture.md draws
these layers; this test is what keeps the drawing true."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "workerpool"

# What each top-level part of the product may import of the others.
PACKAGE_IMPORTS: dict[str, set[str]] = {
    "contracts": set(),
    "settings_errors": set(),
    "redis_connect": {"contracts"},
    "protocols": {"contracts"},
    "decide": {"contracts", "protocols"},
    "controller": {"contracts", "protocols", "decide", "redis_connect", "settings_errors"},
    "worker": {"contracts", "redis_connect", "settings_errors"},  # the seed's wire is its own: no protocols
    "plugin": {"contracts"},
    "crd": {"contracts"},
    "cli": {"controller", "worker", "plugin", "crd", "contracts"},
}
# The controller's layers, bottom first; a module may import its own layer's modules and lower layers'.
# `loop` and `admission` share a rank: neither imports the other (the gate uses ports.EvictedPool).
CONTROLLER_RANKS = {
    "process": 0,
    "ports": 1,  # below the adapters: they implement the ports and import their types, never the reverse
    "adapters": 2,
    "loop": 3,
    "admission": 3,
    "fleet": 4,
    "ha": 5,
    "app": 6,
    "handlers": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, text: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every `workerpool` import in the file, relative ones resolved."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names] if not node.module else []
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "workerpool"]


def part(module: str) -> str | None:
    """The top-level part a module of the product belongs to (None: the package itself)."""
    parts = module.split(".")
    if len(parts) < 2 or not ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file()):
        return None  # `from . import __version__`: a name of the package, not a part
    return parts[1]


# Below in rank, yet not to be imported: the pool loop talks to the world only through the
# ports (the adapters behind them are the fleet's to wire). The admission webhook still
# reads the Kube adapter's errors and serves its own certificate through it.
NOT_IMPORTED = {"loop": {"adapters"}}


def below(lower: str, upper: str) -> bool:
    return CONTROLLER_RANKS[lower] < CONTROLLER_RANKS[upper] and lower not in NOT_IMPORTED.get(upper, set())


def layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 3 or parts[1] != "controller":
        return None
    return parts[2] if parts[2] in CONTROLLER_RANKS else None


def violations(path: Path, text: str | None = None) -> list[str]:
    """Upward imports in the module at `path` (its text, or `text` as if it stood there)."""
    me = module_name(path)
    mine, my_layer = part(me), layer(me)
    found = []
    for line, target in imported(path, path.read_text() if text is None else text):
        theirs = part(target)
        if theirs is None or theirs == mine:
            their_layer = layer(target)
            if my_layer and their_layer and their_layer != my_layer and not below(their_layer, my_layer):
                found.append(f"{path.name}:{line}: controller/{my_layer} imports {target} (not below it)")
            continue
        if mine in PACKAGE_IMPORTS and theirs not in PACKAGE_IMPORTS[mine]:
            found.append(f"{path.name}:{line}: {mine} imports {target}")
    return found


def product_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_imports_point_down() -> None:
    """One test that lists every upward import in the product."""
    assert [v for path in product_modules() for v in violations(path)] == []


def test_every_part_and_layer_is_ranked() -> None:
    """A new package or controller subpackage must be placed in the picture before it is used."""
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    assert parts - {"__init__", "__pycache__"} <= PACKAGE_IMPORTS.keys()
    layers = {p.stem if p.is_file() else p.name for p in (PACKAGE / "controller").iterdir()}
    assert layers - {"__init__", "__pycache__"} == CONTROLLER_RANKS.keys()


@pytest.mark.parametrize(
    ("where", "source", "complaint"),
    [
        ("controller/adapters/kube.py", "from ..loop.controller import PoolController\n", "adapters imports"),
        ("controller/ports.py", "from .adapters.redis_hub import RedisHub\n", "ports imports"),
        ("controller/loop/controller.py", "from ..adapters.kube import ApiException\n", "loop imports"),
        ("controller/admission/evictions.py", "from ..loop.controller import PoolController\n", "admission imports"),
        ("controller/loop/state.py", "from ..fleet import manager\n", "loop imports"),
        ("decide/scaling.py", "from ..controller.process import metrics\n", "decide imports"),
        ("contracts/wire.py", "from workerpool.decide import status\n", "contracts imports"),
        ("worker/queue.py", "def f():\n    from ..protocols import SEED\n", "worker imports"),
    ],
)
def test_the_check_catches_an_upward_import(where: str, source: str, complaint: str) -> None:
    found = violations(PACKAGE / where, source)
    assert any(complaint in v for v in found), found
