#!/usr/bin/env bash
# Run the whole test suite in the project's virtualenv (created when missing), after the
# code checks of scripts/lint.sh.
# A throw-away PostgreSQL is started on loopback for the PostgreSQL tests when available.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
venv="${FEDIMG_VENV:-.venv}"
# The whole suite (no arguments, as CI runs it) starts with the code checks; a run of
# chosen tests (arguments go to pytest) skips them.
if [ "$#" -eq 0 ]; then
  bash scripts/lint.sh
fi
# The console's browser tests need Debian's chromium + chromium-driver (installed when root).
bash scripts/browser.sh
# shellcheck source=scripts/test-postgres.sh
source scripts/test-postgres.sh
"$venv/bin/python" -m pytest -n "${FEDIMG_TEST_WORKERS:-2}" "$@"
