#!/usr/bin/env bash
# CPU per row of `promptbatch run` (issue 15, point 4), under the issue's conditions.
#
# Usage:   bench/cpu.sh [--rows N] [--runs K] [--skip-build] [--runner PATH] [--no-wrk] [--model LIST]
#   --rows N       rows of input (default 200000)
#   --runs K       runs of the runner, each reported (default 1); the ceiling is measured once,
#                  right after the last run, so the ratio is taken within a minute
#   --skip-build   use the existing release binary instead of running `cargo build --release`
#   --runner PATH  measure this binary as the runner (e.g. an older build); the simulator is
#                  always the freshly built one
#   --no-wrk       skip the ceiling (wrk) measurement
#   --model LIST   pass `--model LIST` to the runner (e.g. `a,b`: each row to two models); the
#                  per-row CPU columns are then per request, (row, model), and rows/s counts
#                  input rows (requests/s = rows/s × models)
# Env:     CARGO_TARGET_DIR (default: the repo's target/), BENCH_KEEP=1 keeps the temp dir.
#
# Conditions: JSONL input, every line `{"id":"r000000001","prompt":"…"}` with a 200-byte prompt;
# the built-in simulator as its own process on 127.0.0.1 at 0 ms latency, answering every
# request with the gateway's reference response (683 bytes) sent with `Transfer-Encoding:
# chunked` (`mock-server --latency 0ms --answer seed --chunked`); the runner with
# `--concurrency 64`, run under GNU time. Prints rows/s, the runner process's user, system and
# total CPU per row (µs; robust to other load on the machine, unlike rows/s), its peak RSS,
# checks that every row came back as an ok record, and measures the ceiling — the same
# simulator under `wrk -t2 -c64` — and the runner / ceiling ratio. Output is Markdown on stdout;
# progress goes to stderr.

set -euo pipefail

ROWS=200000
RUNS=1
BUILD=1
RUNNER=""
WRK=1
MODEL=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rows)
            ROWS=$2
            shift
            ;;
        --runs)
            RUNS=$2
            shift
            ;;
        --skip-build) BUILD=0 ;;
        --runner)
            RUNNER=$2
            shift
            ;;
        --no-wrk) WRK=0 ;;
        --model)
            MODEL=$2
            shift
            ;;
        -h | --help)
            sed -n '2,25p' "$0"
            exit 0
            ;;
        *)
            echo "unknown option: $1 (see --help)" >&2
            exit 2
            ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release/promptbatch
TMP=$(mktemp -d "${TMPDIR:-/tmp}/promptbatch-cpu.XXXXXX")
SIM_PID=""
# The runner reads its key from the environment; the simulator accepts any key.
export EVOLINK_API_KEY=bench-not-a-secret
unset PROMPTBATCH_BASE_URL

log() { printf '[cpu %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stop_sim() {
    if [[ -n $SIM_PID ]]; then
        kill "$SIM_PID" 2> /dev/null || true
        wait "$SIM_PID" 2> /dev/null || true
        SIM_PID=""
    fi
}

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

need() { # need COMMAND APT-PACKAGE
    command -v "$1" > /dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    if [[ ${APT_UPDATED:-0} == 0 ]]; then
        apt-get update -qq >&2
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
}
need /usr/bin/time time
need python3 python3
[[ $WRK == 0 ]] || need wrk wrk

if [[ $BUILD == 1 ]]; then
    log "building the release binary (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x $BIN ]] || {
    echo "no binary at $BIN" >&2
    exit 1
}
RUNNER=${RUNNER:-$BIN}

calc() { python3 -c "print($1)"; }

# The simulator, as its own process: sets SIM_PID, BASE, SIM_CMD.
start_sim() {
    stop_sim
    local logf=$TMP/sim.log
    : > "$logf"
    "$BIN" mock-server --listen 127.0.0.1:0 --latency 0ms --answer seed --chunked 2> "$logf" &
    SIM_PID=$!
    for _ in $(seq 1 100); do
        if grep -q 'listening on' "$logf"; then break; fi
        sleep 0.05
    done
    local port
    port=$(sed -n 's|.*http://127\.0\.0\.1:\([0-9]*\)/v1.*|\1|p' "$logf" | head -n 1)
    [[ -n $port ]] || {
        cat "$logf" >&2
        echo "the simulator did not start" >&2
        exit 1
    }
    BASE=http://127.0.0.1:$port/v1
    SIM_CMD="promptbatch mock-server --listen 127.0.0.1:0 --latency 0ms --answer seed --chunked"
}

log "generating $ROWS rows (ids, 200-byte prompts) in $TMP"
python3 - "$ROWS" "$TMP/in.jsonl" << 'EOF'
import sys
rows, path = int(sys.argv[1]), sys.argv[2]
filler = ("Summarize this note in one sentence, keeping names and numbers: the order "
          "arrived late, the box was damaged and the blue mug inside was chipped. ") * 4
