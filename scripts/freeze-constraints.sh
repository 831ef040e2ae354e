#!/usr/bin/env bash
# Regenerate constraints.txt from a clean Python 3.11 virtualenv holding fedimg's
# direct dependencies. Review the diff before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python_bin="${PYTHON:-$(command -v python3.11)}"
"$python_bin" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --upgrade "pip>=24"
"$tmp/venv/bin/python" -m pip install --quiet -e ".[test]"
{
  echo "# Every transitive pin for Python 3.11 (pip install -c constraints.txt -e '.[test]')."
  echo "# PySyft 0.9.5 pins numpy<=1.24.4, pandas==2.2.2, pyarrow==17.0.0; sniffio is needed by kr8s but undeclared."
  echo "# Regenerate: scripts/freeze-constraints.sh"
  # The CPU torch wheel carries a local version (+cpu); pin the public version.
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) pins)"
