#!/usr/bin/env bash
# Shared pieces of the benchmark scripts (sourced, not run): their one option, the release
# binary, a temporary data folder removed at exit, a `promptbatch mock-server` in its own
# process, and timed commands with GNU time's peak RSS.
#
#   source "$(dirname "$0")/lib.sh"
#   bench_init NAME HELP_LAST_LINE "$@"   # --skip-build / --help; ROOT, BIN, TMP; builds
#   start_sim [mock-server flags…]        # BASE=http://127.0.0.1:PORT/v1, PORT
#   timed NAME CMD…                       # WALL (s), RSS_MB, RC; output in $TMP/NAME.{out,err}
#
# Env: CARGO_TARGET_DIR (default: the repo's target/), BIN (default: its release binary),
# BENCH_KEEP=1 keeps the data folder, TMPDIR (where it goes).

log() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }

SIM_PID=""
stop_sim() {
    if [[ -n $SIM_PID ]]; then
        kill "$SIM_PID" 2> /dev/null || true
        wait "$SIM_PID" 2> /dev/null || true
        SIM_PID=""
    fi
}

bench_cleanup() {
    stop_sim
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}

# bench_init NAME HELP_LAST_LINE ARGS…: the script's options (`--skip-build`; `--help` prints
# its header comment, lines 2..HELP_LAST_LINE), its folders and binary, built unless skipped.
bench_init() {
    BENCH_NAME=$1
    local help_last=$2 build=1 arg
    shift 2
    for arg in "$@"; do
        case "$arg" in
            --skip-build) build=0 ;;
            -h | --help)
                sed -n "2,${help_last}p" "$0"
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
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/promptbatch-$BENCH_NAME.XXXXXX")
    export EVOLINK_API_KEY=bench-not-a-secret
    unset PROMPTBATCH_BASE_URL
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    if [[ $build == 1 ]]; then
        log "building the release binary (cargo build --release)"
        (cd "$ROOT" && cargo build --release --quiet)
    fi
    [[ -x $BIN ]] || {
        echo "no binary at $BIN" >&2
        exit 1
    }
    [[ -x /usr/bin/time ]] || {
        echo "needs GNU time (/usr/bin/time: apt-get install time)" >&2
        exit 1
    }
}

# start_sim FLAGS…: a fresh `promptbatch mock-server` on a free loopback port (0-ms answers
# unless FLAGS say otherwise); sets PORT and BASE.
start_sim() {
    stop_sim
    "$BIN" mock-server --listen 127.0.0.1:0 --latency 0ms "$@" 2> "$TMP/sim.log" &
    SIM_PID=$!
    for _ in $(seq 1 100); do
        grep -q 'listening on' "$TMP/sim.log" && break
        sleep 0.05
    done
    PORT=$(sed -n 's|.*http://127\.0\.0\.1:\([0-9]*\)/v1.*|\1|p' "$TMP/sim.log" | head -n 1)
    BASE=http://127.0.0.1:$PORT/v1
}

# timed NAME CMD…: runs CMD (stdout and stderr to $TMP/NAME.out and .err); sets WALL (seconds),
# RSS_MB (GNU time's maximum resident set size) and RC (its exit code).
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
    log "$name: $RSS_MB MB, $WALL s, exit $RC"
}
