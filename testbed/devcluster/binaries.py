"""TEST INFRASTRUCTURE — where hack/build-control-plane.sh put the binaries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"


def bin_dirs() -> list[Path]:
    out = subprocess.run(
        [str(BUILD_SCRIPT), "--print-bin-dirs"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return [Path(p) for p in out.split(":")]


def find(name: str, *, build: bool = False) -> Path:
    """The path of a control-plane binary; `build=True` runs the (cached) build first."""
    for d in bin_dirs():
        if (d / name).is_file():
            return d / name
    if build:
        subprocess.run([str(BUILD_SCRIPT)], check=True)
        return find(name)
    raise FileNotFoundError(f"{name} is not built yet: run {BUILD_SCRIPT} (or make control-plane)")


def path_with_binaries() -> str:
    """$PATH with the control-plane directories first (kubectl, helm)."""
    return os.pathsep.join([*(str(d) for d in bin_dirs()), os.environ.get("PATH", "")])
