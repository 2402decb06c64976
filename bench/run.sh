#!/usr/bin/env bash
# End-to-end benchmarks of promptbatch: "the runner is never the bottleneck".
#
# Usage:   bench/run.sh [--quick] [--skip-build]
#   --quick       rate-accuracy runs use 20-s windows with the caps scaled to a third, instead of
#                 the real 60-s windows (saves 2 minutes; a 20-s window may then hold one request
#                 over a third of the cap, because the pacing catches up late wake-ups — only the
#                 60-s window is guaranteed)
#   --skip-build  use the existing release binary instead of running `cargo build --release`
# Env:     CARGO_TARGET_DIR (default: the repo's target/), BENCH_KEEP=1 keeps the temp dir.
#
# One command: builds the release binary, installs what it needs (wrk, GNU time, curl, python3
# via apt-get when missing), generates all data into a temp dir, starts the built-in simulator
# (`promptbatch mock-server --listen 127.0.0.1:0`, a separate process) for each figure, and prints
# a Markdown table of every figure, its target and the exact command used, on stdout. Progress
# goes to stderr. All traffic stays on 127.0.0.1. Default total run time: about 6 minutes on
# 2 cores (about 4 with --quick).
#
# Per-row hot paths (request build, response parse, JSONL/CSV encode, template fill) are in
# benches/hot_paths.rs: `cargo bench --bench hot_paths`.

set -euo pipefail

LONG=1
BUILD=1
for arg in "$@"; do
    case "$arg" in
        --quick) LONG=0 ;;
        --long) LONG=1 ;;
        --skip-build) BUILD=0 ;;
        -h | --help)
            sed -n '2,20p' "$0"
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
BIN=$CARGO_TARGET_DIR/release/promptbatch
TMP=$(mktemp -d "${TMPDIR:-/tmp}/promptbatch-bench.XXXXXX")
SIM_PID=""
RESULTS=()  # Markdown table rows
COMMANDS=() # "figure: command"
# The runner reads its key from the environment; the simulator accepts any key.
export EVOLINK_API_KEY=bench-not-a-secret
unset PROMPTBATCH_BASE_URL

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
    stop_sim
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Tools

need() { # need COMMAND APT-PACKAGE
    command -v "$1" > /dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    if [[ ${APT_UPDATED:-0} == 0 ]]; then
        apt-get update -qq >&2
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
}
need wrk wrk
need /usr/bin/time time
need curl curl
need python3 python3

if [[ $BUILD == 1 ]]; then
    log "building the release binary (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x $BIN ]] || {
    echo "no binary at $BIN" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Simulator

start_sim() { # start_sim LATENCY → sets SIM_PID, PORT, BASE
    stop_sim
    local logf=$TMP/sim.log
    : > "$logf"
    "$BIN" mock-server --listen 127.0.0.1:0 --latency "$1" 2> "$logf" &
    SIM_PID=$!
    for _ in $(seq 1 100); do
        if grep -q 'listening on' "$logf"; then break; fi
        sleep 0.05
    done
    PORT=$(sed -n 's|.*http://127\.0\.0\.1:\([0-9]*\)/v1.*|\1|p' "$logf" | head -n 1)
    [[ -n $PORT ]] || {
        cat "$logf" >&2
        echo "the simulator did not start" >&2
        exit 1
    }
    BASE=http://127.0.0.1:$PORT/v1
    SIM_CMD="$BIN mock-server --listen 127.0.0.1:$PORT --latency $1"
}

stop_sim() {
    if [[ -n $SIM_PID ]]; then
        kill "$SIM_PID" 2> /dev/null || true
        wait "$SIM_PID" 2> /dev/null || true
        SIM_PID=""
    fi
}

sim_stats() { curl -sf "http://127.0.0.1:$PORT/_sim/stats"; }

# ---------------------------------------------------------------------------------------------
# Data (JSONL `{"prompt": ...}` without ids; every prompt distinct and exactly SIZE bytes)

gen_prompts() { # gen_prompts ROWS SIZE FILE
    python3 - "$@" << 'EOF'
import sys
rows, size, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
filler = ("Summarize this note in one sentence, keeping names and numbers: the order "
          "arrived late, the box was damaged and the blue mug inside was chipped. ") * 40
with open(path, "w", buffering=1 << 20) as f:
    for i in range(rows):
        head = f"row {i:09d}: "
        text = (head + filler)[:size]
        f.write('{"prompt":"' + text + '"}\n')
EOF
}

