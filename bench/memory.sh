#!/usr/bin/env bash
# Memory flat with input size (issue 15): peak RSS of `run` over inputs with ids (100,000 and
# ROWS rows), of resume planning over the ROWS-record output, and of `report` and
# `estimate --from-output` over it.
#
# Usage:   bench/memory.sh [--skip-build]
# Env:     ROWS (default 10000000), BIN (default: the repo's release binary), BENCH_KEEP=1 keeps
#          the data dir, TMPDIR (where data goes: ROWS=10M needs ≈ 2.3 GB input + 4.5 GB output).
#
# Rows are JSONL `{"id":"k000000001","prompt":"<200 bytes>"}`; the runner talks to
# `promptbatch mock-server --latency 0ms` (a separate process, not in the figures) with -c 64.
# Peak RSS is GNU time's "Maximum resident set size". Prints a Markdown table on stdout.
# Takes ≈ 10 minutes for 10M rows on 2 cores (the 10M run itself ≈ 4 minutes).

set -euo pipefail

source "$(dirname "$0")/lib.sh"
bench_init mem 13 "$@"
ROWS=${ROWS:-10000000}
RESULTS=()

gen_ids() { # gen_ids ROWS FILE
    python3 - "$@" << 'EOF'
import sys
rows, path = int(sys.argv[1]), sys.argv[2]
filler = ("Summarize this note in one sentence, keeping names and numbers: the order "
          "arrived late, the box was damaged and the blue mug inside was chipped. ") * 4
with open(path, "w", buffering=1 << 20) as f:
    for i in range(rows):
        text = (f"row {i:09d}: " + filler)[:200]
        f.write('{"id":"k%09d","prompt":"%s"}\n' % (i, text))
EOF
}

# measured NAME CMD…: `timed`, then its row of the table.
measured() {
    timed "$@"
    local name=$1
    shift
    RESULTS+=("| $name | $RSS_MB MB | $WALL s | exit $RC | \`${*/#$TMP/\$TMP}\` |")
}

log "generating 100,000 and $ROWS rows with ids in $TMP"
gen_ids 100000 "$TMP/ids100k.jsonl"
gen_ids "$ROWS" "$TMP/ids.jsonl"

start_sim
measured "run, 100,000 rows with ids" "$BIN" run "$TMP/ids100k.jsonl" -o "$TMP/ids100k.out.jsonl" --base-url "$BASE" -q -c 64
start_sim
measured "run, $ROWS rows with ids" "$BIN" run "$TMP/ids.jsonl" -o "$TMP/ids.out.jsonl" --base-url "$BASE" -q -c 64
measured "resume, $ROWS-record output, nothing to do" "$BIN" run "$TMP/ids.jsonl" -o "$TMP/ids.out.jsonl" --base-url "$BASE" -q -c 64
stop_sim
measured "report, $ROWS records" "$BIN" report "$TMP/ids.out.jsonl"
measured "estimate --from-output, $ROWS records" "$BIN" estimate "$TMP/ids100k.jsonl" --from-output "$TMP/ids.out.jsonl"

echo "## promptbatch memory — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)"
echo
echo "| Figure | Peak RSS | Wall | | Command (\`\$TMP\` = the data dir) |"
echo "|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
