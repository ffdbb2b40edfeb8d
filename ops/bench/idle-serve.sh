#!/usr/bin/env bash
# Idle cost of `runledger serve` over N finished runs (docs/benchmarks.md, "Idle serve").
#
#   ops/bench/idle-serve.sh N            # e.g. 1000, 100000
#
# 1. Bulk: a serve on a database of its own drives N real start -> end runs, started through
#    the HTTP API 16 at a time; it is stopped once every run has ended and the projections
#    have caught up; VACUUM ANALYZE, so autovacuum stays out of the measurement.
# 2. Measure: the same serve binary, idle, twice: a short and a long life. Backends flush their
#    statistics when they exit, so the difference of the database's transaction counts over the
#    two lives is exactly what the longer idle time cost. CPU is read from /proc over the idle
#    part of the long life.
# Env: RUNLEDGER_BIN (default target/release/runledger), PGBASE (server URL without database),
# PORT (HTTP port, default 8483), SHORT_S / LONG_S (default 5 / 35), KEEP=1 keeps the database.
set -euo pipefail
N=${1:?usage: idle-serve.sh N}
BIN=${RUNLEDGER_BIN:-target/release/runledger}
PGBASE=${PGBASE:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-8483}
SHORT_S=${SHORT_S:-5}
LONG_S=${LONG_S:-35}
DB="leases_idle_${N}"
export RUNLEDGER_DATABASE_URL="$PGBASE/$DB"
unset RUNLEDGER_DATABASE_SCHEMA RUNLEDGER_NATS_URL RUNLEDGER_LOG
LOG=$(mktemp)
psql -qAt "$PGBASE/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"

serve() { "$BIN" serve --listen "127.0.0.1:$PORT" --dispatch inprocess >/dev/null 2>>"$LOG" & echo $!; }
up() { for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return; sleep 0.1; done; cat "$LOG"; exit 1; }
sql() { psql -qAt "$RUNLEDGER_DATABASE_URL" -c "$1"; }
xacts() { psql -qAt "$PGBASE/postgres" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$DB'"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

pid=$(serve); up
clock=$(date +%s.%N)
body='{"definition": "name: instant\nnodes:\n  - {id: start, type: start}\n  - {id: end, type: end}\nconnectors:\n  - {id: c, from: start, to: end}\n", "inputs": {}}'
seq "$N" | xargs -P 16 -I{} curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/runs" \
  -H 'content-type: application/json' -d "$body"
until [ "$(sql "SELECT count(*) FROM run_index")" = 0 ]; do sleep 0.5; done
until [ "$(sql "SELECT count(*) FROM projection_checkpoints c WHERE global_position < (SELECT max(global_position) FROM events)")" = 0 ]; do sleep 0.5; done
echo "bulk: $N finished runs, $(sql "SELECT count(*) FROM events") events, in $(echo "$(date +%s.%N) - $clock" | bc) s"
kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
sql "VACUUM ANALYZE"
sleep 2

declare -a lives
for seconds in "$SHORT_S" "$LONG_S"; do
  before=$(xacts)
  pid=$(serve); up
  if [ "$seconds" = "$LONG_S" ]; then
    sleep "$SHORT_S"; t0=$(cpu_ticks "$pid"); c0=$(date +%s.%N)
    sleep $((LONG_S - SHORT_S)); t1=$(cpu_ticks "$pid"); c1=$(date +%s.%N)
  else
    sleep "$seconds"
  fi
  kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  sleep 2
  lives+=($(( $(xacts) - before )))
done
ticks=$(getconf CLK_TCK)
idle_s=$((LONG_S - SHORT_S))
echo "idle serve over $N finished runs: transactions ${lives[*]} in ${SHORT_S} s / ${LONG_S} s lives"
echo "  statements/s: $(echo "scale=2; (${lives[1]} - ${lives[0]}) / $idle_s" | bc)"
echo "  CPU: $(echo "scale=3; 100 * ($t1 - $t0) / $ticks / ($c1 - $c0)" | bc) % of a core"
[ "${KEEP:-0}" = 1 ] || psql -qAt "$PGBASE/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
rm -f "$LOG"