# ---------------------------------------------------------------------------------------------
# Measuring

now() { date +%s.%N; }

# timed NAME CMD... : runs CMD under GNU time; sets WALL (s), RSS_KB and RC; keeps stderr in
# $TMP/NAME.err. A non-zero exit code does not stop the script (the caller checks RC).
timed() {
    local name=$1
    shift
    local t0 t1
    t0=$(now)
    set +e
    /usr/bin/time -v -o "$TMP/$name.time" "$@" > "$TMP/$name.out" 2> "$TMP/$name.err"
    RC=$?
    set -e
    t1=$(now)
    WALL=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
    RSS_KB=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$TMP/$name.time")
}

calc() { python3 -c "print($1)"; }

# add FIGURE MEASURED TARGET PASS COMMAND
add() {
    local verdict=PASS
    [[ $4 == 1 ]] || verdict=MISS
    [[ $4 == skip ]] && verdict=SKIP
    RESULTS+=("| $1 | $2 | $3 | $verdict |")
    COMMANDS+=("$1: \`$5\`")
    log "$1: $2 (target $3) → $verdict"
}

run_cmd() { # run_cmd INPUT OUTPUT EXTRA... → the runner's command line, as an array RUN
    local input=$1 output=$2
    shift 2
    RUN=("$BIN" run "$input" -o "$output" --base-url "$BASE" -q "$@")
}

# ---------------------------------------------------------------------------------------------
# 1. Overhead: runner vs wrk against the same simulator at 0 ms, concurrency 64

log "generating data in $TMP"
gen_prompts 200000 32 "$TMP/short200k.jsonl"

start_sim 0ms
log "overhead: runner, 200,000 short rows, --concurrency 64"
run_cmd "$TMP/short200k.jsonl" "$TMP/short200k.out.jsonl" --concurrency 64
timed overhead "${RUN[@]}"
[[ $RC == 0 ]] || {
    cat "$TMP/overhead.err" >&2
    exit 1
}
RUNNER_RPS=$(calc "round(200000 / $WALL)")
RUNNER_CMD="${RUN[*]}"
OVERHEAD_SIM_CMD=$SIM_CMD

cat > "$TMP/post.lua" << 'EOF'
wrk.method = "POST"
wrk.body = '{"model":"gpt-5.2","messages":[{"role":"user","content":"row 000000001: Summarize th"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-not-a-secret"
EOF
start_sim 0ms
WRK_CMD="wrk -t2 -c64 -d10s -s $TMP/post.lua $BASE/chat/completions"
log "overhead: ceiling, $WRK_CMD"
$WRK_CMD > "$TMP/wrk.out" 2>&1
WRK_RPS=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$TMP/wrk.out")
WRK_RPS=$(calc "round($WRK_RPS)")
WRK_NON2XX=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p' "$TMP/wrk.out")
[[ -z $WRK_NON2XX ]] || log "warning: wrk saw $WRK_NON2XX non-2xx answers"
RATIO=$(calc "round($RUNNER_RPS / $WRK_RPS, 3)")
add "Overhead: runner throughput (200,000 rows × 32 B, -c 64, 0 ms)" "$RUNNER_RPS rows/s" "≥ 10,000 rows/s" \
    "$(calc "int($RUNNER_RPS >= 10000)")" "$RUNNER_CMD   (simulator: $OVERHEAD_SIM_CMD)"
add "Overhead: ceiling (wrk, same simulator, -c 64)" "$WRK_RPS req/s" "—" 1 "$WRK_CMD"
add "Overhead: runner / ceiling" "$RATIO" "≥ 0.5" "$(calc "int($RATIO >= 0.5)")" "(the two above)"

# ---------------------------------------------------------------------------------------------
# 2. Latency hiding: 200 ms simulator, --concurrency 256, 6,400 rows (ideal 1,280 rows/s)

