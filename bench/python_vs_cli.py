"""Rows/s of the Python package against the command line, in pairs (Python, then the CLI, on the
same input, alternating, so a drift in the machine's speed hits both): 200,000 JSONL rows
through the built-in simulator (`dry_run`) at concurrency 256, as a path and as a pandas frame.
The CLI is the `promptbatch` the wheel installed beside this Python, so both are one build.

    python bench/python_vs_cli.py [PAIRS]     # in a venv with the wheel and pandas installed

Prints each median rows/s and the median, min and max of the per-pair ratio Python/CLI."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd
import promptbatch

N = 200000
WORK = tempfile.mkdtemp(prefix="pb-python-bench-")
INPUT = os.path.join(WORK, "b200k.jsonl")
with open(INPUT, "w") as f:
    for i in range(N):
        f.write(json.dumps({"id": f"r{i}", "prompt": f"Summarize item {i}: the quick brown fox jumps over the lazy dog"}) + "\n")
df = pd.read_json(INPUT, lines=True, dtype={"id": str})
exe = os.path.join(os.path.dirname(sys.executable), "promptbatch")


def py(data):
    out = os.path.join(WORK, "py.jsonl")
    if os.path.exists(out):
        os.remove(out)
    t = time.perf_counter()
    s = promptbatch.run(data, out, dry_run=True, concurrency=256, quiet=True, handle_signals=False)
    rate = N / (time.perf_counter() - t)
    assert s["ok"] == N and sum(1 for _ in open(out)) == N
    return rate


def cli():
    out = os.path.join(WORK, "cli.jsonl")
    if os.path.exists(out):
        os.remove(out)
    t = time.perf_counter()
    subprocess.run([exe, "run", INPUT, "-o", out, "--dry-run", "-c", "256", "-q"], check=True, stderr=subprocess.DEVNULL)
    rate = N / (time.perf_counter() - t)
    assert sum(1 for _ in open(out)) == N
    return rate


pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
for name, data in [("path", INPUT), ("pandas", df)]:
    rows = [(py(data), cli()) for _ in range(pairs)]
    ratios = [p / c for p, c in rows]
    print(f"{name}: python {statistics.median(p for p, _ in rows):,.0f} rows/s, cli {statistics.median(c for _, c in rows):,.0f} rows/s, "
          f"ratio median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}), {pairs} pairs")
shutil.rmtree(WORK)
