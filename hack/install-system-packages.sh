#!/usr/bin/env bash
# Debian packages the tests and the demo need:
#   redis-server            a real Redis (tests never mock Redis)
#   rabbitmq-server         a real RabbitMQ (the queue of Bifrost's workers; tests never mock it)
#   lua5.4                  the Argo CD health check's tests
#   openssl                 the local cluster's certificates
#   containerd runc containernetworking-plugins iptables conntrack
#                           the local node's container runtime, CNI and kube-proxy
#   podman mmdebstrap       the image build with no registry (base rootfs + build)
#   gcc libc6-dev           the pause binary, compiled from the upstream source
# The daemons these packages would start (redis, containerd) are not used: the
# local cluster starts its own on its own ports/sockets and directories.
set -euo pipefail
need=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need+=("$1"); }
for p in redis-server rabbitmq-server lua5.4 openssl containerd runc containernetworking-plugins \
         iptables conntrack podman mmdebstrap uidmap gcc libc6-dev; do
  want "$p"
done
if ((${#need[@]})); then
  echo "[install-system-packages] installing ${need[*]}" >&2
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
  # The package starts its own broker (and an epmd) where it can: the test bed runs its own.
  if [[ " ${need[*]} " == *" rabbitmq-server "* ]]; then
    $SUDO service rabbitmq-server stop >/dev/null 2>&1 || true
    $SUDO pkill -x epmd >/dev/null 2>&1 || true
  fi
fi
