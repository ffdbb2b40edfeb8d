#!/usr/bin/env bash
# RAG benchmark (docs/benchmarks.md): index the Rust documentation shipped with the toolchain,
# then a delta after touching 1% of its HTML files, then retrieval quality and query latency.
#
#   ops/bench/rag.sh [RUNLEDGER_BINARY]    (default: target/release/runledger if built, else debug)
#
# Needs PostgreSQL (RUNLEDGER_DATABASE_URL, default local); works in a schema of its own and a
# copy of the docs under a temporary directory (the toolchain's files are never touched).
# Baseline, measured in the same run: reading every file of the corpus once (cat), the floor of
# any full index.
set -euo pipefail
# The binary: the argument, else a release build if there is one, else the debug build.
TARGET=${CARGO_TARGET_DIR:-target}
if [ -x "$TARGET/release/runledger" ]; then DEFAULT_BIN="$TARGET/release/runledger"; else DEFAULT_BIN="$TARGET/debug/runledger"; fi
BIN=${1:-$DEFAULT_BIN}
SRC="$(rustc --print sysroot)/share/doc/rust/html"
[ -d "$SRC" ] || { echo "no Rust docs at $SRC (rustup component add rust-docs)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export RUNLEDGER_DATABASE_SCHEMA="rag_bench_$$"
export RUNLEDGER_RAG_DATA_DIR="$WORK/data"
QUESTIONS="$(dirname "$0")/rag-book-questions.json"

echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
cp -r "$SRC" "$WORK/docs"
FILES=$(find "$WORK/docs" -type f -name '*.html' | wc -l)
echo "corpus: $FILES HTML files, $(du -sh "$WORK/docs" | cut -f1) ($SRC)"

sync
start=$(date +%s.%N)
find "$WORK/docs" -type f -name '*.html' -print0 | xargs -0 cat > /dev/null
echo "baseline: read every HTML file once: $(echo "$(date +%s.%N) - $start" | bc) s"

"$BIN" rag sources create rustdoc --dir "$WORK/docs" --include '**/*.html' --exclude '**/print.html' --json > /dev/null
/usr/bin/time -f "full index: %e s wall, max RSS %M KiB" \
  "$BIN" rag index rustdoc --mode full --json > "$WORK/full.json"
python3 - "$WORK/full.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["duration_ms"] / 1000
print(f"full: {r['files']['scanned']} files ({r['files']['skipped']} skipped), {r['chunks_total']} chunks, "
      f"{r['bytes_read']/1e6:.0f} MB in {s:.1f} s = {r['files']['scanned']/s:.0f} files/s, {r['chunks_total']/s:.0f} chunks/s")
PY

# Touch 1% of the files: every 100th gets a new sentence.
find "$WORK/docs" -type f -name '*.html' | sort | awk 'NR % 100 == 0' > "$WORK/touched"
while read -r f; do printf '<p>bench edit %s</p>\n' "$RANDOM" >> "$f"; done < "$WORK/touched"
echo "touched: $(wc -l < "$WORK/touched") files"
/usr/bin/time -f "delta index: %e s wall, max RSS %M KiB" \
  "$BIN" rag index rustdoc --mode delta --json > "$WORK/delta.json"
python3 - "$WORK/delta.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
f = r["files"]
print(f"delta: read {f['read']} files, changed {f['changed']}, unchanged {f['unchanged']}, "
      f"chunks +{r['chunks_added']} -{r['chunks_deleted']}, {r['duration_ms']} ms")
PY
/usr/bin/time -f "unchanged delta: %e s wall" "$BIN" rag index rustdoc --json > "$WORK/noop.json"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('unchanged delta: read', r['files']['read'], 'files,', r['duration_ms'], 'ms')" "$WORK/noop.json"

"$BIN" rag eval rustdoc --questions "$QUESTIONS" --top-k 5 --rounds 5
echo "book only (same questions, a collection of book/ alone):"
"$BIN" rag sources create rustbook --dir "$WORK/docs/book" --include '*.html' --exclude 'print.html' --source-name book --json > /dev/null
"$BIN" rag index rustbook --mode full > /dev/null
"$BIN" rag eval rustbook --questions "$QUESTIONS" --top-k 5 --rounds 5
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
psql "${RUNLEDGER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/runledger}" -qc "DROP SCHEMA IF EXISTS $RUNLEDGER_DATABASE_SCHEMA CASCADE" >/dev/null 2>&1 || true