with open(path, "w", buffering=1 << 20) as f:
    for i in range(rows):
        text = (f"row {i:09d}: " + filler)[:200]
        f.write('{"id":"r' + f"{i:09d}" + '","prompt":"' + text + '"}\n')
EOF

start_sim
echo "## promptbatch CPU per row — $(date -u "+%Y-%m-%d %H:%M") UTC, $(nproc) cores, load $(cut -d" " -f1-3 /proc/loadavg), tree $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown), runner $RUNNER"
echo
echo "Conditions: $ROWS JSONL rows with ids, 200-byte prompts; simulator \`$SIM_CMD\` (683-byte answers, chunked) on 127.0.0.1, its own process; runner \`-c 64\`; CPU is the runner process's only${MODEL:+; runner \`--model $MODEL\`: rows/s counts input rows, CPU columns are per (row, model) request}."
echo
echo "| run | rows/s | user µs/row | sys µs/row | user+sys µs/row | peak RSS | ok records |"
echo "|---|---|---|---|---|---|---|"
RUN_CMD=""
MODEL_ARGS=()
MODELS=1
if [[ -n $MODEL ]]; then
    MODEL_ARGS=(--model "$MODEL")
    MODELS=$(awk -F, '{print NF}' <<< "$MODEL")
fi
REQUESTS=$((ROWS * MODELS))
for run in $(seq 1 "$RUNS"); do
    rm -f "$TMP/out.jsonl"
    RUN=("$RUNNER" run "$TMP/in.jsonl" -o "$TMP/out.jsonl" --base-url "$BASE" -q -c 64 "${MODEL_ARGS[@]}")
    RUN_CMD="/usr/bin/time -v ${RUN[*]}"
    log "run $run/$RUNS: $RUN_CMD"
    set +e
    /usr/bin/time -v -o "$TMP/time" "${RUN[@]}" > "$TMP/run.out" 2> "$TMP/run.err"
    rc=$?
    set -e
    [[ $rc == 0 ]] || {
        cat "$TMP/run.err" >&2
        echo "the runner failed (exit $rc)" >&2
        exit 1
    }
    field() { sed -n "s/^[[:space:]]*$1: //p" "$TMP/time"; }
    USER_S=$(field 'User time (seconds)')
    SYS_S=$(field 'System time (seconds)')
    WALL=$(field 'Elapsed (wall clock) time (h:mm:ss or m:ss)')
    RSS_KB=$(field 'Maximum resident set size (kbytes)')
    WALL_S=$(calc "sum(float(p) * 60 ** i for i, p in enumerate(reversed('$WALL'.split(':'))))")
    OK=$(grep -c '"status":"ok"' "$TMP/out.jsonl" || true)
    RPS=$(calc "round($ROWS / $WALL_S)")
    RUNNER_RPS=$RPS
    U=$(calc "round($USER_S * 1e6 / $REQUESTS, 1)")
    S=$(calc "round($SYS_S * 1e6 / $REQUESTS, 1)")
    T=$(calc "round(($USER_S + $SYS_S) * 1e6 / $REQUESTS, 1)")
    echo "| $run | $RPS | $U | $S | $T | $(calc "round($RSS_KB / 1024, 1)") MB | $OK / $REQUESTS |"
    [[ $OK == "$REQUESTS" ]] || {
        echo "only $OK of $REQUESTS requests came back ok" >&2
        exit 1
    }
done
echo
echo "Runner: \`$RUN_CMD\`"

if [[ $WRK == 1 ]]; then
    PROMPT=$(head -n 1 "$TMP/in.jsonl" | python3 -c 'import json, sys; print(json.load(sys.stdin)["prompt"])')
    cat > "$TMP/post.lua" << EOF
wrk.method = "POST"
wrk.body = '{"model":"gpt-5.2","messages":[{"role":"user","content":"$PROMPT"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-not-a-secret"
EOF
    start_sim
    WRK_CMD="wrk -t2 -c64 -d10s -s $TMP/post.lua $BASE/chat/completions"
    log "ceiling: $WRK_CMD"
    $WRK_CMD > "$TMP/wrk.out" 2>&1
    WRK_RPS=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$TMP/wrk.out")
    WRK_RPS=$(calc "round($WRK_RPS)")
    NON2XX=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p' "$TMP/wrk.out")
    [[ -z $NON2XX ]] || log "warning: wrk saw $NON2XX non-2xx answers"
    echo
    echo "Ceiling: $WRK_RPS req/s (\`$WRK_CMD\`, the same simulator mode); runner / ceiling (last run) = $(calc "round($RUNNER_RPS / $WRK_RPS, 3)")"
fi
