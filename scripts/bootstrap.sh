#!/usr/bin/env bash
# Create the project's virtualenv (.venv, or $FEDIMG_VENV) when missing and install
# fedimg with every pin from constraints.txt. Re-running is cheap: it reinstalls only
# when pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FEDIMG_VENV:-.venv}"
python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "fedimg needs Python 3.11 (PySyft 0.9.5); found $("$python_bin" --version 2>&1) at $python_bin. Set PYTHON=/path/to/python3.11." >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtualenv $venv" >&2
  "$python_bin" -m venv "$venv"
fi
stamp="$venv/.fedimg-install-stamp"
wanted="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing fedimg and its pinned dependencies into $venv (a few minutes the first time)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
  echo "$wanted" > "$stamp"
fi
