#!/usr/bin/env bash
# Runs the pinned uv (hack/uv-requirements.txt), installing it once, hash-checked,
# into $WPO_CACHE/tools/uv-<version>. Everything that makes a Python environment
# (make setup, make lock, make deps-check, hack/build-image.sh) goes through here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE="${WPO_CACHE:-$HOME/.cache/workerpool-operator}"
version=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' "$here/uv-requirements.txt")
dir="$CACHE/tools/uv-$version"
if [[ ! -x "$dir/bin/uv" ]]; then
  rm -rf "$dir.partial"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: --target "$dir.partial" -r "$here/uv-requirements.txt" >&2
  rm -rf "$dir" && mv "$dir.partial" "$dir"
fi
# The machine's CPython 3.11, never an interpreter uv would download.
export UV_PYTHON="${UV_PYTHON:-python3.11}" UV_PYTHON_DOWNLOADS=never
exec "$dir/bin/uv" "$@"
