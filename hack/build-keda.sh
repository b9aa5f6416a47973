#!/usr/bin/env bash
# Builds KEDA (github.com/kedacore/keda/v2) from the Go module proxy for the
# side-by-side benchmark (bench/bifrost_vs_keda.py): for each version in
# KEDA_VERSIONS (hack/versions.env), the operator (`keda`), the metrics API
# server (`keda-adapter`) and the CRDs, into $WPO_CACHE/bin/keda-<version>/.
# Not part of `make test`: only the benchmark needs it. Idempotent (cached).
#
# KEDA's go.mod has `replace` directives, so `go install pkg@version` refuses
# it: the module's own source (checked against the checksum database like every
# other module) is copied to a scratch directory and built there as the main
# module, with its own go.sum.
#
# Usage: hack/build-keda.sh [--print-bin-dir VERSION]
set -euo pipefail

source "$(dirname "$0")/versions.env"

CACHE="${WPO_CACHE:-$HOME/.cache/workerpool-operator}"
export GOMODCACHE="${GOMODCACHE_OVERRIDE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE_OVERRIDE:-$CACHE/go/build}"
export CGO_ENABLED=0
export GOSUMDB=sum.golang.org GONOSUMDB= GOPRIVATE= GOINSECURE= GOFLAGS=

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$CACHE/bin/keda-${2:?version}"
  exit 0
fi

log() { printf '[build-keda %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

toolchain_for() {
  local var="KEDA_GOTOOLCHAIN_${1//./_}"
  echo "${!var:-local}"
}

build_keda() {
  local version=$1 dir="$CACHE/bin/keda-$1" toolchain src work t0=$SECONDS
  if [[ -x "$dir/keda" && -x "$dir/keda-adapter" ]]; then log "keda $version: cached in $dir"; return; fi
  toolchain=$(toolchain_for "$version")
  log "keda $version: downloading the module (toolchain $toolchain)"
  work=$(mktemp -d "${TMPDIR:-/tmp}/wpo-keda.XXXXXX")
  (cd "$work" && go mod init wpo.local/keda >/dev/null 2>&1)
  src=$(cd "$work" && GOTOOLCHAIN=$toolchain go mod download -json "github.com/kedacore/keda/v2@$version" \
    | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  cp -r "$src" "$work/keda" && chmod -R u+w "$work/keda"
  # The module zip carries a vendor/ holding only modules.txt: build from the module cache.
  rm -rf "$work/keda/vendor"
  mkdir -p "$dir.tmp/crds"
  local ldflags="-s -w -X github.com/kedacore/keda/v2/version.Version=${version#v} \
-X github.com/kedacore/keda/v2/version.GitCommit=module-proxy"
  for cmd in operator:keda adapter:keda-adapter; do
    log "keda $version: go build ./cmd/${cmd%%:*} (several minutes on 2 cores)"
    (cd "$work/keda" && GOTOOLCHAIN=$toolchain go build -trimpath -ldflags "$ldflags" \
      -o "$dir.tmp/${cmd##*:}" "./cmd/${cmd%%:*}")
  done
  cp "$work"/keda/config/crd/bases/*.yaml "$dir.tmp/crds/"
  rm -rf "$dir" && mv "$dir.tmp" "$dir" && rm -rf "$work"
  log "keda $version: built in $((SECONDS - t0)) s"
}

for v in $KEDA_VERSIONS; do build_keda "$v"; done
