#!/usr/bin/env bash
# Pay once (issue 27): a dataset whose requests repeat, and the reuse of an earlier output.
#   1. `run` over ROWS rows of which 30 % repeat an earlier row's request (a shuffled mix of
#      0.7 × ROWS distinct prompts and 0.3 × ROWS repeats): requests the server received, peak
#      RSS, wall; every row has exactly one record (ids counted) and the copies say so.
#   2. `run --reuse` of that output into a new one over the same rows plus 5 % new ones: how
#      long the plan takes (the run's own "planned in" line) and the whole run.
#   3. The same input with `--no-dedup`, for the requests and wall it would take.
#
# Usage:   bench/dedup.sh [--skip-build]
# Env:     ROWS (default 1000000), BIN (default: the repo's release binary), BENCH_KEEP=1 keeps
#          the data dir, TMPDIR (where data goes: ≈ 1 GB for 1M rows).
#
# Rows are JSONL `{"id":"k000000001","prompt":"<≈200 bytes>"}`; the runner talks to
# `promptbatch mock-server --latency 0ms` (a separate process, not in the figures) with -c 64.
# Peak RSS is GNU time's "Maximum resident set size". Prints a Markdown table on stdout.

set -euo pipefail

source "$(dirname "$0")/lib.sh"
bench_init dedup 16 "$@"
ROWS=${ROWS:-1000000}
RESULTS=()

sim_requests() {
    python3 -c "import json,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$PORT/_sim/stats'))['requests'])"
}

# gen ROWS NEW FILE: ROWS rows, 30 % repeating an earlier prompt, then NEW rows of new prompts.
gen() {
    python3 - "$@" << 'EOF'
import random, sys
rows, new, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
distinct = rows * 7 // 10
rng = random.Random(27)
keys = list(range(distinct)) + [rng.randrange(distinct) for _ in range(rows - distinct)]
rng.shuffle(keys)
filler = ("Summarize this note in one sentence, keeping names and numbers: the order "
          "arrived late, the box was damaged and the blue mug inside was chipped. ") * 4
with open(path, "w", buffering=1 << 20) as f:
    for i, k in enumerate(keys):
        f.write('{"id":"k%09d","prompt":"%s"}\n' % (i, (f"note {k:09d}: " + filler)[:200]))
    for j in range(new):
        f.write('{"id":"n%09d","prompt":"%s"}\n' % (j, (f"new note {j:09d}: " + filler)[:200]))
EOF
}

# check OUTPUT N: N records, N distinct ids; prints "copies=C" (records with duplicate_of or
# reused_from)
check() {
    python3 - "$@" << 'EOF'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
ids, copies = set(), 0
with open(path) as f:
    for line in f:
        r = json.loads(line)
        ids.add(r["id"])
        copies += "duplicate_of" in r or "reused_from" in r
records = sum(1 for _ in open(path))
assert records == n and len(ids) == n, f"{path}: {records} records, {len(ids)} ids for {n} rows"
print(copies)
EOF
}

NEW=$((ROWS / 20))
log "generating $ROWS rows (30 % repeated requests) and $ROWS + $NEW rows in $TMP"
gen "$ROWS" 0 "$TMP/rows.jsonl"
gen "$ROWS" "$NEW" "$TMP/rows_more.jsonl"

start_sim
timed dedup "$BIN" run "$TMP/rows.jsonl" -o "$TMP/out.jsonl" --base-url "$BASE" -q -c 64
SENT=$(sim_requests)
COPIES=$(check "$TMP/out.jsonl" "$ROWS")
RESULTS+=("| run, $ROWS rows, 30 % repeated requests | $SENT requests, $COPIES copies, $ROWS records for $ROWS rows | $RSS_MB MB | $WALL s |")

start_sim
timed reuse "$BIN" run "$TMP/rows_more.jsonl" -o "$TMP/out2.jsonl" --base-url "$BASE" -c 64 --log-every 1h --reuse "$TMP/out.jsonl"
SENT=$(sim_requests)
COPIES=$(check "$TMP/out2.jsonl" $((ROWS + NEW)))
PLANNED=$(sed -n "s/.*planned in \([0-9.]*\) s.*/\1/p" "$TMP/reuse.err" | head -n 1)
RESULTS+=("| run --reuse (the $ROWS-record output), $ROWS + $NEW new rows | $SENT requests, $COPIES copies; plan: ${PLANNED:-?} s | $RSS_MB MB | $WALL s |")

start_sim
timed nodedup "$BIN" run "$TMP/rows.jsonl" -o "$TMP/out3.jsonl" --base-url "$BASE" -q -c 64 --no-dedup
SENT=$(sim_requests)
RESULTS+=("| run --no-dedup, the same $ROWS rows | $SENT requests | $RSS_MB MB | $WALL s |")
stop_sim

echo "## promptbatch pay-once — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)"
echo
echo "| Figure | Result | Peak RSS | Wall |"
echo "|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
