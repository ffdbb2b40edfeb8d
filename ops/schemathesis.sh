#!/usr/bin/env bash
# Property-based tests of the HTTP API against its own OpenAPI document (schemathesis), run by
# .ci/run after the tests: `runledger serve` on a fresh schema and a free port, a short bounded
# run (every operation, a few examples each), failing on a server error (5xx) or an answer the
# document does not describe (status, content type, body schema, headers). The schema is
# dropped and serve stopped afterwards. Installs schemathesis with pip when it is missing.
#
# The coverage phase is left out: schemathesis 4.32.5 fails inside it on this document (a
# KeyError in its own constraint walker), which says nothing about the API.
#
# Longer runs: SCHEMATHESIS_MAX_EXAMPLES=200 SCHEMATHESIS_TIME_LIMIT=1800 bash ops/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v schemathesis >/dev/null 2>&1; then
    python3 -m pip install -q "schemathesis>=4.32,<5"
fi
cargo build -q --locked -p runledger-cli
bin="${CARGO_TARGET_DIR:-target}/debug/runledger"
export RUNLEDGER_DATABASE_URL="${RUNLEDGER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/runledger_test}"
export RUNLEDGER_DATABASE_SCHEMA="${SCHEMATHESIS_SCHEMA:-schemathesis_$(date +%s)_$$}"
export RUNLEDGER_NATS_NAMESPACE="schemathesis_$$"
unset RUNLEDGER_API_TOKEN RUNLEDGER_LOG
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-20}"
time_limit="${SCHEMATHESIS_TIME_LIMIT:-150}"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

serve_pid=""
serve_log="$(mktemp)"
cleanup() {
    if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
    rm -f "$serve_log"
    psql "$RUNLEDGER_DATABASE_URL" -q -c "DROP SCHEMA IF EXISTS \"$RUNLEDGER_DATABASE_SCHEMA\" CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$bin" migrate >/dev/null
"$bin" serve --listen "127.0.0.1:$port" >"$serve_log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { cat "$serve_log"; echo "serve did not start" >&2; exit 1; }
# Something to read: a stored flowchart and a run of it.
curl -fsS "$base/v1/flowcharts" -H 'content-type: application/json' \
    -d "$(python3 -c 'import json, sys; print(json.dumps({"definition": open("examples/review-loop.yaml").read()}))')" >/dev/null || true

status=0
timeout "$time_limit" schemathesis run "$base/openapi.json" \
    --url "$base" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "$max_examples" \
    --phases examples,fuzzing,stateful \
    --workers 2 \
    --request-timeout 10 \
    --generation-deterministic \
    --suppress-health-check all \
    --no-color || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- serve log (last 40 lines) ---" >&2
    tail -n 40 "$serve_log" >&2
    [ "$status" -eq 124 ] && echo "schemathesis did not finish within ${time_limit}s" >&2
fi
exit "$status"