gen_prompts 6400 32 "$TMP/short6400.jsonl"
start_sim 200ms
log "latency hiding: 6,400 rows at 200 ms, -c 256"
run_cmd "$TMP/short6400.jsonl" "$TMP/lat.out.jsonl" --concurrency 256
timed latency "${RUN[@]}"
[[ $RC == 0 ]] || {
    cat "$TMP/latency.err" >&2
    exit 1
}
LAT_RPS=$(calc "round(6400 / $WALL)")
LAT_PCT=$(calc "round(100 * $LAT_RPS / 1280, 1)")
# Requests that reached the simulator in the first wave (within 150 ms of the first one): when
# fewer than 256, some connections waited for a SYN retransmit (the simulator's listen backlog is
# 128), and those rows run one 200-ms wave late.
FIRST_WAVE=$(sim_stats | python3 -c '
import json, sys
a = sorted(t for t, s in json.load(sys.stdin)["arrivals"])
print(sum(1 for t in a if t < a[0] + 150))')
add "Latency hiding (6,400 rows, 200 ms, -c 256; ideal 1,280 rows/s)" "$LAT_RPS rows/s = $LAT_PCT % of ideal (wall $WALL s; first wave $FIRST_WAVE/256)" "≥ 95 %" \
    "$(calc "int($LAT_PCT >= 95)")" "${RUN[*]}   (simulator: $SIM_CMD)"

# ---------------------------------------------------------------------------------------------
# 3. Flat memory: peak RSS for 100,000 and 1,000,000 rows of 200-byte prompts

log "generating 100,000 and 1,000,000 rows of 200-byte prompts"
gen_prompts 100000 200 "$TMP/p100k.jsonl"
gen_prompts 1000000 200 "$TMP/p1m.jsonl"
start_sim 0ms
log "memory: 100,000 rows"
run_cmd "$TMP/p100k.jsonl" "$TMP/p100k.out.jsonl" --concurrency 64
timed mem100k "${RUN[@]}"
[[ $RC == 0 ]] || {
    cat "$TMP/mem100k.err" >&2
    exit 1
}
RSS100K=$RSS_KB
MEM100K_RPS=$(calc "round(100000 / $WALL)")
MEM100K_CMD="/usr/bin/time -v ${RUN[*]}"
start_sim 0ms
log "memory: 1,000,000 rows"
run_cmd "$TMP/p1m.jsonl" "$TMP/p1m.out.jsonl" --concurrency 64
timed mem1m "${RUN[@]}"
[[ $RC == 0 ]] || {
    cat "$TMP/mem1m.err" >&2
    exit 1
}
RSS1M=$RSS_KB
MEM1M_RPS=$(calc "round(1000000 / $WALL)")
MEM1M_RUN=("${RUN[@]}")
MEM_GROWTH=$(calc "round(100 * ($RSS1M - $RSS100K) / $RSS100K, 1)")
add "Peak RSS, 100,000 rows × 200 B" "$(calc "round($RSS100K / 1024, 1)") MB ($MEM100K_RPS rows/s)" "< 64 MB" \
    "$(calc "int($RSS100K < 64 * 1024)")" "$MEM100K_CMD"
add "Peak RSS, 1,000,000 rows × 200 B" "$(calc "round($RSS1M / 1024, 1)") MB ($MEM1M_RPS rows/s)" "< 64 MB" \
    "$(calc "int($RSS1M < 64 * 1024)")" "/usr/bin/time -v ${RUN[*]}"
add "Peak RSS growth 100k → 1M rows" "$MEM_GROWTH %" "within 10 %" \
    "$(calc "int(abs($MEM_GROWTH) <= 10)")" "(the two above)"

# ---------------------------------------------------------------------------------------------
# 4. Resume scan: re-run the 1M command with nothing left to do

log "resume scan: re-running the 1,000,000-row command"
timed resume "${MEM1M_RUN[@]}"
[[ $RC == 0 ]] || {
    cat "$TMP/resume.err" >&2
    exit 1
}
RESUME_SENT=$(sim_stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
add "Resume with nothing to do (1,000,000-record output)" "$WALL s, peak RSS $(calc "round($RSS_KB / 1024, 1)") MB" "< 3 s" \
    "$(calc "int($WALL < 3)")" "/usr/bin/time -v ${MEM1M_RUN[*]}   (second time; simulator requests in total: $RESUME_SENT)"
stop_sim

# ---------------------------------------------------------------------------------------------
# 5. Rate accuracy: --rpm 6000 and --tpm 600000 against the simulator's arrival timestamps

if [[ $LONG == 1 ]]; then WINDOW=60; else WINDOW=20; fi
STOP_AFTER=$((WINDOW + 3))

# rate_check KIND WINDOW_S LIMIT_PER_MIN TOKENS_PER_REQUEST: reads stats JSON on stdin, prints
# "max_in_window mean_per_min n"
rate_check() {
    python3 -c '
import json, sys
window_ms, per_req = int(sys.argv[1]) * 1000, int(sys.argv[2])
arr = sorted(t for t, s in json.load(sys.stdin)["arrivals"])
n = len(arr)
j = best = 0
for i in range(n):
    while j < n and arr[j] < arr[i] + window_ms:
        j += 1
    best = max(best, j - i)
span = (arr[-1] - arr[0]) / 60000.0
mean = (n - 1) / span if span > 0 else 0
print(best * per_req, round(mean * per_req), n)
' "$@"
}

log "rate accuracy: --rpm 6000 for ${WINDOW} s"
gen_prompts 7000 32 "$TMP/rpm.jsonl"
start_sim 0ms
run_cmd "$TMP/rpm.jsonl" "$TMP/rpm.out.jsonl" --concurrency 64 --rpm 6000
timed rpm timeout -s INT "$STOP_AFTER" "${RUN[@]}"
read -r RPM_MAX RPM_MEAN RPM_N < <(sim_stats | rate_check "$WINDOW" 1)
RPM_LIMIT=$((6000 * WINDOW / 60))
RPM_ERR=$(calc "round(100 * ($RPM_MEAN - 6000) / 6000, 2)")
add "--rpm 6000: max requests in any ${WINDOW}-s window" "$RPM_MAX (of $RPM_N arrivals)" "≤ $RPM_LIMIT" \
    "$(calc "int($RPM_MAX <= $RPM_LIMIT)")" "timeout -s INT $STOP_AFTER ${RUN[*]}"
add "--rpm 6000: mean rate over the run" "$RPM_MEAN /min ($RPM_ERR %)" "6000 ± 2 %" \
    "$(calc "int(abs($RPM_ERR) <= 2)")" "(same run)"

# 396-byte prompts: ⌈396/4⌉ + 4 = 103 estimated prompt tokens, + --max-tokens 97 = 200 per request,
# so --tpm 600000 allows 3,000 requests per minute.
log "rate accuracy: --tpm 600000 for ${WINDOW} s"
gen_prompts 4000 396 "$TMP/tpm.jsonl"
start_sim 0ms
run_cmd "$TMP/tpm.jsonl" "$TMP/tpm.out.jsonl" --concurrency 64 --tpm 600000 --max-tokens 97
timed tpm timeout -s INT "$STOP_AFTER" "${RUN[@]}"
read -r TPM_MAX TPM_MEAN TPM_N < <(sim_stats | rate_check "$WINDOW" 200)
TPM_LIMIT=$((600000 * WINDOW / 60))
TPM_ERR=$(calc "round(100 * ($TPM_MEAN - 600000) / 600000, 2)")
add "--tpm 600000 (200 tok/request): max tokens in any ${WINDOW}-s window" "$TPM_MAX (of $TPM_N arrivals)" "≤ $TPM_LIMIT" \
    "$(calc "int($TPM_MAX <= $TPM_LIMIT)")" "timeout -s INT $STOP_AFTER ${RUN[*]}"
add "--tpm 600000: mean rate over the run" "$TPM_MEAN tok/min ($TPM_ERR %)" "600000 ± 2 %" \
    "$(calc "int(abs($TPM_ERR) <= 2)")" "(same run)"
stop_sim

# ---------------------------------------------------------------------------------------------
# 6. Estimate: 1,000,000 short prompts (skipped when `estimate` fails, e.g. not implemented)

log "estimate: 1,000,000 short prompts"
gen_prompts 1000000 32 "$TMP/short1m.jsonl"
EST_CMD=("$BIN" estimate "$TMP/short1m.jsonl")
timed estimate "${EST_CMD[@]}"
if [[ $RC == 0 ]]; then
    add "estimate, 1,000,000 short prompts" "$WALL s" "< 60 s" "$(calc "int($WALL < 60)")" "${EST_CMD[*]}"
else
    add "estimate, 1,000,000 short prompts" "skipped: exit $RC: $(head -c 120 "$TMP/estimate.err" | tr '\n' ' ')" "< 60 s" skip "${EST_CMD[*]}"
fi

# ---------------------------------------------------------------------------------------------
# Report

echo "## promptbatch benchmarks — $(date -u +%Y-%m-%d), $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)"
echo
echo "| Figure | Measured | Target | |"
echo "|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
echo
echo "Commands (\`$TMP\` was the temp dir; the simulator runs as a separate process):"
echo
for c in "${COMMANDS[@]}"; do echo "- $c"; done
if [[ $LONG == 0 ]]; then
    echo
    echo "Rate windows are ${WINDOW} s (--quick; limits scaled: 6000/min → $RPM_LIMIT, 600000/min → $TPM_LIMIT per window); without --quick they are the real 60 s."
fi
