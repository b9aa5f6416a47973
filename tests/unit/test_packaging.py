"""The distribution installs `workerpool` without shadowing the standard library."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_operator_dir_is_a_source_root_not_a_package() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_import_operator_is_still_the_standard_library() -> None:
    # A fresh interpreter, started from the repository root (where a stray
    # `operator/` directory would be found first if it were a package).
    code = "import operator, workerpool; print(operator.__file__); print(operator.itemgetter)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert Path(out[0]).parent == Path(sysconfig.get_paths()["stdlib"])
    assert "itemgetter" in out[1]


def test_console_script_reports_the_version() -> None:
    exe = Path(sys.executable).parent / "workerpool"
    out = subprocess.run([str(exe), "version"], check=True, capture_output=True, text=True).stdout
    assert out.startswith("workerpool ")


def test_the_wheel_holds_only_what_users_run(tmp_path: Path) -> None:
    """No test bed (devcluster, harness, fixtures) and no tests in the distribution."""
    # Built as the image and the plugin archive build it (the pinned uv, the pinned backend).
    subprocess.run(
        [str(ROOT / "hack" / "uv.sh"), "build", "--quiet", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("workerpool_operator-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    subpackages = {n.split("/")[1] for n in names if n.startswith("workerpool/") and n.count("/") >= 2}
    assert subpackages == {"contracts", "controller", "decide", "plugin", "protocols", "worker"}
    assert not [n for n in names if n.startswith(("tests/", "testbed/", "bench/", "devcluster/"))]
