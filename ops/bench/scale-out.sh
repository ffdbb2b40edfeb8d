#!/usr/bin/env bash
# Scale-out (docs/benchmarks.md, "Scale-out"): 3 `serve` instances + 2 executors on one
# PostgreSQL schema and NATS namespace; RUNS runs of a 5-node chain (start, 3 tasks, end) on an
# HTTP model stub (ops/bench/model-stub.py) that counts calls per (run, node). Midway, the
# instance holding the most leases is killed with SIGKILL. Checks, then prints:
#   - every run completed;
#   - every (run, task) called exactly once, except those in flight at the kill: called at most
#     twice, and the ledger holds exactly one successful end (NodeSucceeded) per (run, task);
#   - takeover time: from the kill until the last run of the killed instance has a new lease
#     holder (run_leases), and until every run has ended.
# Not a CI test: a scenario to run by hand.
#
#   ops/bench/scale-out.sh            # RUNS=600 LEASE_TTL_MS=3000 DELAY_MS=20
# Env: RUNLEDGER_BIN (default target/release/runledger), PGBASE, NATS_URL, BASE_PORT (18103:
# serves on BASE_PORT..+2, the stub on BASE_PORT+3), RUNS, LEASE_TTL_MS, DELAY_MS, KEEP=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${RUNLEDGER_BIN:-target/release/runledger}
PGBASE=${PGBASE:-postgres://postgres@127.0.0.1:5432}
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
BASE_PORT=${BASE_PORT:-18103}
RUNS=${RUNS:-600}
LEASE_TTL_MS=${LEASE_TTL_MS:-3000}
DELAY_MS=${DELAY_MS:-20}
DB=runledger_scale_out
WORK=$(mktemp -d)
export RUNLEDGER_DATABASE_URL="$PGBASE/$DB" RUNLEDGER_NATS_URL="$NATS_URL"
export RUNLEDGER_NATS_NAMESPACE="scale$$" SCALE_STUB_KEY=sk-scale-stub
unset RUNLEDGER_DATABASE_SCHEMA RUNLEDGER_LOG
psql -qAt "$PGBASE/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
sql() { psql -qAt "$RUNLEDGER_DATABASE_URL" -c "$1"; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || psql -qAt "$PGBASE/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  rm -rf "$WORK"; }
trap cleanup EXIT

STUB_PORT=$((BASE_PORT + 3))
python3 "$HERE/model-stub.py" "$STUB_PORT" "$WORK/counts.json" "$DELAY_MS" & pids+=($!)
"$BIN" migrate >/dev/null
"$BIN" models create stubgpt --provider openai_compatible --model-id stub-model \
  --base-url "http://127.0.0.1:$STUB_PORT/v1" --api-key-env SCALE_STUB_KEY >/dev/null
cat > "$WORK/chain.yaml" <<'YAML'
name: scale-chain
nodes:
  - { id: start, type: start }
  - { id: t1, type: task, model: stubgpt, prompt: "{{ inputs.tag }}/t1" }
  - { id: t2, type: task, model: stubgpt, prompt: "{{ inputs.tag }}/t2" }
  - { id: t3, type: task, model: stubgpt, prompt: "{{ inputs.tag }}/t3" }
  - { id: end, type: end }
connectors:
  - { id: c0, from: start, to: t1 }
  - { id: c1, from: t1, to: t2 }
  - { id: c2, from: t2, to: t3 }
  - { id: c3, from: t3, to: end }
YAML

declare -A serve_pid
for i in 0 1 2; do
  "$BIN" serve --listen "127.0.0.1:$((BASE_PORT + i))" --dispatch nats --instance-id "serve-$i" \
    --lease-ttl-ms "$LEASE_TTL_MS" >"$WORK/serve-$i.log" 2>&1 &
  serve_pid[$i]=$!; pids+=($!)
done
for i in 0 1; do
  "$BIN" executor --class frontier --executor-id "exec-$i" >"$WORK/exec-$i.log" 2>&1 & pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$((BASE_PORT + i))/healthz" >/dev/null && break; sleep 0.1; done
done

start=$(date +%s.%N)
seq "$RUNS" | xargs -P 8 -I{} "$BIN" run "$WORK/chain.yaml" --input '{"tag":"r{}"}' >/dev/null 2>&1
echo "started $RUNS runs in $(echo "$(date +%s.%N) - $start" | bc) s"
# Midway: kill the instance holding the most leases while it still drives runs.
until [ "$(sql "SELECT count(*) FROM run_index")" -le $((RUNS / 2)) ]; do sleep 0.05; done
# Only unfinished runs count: a finished run's lease row may still name its last owner until
# it expires, and nobody takes over a finished run.
victim=$(sql "SELECT owner FROM run_leases JOIN run_index USING (run_id) WHERE owner IS NOT NULL GROUP BY owner ORDER BY count(*) DESC LIMIT 1")
held=$(sql "SELECT count(*) FROM run_leases JOIN run_index USING (run_id) WHERE owner = '$victim'")
i=${victim#serve-}
kill -KILL "${serve_pid[$i]}"
killed=$(date +%s.%N)
echo "SIGKILL $victim holding $held leases, $(sql "SELECT count(*) FROM run_index") runs unfinished"
sql "CREATE TABLE scale_victim AS SELECT run_id FROM run_leases JOIN run_index USING (run_id) WHERE owner = '$victim'" >/dev/null
# Taken over: every run the victim drove has another holder or has ended.
until [ "$(sql "SELECT count(*) FROM run_leases l JOIN scale_victim v USING (run_id) JOIN run_index USING (run_id) WHERE l.owner = '$victim'")" = 0 ]; do sleep 0.05; done
taken=$(date +%s.%N)
until [ "$(sql "SELECT count(*) FROM run_index")" = 0 ]; do sleep 0.1; done
done_at=$(date +%s.%N)
curl -sf "http://127.0.0.1:$STUB_PORT/counts" >"$WORK/counts.json"

completed=$(sql "SELECT count(*) FROM events WHERE event_type = 'RunCompleted'")
succeeded=$(sql "SELECT count(*) FROM (SELECT stream_id, payload->>'node_id' FROM events WHERE event_type = 'NodeSucceeded' AND payload->>'node_id' LIKE 't%' GROUP BY 1, 2) s")
doubled=$(sql "SELECT count(*) FROM (SELECT stream_id, payload->>'node_id' FROM events WHERE event_type = 'NodeSucceeded' GROUP BY 1, 2 HAVING count(*) > 1) s")
takeovers=$(sql "SELECT count(*) FROM events WHERE event_type = 'RunTakenOver'")
read -r once twice more missing < <(python3 - "$WORK/counts.json" "$RUNS" <<'PY'
import json, sys
counts = json.load(open(sys.argv[1])); runs = int(sys.argv[2])
want = [f"r{r}/t{t}" for r in range(1, runs + 1) for t in (1, 2, 3)]
c = [counts.get(k, 0) for k in want]
print(sum(x == 1 for x in c), sum(x == 2 for x in c), sum(x > 2 for x in c), sum(x == 0 for x in c))
PY
)
echo "runs completed: $completed / $RUNS; RunTakenOver events: $takeovers"
echo "(run, task) pairs: $((RUNS * 3)); model calls: once $once, twice $twice, more $more, never $missing"
echo "ledger: (run, task) pairs with a NodeSucceeded: $succeeded; with more than one: $doubled"
echo "takeover: every lease of $victim held by another instance $(echo "$taken - $killed" | bc) s after the kill (lease TTL ${LEASE_TTL_MS} ms)"
echo "all runs ended $(echo "$done_at - $killed" | bc) s after the kill; whole scenario $(echo "$done_at - $start" | bc) s"
ok=1
[ "$completed" = "$RUNS" ] || { echo "FAIL: not every run completed"; ok=0; }
[ "$succeeded" = $((RUNS * 3)) ] && [ "$doubled" = 0 ] || { echo "FAIL: the ledger does not record each node run's success once"; ok=0; }
[ "$more" = 0 ] && [ "$missing" = 0 ] || { echo "FAIL: a (run, node) was never called or called more than twice"; ok=0; }
[ "$twice" -le "$held" ] || { echo "FAIL: more repeated calls ($twice) than runs of the killed instance ($held)"; ok=0; }
[ "$ok" = 1 ] && echo "OK" || exit 1
