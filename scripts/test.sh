#!/usr/bin/env bash
# Run the whole test suite in the project's virtualenv (created when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
venv="${FEDIMG_VENV:-.venv}"
exec "$venv/bin/python" -m pytest -n "${FEDIMG_TEST_WORKERS:-2}" "$@"
