#!/usr/bin/env bash
# The main job: a demo of the fleet on a private redis-server (installed when missing).
# Extra arguments go to `redrive demo`, e.g. scripts/demo.sh --tasks 10000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo
exec cargo run --release --quiet -- demo "$@"
