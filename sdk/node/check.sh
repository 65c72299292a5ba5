#!/usr/bin/env bash
# The Node SDK's full check: install (npm ci when node_modules is missing or stale), lint
# (eslint + tsc --noEmit, strict), build, the tests (a real redis-server, real sockets, a real
# child process), and a real `npm pack` whose tarball is imported by its package name.
# `--setup-only` installs and builds, nothing else (scripts/setup.sh).
# Never skips: a missing node, npm or redis-server fails the check.
set -euo pipefail
cd "$(dirname "$0")"

fail() { echo "sdk/node/check.sh: $*" >&2; exit 1; }
step() { echo "==> $*"; }

command -v node >/dev/null || fail "node is not installed (Node.js >= 20 is required)"
command -v npm >/dev/null || fail "npm is not installed"
command -v redis-server >/dev/null || fail "redis-server is not installed (the producer tests run a real one)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || fail "Node.js >= 20 is required, found $(node --version)"

# npm ci when node_modules is missing or was installed from another lockfile.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.redrive-lock-sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  step "npm ci"
  npm ci --no-audit --no-fund
  echo "$lock_sum" > "$stamp"
fi

if [ "${1:-}" = "--setup-only" ]; then
  # scripts/setup.sh: dependencies and the built package (the end-to-end tests import dist/).
  npm run --silent build
  exit 0
fi

step "lint (eslint, tsc --noEmit)"
npm run --silent lint
step "build"
npm run --silent build
step "test"
npm test --silent

step "pack"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm pack --silent --ignore-scripts --pack-destination "$tmp" >/dev/null
tarball=$(ls "$tmp"/*.tgz)
tar -xzf "$tarball" -C "$tmp"
for f in package.json README.md dist/index.js dist/index.d.ts dist/pool.js dist/cli.js lua/enqueue.lua lua/task_read.lua; do
  [ -f "$tmp/package/$f" ] || fail "the packed tarball lacks $f"
done
if tar -tzf "$tarball" | grep -qE '(^package/(src|test|build-test|node_modules)/|\.test\.)'; then
  fail "the packed tarball carries sources or tests: $(tar -tzf "$tarball" | tr '\n' ' ')"
fi
for f in enqueue.lua task_read.lua; do
  cmp -s "$tmp/package/lua/$f" "lua/$f" || fail "the packed lua/$f differs from sdk/node/lua/$f"
done
# The packed package resolves by its own name (exports map) and loads with its dependency, and
# finds its scripts next to dist/.
ln -s "$PWD/node_modules" "$tmp/package/node_modules"
(cd "$tmp/package" && node --input-type=module -e '
  const m = await import("@redrive/sdk");
  for (const name of ["Producer", "Agent", "serveHttp", "servePool", "sign", "verify", "RetryError", "TaskFailedError", "WaitTimeoutError"]) {
    if (typeof m[name] !== "function") throw new Error(`the package does not export ${name}`);
  }
  const { createHash } = await import("node:crypto");
  const { readFileSync } = await import("node:fs");
  const sha = createHash("sha1").update(readFileSync("lua/enqueue.lua")).digest("hex");
  if (m.enqueueScript().sha !== sha) throw new Error("the packed package does not load lua/enqueue.lua");
  const readSha = createHash("sha1").update(readFileSync("lua/task_read.lua")).digest("hex");
  if (m.taskReadScript().sha !== readSha) throw new Error("the packed package does not load lua/task_read.lua");
') || fail "the packed package does not load"
(cd "$tmp/package" && node dist/cli.js --help >/dev/null) || fail "the packed redrive-sdk does not run"
echo "sdk/node: OK ($(basename "$tarball"), $(tar -tzf "$tarball" | wc -l) files)"
