#!/usr/bin/env bash
# Prompt caches: the cached share of prompt tokens and the dollars the cache saved, with and
# without the warm-first gate (`src/live/prefix_gate.rs`; `PROMPTBATCH_PREFIX_GATE=off` turns it
# off), against the simulator's prefix cache (`--dry-run-prefix-cache recent`, the default: a
# prefix of >= 1,024 tokens is cached once a request with it was answered, in steps of 128).
#
# Usage:   bench/prompt_cache.sh [--skip-build]
# Env:     CARGO_TARGET_DIR (default: the repo's target/), ROWS (10000), LATENCY (200ms),
#          CONCURRENCY (64), BENCH_KEEP=1 keeps the temp dir.
#
# Two inputs of ROWS rows, each run with the gate on and off (`run --dry-run`, the simulator in
# the process, answering in LATENCY):
#   shared   one ~2,000-token system prompt for every row (the issue's target: >= 90 % cached)
#   grouped  100 prefixes (a system prompt and a few-shot block, ~2,000 tokens each), the rows
#            of each prefix one after the other
# Prints a Markdown table on stdout; progress on stderr. About 3 minutes on 2 cores.

set -euo pipefail

source "$(dirname "$0")/lib.sh"
bench_init cache 17 "$@"
ROWS=${ROWS:-10000}
LATENCY=${LATENCY:-200ms}
CONCURRENCY=${CONCURRENCY:-64}

log "generating $ROWS rows (shared and grouped prefixes) in $TMP"
python3 - "$ROWS" "$TMP" << 'EOF'
import json, sys
rows, tmp = int(sys.argv[1]), sys.argv[2]
# ~2,000 estimated tokens (bytes / 4) of instructions.
system = ("You label support tickets by urgency and product area. Answer with one word. " * 110)[:8000]
with open(f"{tmp}/shared.jsonl", "w") as f:
    for i in range(rows):
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": f"ticket {i}: my order {i * 7919 % 100000} is late"}]
        f.write(json.dumps({"id": f"s{i}", "messages": messages}) + "\n")
groups = 100
per_group = max(1, rows // groups)
with open(f"{tmp}/grouped.jsonl", "w") as f:
    for i in range(rows):
        g = min(i // per_group, groups - 1)
        shots = []
        for k in range(8):
            shots.append({"role": "user", "content": f"[group {g}] example ticket {k}: " + "the parcel has not arrived yet. " * 25})
            shots.append({"role": "assistant", "content": f"late-{g}-{k}"})
        messages = [{"role": "system", "content": f"Group {g}. " + system[:1200]}] + shots + \
            [{"role": "user", "content": f"ticket {i}: where is my order?"}]
        f.write(json.dumps({"id": f"g{i}", "messages": messages}) + "\n")
EOF

RESULTS=()
measure() { # measure INPUT GATE
    local input=$1 gate=$2 out=$TMP/$1-$2.jsonl
    log "$input, gate $gate: $ROWS rows, -c $CONCURRENCY, answers in $LATENCY"
    local t0 t1
    t0=$(date +%s.%N)
    PROMPTBATCH_PREFIX_GATE=$gate "$BIN" run "$TMP/$input.jsonl" -o "$out" --dry-run \
        --dry-run-latency "$LATENCY" -c "$CONCURRENCY" -q --no-event-log > /dev/null 2> "$TMP/run.log" || {
        cat "$TMP/run.log" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    "$BIN" report --json "$out" > "$TMP/report.json"
    RESULTS+=("$(python3 - "$out" "$TMP/report.json" "$t0" "$t1" "$input" "$gate" << 'EOF'
import json, sys
out, report, t0, t1, name, gate = sys.argv[1:]
records = [json.loads(l) for l in open(out)]
misses = sum(1 for r in records if r["cached_tokens"] == 0)
rep = json.load(open(report))
pc = rep["prompt_cache"]
cost = rep["cost"]["simulated_usd"]
secs = float(t1) - float(t0)
print(f"| {name} | {gate} | {len(records):,} | {misses:,} | {rep['tokens']['prompt']:,} | "
      f"{pc['cached_share'] * 100:.1f} % | ${pc['simulated_saved_usd']:.2f} | ${cost:.2f} | {secs:.1f} s |")
EOF
)")
}

for input in shared grouped; do
    for gate in on off; do
        measure "$input" "$gate"
    done
done

COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2> /dev/null || echo unknown)
echo "Prompt caches, $(date +%F), commit $COMMIT, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg):"
echo "\`run --dry-run --dry-run-latency $LATENCY -c $CONCURRENCY\`, $ROWS rows, gpt-5.2 rates (\$1.75 / \$0.175 cached per 1M input tokens)"
echo
echo "| input | gate | rows | rows not cached | prompt tokens | cached share | \$ saved by the cache | cost | wall time |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${RESULTS[@]}"
