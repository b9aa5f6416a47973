#!/usr/bin/env bash
# kubectl-workerpool as a krew plugin: an archive with the plugin and its
# dependencies for CPython 3.11 on linux/amd64 (pydantic-core is compiled)
# plus a launcher, and the krew manifest with the archive's sha256.
#
#   hack/build-plugin-archive.sh [OUT_DIR]     (default: dist/krew)
#
# Release: attach OUT_DIR/kubectl-workerpool_linux_amd64.tar.gz to the GitHub
# release v<version> and submit OUT_DIR/workerpool.yaml to krew-index.
# Users need python3 (3.11) on PATH; everything else is in the archive.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-dist/krew}")
py=.venv/bin/python
version=$($py -c 'import importlib.metadata as m; print(m.version("workerpool-operator"))')
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# The versions of uv.lock (requirements/runtime.txt, hash-checked), then the plugin's own wheel.
hack/lock.sh check
hack/uv.sh build --quiet --wheel --out-dir "$stage/wheels" .
hack/uv.sh pip install --quiet --no-compile --target "$stage/pkg/lib" \
  --python-version 3.11 --python-platform x86_64-manylinux_2_17 --only-binary=:all: \
  --require-hashes -r requirements/runtime.txt
hack/uv.sh pip install --quiet --no-compile --target "$stage/pkg/lib" --no-deps \
  --python-version 3.11 --python-platform x86_64-manylinux_2_17 "$stage"/wheels/workerpool_operator-*.whl
cat > "$stage/pkg/kubectl-workerpool" <<'LAUNCHER'
#!/bin/sh
# kubectl-workerpool: the plugin from this archive's lib/, run by python3 (3.11).
here=$(dirname "$(readlink -f "$0")")
PYTHONPATH="$here/lib${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m workerpool.plugin.cli "$@"
LAUNCHER
chmod 0755 "$stage/pkg/kubectl-workerpool"

mkdir -p "$out"
archive="$out/kubectl-workerpool_linux_amd64.tar.gz"
# Reproducible: sorted names, fixed times and owners, no gzip timestamp.
tar -C "$stage/pkg" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . | gzip -n -9 > "$archive"
sha=$(sha256sum "$archive" | cut -d' ' -f1)
sed -e "s/@VERSION@/$version/g" -e "s/@SHA256@/$sha/" plugins/krew/workerpool.yaml.in > "$out/workerpool.yaml"
echo "$archive ($(du -h "$archive" | cut -f1), sha256 $sha)"
echo "$out/workerpool.yaml"
