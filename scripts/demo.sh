#!/usr/bin/env bash
# The whole story so far: write the digits sample, convert it into 3 hospitals
# (Dirichlet label skew, patient-safe), verify it and print its report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
venv="${FEDIMG_VENV:-.venv}"
fedimg="$venv/bin/fedimg"
work="${FEDIMG_DEMO_DIR:-demo_out}"
# The demo keeps its own federation secret (0600) so it never touches yours.
export FEDIMG_SECRET_FILE="${FEDIMG_SECRET_FILE:-$work/secret}"
mkdir -p "$work"
[ -d "$work/digits" ] || "$fedimg" sample digits "$work/digits" --layout csv
status=0
"$fedimg" convert "$work/digits" "$work/federated" --labels "$work/digits/labels.csv" \
  --group-column patient_id --client-names hospital_a,hospital_b,hospital_c \
  --scheme dirichlet --alpha 0.5 --size 32 --mode L --val-fraction 0.2 --seed 7 --overwrite || status=$?
[ "$status" -le 1 ] || exit "$status"
"$fedimg" verify "$work/federated"
"$fedimg" report "$work/federated"
echo "demo: federated dataset in $work/federated (report.md, label_distribution.png, clients/)"
