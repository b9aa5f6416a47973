#!/usr/bin/env bash
# `make image`: builds the one image (operator and worker) from the one
# Dockerfile with no registry and no network inside the build:
#   1. a Debian base rootfs made by mmdebstrap, cached by its inputs
#      ($WPO_CACHE/images/base-<hash>.tar) and imported into podman;
#   2. a wheelhouse of the project's wheel and exactly the versions of
#      requirements/runtime.txt (uv.lock's runtime), hash-checked, made on the
#      host (the only step that talks to PyPI);
#   3. `podman build --network=none` of ./Dockerfile with that base:
#      `pip install --require-hashes --no-index --find-links` of that wheelhouse;
#   4. saved as build/image/workerpool.tar (the local node imports it when it
#      starts) and loaded into a running local node's containerd (k8s.io
#      namespace) when its socket is given (WPO_CONTAINERD_SOCKET) or found
#      in .cluster/.
# `--pause` only makes the node's sandbox image: the pause binary built by
# hack/build-control-plane.sh from the upstream C source, FROM scratch,
# cached as $WPO_CACHE/images/pause-<kubernetes version>.tar.
# Elsewhere the same Dockerfile builds with a plain `docker build .` (the
# base and the pip flags are build arguments with public defaults).
# The last line printed is IMAGE=<ref>.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
source hack/versions.env

