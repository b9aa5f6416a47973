"""The krew archive of `kubectl workerpool`: built by hack/build-plugin-archive.sh, it runs
with the system's python3 and nothing else, and its manifest names it by its sha256."""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
import tarfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_archive_runs_alone_and_the_manifest_names_it(tmp_path: Path) -> None:
    out = tmp_path / "krew"
    subprocess.run([str(ROOT / "hack/build-plugin-archive.sh"), str(out)], check=True, capture_output=True, timeout=600)
    archive = out / "kubectl-workerpool_linux_amd64.tar.gz"
    manifest = yaml.safe_load((out / "workerpool.yaml").read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2" and manifest["kind"] == "Plugin"
    assert manifest["spec"]["version"] == "v" + importlib.metadata.version("workerpool-operator")
    (platform,) = manifest["spec"]["platforms"]
    assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert platform["uri"].endswith(f"/{manifest['spec']['version']}/{archive.name}")

    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    for entry in platform["files"]:
        assert (unpacked / entry["from"]).exists()
    launcher = unpacked / platform["bin"]
    # No venv, no PYTHONPATH: only what the archive holds and /usr/bin/python3.
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    helped = subprocess.run([str(launcher), "top", "--help"], env=clean, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "usage: kubectl workerpool top" in helped.stdout
    lost = subprocess.run([str(launcher), "top"], env=clean, capture_output=True, text=True, timeout=60)
    assert lost.returncode == 2
    assert lost.stderr.strip() == "error: no kubeconfig at ~/.kube/config (use --kubeconfig or set KUBECONFIG)"
