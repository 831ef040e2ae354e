#!/usr/bin/env bash
# The code checks CI makes before the tests: formatting (ruff format), lint (ruff check,
# line length 110) and types (mypy on the product packages). Tool versions are pinned in
# constraints.txt; configuration lives in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
venv="${FEDIMG_VENV:-.venv}"
status=0
echo "lint: ruff format --check" >&2
"$venv/bin/ruff" format --check --quiet . || status=1
echo "lint: ruff check" >&2
"$venv/bin/ruff" check --quiet . || status=1
echo "lint: mypy (datasite_setup, policies, researcher)" >&2
"$venv/bin/mypy" || status=1
if [ "$status" -ne 0 ]; then
  echo "lint failed: 'ruff format .' fixes formatting; the other findings name the file and line" >&2
fi
exit "$status"
