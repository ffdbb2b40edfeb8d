#!/usr/bin/env bash
# Records the replay fixtures (replay-fixtures/*.jsonl) with the real binary: each scenario runs
# in a fresh database schema, is exported, and must replay with 0 divergence before it is kept.
#
#   ops/record-replay-fixtures.sh [SCENARIO...]     (default: all; needs PostgreSQL)
#
# Environment: RUNLEDGER (binary, default target/debug/runledger), RUNLEDGER_DATABASE_URL,
# FIXTURE_SCHEMA_PREFIX (default replay_fx), FIXTURE_PORT (HTTP port for the short-lived
# `serve` that drives a failed run after an operator reopened it; default 8471).
set -euo pipefail
cd "$(dirname "$0")/.."
R=${RUNLEDGER:-target/debug/runledger}
OUT=replay-fixtures
FLOWS=$OUT/flows
PREFIX=${FIXTURE_SCHEMA_PREFIX:-replay_fx}
PORT=${FIXTURE_PORT:-8471}
DB_URL=${RUNLEDGER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/runledger}
unset RUNLEDGER_NATS_URL

uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }
status_of() { "$R" runs show "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }
drop_schema() { psql -q "$DB_URL" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS $1 CASCADE" >/dev/null; }

# begin NAME: a fresh schema for the scenario.
begin() {
  export RUNLEDGER_DATABASE_SCHEMA="${PREFIX}_${1//-/_}"
  drop_schema "$RUNLEDGER_DATABASE_SCHEMA"
  "$R" migrate >/dev/null
}

# keep NAME RUN [--all]: export the run (or the whole schema), check it replays, keep it.
keep() {
  local name=$1 run=$2 scope=(--run "$2")
  [[ ${3:-} == --all ]] && scope=(--all)
  local status file
  status=$(status_of "$run")
  file="$OUT/$name.$status.jsonl"
  "$R" export "${scope[@]}" -o "$file" 2>/dev/null
  "$R" replay "$file" >/dev/null || { echo "$file does not replay" >&2; exit 1; }
  echo "recorded $file"
  drop_schema "$RUNLEDGER_DATABASE_SCHEMA"
}

# simple NAME FLOW [run args...]: run to the end, keep.
simple() {
  local name=$1 flow=$2 run; shift 2
  begin "$name"
  run=$(uuid)
  "$R" run "$flow" --run-id "$run" --wait --json "$@" >/dev/null || true
  keep "$name" "$run"
}

# controlled NAME FLOW DELAY_S CONTROL...: start a run, apply one or more controls while it
# runs (`runs control|node ...` argument lists separated by `;`), wait for its end, keep.
controlled() {
  local name=$1 flow=$2; shift 2
  begin "$name"
  local run; run=$(uuid)
  "$R" run "$flow" --run-id "$run" --wait --json --poll-ms 50 >/dev/null &
  local pid=$!
  while (($#)); do
    sleep "$1"; shift
    local args=()
    while (($#)) && [[ $1 != ";" ]]; do args+=("$1"); shift; done
    (($#)) && shift
    "$R" runs "${args[0]}" "$run" "${args[@]:1}" >/dev/null
  done
  wait "$pid" || true
  keep "$name" "$run"
}

# reopened NAME FLOW NODE ACTION [args]: the run fails, an operator reopens it with a node
# control, a `serve` drives it to the end.
reopened() {
  local name=$1 flow=$2 node=$3 action=$4; shift 4
  begin "$name"
  local run; run=$(uuid)
  "$R" run "$flow" --run-id "$run" --wait --json >/dev/null || true
  "$R" runs node "$run" "$node" "$action" "$@" >/dev/null
  "$R" serve --listen "127.0.0.1:$PORT" --scan-ms 100 --poll-ms 50 >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    case $(status_of "$run") in completed|failed|canceled) break ;; esac
    sleep 0.1
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  keep "$name" "$run"
}

record() {
  case $1 in
    fan-in-all) simple fan-in-all $FLOWS/fan-in-all.yaml ;;
    fan-in-any) simple fan-in-any $FLOWS/fan-in-any.yaml ;;
    fan-in-custom) simple fan-in-custom examples/fan-in.yaml ;;
    multi-match) simple multi-match $FLOWS/multi-match.yaml ;;
    fallback) simple fallback examples/fallback-route.yaml ;;
    no-match) simple no-match $FLOWS/no-match.yaml ;;
    route-key) simple route-key $FLOWS/route-key.yaml ;;
    loop-limit) simple loop-limit $FLOWS/loop-limit.yaml ;;
    decision-loop) simple decision-loop examples/review-loop.yaml --input '{"topic":"owls"}' ;;
    timeout-retry) simple timeout-retry $FLOWS/timeout-retry.yaml ;;
    retries-exhausted) simple retries-exhausted $FLOWS/retries-exhausted.yaml ;;
    pause-resume) controlled pause-resume $FLOWS/slow-chain.yaml 0.4 control pause ";" 0.6 control resume ;;
    cancel-graceful) controlled cancel-graceful $FLOWS/slow-chain.yaml 0.4 control cancel ;;
    cancel-forced) controlled cancel-forced $FLOWS/slow-chain.yaml 0.4 control cancel --force ;;
    node-skip) controlled node-skip $FLOWS/slow-chain.yaml 0.4 node a skip --output '"skipped a"' ;;
    node-rewind) controlled node-rewind $FLOWS/slow-chain.yaml 2.0 node a rewind ;;
    node-retry) reopened node-retry $FLOWS/fails-once.yaml b retry ;;
    subflow)
      begin subflow
      local run; run=$(uuid)
      "$R" run $FLOWS/subflow.yaml --run-id "$run" --flowcharts $FLOWS --wait --json >/dev/null || true
      keep subflow "$run" --all ;;
    tool-fallback)
      begin tool-fallback
      local run; run=$(uuid)
      "$R" run $FLOWS/tool-fallback.yaml --run-id "$run" --input '{"project":"owls","topic":"owls"}' --wait --json >/dev/null || true
      keep tool-fallback "$run" --all ;;
    nats-dispatch)
      # Needs NATS JetStream (RUNLEDGER_NATS_URL_FOR_FIXTURES, default nats://127.0.0.1:4222).
      begin nats-dispatch
      local run nats=${RUNLEDGER_NATS_URL_FOR_FIXTURES:-nats://127.0.0.1:4222} ns=${FIXTURE_NATS_NAMESPACE:-replay}
      run=$(uuid)
      "$R" executor --nats-url "$nats" --nats-namespace "$ns" --class frontier --executor-id fixture-executor >/dev/null 2>&1 &
      local pid=$!
      "$R" run examples/review-loop.yaml --run-id "$run" --input '{"topic":"owls"}' --dispatch nats \
        --nats-url "$nats" --nats-namespace "$ns" --wait --json >/dev/null || true
      kill "$pid"; wait "$pid" 2>/dev/null || true
      keep nats-dispatch "$run" ;;
    schema-repair)
      begin schema-repair
      local run port out; run=$(uuid); out=$(mktemp)
      python3 $FLOWS/repair_stub.py fixture-key >"$out" &
      local pid=$!
      for _ in $(seq 1 50); do [[ -s $out ]] && break; sleep 0.1; done
      port=$(head -n 1 "$out")
      "$R" models create fixture-gpt --provider openai_compatible --model-id stub-model \
        --base-url "http://127.0.0.1:$port/v1" --api-key-env FIXTURE_STUB_KEY >/dev/null
      FIXTURE_STUB_KEY=fixture-key "$R" run $FLOWS/schema-repair.yaml --run-id "$run" --input '{"topic":"owls"}' --wait --json >/dev/null || true
      kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$out"
      keep schema-repair "$run" ;;
    fork)
      # The decision loop, then a fork of it from `review` that a short-lived `serve` drives;
      # the export holds both runs (the source with its RunForkedTo link).
      begin fork
      local run fork pid; run=$(uuid)
      "$R" run examples/review-loop.yaml --run-id "$run" --input '{"topic":"owls"}' --wait --json >/dev/null || true
      fork=$("$R" runs fork "$run" --from review --reason "fixture" --actor fixture --json \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
      "$R" serve --listen "127.0.0.1:$PORT" --scan-ms 100 --poll-ms 50 >/dev/null 2>&1 &
      pid=$!
      for _ in $(seq 1 100); do
        case $(status_of "$fork") in completed|failed|canceled) break ;; esac
        sleep 0.1
      done
      kill "$pid"; wait "$pid" 2>/dev/null || true
      keep fork "$fork" --all ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

ALL=(fan-in-all fan-in-any fan-in-custom multi-match fallback no-match route-key loop-limit decision-loop
     timeout-retry retries-exhausted pause-resume cancel-graceful cancel-forced node-skip node-rewind
     node-retry subflow tool-fallback nats-dispatch schema-repair fork)
for scenario in "${@:-${ALL[@]}}"; do record "$scenario"; done
