#!/usr/bin/env bash
# Browser tests of the Studio console (docs/studio.md): Playwright (npm `playwright-core`, no
# browser download) drives Debian's chromium against `runledger serve` on a fresh schema and
# a free port, with RUNLEDGER_API_TOKEN set (so the sign-in and token-gated reads are tested
# too). Records real runs first: every example in-process (the offline `scripted` model), and
# through the API a slow run (to pause and resume), a run that fails once (to retry) and a
# 1,000-node chain (the graph's draw time is printed). Screenshots land in
# studio/tests/output/ (gitignored). Installs chromium (apt) and the npm packages when missing.
# The schema is dropped and serve stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d studio/tests/node_modules/playwright-core ]; then
    (cd studio/tests && npm ci --no-audit --no-fund --silent)
fi
bash ops/services.sh
cargo build -q --locked -p runledger-cli
bin="${CARGO_TARGET_DIR:-target}/debug/runledger"
export RUNLEDGER_DATABASE_URL="${RUNLEDGER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/runledger_test}"
export RUNLEDGER_DATABASE_SCHEMA="studio_$(date +%s)_$$"
export RUNLEDGER_NATS_NAMESPACE="studio_$$"
unset RUNLEDGER_NATS_URL RUNLEDGER_LOG RUNLEDGER_API_OPEN_READS
token="studio-test-token-$$"
port="${STUDIO_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
base="http://127.0.0.1:$port"
out="studio/tests/output"
mkdir -p "$out"

serve_pid=""
repo_dir=""
serve_log="$out/serve.log"
cleanup() {
    if [ -n "$repo_dir" ]; then rm -rf "$repo_dir"; fi
    if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
    psql "$RUNLEDGER_DATABASE_URL" -q -c "DROP SCHEMA IF EXISTS \"$RUNLEDGER_DATABASE_SCHEMA\" CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$bin" migrate >/dev/null
RUNLEDGER_API_TOKEN="$token" "$bin" serve --listen "127.0.0.1:$port" --dispatch inprocess >"$serve_log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { cat "$serve_log"; echo "serve did not start" >&2; exit 1; }

post() { # path, JSON body -> the answer
    curl -fsS "$base$1" -H "authorization: Bearer $token" -H 'content-type: application/json' -d "$2"
}
# code-change.yaml clones and pushes to the repository its `repo` input names.
repo_dir="$(mktemp -d)"
repo="$(bash ops/demo-repo.sh "$repo_dir")"
for flow in examples/*.yaml; do
    post /v1/flowcharts "$(python3 -c 'import json, sys; print(json.dumps({"definition": open(sys.argv[1]).read()}))' "$flow")" >/dev/null
    "$bin" run "$flow" --input "{\"topic\":\"owls\",\"project\":\"owls\",\"ticket\":\"printer on fire\",\"repo\":\"$repo\"}" --wait >/dev/null
done
start_inline() { # YAML text -> run id
    post /v1/runs "$(python3 -c 'import json, sys; print(json.dumps({"definition": sys.argv[1], "inputs": {}}))' "$1")" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["run_id"])'
}
slow_run="$(start_inline 'name: slow
nodes:
  - { id: start, type: start }
  - { id: wait, type: task, model: scripted, scripted: [{ delay_ms: 60000, output: { text: slow } }] }
  - { id: after, type: task, model: scripted, scripted: [{ output: { text: after } }] }
  - { id: done, type: end }
connectors:
  - { id: c1, from: start, to: wait }
  - { id: c2, from: wait, to: after }
  - { id: c3, from: after, to: done }')"
flaky_run="$(start_inline 'name: flaky
nodes:
  - { id: start, type: start }
  - id: work
    type: task
    model: scripted
    scripted:
      - error: { code: boom, message: "first try fails", retryable: false }
      - output: { text: "second try" }
  - { id: done, type: end }
connectors:
  - { id: c1, from: start, to: work }
  - { id: c2, from: work, to: done }')"
big_run="$(start_inline "$(python3 - <<'PY'
n = 1000
lines = ["name: chain-1000", "nodes:", "  - { id: start, type: start }"]
lines += [f"  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ output: {{ ok: true }} }}] }}" for i in range(n)]
lines += ["  - { id: done, type: end }", "connectors:"]
prev = "start"
for i in range(n):
    lines.append(f"  - {{ id: c{i}, from: {prev}, to: t{i} }}")
    prev = f"t{i}"
lines.append(f"  - {{ id: cend, from: {prev}, to: done }}")
print("\n".join(lines))
PY
)")"

export STUDIO_BASE="$base" STUDIO_TOKEN="$token" STUDIO_OUT="$PWD/$out" \
    STUDIO_SLOW_RUN="$slow_run" STUDIO_FLAKY_RUN="$flaky_run" STUDIO_BIG_RUN="$big_run"
status=0
(cd studio/tests && timeout 240 node --test --test-concurrency=1 studio.test.js) || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- serve log (last 40 lines) ---" >&2
    tail -n 40 "$serve_log" >&2
fi
exit "$status"
