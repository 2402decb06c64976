#!/usr/bin/env bash
# `report --html` over large outputs: writes synthetic outputs of 1M and 10M records with their
# event logs (bench/html_report_data.py: the record schema `run` writes, an 8-hour night with an
# outage hour), then times `report --json --html` on each (wall, peak RSS by GNU time, page
# size) and `report --json` alone on 1M. Needs ≈ 8 GB of free disk for 10M (SIZES="1000000"
# for 1M only). Usage: bash bench/html_report.sh [--skip-build]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--skip-build" ] || cargo build --release --locked --quiet
bin="$PWD/target/release/promptbatch"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
work="$(mktemp -d)"
trap '[ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"
timed() {
  local label=$1; shift
  /usr/bin/time -v "$@" >/dev/null 2>"$work/time.txt"
  echo "$label: wall $(grep 'Elapsed (wall' "$work/time.txt" | awk '{print $NF}'), peak $(( $(grep 'Maximum resident' "$work/time.txt" | awk '{print $NF}') / 1024 )) MiB"
}
for n in ${SIZES:-1000000 10000000}; do
  out="$work/out$n.jsonl"
  python3 bench/html_report_data.py "$n" "$out"
  for run in 1 2; do
    timed "$n records, report --json --html (run $run)" "$bin" report "$out" --json --html "$out.html"
    echo "  page: $(stat -c %s "$out.html") bytes"
  done
  [ "$n" != 1000000 ] || timed "$n records, report --json alone" "$bin" report "$out" --json
  rm -f "$out" "$out.events.jsonl"
done
