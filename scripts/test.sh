#!/usr/bin/env bash
# The test command: installs missing prerequisites, checks formatting and lints, runs every test
# against private redis-servers the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

# --servers-all: the whole suite on every other server too (not only the profile `servers`);
# --cluster-all: isolation and admin on the cluster too (not only fleet and failure).
servers_all=0
cluster_all=0
for arg in "$@"; do
  case "$arg" in
    --servers-all) servers_all=1 ;;
    --cluster-all) cluster_all=1 ;;
    *) echo "test: unknown argument '$arg' (known: --servers-all --cluster-all)" >&2; exit 2 ;;
  esac
done

scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
scripts/check-layers.sh
# The console's script and the browser test's driver: type-checked (tsc, strict).
npm --prefix tests/browser run --silent check

if cargo nextest --version >/dev/null 2>&1; then
  # Test groups in .config/nextest.toml keep process-spawning tests from fighting over 2 cores.
  cargo nextest run --profile ci
  # The other servers (issue 16, item 6): Redis 8.2 (XACKDEL) and Valkey 8.0, fetched by
  # scripts/servers.sh (setup installs them), each running the server-sensitive suites
  # (nextest profile `servers`); `--servers-all` runs the whole suite on each instead.
  servers="$(scripts/servers.sh)"
  while read -r name bin; do
    echo "test: on $name ($("$bin" --version | cut -d' ' -f1-3))" >&2
    if [ "$servers_all" = 1 ]; then
      if "$bin" --version | grep -q '^Redis server v=8'; then
        REDRIVE_REDIS_SERVER="$bin" cargo nextest run --profile ci -E 'not binary(redis_tls)'
      else
        REDRIVE_REDIS_SERVER="$bin" cargo nextest run --profile ci
      fi
    else
      REDRIVE_REDIS_SERVER="$bin" cargo nextest run --profile servers
    fi
  done <<< "$servers"
  # The same end-to-end, failure-pipeline, isolation and admin tests again on a Redis Cluster (3 masters,
  # 3 replicas started per test): the `cluster` profile in .config/nextest.toml.
  if [ "$cluster_all" = 1 ]; then
    REDRIVE_TEST_CLUSTER=1 cargo nextest run --profile cluster --ignore-default-filter -E \
      '(binary(fleet) | binary(failure) | binary(isolation) | binary(admin)) - test(the_tenant_watch_subscribes_again_after_its_connection_is_killed) - test(a_settle_whose_reply_was_lost_is_logged_not_counted_lost)'
  else
    REDRIVE_TEST_CLUSTER=1 cargo nextest run --profile cluster
  fi
else
  echo "test: cargo-nextest not found; running cargo test with one test thread" >&2
  cargo test -- --test-threads=1
  REDRIVE_TEST_CLUSTER=1 cargo test --test fleet --test failure --test isolation --test admin -- \
    --test-threads=1 --skip the_tenant_watch_subscribes_again_after_its_connection_is_killed \
    --skip a_settle_whose_reply_was_lost_is_logged_not_counted_lost
fi

# The SDKs' own checks: lint, types, unit and transport tests, packaging.
sdk/python/check.sh
sdk/node/check.sh
