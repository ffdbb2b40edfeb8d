#!/usr/bin/env bash
# The invariant gate CI runs after the tests, over a fresh ledger schema of real runs:
# - every example flowchart in-process (the offline `scripted` model; code-change.yaml on a
#   local bare repository made here);
# - a flowchart whose task node uses a registered model over HTTP (ops/ci-gate/openai_stub.py, a
#   local OpenAI-compatible server), dispatched over NATS to two `runledger executor` processes;
# then `runledger check` evaluates every claim and fails the build when a critical or high claim
# fails. Scripted runs are not dispatched over NATS here: the claim
# `frontier-runs-use-http-provider` rightly fails a frontier node run answered by `scripted`.
# The schema is dropped afterwards; processes are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q --locked -p runledger-cli
bin="${CARGO_TARGET_DIR:-target}/debug/runledger"
export RUNLEDGER_DATABASE_URL="${RUNLEDGER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/runledger_test}"
export RUNLEDGER_DATABASE_SCHEMA="ci_gate_$(date +%s)_$$"
export RUNLEDGER_NATS_NAMESPACE="ci_gate_$$"
export CI_GATE_KEY="ci-gate-key-$$"
unset RUNLEDGER_NATS_URL RUNLEDGER_LOG

children=()
stub_out="$(mktemp)"
cleanup() {
    for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -f "$stub_out"
    if [ -n "${repo_dir:-}" ]; then rm -rf "$repo_dir"; fi
    psql "$RUNLEDGER_DATABASE_URL" -q -c "DROP SCHEMA IF EXISTS \"$RUNLEDGER_DATABASE_SCHEMA\" CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

python3 ops/ci-gate/openai_stub.py "$CI_GATE_KEY" >"$stub_out" &
children+=("$!")
for _ in $(seq 1 50); do [ -s "$stub_out" ] && break; sleep 0.1; done
port="$(head -n 1 "$stub_out")"

"$bin" migrate >/dev/null
"$bin" models create ci-gate-gpt --provider openai_compatible --model-id stub-model \
    --base-url "http://127.0.0.1:$port/v1" --api-key-env CI_GATE_KEY >/dev/null
for n in 1 2; do
    "$bin" executor --class frontier --executor-id "ci-gate-$n" 2>/dev/null &
    children+=("$!")
done

# code-change.yaml clones, patches and pushes to the repository its `repo` input names: a bare
# one made here, whose README.md is the patch's context.
repo_dir="$(mktemp -d)"
repo="$(bash ops/demo-repo.sh "$repo_dir")"
inputs="{\"topic\":\"owls\",\"project\":\"owls\",\"repo\":\"$repo\"}"
for flow in examples/*.yaml; do
    if ! "$bin" run "$flow" --input "$inputs" --wait --json >/dev/null; then
        echo "ci-gate: $flow did not complete" >&2
        exit 1
    fi
done
for n in 1 2 3; do
    if ! "$bin" run ops/ci-gate/http-model.yaml --input "{\"topic\":\"owls $n\"}" --wait --json --dispatch nats >/dev/null; then
        echo "ci-gate: ops/ci-gate/http-model.yaml (--dispatch nats) did not complete" >&2
        exit 1
    fi
done
echo "ci-gate: examples completed in-process, HTTP-model runs over NATS; checking claims"
"$bin" check --fail-on critical,high
