#!/usr/bin/env bash
# The invariant gate CI runs after the tests: the example flowcharts run end to end into a fresh
# ledger schema (in-process, and over NATS with two `runledger executor` processes), then
# `runledger check` evaluates every claim over that ledger and fails the build when a critical
# or high claim fails. The schema and the JetStream streams are removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q --locked -p runledger-cli
bin="${CARGO_TARGET_DIR:-target}/debug/runledger"
export RUNLEDGER_DATABASE_URL="${RUNLEDGER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/runledger_test}"
export RUNLEDGER_DATABASE_SCHEMA="ci_gate_$(date +%s)_$$"
export RUNLEDGER_NATS_NAMESPACE="ci_gate_$$"
unset RUNLEDGER_NATS_URL RUNLEDGER_LOG

executors=()
cleanup() {
    for pid in "${executors[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$RUNLEDGER_DATABASE_URL" -q -c "DROP SCHEMA IF EXISTS \"$RUNLEDGER_DATABASE_SCHEMA\" CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$bin" migrate >/dev/null
for n in 1 2; do
    "$bin" executor --class frontier --executor-id "ci-gate-$n" 2>/dev/null &
    executors+=("$!")
done

for flow in examples/*.yaml; do
    for dispatch in inprocess nats; do
        # Tool state is shared by name: each run keeps its own project.
        input="{\"topic\":\"owls\",\"project\":\"owls-$dispatch\"}"
        if ! "$bin" run "$flow" --input "$input" --wait --json --dispatch "$dispatch" >/dev/null; then
            echo "ci-gate: $flow (--dispatch $dispatch) did not complete" >&2
            exit 1
        fi
    done
done
echo "ci-gate: every example completed in-process and over NATS; checking claims"
"$bin" check --fail-on critical,high
