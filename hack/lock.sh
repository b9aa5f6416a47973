#!/usr/bin/env bash
# The Python lock: uv.lock (every environment: runtime, dev, bench) and its
# export requirements/runtime.txt (the image's runtime, hash-pinned, for pip).
#
#   hack/lock.sh update   re-resolve to the newest versions pyproject.toml allows (make lock)
#   hack/lock.sh check    fail when pyproject.toml, uv.lock and the export disagree (make test)
set -euo pipefail
cd "$(dirname "$0")/.."
UV=hack/uv.sh
export_runtime() {
  { echo "# The image's runtime, exported from uv.lock by hack/lock.sh (make lock); do not edit."
    "$UV" export --quiet --frozen --no-emit-project --no-annotate --no-header --format requirements-txt
  } >"$1"
}
case "${1:-}" in
  update)
    "$UV" lock --upgrade
    export_runtime requirements/runtime.txt
    ;;
  check)
    if ! "$UV" lock --check; then
      echo "uv.lock does not satisfy pyproject.toml: run 'make lock' (then make deps-check and make test)" >&2
      exit 1
    fi
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    export_runtime "$tmp"
    if ! diff -u requirements/runtime.txt "$tmp" >&2; then
      echo "requirements/runtime.txt is not the export of uv.lock: run 'make lock'" >&2
      exit 1
    fi
    ;;
  *) echo "usage: $0 update|check" >&2; exit 2 ;;
esac
