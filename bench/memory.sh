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

BUILD=1
for arg in "$@"; do
    case "$arg" in
        --skip-build) BUILD=0 ;;
        -h | --help)
            sed -n '2,13p' "$0"
            exit 0
            ;;
        *)
            echo "unknown option: $arg (see --help)" >&2
            exit 2
            ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$CARGO_TARGET_DIR/release/promptbatch}
ROWS=${ROWS:-10000000}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/promptbatch-mem.XXXXXX")
SIM_PID=""
RESULTS=()
export EVOLINK_API_KEY=bench-not-a-secret
unset PROMPTBATCH_BASE_URL

log() { printf '[memory %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stop_sim() {
    if [[ -n $SIM_PID ]]; then
        kill "$SIM_PID" 2> /dev/null || true
        wait "$SIM_PID" 2> /dev/null || true
        SIM_PID=""
    fi
}
cleanup() {
    stop_sim
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $BUILD == 1 ]]; then
    log "building the release binary"
    (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x /usr/bin/time ]] || {
    echo "needs GNU time (/usr/bin/time: apt-get install time)" >&2
    exit 1
}

start_sim() {
    stop_sim
    "$BIN" mock-server --listen 127.0.0.1:0 --latency 0ms 2> "$TMP/sim.log" &
    SIM_PID=$!
    for _ in $(seq 1 100); do
        grep -q 'listening on' "$TMP/sim.log" && break
        sleep 0.05
    done
    PORT=$(sed -n 's|.*http://127\.0\.0\.1:\([0-9]*\)/v1.*|\1|p' "$TMP/sim.log" | head -n 1)
    BASE=http://127.0.0.1:$PORT/v1
}

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

# timed NAME CMD... → WALL (s), RSS_MB, RC
timed() {
    local name=$1 t0 t1
    shift
    t0=$(date +%s.%N)
    set +e
    /usr/bin/time -v -o "$TMP/$name.time" "$@" > "$TMP/$name.out" 2> "$TMP/$name.err"
    RC=$?
    set -e
    t1=$(date +%s.%N)
    WALL=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
    RSS_MB=$(python3 -c "print(round($(sed -n 's/.*Maximum resident set size (kbytes): //p' "$TMP/$name.time") / 1024, 1))")
    if [[ $RC != 0 ]]; then
        log "$name: exit $RC"
        tail -n 5 "$TMP/$name.err" >&2
    fi
    RESULTS+=("| $name | $RSS_MB MB | $WALL s | exit $RC | \`${*/#$TMP/\$TMP}\` |")
    log "$name: $RSS_MB MB, $WALL s, exit $RC"
}

log "generating 100,000 and $ROWS rows with ids in $TMP"
gen_ids 100000 "$TMP/ids100k.jsonl"
gen_ids "$ROWS" "$TMP/ids.jsonl"

start_sim
timed "run, 100,000 rows with ids" "$BIN" run "$TMP/ids100k.jsonl" -o "$TMP/ids100k.out.jsonl" --base-url "$BASE" -q -c 64
start_sim
timed "run, $ROWS rows with ids" "$BIN" run "$TMP/ids.jsonl" -o "$TMP/ids.out.jsonl" --base-url "$BASE" -q -c 64
timed "resume, $ROWS-record output, nothing to do" "$BIN" run "$TMP/ids.jsonl" -o "$TMP/ids.out.jsonl" --base-url "$BASE" -q -c 64
stop_sim
timed "report, $ROWS records" "$BIN" report "$TMP/ids.out.jsonl"
timed "estimate --from-output, $ROWS records" "$BIN" estimate "$TMP/ids100k.jsonl" --from-output "$TMP/ids.out.jsonl"

echo "## promptbatch memory — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)"
echo
echo "| Figure | Peak RSS | Wall | | Command (\`\$TMP\` = the data dir) |"
echo "|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
