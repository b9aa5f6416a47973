#!/usr/bin/env bash
# Builds the local Kubernetes cluster used by the tests and the demo from the
# Go module proxy (no Docker, no prebuilt downloads are reachable):
#   kube-apiserver, kube-controller-manager, kube-scheduler,
#   kubelet, kube-proxy, kubectl                      (k8s.io/kubernetes)
#   pause (the sandbox image's binary)                (k8s.io/kubernetes build/pause)
#   etcd                                             (go.etcd.io/etcd/server/v3)
#   helm (v4) and helm3 (v3: the chart is tested with both) (helm.sh/helm/v4, /v3)
#   kwok, and its upstream stages                    (sigs.k8s.io/kwok)
#   karpenter-kwok, and its CRDs                      (sigs.k8s.io/karpenter/kwok)
# into $WPO_CACHE/bin/<component>-<version>/.  Idempotent: a component whose
# binaries exist is skipped, so a second run takes about a second.
#
# Usage: hack/build-control-plane.sh [--print-bin-dirs]
set -euo pipefail

source "$(dirname "$0")/versions.env"

CACHE="${WPO_CACHE:-$HOME/.cache/workerpool-operator}"
K8S_DIR="$CACHE/bin/kubernetes-$KUBERNETES_VERSION"
ETCD_DIR="$CACHE/bin/etcd-$ETCD_VERSION"
# helm's default Kubernetes version (.Capabilities.KubeVersion without a
# cluster, e.g. `helm template`) is a link-time variable; a plain `go install`
# leaves it at v1.20 and the chart's `kubeVersion: >=1.30` is refused.
HELM_KUBE_MINOR=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
HELM3_DIR="$CACHE/bin/helm-$HELM3_VERSION-kube1.$HELM_KUBE_MINOR"
HELM_DIR="$CACHE/bin/helm-$HELM_VERSION"
KWOK_DIR="$CACHE/bin/kwok-$KWOK_VERSION"
KARPENTER_DIR="$CACHE/bin/karpenter-$KARPENTER_VERSION"
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

if [[ "${1:-}" == "--print-bin-dirs" ]]; then
  echo "$K8S_DIR:$ETCD_DIR:$HELM_DIR:$HELM3_DIR:$KWOK_DIR:$KARPENTER_DIR"
  exit 0
fi

# Keep Go's own caches next to the binaries so CI can cache one directory.
export GOMODCACHE="${GOMODCACHE_OVERRIDE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE_OVERRIDE:-$CACHE/go/build}"
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
# Every module (and Karpenter's go1.27.3 toolchain) is checked against the checksum
# database, whatever the caller's environment says (README "Locked dependencies").
export GOSUMDB=sum.golang.org GONOSUMDB= GOPRIVATE= GOINSECURE=

log() { printf '[build-control-plane %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

have_all() {
  local dir=$1; shift
  for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}

# A throwaway module per component: k8s.io/kubernetes cannot be `go install`ed
# because its go.mod replaces the staging modules with ./staging paths.
new_module() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/wpo-build.XXXXXX")
  (cd "$dir" && go mod init wpo.local/build >/dev/null 2>&1)
  echo "$dir"
}

