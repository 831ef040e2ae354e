#!/usr/bin/env bash
# The whole story so far: write the digits sample, convert it into 3 hospitals
# (Dirichlet label skew, patient-safe), verify it, print its report, then bring up
# one PySyft datasite per hospital, ingest, add a researcher, and print the sites.
# A researcher then trains a small CNN across the three sites with FedAvg (the
# approval is the demo's stand-in for the data owners) and gets the global model,
# a per-round table and plots. The sites are stopped at the end unless FEDIMG_DEMO_KEEP=1.
#
# Re-runnable: every run trains a job of its own name (FEDIMG_DEMO_JOB, default
# demo_<UTC time>), so a site's approved runs of an earlier job are never reused, and
# writes its results to $work/results/<job>; earlier results are never deleted.
# Exits non-zero when any step fails (a convert that only quarantined inputs excepted).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
venv="${FEDIMG_VENV:-.venv}"
fedimg="$venv/bin/fedimg"
work="${FEDIMG_DEMO_DIR:-demo_out}"
port="${FEDIMG_DEMO_PORT:-18081}"
job="${FEDIMG_DEMO_JOB:-demo_$(date -u +%Y%m%d_%H%M%S)}"
results="$work/results/$job"
if [ -e "$results" ]; then
  echo "demo: $results already exists; set FEDIMG_DEMO_JOB to a new job name" >&2
  exit 2
fi
# The demo keeps its own federation secret (0600) so it never touches yours.
export FEDIMG_SECRET_FILE="${FEDIMG_SECRET_FILE:-$work/secret}"
mkdir -p "$work"
[ -d "$work/digits" ] || "$fedimg" sample digits "$work/digits" --layout csv
convert_status=0
"$fedimg" convert "$work/digits" "$work/federated" --labels "$work/digits/labels.csv" \
  --group-column patient_id --client-names hospital_a,hospital_b,hospital_c \
  --scheme dirichlet --alpha 0.5 --size 32 --mode L --val-fraction 0.2 --seed 7 --overwrite \
  || convert_status=$?
# 1: the output was written, some inputs were quarantined (listed above); anything else stops the demo.
[ "$convert_status" -le 1 ] || exit "$convert_status"
"$fedimg" verify "$work/federated"
"$fedimg" report "$work/federated"

cat > "$work/federation.toml" <<TOML
# Written by scripts/demo.sh: three hospitals on this machine's loopback.
[federation]
data = "federated"
state_root = "state"

[[site]]
name = "hospital_a"
port = $port

[[site]]
name = "hospital_b"
port = $((port + 1))

[[site]]
name = "hospital_c"
port = $((port + 2))

[[researcher]]
email = "ada@university.example"
name = "Ada Lovelace"
TOML
"$fedimg" down "$work/federation.toml" >/dev/null 2>&1 || true  # a previous demo's sites
status=0
"$fedimg" up "$work/federation.toml" || status=$?
if [ "$status" -eq 0 ]; then
  "$venv/bin/python" scripts/demo_train.py "$work/federation.toml" "${FEDIMG_DEMO_ROUNDS:-3}" "$job" \
    "$results" || status=$?
fi
if [ "${FEDIMG_DEMO_KEEP:-0}" = 1 ]; then
  echo "demo: sites left running; stop them with: $fedimg down $work/federation.toml"
else
  "$fedimg" down "$work/federation.toml" || status=$((status ? status : 1))
fi
if [ "$status" -ne 0 ]; then
  echo "demo: FAILED (exit $status); site logs in $work/state" >&2
  exit "$status"
fi
echo "demo: federated dataset in $work/federated, site state and logs in $work/state, job $job's model and plots in $results"
