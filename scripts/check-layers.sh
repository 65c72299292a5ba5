#!/usr/bin/env bash
# Layer boundaries that the compiler does not enforce (ARCHITECTURE.md, "Invariants"):
#  - the library never imports the application (src/app/);
#  - only src/broker/ names the Redis client (`redis::`);
#  - only src/app/ names clap (the `app` feature's dependency);
#  - nothing in src/ imports the testkit (it exists for tests/ only);
#  - only src/telemetry/ records metrics (`metrics::` macros and handles; telemetry as events);
#  - the agent handlers (src/agents/) never reach Redis or the fleet: steps go through the
#    TaskContext's sink.
# Prints each offending line and exits 1 when a boundary is crossed.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
check() {
  local what="$1" hits="$2"
  if [ -n "$hits" ]; then
    echo "check-layers: $what:" >&2
    echo "$hits" >&2
    status=1
  fi
}

check "the library imports the application" \
  "$(grep -rn 'crate::app\b' src --include='*.rs' | grep -v '^src/app/' || true)"
check "code outside src/broker/ names the Redis client" \
  "$(grep -rnE '\bredis::' src --include='*.rs' | grep -v '^src/broker/' || true)"
check "code outside src/app/ names clap" \
  "$(grep -rnE '\bclap::' src --include='*.rs' | grep -v '^src/app/' || true)"
check "production code imports the testkit" \
  "$(grep -rnE '\btestkit::' src --include='*.rs' | grep -v '^src/testkit\.rs:' || true)"
check "code outside src/telemetry/ records metrics (use a telemetry event)" \
  "$(grep -rnE '(^|[^[:alnum:]_:])metrics::(counter|gauge|histogram|describe_|Counter|Gauge|Histogram)|\buse metrics\b' src --include='*.rs' | grep -v '^src/telemetry/' || true)"

check "src/agents/ reaches for Redis or the fleet" \
  "$(grep -rnE 'crate::(broker|fleet|admin|config)\b' src/agents --include='*.rs' || true)"

exit "$status"