build_kubernetes() {
  if have_all "$K8S_DIR" "${K8S_CMDS[@]}" pause; then
    log "kubernetes $KUBERNETES_VERSION: cached in $K8S_DIR"; return
  fi
  local minor patch staging_ver mod gomod
  minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
  patch=$(cut -d. -f3 <<<"$KUBERNETES_VERSION")
  staging_ver="v0.$minor.$patch"
  mod=$(new_module)
  log "kubernetes $KUBERNETES_VERSION: resolving modules in $mod (staging $staging_ver)"
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  # Every `k8s.io/x => ./staging/src/k8s.io/x` becomes `k8s.io/x => k8s.io/x v0.Y.Z`.
  local replaces=()
  while read -r m; do
    replaces+=("-replace=$m=$m@$staging_ver")
  done < <(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
  (cd "$mod" && go mod edit "${replaces[@]}" && go mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION")
  cat >"$mod/tools.go" <<GO
//go:build tools
package tools
import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "kubernetes $KUBERNETES_VERSION: go get (downloads a few hundred modules)"
  (cd "$mod" && go get "k8s.io/kubernetes@$KUBERNETES_VERSION" >/dev/null 2>&1 || true)
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION \
-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$K8S_DIR.tmp"
  for cmd in "${K8S_CMDS[@]}"; do
    log "kubernetes $KUBERNETES_VERSION: go build $cmd (the first one is long: 10-30 min on 2 cores)"
    local t0=$SECONDS
    (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$K8S_DIR.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
    log "kubernetes $KUBERNETES_VERSION: $cmd built in $((SECONDS - t0)) s"
  done
  build_pause "$K8S_DIR.tmp/pause"
  rm -rf "$K8S_DIR" && mv "$K8S_DIR.tmp" "$K8S_DIR"
  rm -rf "$mod"
}

# The sandbox ("pause") image's one binary, from the upstream C source that
# ships in the k8s.io/kubernetes module; hack/node-images.sh wraps it in an image.
build_pause() {
  local out=$1 src
  src="$GOMODCACHE/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c"
  [[ -f "$src" ]] || (cd "$(new_module)" && go mod download "k8s.io/kubernetes@$KUBERNETES_VERSION")
  gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION-wpo" -o "$out" "$src"
  strip "$out"
}

build_etcd() {
  if have_all "$ETCD_DIR" etcd; then log "etcd $ETCD_VERSION: cached in $ETCD_DIR"; return; fi
  local mod t0=$SECONDS
  mod=$(new_module)
  # server/v3's go.mod has local replaces, so it is built as a dependency.
  cat >"$mod/tools.go" <<GO
//go:build tools
package tools
import _ "go.etcd.io/etcd/server/v3"
GO
  log "etcd $ETCD_VERSION: go get + build"
  (cd "$mod" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || true)
  mkdir -p "$ETCD_DIR.tmp"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$ETCD_DIR.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$ETCD_DIR" && mv "$ETCD_DIR.tmp" "$ETCD_DIR"
  rm -rf "$mod"
  log "etcd $ETCD_VERSION: built in $((SECONDS - t0)) s"
}

# helm v3 as `helm3`. Its default Kubernetes version (.Capabilities.KubeVersion
# without a cluster, e.g. `helm template`) is a link-time variable; a plain `go
# install` leaves it at v1.20 and the chart's `kubeVersion: >=1.30` is refused.
build_helm3() {
  if have_all "$HELM3_DIR" helm3; then log "helm $HELM3_VERSION: cached in $HELM3_DIR"; return; fi
  local t0=$SECONDS
  log "helm $HELM3_VERSION: go install"
  mkdir -p "$HELM3_DIR.tmp"
  local kv="-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_KUBE_MINOR \
-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_KUBE_MINOR"
  GOBIN="$HELM3_DIR.tmp" GOFLAGS= go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM3_VERSION $kv" \
    "helm.sh/helm/v3/cmd/helm@$HELM3_VERSION"
  mv "$HELM3_DIR.tmp/helm" "$HELM3_DIR.tmp/helm3"
  rm -rf "$HELM3_DIR" && mv "$HELM3_DIR.tmp" "$HELM3_DIR"
  log "helm $HELM3_VERSION: built in $((SECONDS - t0)) s"
}

# helm v4 as `helm`. v4 takes its default Kubernetes version from the client-go
# it was built with (the module's build info), so no link-time version is needed.
build_helm() {
  if have_all "$HELM_DIR" helm; then log "helm $HELM_VERSION: cached in $HELM_DIR"; return; fi
  local t0=$SECONDS
  log "helm $HELM_VERSION: go install"
  mkdir -p "$HELM_DIR.tmp"
  GOBIN="$HELM_DIR.tmp" GOFLAGS= go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  rm -rf "$HELM_DIR" && mv "$HELM_DIR.tmp" "$HELM_DIR"
  log "helm $HELM_VERSION: built in $((SECONDS - t0)) s"
}

# kwok (fake nodes for the tests and benchmarks that need many) and the upstream
# stages the test bed runs it with: nodes initialised and heart-beating with a
# Lease, pods Running at once and their deletion finished (testbed/devcluster/kwok.py).
KWOK_STAGES=(node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease
  pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete)
build_kwok() {
  if have_all "$KWOK_DIR" kwok; then log "kwok $KWOK_VERSION: cached in $KWOK_DIR"; return; fi
  local t0=$SECONDS src
  log "kwok $KWOK_VERSION: go install"
  mkdir -p "$KWOK_DIR.tmp/stages"
  GOBIN="$KWOK_DIR.tmp" GOFLAGS= go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  src=$(cd "$(new_module)" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  for stage in "${KWOK_STAGES[@]}"; do cp "$src/kustomize/stage/$stage.yaml" "$KWOK_DIR.tmp/stages/"; done
  rm -rf "$KWOK_DIR" && mv "$KWOK_DIR.tmp" "$KWOK_DIR"
  log "kwok $KWOK_VERSION: built in $((SECONDS - t0)) s"
}

# Karpenter with its kwok cloud provider (a node autoscaler for the consolidation
# benchmark), and the CRDs it needs. Karpenter's go.mod asks for a newer Go than
# the machine's: the go command fetches the pinned toolchain from the module proxy
# for this one build (GOTOOLCHAIN), the rest stays on the machine's Go.
build_karpenter() {
  if have_all "$KARPENTER_DIR" karpenter-kwok; then log "karpenter $KARPENTER_VERSION: cached in $KARPENTER_DIR"; return; fi
  local t0=$SECONDS src
  log "karpenter $KARPENTER_VERSION: go install (toolchain $KARPENTER_GOTOOLCHAIN)"
  mkdir -p "$KARPENTER_DIR.tmp/crds"
  GOTOOLCHAIN=$KARPENTER_GOTOOLCHAIN GOBIN="$KARPENTER_DIR.tmp" GOFLAGS= go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/karpenter/kwok@$KARPENTER_VERSION"
  mv "$KARPENTER_DIR.tmp/kwok" "$KARPENTER_DIR.tmp/karpenter-kwok"
  src=$(cd "$(new_module)" && GOTOOLCHAIN=$KARPENTER_GOTOOLCHAIN go mod download -json "sigs.k8s.io/karpenter@$KARPENTER_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  cp "$src"/kwok/charts/crds/karpenter.sh_*.yaml "$src"/kwok/apis/crds/*.yaml "$KARPENTER_DIR.tmp/crds/"
  rm -rf "$KARPENTER_DIR" && mv "$KARPENTER_DIR.tmp" "$KARPENTER_DIR"
  log "karpenter $KARPENTER_VERSION: built in $((SECONDS - t0)) s"
}

start=$SECONDS
build_etcd
build_helm
build_helm3
build_kwok
build_karpenter
build_kubernetes
log "all binaries ready in $((SECONDS - start)) s:"
{
  "$K8S_DIR/kube-apiserver" --version
  "$K8S_DIR/kubelet" --version
  "$K8S_DIR/kubectl" version --client 2>/dev/null | sed -n 1p
  "$ETCD_DIR/etcd" --version | sed -n 1p
  "$HELM_DIR/helm" version --short
  "$HELM3_DIR/helm3" version --short
  "$KWOK_DIR/kwok" --version
} >&2 || true
