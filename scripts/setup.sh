#!/usr/bin/env bash
# Installs what redrive's demo and tests need when it is missing: redis-server (Debian package).
# Safe to run again; it only installs what is absent.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: apt-get is not available; install ${need[*]} by hand" >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Debian's package starts a system redis on port 6379. Nothing here uses it: the demo and the
# tests start their own private servers on free loopback ports.
redis-server --version >&2
