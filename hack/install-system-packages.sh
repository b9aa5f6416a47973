#!/usr/bin/env bash
# Debian packages the tests and the demo need: a real redis-server (tests never
# mock Redis) and a Lua interpreter (the Argo CD health check's tests).
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v lua5.4 >/dev/null || need+=(lua5.4)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "[install-system-packages] installing ${need[*]}" >&2
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
# The Debian package starts a system redis on 6379; the tests start their own
# on free ports and do not need it.
