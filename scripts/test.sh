#!/usr/bin/env bash
# Run the whole test suite in the project's virtualenv (created when missing).
# A throw-away PostgreSQL is started on loopback for the PostgreSQL tests when available.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
venv="${FEDIMG_VENV:-.venv}"
# shellcheck source=scripts/test-postgres.sh
source scripts/test-postgres.sh
"$venv/bin/python" -m pytest -n "${FEDIMG_TEST_WORKERS:-2}" "$@"