CACHE="${WPO_CACHE:-$HOME/.cache/workerpool-operator}"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# The chart's and the example's reference: with it present in the node, neither
# needs a --set or an edit (pullPolicy IfNotPresent finds it locally).
IMAGE="${IMAGE:-ghcr.io/bifrost-dev/workerpool-operator:$VERSION}"
WORK=build/image
log() { printf '[build-image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# Podman settings that work on these machines (../shared/notes/real-node.md):
# runc with cgroupfs (crun refuses hybrid cgroups), rlimits only lowered, and
# never podman's default NAT network.
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
BUILD_LIMITS=(--network=none --ulimit nofile=1024:1024 --ulimit nproc=1000:1000)

base_image() {
  local key tar ref
  key=$(printf '%s\n' "$DEBIAN_SUITE" "$BASE_PACKAGES" "$DEBIAN_MIRROR" | sha256sum | cut -c1-16)
  tar="$CACHE/images/base-$DEBIAN_SUITE-$key.tar"
  ref="localhost/workerpool-base:$DEBIAN_SUITE-$key"
  if [[ ! -s "$tar" ]]; then
    log "base: mmdebstrap $DEBIAN_SUITE ($BASE_PACKAGES), about a minute"
    mkdir -p "$CACHE/images"
    mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
      --aptopt='Acquire::Languages "none"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      "$DEBIAN_SUITE" "${tar%.tar}.partial.tar" "$DEBIAN_MIRROR" >&2
    mv "${tar%.tar}.partial.tar" "$tar"
  fi
  if ! "${PODMAN[@]}" image exists "$ref"; then
    log "base: podman import $tar"
    "${PODMAN[@]}" import --quiet "$tar" "$ref" >/dev/null
  fi
  echo "$ref"
}

wheelhouse() {
  rm -rf "$WORK/wheelhouse" && mkdir -p "$WORK/wheelhouse"
  log "wheelhouse: the project's wheel and requirements/runtime.txt (uv.lock's runtime, hash-checked)"
  hack/lock.sh check
  hack/uv.sh build --quiet --wheel --out-dir "$WORK/wheelhouse" . >&2
  # pip evaluates markers for the interpreter it runs on, and Debian's 3.11.2 in
  # the image needs what the host's Python may not (redis-py's `async-timeout;
  # python_full_version < "3.11.3"`): download every locked package, markers
  # dropped, and let the image's pip apply them to the same file.
  sed -E 's/ ; [^\\]*\\$/ \\/' requirements/runtime.txt >"$WORK/all-platforms.txt"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: --dest "$WORK/wheelhouse" -r "$WORK/all-platforms.txt" >&2
}

pause_image() {
  local tar="$CACHE/images/pause-$KUBERNETES_VERSION.tar" ref="localhost/pause:$KUBERNETES_VERSION" ctx
  if [[ ! -s "$tar" ]]; then
    ctx=$(mktemp -d)
    cp "$CACHE/bin/kubernetes-$KUBERNETES_VERSION/pause" "$ctx/pause"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Containerfile"
    "${PODMAN[@]}" build --quiet "${BUILD_LIMITS[@]}" -t "$ref" "$ctx" >&2
    mkdir -p "$CACHE/images"
    "${PODMAN[@]}" save --quiet --format docker-archive -o "$tar.partial" "$ref"
    mv "$tar.partial" "$tar"
    rm -rf "$ctx"
  fi
  echo "PAUSE_IMAGE=$ref"
  echo "PAUSE_TAR=$tar"
}

load_into_node() {
  local sock=${WPO_CONTAINERD_SOCKET:-}
  # `make cluster-up`'s node, if it is running (its pid file names a live process).
  if [[ -z "$sock" && -f .cluster/containerd.sock.path && -f .cluster/pid ]] && kill -0 "$(cat .cluster/pid)" 2>/dev/null; then
    sock=$(cat .cluster/containerd.sock.path)
  fi
  if [[ -z "$sock" || ! -S "$sock" ]]; then
    log "no local node running: the image is in podman only (podman save it for another runtime)"
    return
  fi
  log "loading into the node's containerd ($sock)"
  ctr --address "$sock" -n k8s.io images import "$WORK/workerpool.tar" >&2
}

if [[ "${1:-}" == "--pause" ]]; then pause_image; exit 0; fi

# Nothing to do when the inputs are those of the image already built (make
# test, make demo and make cluster-up all ask for it).
inputs=$( (find operator -name '*.py' -o -name 'py.typed' | sort | xargs sha256sum
           sha256sum pyproject.toml uv.lock requirements/runtime.txt README.md Dockerfile .dockerignore hack/versions.env hack/build-image.sh) | sha256sum | cut -c1-16)
if [[ -s "$WORK/workerpool.tar" && "$(cat "$WORK/inputs" 2>/dev/null)" == "$inputs" ]] \
   && "${PODMAN[@]}" image exists "$IMAGE"; then
  log "$IMAGE is up to date (inputs $inputs)"
  load_into_node
  echo "IMAGE=$IMAGE"
  exit 0
fi

t0=$SECONDS
base=$(base_image)
wheelhouse
log "podman build $IMAGE (no network)"
"${PODMAN[@]}" build --quiet "${BUILD_LIMITS[@]}" --layers \
  --build-arg "BASE=$base" \
  --build-arg "PIP_INSTALL_FLAGS=--no-index --find-links=/src/wheels" \
  --build-arg "PROJECT=/src/wheels/workerpool_operator-$VERSION-py3-none-any.whl" \
  -t "$IMAGE" . >&2
# What the image holds is what the lock says: every installed distribution at its locked
# version (the project itself aside), checked in the image, with no network.
locked=$(sed -n 's/^\([A-Za-z0-9_.-]*\)==\([^ ;]*\).*/\1==\2/p' requirements/runtime.txt | tr 'A-Z_.' 'a-z--' | sort)
installed=$("${PODMAN[@]}" run --rm "${BUILD_LIMITS[@]}" --entrypoint /opt/workerpool/bin/python "$IMAGE" \
  -m pip list --format=freeze --disable-pip-version-check 2>/dev/null \
  | grep -v '^workerpool-operator==' | grep -v '^pip==' | tr 'A-Z_.' 'a-z--' | sort)
if [[ -n "$(comm -13 <(echo "$locked") <(echo "$installed"))" ]]; then
  log "the image holds what uv.lock does not say:"; comm -13 <(echo "$locked") <(echo "$installed") >&2
  exit 1
fi
size=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}')
log "built $IMAGE in $((SECONDS - t0)) s, $((size / 1024 / 1024)) MiB"
rm -f "$WORK/workerpool.tar"
"${PODMAN[@]}" save --quiet --format docker-archive -o "$WORK/workerpool.tar" "$IMAGE"
echo "$IMAGE" >"$WORK/image.ref"
echo "$inputs" >"$WORK/inputs"
load_into_node
echo "IMAGE=$IMAGE"
