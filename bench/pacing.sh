#!/usr/bin/env bash
# Adaptive pacing under pressure (issue 11): the runner against the built-in simulator's 429s.
#
# Usage:   bench/pacing.sh [--skip-build] [--only sporadic|window|halving|minute]
# Env:     CARGO_TARGET_DIR (default: the repo's target/), BENCH_KEEP=1 keeps the temp dir.
#
# Prints a Markdown table (stdout) of the three targets with their conditions:
#   1. sporadic 429s (0.5 % and 2 % of attempts, Retry-After 1 s), 100 ms answers, -c 64,
#      4,000 rows: rows/s as a share of the clean run's (target ≥ 80 %);
#   2. a real sliding-window limit, 1,200 RPM over a 10-s window (200 per window), 200 ms
#      answers, -c 64, 2,000 rows, no --rpm: ok rows per minute of wall time as a share of the
#      limit (target ≥ 90 %) and the share of attempts answered 429 (target ≤ 3 %); without and
#      with OpenAI's x-ratelimit-* headers;
#   3. a limit that halves and recovers (1,200 → 600 RPM at 30 s → 1,200 at 60 s, 10-s window,
#      200 ms answers, -c 64, 90 s): seconds after each change until the success rate over the
#      next 5 s is within 85–110 % of the new limit (target ≤ 10 s each way); without and with
#      headers.
#   4. a LiteLLM-like per-minute limit (the proxy's `rpm: 30`: a counter per UTC minute that
#      refused requests increment too, every 429 advising `retry-after: 60`; --limit-style fixed),
#      100–300 ms answers, -c 16, 40 rows started in a minute's first seconds: all 40 ok within
#      150 s (the 60-s advice must be waited once; a controller that measured the server's rate
#      over 10 s once stalled here at a request a minute); without and with the proxy's
#      x-ratelimit-limit/remaining headers.
# Every figure is one run; ratios are taken within the same script run. About 13 minutes.

set -euo pipefail

BUILD=1
ONLY=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --skip-build) BUILD=0 ;;
        --only)
            ONLY=$2
            shift
            ;;
        -h | --help)
            sed -n '2,28p' "$0"
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
TMP=$(mktemp -d "${TMPDIR:-/tmp}/promptbatch-pacing.XXXXXX")
SIM_PID=""
RESULTS=()
export EVOLINK_API_KEY=bench-not-a-secret
unset PROMPTBATCH_BASE_URL

