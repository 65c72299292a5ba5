#!/usr/bin/env bash
# The Python SDK's checks: lint, format, types (mypy --strict) and the tests.
#
#   sdk/python/check.sh            # everything
#   sdk/python/check.sh -k pool    # extra arguments go to pytest
#   sdk/python/check.sh --setup-only   # only create/refresh the venv (scripts/setup.sh)
#
# Creates sdk/python/.venv on first use (or when requirements-dev.txt or pyproject.toml
# changed) and installs the package (editable) and the pinned dev tools from PyPI. Fails
# loudly when python3 (>= 3.10) or redis-server is missing: the tests need both and never
# skip.
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "sdk/python/check.sh: $*" >&2; exit 1; }

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python >= 3.10 (apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$("$PYTHON" --version 2>&1) is too old: the SDK needs Python >= 3.10"
command -v redis-server >/dev/null || die "redis-server not found: the producer tests need it (apt-get install redis-server)"

VENV=.venv
STAMP="$VENV/.installed"
want="$(cat requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
  echo "== creating $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-build-isolation -e .
  echo "$want" > "$STAMP"
fi

if [[ "${1:-}" == "--setup-only" ]]; then
  exit 0
fi

echo "== ruff check"
"$VENV/bin/ruff" check src tests examples
echo "== ruff format --check"
"$VENV/bin/ruff" format --check src tests examples
echo "== mypy --strict"
"$VENV/bin/mypy" --strict src tests examples
echo "== pytest"
"$VENV/bin/python" -m pytest "$@"
