#!/usr/bin/env bash
# Replay, import and signed-verify throughput on one large export, beside plain `verify` of the
# same file (the baseline, measured in the same run).
#
#   ops/bench/replay-import-verify.sh [EXPORT]
#
# Without EXPORT, records one: ops/bench/long-loop.yaml runs to its max_node_executions limit
# (about 100,000 events) in a fresh schema. Each command runs RUNS times (default 3); the
# fastest wall time is reported as events/s. Needs PostgreSQL; bounded by `timeout`.
# Environment: RUNLEDGER (binary, default $CARGO_TARGET_DIR/release/runledger if built, else
# the debug one; CARGO_TARGET_DIR defaults to target), RUNS, BENCH_SCHEMA_PREFIX (default replay_bench),
# RUNLEDGER_DATABASE_URL (default RUNLEDGER_TEST_DATABASE_URL, else the local `runledger_test`
# database; the binary and psql both use it).
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${RUNLEDGER:-}
if [[ -z $R ]]; then
  T=${CARGO_TARGET_DIR:-target}
  if [[ -x $T/release/runledger ]]; then R=$T/release/runledger; else R=$T/debug/runledger; fi
fi
RUNS=${RUNS:-3}
PREFIX=${BENCH_SCHEMA_PREFIX:-replay_bench}
export RUNLEDGER_DATABASE_URL="${RUNLEDGER_DATABASE_URL:-${RUNLEDGER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/runledger_test}}"
DB_URL=$RUNLEDGER_DATABASE_URL
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; for s in "${PREFIX}_src" "${PREFIX}_imp"; do psql -q "$DB_URL" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null; done' EXIT
drop() { psql -q "$DB_URL" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS $1 CASCADE" >/dev/null; }

FILE=${1:-}
if [[ -z $FILE ]]; then
  drop "${PREFIX}_src"
  export RUNLEDGER_DATABASE_SCHEMA="${PREFIX}_src"
  "$R" migrate >/dev/null
  timeout 900 "$R" run ops/bench/long-loop.yaml --wait --json >/dev/null || true
  FILE=$WORK/long.jsonl
  "$R" export --all -o "$FILE" 2>/dev/null
fi
EVENTS=$(head -n 1 "$FILE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"]["events"])')
"$R" keys generate -o "$WORK/key" >/dev/null
# The same ledger exported again with a signature line.
SIGNED=$WORK/signed.jsonl
if [[ -n ${RUNLEDGER_DATABASE_SCHEMA:-} ]]; then
  "$R" export --all --sign "$WORK/key" -o "$SIGNED" 2>/dev/null
else
  drop "${PREFIX}_imp"
  RUNLEDGER_DATABASE_SCHEMA="${PREFIX}_imp" "$R" import "$FILE" >/dev/null
  RUNLEDGER_DATABASE_SCHEMA="${PREFIX}_imp" "$R" export --all --sign "$WORK/key" -o "$SIGNED" 2>/dev/null
fi

best() {  # best NAME CMD...: fastest of RUNS wall times
  local name=$1 best=
  shift
  for _ in $(seq 1 "$RUNS"); do
    [[ -n ${BEFORE:-} ]] && eval "$BEFORE"
    local t0 t1
    t0=$(date +%s.%N)
    timeout 600 "$@" >/dev/null
    t1=$(date +%s.%N)
    local t; t=$(echo "$t1 - $t0" | bc)
    if [[ -z $best ]] || (( $(echo "$t < $best" | bc) )); then best=$t; fi
  done
  printf '%-28s %8.3f s  %10.0f events/s\n' "$name" "$best" "$(echo "$EVENTS / $best" | bc -l)"
}

echo "file: $EVENTS events, $(du -h "$FILE" | cut -f1); binary: $R; best of $RUNS"
best "verify (baseline)" "$R" verify "$FILE"
best "verify --key (signed)" "$R" verify "$SIGNED" --key "$WORK/key.pub"
best "replay (offline)" "$R" replay "$FILE"
BEFORE="drop ${PREFIX}_imp; RUNLEDGER_DATABASE_SCHEMA=${PREFIX}_imp $R migrate >/dev/null" \
  best "import (+ projections)" env RUNLEDGER_DATABASE_SCHEMA="${PREFIX}_imp" "$R" import "$FILE"