log() { printf '[pacing %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

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

command -v python3 > /dev/null || {
    echo "python3 is needed" >&2
    exit 1
}
command -v curl > /dev/null || {
    echo "curl is needed" >&2
    exit 1
}
if [[ $BUILD == 1 ]]; then
    log "building the release binary (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet)
fi

start_sim() { # start_sim SIM-ARGS... → SIM_PID, PORT, BASE, SIM_CMD
    stop_sim
    local logf=$TMP/sim.log
    : > "$logf"
    "$BIN" mock-server --listen 127.0.0.1:0 "$@" 2> "$logf" &
    SIM_PID=$!
    for _ in $(seq 1 100); do
        if grep -q 'listening on' "$logf"; then break; fi
        sleep 0.05
    done
    PORT=$(sed -n 's|.*http://127\.0\.0\.1:\([0-9]*\)/v1.*|\1|p' "$logf" | head -n 1)
    [[ -n $PORT ]] || {
        cat "$logf" >&2
        exit 1
    }
    BASE=http://127.0.0.1:$PORT/v1
    SIM_CMD="promptbatch mock-server $*"
}

stats() { curl -sf "http://127.0.0.1:$PORT/_sim/stats" > "$TMP/stats.json"; }

gen() { # gen ROWS FILE
    python3 -c '
import sys
with open(sys.argv[2], "w") as f:
    for i in range(int(sys.argv[1])):
        f.write("{\"prompt\":\"row %06d: say something short\"}\n" % i)
' "$1" "$2"
}

# run_timed NAME ARGS... : runs the runner against $BASE; sets WALL and OK (ok records).
run_timed() {
    local name=$1
    shift
    local t0 t1
    rm -f "$TMP/$name.out.jsonl"
    t0=$(date +%s.%N)
    set +e
    "$BIN" run "$@" -o "$TMP/$name.out.jsonl" --base-url "$BASE" -q 2> "$TMP/$name.err"
    RC=$?
    set -e
    t1=$(date +%s.%N)
    WALL=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
    OK=$(grep -c '"status":"ok"' "$TMP/$name.out.jsonl" || true)
    RUN_CMD="promptbatch run $* -o OUT --base-url SIM -q"
    log "$name: exit $RC, $OK ok rows in $WALL s; $(grep -h '^rate limits' "$TMP/$name.err" || echo 'no 429s')"
}

add() { # add FIGURE CONDITIONS MEASURED TARGET PASS
    local verdict=PASS
    [[ $5 == 1 ]] || verdict=MISS
    RESULTS+=("| $1 | $2 | $3 | $4 | $verdict |")
    log "$1: $3 (target $4) → $verdict"
}

calc() { python3 -c "print($1)"; }

# ---------------------------------------------------------------------------------------------
# 1. Sporadic 429s

if [[ -z $ONLY || $ONLY == sporadic ]]; then
    gen 4000 "$TMP/sporadic.jsonl"
    declare -A RPS
    for rate in 0 0.005 0.02; do
        start_sim --latency 100ms --rate-429 "$rate" --retry-after 1s
        run_timed "sporadic-$rate" "$TMP/sporadic.jsonl" -c 64
        [[ $OK == 4000 ]] || {
            cat "$TMP/sporadic-$rate.err" >&2
            exit 1
        }
        stats
        N429=$(python3 -c 'import json; a=json.load(open("'"$TMP"'/stats.json"))["arrivals"]; print(sum(1 for t,s in a if s==429))')
        RPS[$rate]=$(calc "round(4000 / $WALL, 1)")
        COND="4,000 rows, 100 ms answers, -c 64, $rate × attempts → 429 + Retry-After 1 s ($N429 429s); \`$SIM_CMD\`"
        if [[ $rate == 0 ]]; then
            add "sporadic: clean run" "$COND" "${RPS[$rate]} rows/s (${WALL} s)" "—" 1
        else
            PCT=$(calc "round(100 * ${RPS[$rate]} / ${RPS[0]}, 1)")
            add "sporadic: $(calc "$rate * 100") % 429s" "$COND" "${RPS[$rate]} rows/s = $PCT % of clean (${WALL} s)" "≥ 80 %" "$(calc "int($PCT >= 80)")"
        fi
    done
fi

# ---------------------------------------------------------------------------------------------
# 2. A sliding-window limit: 1,200 RPM over 10 s

if [[ -z $ONLY || $ONLY == window ]]; then
    gen 2000 "$TMP/window.jsonl"
    for headers in "" "--rate-headers"; do
        # shellcheck disable=SC2086
        start_sim --latency 200ms --limit-rpm 1200 --limit-window 10s $headers
        run_timed window "$TMP/window.jsonl" -c 64
        [[ $OK == 2000 ]] || {
            cat "$TMP/window.err" >&2
            exit 1
        }
        stats
        read -r ATTEMPTS N429 < <(python3 -c 'import json; a=json.load(open("'"$TMP"'/stats.json"))["arrivals"]; print(len(a), sum(1 for t,s in a if s==429))')
        PCT=$(calc "round(100 * 2000 / $WALL * 60 / 1200, 1)")
        SHARE=$(calc "round(100 * $N429 / $ATTEMPTS, 2)")
        LABEL="without headers"
        [[ -n $headers ]] && LABEL="with x-ratelimit-* headers"
        add "sliding window, $LABEL" "2,000 rows, limit 1,200 RPM over a 10-s window, 200 ms answers, -c 64, no --rpm; \`$SIM_CMD\`" \
            "$PCT % of the limit ($(calc "round(2000 / $WALL * 60)") rows/min, $WALL s); $N429 of $ATTEMPTS attempts 429 = $SHARE %" \
            "≥ 90 %, ≤ 3 %" "$(calc "int($PCT >= 90 and $SHARE <= 3)")"
    done
fi

# ---------------------------------------------------------------------------------------------
# 3. A limit that halves at 30 s and recovers at 60 s

if [[ -z $ONLY || $ONLY == halving ]]; then
    gen 3000 "$TMP/halving.jsonl"
    for headers in "" "--rate-headers"; do
        # shellcheck disable=SC2086
        start_sim --latency 200ms --limit-rpm 1200,600@30s,1200@60s --limit-window 10s $headers
        set +e
        timeout -s INT 92 "$BIN" run "$TMP/halving.jsonl" -o "$TMP/halving.out.jsonl" --base-url "$BASE" -q -c 64 \
            2> "$TMP/halving.err"
        set -e
        stats
        read -r DOWN UP N429 ATTEMPTS < <(python3 -c '
import json
a = json.load(open("'"$TMP"'/stats.json"))["arrivals"]
t0 = a[0][0]
ok = [0] * 200
for t, s in a:
    if s == 200:
        ok[(t - t0) // 1000] += 1
def settle(change, limit):
    for s in range(0, 25):
        rate = sum(ok[change + s:change + s + 5]) / 5
        if 0.85 * limit <= rate <= 1.10 * limit:
            return s
    return 99
print(settle(30, 10), settle(60, 20), sum(1 for t, s in a if s == 429), len(a))')
        LABEL="without headers"
        [[ -n $headers ]] && LABEL="with x-ratelimit-* headers"
        add "limit halves and recovers, $LABEL" "1,200 → 600 RPM at 30 s → 1,200 at 60 s (10-s window), 200 ms answers, -c 64, 90 s; \`$SIM_CMD\`" \
            "follows the halving in $DOWN s, the recovery in $UP s; $N429 of $ATTEMPTS attempts 429" \
            "≤ 10 s each way" "$(calc "int($DOWN <= 10 and $UP <= 10)")"
    done
fi

# ---------------------------------------------------------------------------------------------
# 4. A LiteLLM-like per-minute limit: 30 RPM, fixed UTC-minute window, retry-after 60

if [[ -z $ONLY || $ONLY == minute ]]; then
    gen 40 "$TMP/minute.jsonl"
    for headers in "" "--rate-headers"; do
        # shellcheck disable=SC2086
        start_sim --latency 100ms..300ms --limit-rpm 30 --limit-style fixed --error-style litellm $headers
        second=$((10#$(date -u +%S)))
        if ((second > 3)); then
            log "minute: waiting $((61 - second)) s for the next UTC minute (the limit's window)"
            sleep $((61 - second))
        fi
        set +e
        timeout -s INT 200 "$BIN" run "$TMP/minute.jsonl" -o "$TMP/minute.out.jsonl" --base-url "$BASE" -q -c 16 \
            2> "$TMP/minute.err"
        set -e
        OK=$(grep -c '"status":"ok"' "$TMP/minute.out.jsonl" || true)
        stats
        read -r WALL N429 ATTEMPTS < <(python3 -c '
import json
a = json.load(open("'"$TMP"'/stats.json"))["arrivals"]
print(round((a[-1][0] - a[0][0]) / 1000), sum(1 for t, s in a if s == 429), len(a))')
        rm -f "$TMP/minute.out.jsonl"
        LABEL="without headers"
        [[ -n $headers ]] && LABEL="with LiteLLM's x-ratelimit-limit/remaining headers"
        add "per-minute limit (LiteLLM-like), $LABEL" "40 rows, 30 RPM counted per UTC minute (refused requests count), 429 advising 60 s, 100–300 ms answers, -c 16, started at second ≤ 3; \`$SIM_CMD\`" \
            "$OK of 40 ok, first to last request $WALL s; $N429 of $ATTEMPTS attempts 429" \
            "40 ok, ≤ 150 s" "$(calc "int($OK == 40 and $WALL <= 150)")"
    done
fi

echo "## promptbatch pacing benchmark — $(date -u +%Y-%m-%d), $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)"
echo
echo "| Figure | Conditions | Measured | Target | |"
echo "|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
echo
echo "Runner: \`promptbatch run ROWS.jsonl -o OUT --base-url SIM -q -c 64\` (release build); the simulator is a separate process on 127.0.0.1."
