#!/usr/bin/env python3
"""promptbatch against an independent fault server (`../shared/servers/faultsrv.py`, not ours).

Each case starts faultsrv on a free loopback port with its own faults, runs the promptbatch
binary through it and checks what a user would check the morning after, from counts:

- every input row has exactly one record (rows in = records out), and every ok record holds
  its own row's answer (faultsrv answers `ANSWER:<sha256(prompt)[:16]>`);
- the server's retry advice was never broken: no row was sent again sooner than a 429 it got
  advised (faultsrv's request log, `retry_after`);
- a re-run never removes a record that was on disk, and the breaker cases end with exit 3;
- rows repeating a request (case `dedup`): each question is answered once (but for rows in
  flight at a `kill -9`), every row still gets one record with its own question's answer, and
  `--reuse` of that output sends only the questions that had no ok answer.

Throughput is printed as a ratio to the clean run of the same script run (rows/s), never
asserted: timing lives in the README's Performance table, not in a check that could flake.

Usage: faultsrv_check.py --bin target/release/promptbatch [--mode ci|bench] [--only NAME]
  ci    (default) 3,000 rows per random-429 case; the whole check takes a few minutes.
  bench 20,000 rows per random-429 case (the issue's targets); about half an hour.
Exit 0 when every check passes; 1 otherwise, with each failure named.
"""
import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "servers"))
KEY = "sk-faultsrv-test-key"

FAILURES = []
TABLE = []


def fail(case, what):
    FAILURES.append(f"{case}: {what}")
    print(f"  FAIL {case}: {what}", flush=True)


def expected_answer(prompt):
    return "ANSWER:" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


class Server:
    """faultsrv on a free loopback port, with a request log."""

    def __init__(self, tmp, name, args):
        self.port_file = os.path.join(tmp, f"{name}.port")
        self.log = os.path.join(tmp, f"{name}.log.jsonl")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(SERVERS, "faultsrv.py"), "--port", "0",
             "--port-file", self.port_file, "--key", KEY, "--log", self.log, "--quiet", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while not (os.path.exists(self.port_file) and open(self.port_file).read().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"faultsrv did not start ({name})")
            time.sleep(0.05)
        self.port = int(open(self.port_file).read().strip())
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def requests(self):
        """The request log, flushed first."""
        import urllib.request
        urllib.request.urlopen(f"http://127.0.0.1:{self.port}/flush", timeout=10).read()
        with open(self.log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def write_input(path, n, prompt=lambda i: f"[row:{i}] question number {i}"):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "prompt": prompt(i)}) + "\n")


def run(binary, inp, out, url, extra, timeout):
    env = dict(os.environ, FAULT_KEY=KEY)
    env.pop("PROMPTBATCH_BASE_URL", None)
    cmd = [binary, "run", inp, "-o", out, "--base-url", url, "--api-key-env", "FAULT_KEY",
           "--model", "gpt-5.2", "-q", *extra]
    start = time.time()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        code, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired as e:
        code, err = "timeout", (e.stderr or b"").decode(errors="replace")
    return code, time.time() - start, err


def records(out):
    if not os.path.exists(out):
        return []
    with open(out) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_records(case, inp, out, expect_ok=None):
    """Every row exactly one record, ok records hold their own answer. Returns the records."""
    rows = {}
    with open(inp) as f:
        for line in f:
            r = json.loads(line)
            rows[r["id"]] = r["prompt"]
    recs = records(out)
    seen = {}
    for r in recs:
        seen[r["id"]] = seen.get(r["id"], 0) + 1
        if r.get("status") == "ok" and r.get("completion") != expected_answer(rows.get(r["id"], "")):
            fail(case, f"row {r['id']} holds another answer: {r.get('completion')!r}")
    twice = [i for i, n in seen.items() if n > 1]
    missing = [i for i in rows if i not in seen]
    if twice:
        fail(case, f"{len(twice)} rows have more than one record (e.g. {twice[:3]})")
    if missing:
        fail(case, f"{len(missing)} of {len(rows)} rows have no record (e.g. {missing[:3]})")
    ok = sum(1 for r in recs if r.get("status") == "ok")
    if expect_ok is not None and ok != expect_ok:
        fail(case, f"{ok} ok records, expected {expect_ok}")
    return recs


def check_advice(case, server):
    """No prompt was sent again sooner than the 429 it got advised (50 ms of clock slack)."""
    by_key = {}
    for r in server.requests():
        if "key" in r:
            by_key.setdefault(r["key"], []).append(r)
    broken = 0
    for reqs in by_key.values():
        reqs.sort(key=lambda r: r["t"])
        for a, b in zip(reqs, reqs[1:]):
            ra = a.get("retry_after")
            if ra is not None and b["t"] - a["t"] < ra - 0.05:
                broken += 1
    if broken:
        fail(case, f"{broken} retries sent before the server's advice")
    attempts = sum(len(v) for v in by_key.values())
    limited = sum(1 for v in by_key.values() for r in v if r.get("fault") in ("429", "ratelimit"))
    return attempts, limited


def row(case, conditions, n, secs, base, extra=""):
    rate = n / secs if secs > 0 else 0.0
    ratio = f"{rate / base:.2f}" if base else "—"
    TABLE.append((case, conditions, f"{rate:,.0f}", ratio, extra))
    print(f"  {case}: {n} rows in {secs:.1f} s = {rate:,.0f} rows/s ({ratio} of clean) {extra}",
          flush=True)


def case_random_429s(a, tmp, n):
    """Random 429s in every shape (not a limit: they do not depend on our rate)."""
    common = ["--latency", "fixed:100", "--max-faults-per-prompt", "6"]
    runopts = ["-c", "64", "--max-retries", "8"]
    inp = os.path.join(tmp, f"rows{n}.jsonl")
    write_input(inp, n)
    srv = Server(tmp, "clean", common)
    out = os.path.join(tmp, "clean.jsonl")
    code, secs, err = run(a.bin, inp, out, srv.url, runopts, 600)
    srv.stop()
    if code != 0:
        fail("clean", f"exit {code}: {err[-400:]}")
    check_records("clean", inp, out, expect_ok=n)
    base = n / secs
    row("clean", f"{n:,} rows, 100 ms answers, -c 64", n, secs, base)
    shares = [0.02, 0.05, 0.10, 0.20]
    styles = [("std", ["--ra-style", "std"]), ("plain", ["--ra-style", "plain"]),
              ("none", ["--ra-style", "none"]), ("litellm", ["--ra-style", "litellm"]),
              ("gemini", ["--ra-style", "gemini"]), ("evolink", ["--evolink-errors"])]
    if a.mode == "ci":
        # Every shape at 5 %, and every share in OpenAI's shape (the one with the most headers).
        grid = [(s, 0.05) for s in styles] + [(styles[0], p) for p in (0.02, 0.10, 0.20)]
    else:
        grid = [(s, p) for s in styles for p in shares]
    for (style, flags), p in grid:
        case = f"429 {style} {p:.0%}"
        srv = Server(tmp, f"r{style}{int(p * 100)}", common + ["--p429", str(p), "--retry-after", "1", *flags])
        out = os.path.join(tmp, f"r{style}{int(p * 100)}.jsonl")
        code, secs, err = run(a.bin, inp, out, srv.url, runopts, 900)
        if code != 0:
            fail(case, f"exit {code}: {err[-400:]}")
        check_records(case, inp, out, expect_ok=n)
        attempts, limited = check_advice(case, srv)
        srv.stop()
        row(case, f"{n:,} rows, 100 ms, -c 64, {p:.0%} of attempts 429, advice 1 s", n, secs, base,
            f"{limited} of {attempts} attempts 429")


def case_mixed(a, tmp):
    """429s, 5xx, dropped connections and malformed bodies at once: every row ends ok."""
    n = 800
    inp = os.path.join(tmp, "mixed.jsonl")
    write_input(inp, n)
    srv = Server(tmp, "mixed", ["--latency", "fixed:100", "--p429", "0.10", "--p500", "0.025",
                                "--p503", "0.025", "--pdrop", "0.02", "--pmalformed", "0.01",
                                "--max-faults-per-prompt", "6"])
    out = os.path.join(tmp, "mixed.out.jsonl")
    code, secs, err = run(a.bin, inp, out, srv.url, ["-c", "16", "--max-retries", "8"], 600)
    if code != 0:
        fail("mixed faults", f"exit {code}: {err[-400:]}")
    check_records("mixed faults", inp, out, expect_ok=n)
    attempts, limited = check_advice("mixed faults", srv)
    srv.stop()
    # -c 16 at 100 ms: at most 160 requests/s; the faults cost about a fifth of the attempts.
    row("mixed faults", "800 rows, -c 16, 10 % 429 + 2.5 % 500 + 2.5 % 503 + 2 % drops + 1 % malformed",
        n, secs, None, f"{attempts} attempts, {limited} 429; ideal ≈ {n / 160 * 1.25:.0f} s")


def case_window(a, tmp):
    """A real sliding-window limit (no --rpm): near the limit, few 429s."""
    n = 2000
    rpm = 1200
    inp = os.path.join(tmp, "window.jsonl")
    write_input(inp, n)
    srv = Server(tmp, "window", ["--latency", "fixed:200", "--rpm-limit", str(rpm), "--window-s", "10"])
    out = os.path.join(tmp, "window.out.jsonl")
    code, secs, err = run(a.bin, inp, out, srv.url, ["-c", "64"], 900)
    if code != 0:
        fail("window", f"exit {code}: {err[-400:]}")
    check_records("window", inp, out, expect_ok=n)
    attempts, limited = check_advice("window", srv)
    srv.stop()
    share = n / secs * 60 / rpm
    TABLE.append(("sliding window", f"{rpm} RPM over 10 s, {n} rows, 200 ms, -c 64",
                  f"{n / secs:,.1f}", f"{share:.2f} of the limit",
                  f"{limited} of {attempts} attempts 429 ({limited / max(attempts, 1):.1%})"))
    print(f"  window: {share:.2f} of the limit, {limited}/{attempts} attempts 429", flush=True)


def case_breaker_first_rows(a, tmp):
    """A model whose first 5 rows get the same permanent 400 and the rest succeed: no trip."""
    n = 200
    inp = os.path.join(tmp, "perm5.jsonl")
    write_input(inp, n, lambda i: f"[row:{i}] PERMFAIL {i}" if i < 5 else f"[row:{i}] question {i}")
    srv = Server(tmp, "perm5", ["--latency", "fixed:100"])
    out = os.path.join(tmp, "perm5.out.jsonl")
    code, _, err = run(a.bin, inp, out, srv.url, ["-c", "16"], 300)
    srv.stop()
    if code != 3:
        fail("breaker: first 5 rows refused", f"exit {code}, expected 3: {err[-400:]}")
    check_records("breaker: first 5 rows refused", inp, out, expect_ok=n - 5)
    if "check the key" in err:
        fail("breaker: first 5 rows refused", "the message says 'check the key' of a model that works")


def case_breaker_rerun(a, tmp):
    """Re-run of an output with 475 ok and 25 permanent-400 records: nothing removed, exit 3."""
    n = 500
    inp = os.path.join(tmp, "perm25.jsonl")
    write_input(inp, n, lambda i: f"[row:{i}] PERMFAIL {i}" if i % 20 == 7 else f"[row:{i}] question {i}")
    srv = Server(tmp, "perm25", ["--latency", "fixed:20"])
    out = os.path.join(tmp, "perm25.out.jsonl")
    case = "breaker: re-run with 25 error records"
    for attempt in (1, 2, 3):
        code, _, err = run(a.bin, inp, out, srv.url, ["-c", "16"], 300)
        if code != 3:
            fail(case, f"run {attempt}: exit {code}, expected 3: {err[-400:]}")
        check_records(f"{case} (run {attempt})", inp, out, expect_ok=n - 25)
        if "check the key" in err:
            fail(case, f"run {attempt}: says 'check the key' of a model with ok rows")
    srv.stop()


def case_always_429(a, tmp):
    """Every request refused (a model a proxy always answers 429): the run ends soon, rows named."""
    n = 20
    inp = os.path.join(tmp, "always.jsonl")
    write_input(inp, n)
    for style in ("litellm", "gemini"):
        case = f"every request 429 ({style})"
        srv = Server(tmp, f"always-{style}", ["--p429", "1.0", "--retry-after", "1", "--ra-style", style])
        out = os.path.join(tmp, f"always-{style}.out.jsonl")
        code, secs, err = run(a.bin, inp, out, srv.url, ["-c", "16", "--max-retries", "2"], 300)
        srv.stop()
        if code != 3:
            fail(case, f"exit {code}, expected 3 (every row an error record): {err[-400:]}")
        recs = check_records(case, inp, out, expect_ok=0)
        if secs > 120:
            fail(case, f"took {secs:.0f} s; a run that cannot succeed must end within two minutes")
        TABLE.append((case, f"{n} rows, --max-retries 2", "—", "—",
                      f"ended in {secs:.0f} s with {len(recs)} error records"))
        print(f"  {case}: ended in {secs:.1f} s, {len(recs)} records", flush=True)


def case_fast_announced(a, tmp):
    """0-ms answers announcing 1,000,000 requests a minute: the pacer must not be the bound."""
    n = 1_000_000 if a.mode == "bench" else 100_000
    inp = os.path.join(tmp, "fast.jsonl")
    write_input(inp, n)
    srv = Server(tmp, "fast", [])
    out = os.path.join(tmp, "fast.out.jsonl")
    code, secs, err = run(a.bin, inp, out, srv.url, ["-c", "32"], 1800)
    srv.stop()
    if code != 0:
        fail("0 ms, 1,000,000/min announced", f"exit {code}: {err[-400:]}")
    check_records("0 ms, 1,000,000/min announced", inp, out, expect_ok=n)
    row("0 ms, 1,000,000/min announced", f"{n:,} rows, 0 ms answers, -c 32, every success "
        "announcing x-ratelimit-limit-requests: 1000000", n, secs, None)


def case_night(a, tmp):
    """A compressed night: a real limit, random 429s, 5xx, drops, an outage, slow answers."""
    n = 60_000 if a.mode == "bench" else 15_000
    outage = 30 if a.mode == "bench" else 10
    inp = os.path.join(tmp, "night.jsonl")
    write_input(inp, n)
    srv = Server(tmp, "night", ["--latency", "lognormal:120:0.5:2000", "--rpm-limit", "90000",
                                "--p429", "0.02", "--p500", "0.01", "--p503", "0.01", "--pdrop", "0.005",
                                f"--outage", f"15:{outage}", "--max-faults-per-prompt", "6"])
    out = os.path.join(tmp, "night.out.jsonl")
    code, secs, err = run(a.bin, inp, out, srv.url, ["-c", "128", "--max-retries", "10"], 3600)
    if code != 0:
        fail("compressed night", f"exit {code}: {err[-400:]}")
    recs = check_records("compressed night", inp, out, expect_ok=n)
    attempts, limited = check_advice("compressed night", srv)
    stats = json.loads(__import__("urllib.request").request.urlopen(
        f"http://127.0.0.1:{srv.port}/stats", timeout=10).read())
    srv.stop()
    # The bill: every ok record's tokens are the server's for its row (what faultsrv served).
    served = stats.get("prompt_tokens", 0) + stats.get("completion_tokens", 0)
    recorded = sum(r.get("prompt_tokens", 0) + r.get("completion_tokens", 0) for r in recs)
    if stats.get("ok_undelivered", 0) == 0 and served != recorded:
        fail("compressed night", f"records hold {recorded} tokens, the server served {served}")
    # Ideal: the limit (1,500/s) or -c 128 over the mean answer time (≈ 135 ms), and the outage.
    ideal = n / min(1500.0, 128 / 0.135) + outage
    row("compressed night", f"{n:,} rows, 90,000 RPM sliding window, 2 % random 429s, 1 % 500, "
        f"1 % 503, 0.5 % drops, a {outage}-s outage, lognormal 120 ms, -c 128",
        n, secs, None, f"{secs / ideal:.2f} × the ideal {ideal:.0f} s; {limited} of {attempts} attempts 429")


def case_dedup(a, tmp):
    """Repeated requests (issue 27): 1,200 rows asking 400 questions, 10 of them refused for
    good (PERMFAIL), through 429s in LiteLLM's shape and 5xx; `kill -9` a third of the way, then
    the same command. Every row gets one record holding its own answer (or its question's
    refusal), each question is answered at most once per row in flight at the kill, and a run
    reusing the output (`--reuse`) into a new file sends nothing."""
    n, distinct, c = 1200, 400, 16

    def prompt(i):
        q = i % distinct
        return f"[row:{q}] question number {q}" + (" PERMFAIL" if q < 10 else "")

    inp = os.path.join(tmp, "dedup.jsonl")
    write_input(inp, n, prompt)
    srv = Server(tmp, "dedup", ["--latency", "fixed:40", "--p429", "0.05", "--ra-style", "litellm",
                                "--retry-after", "1", "--p500", "0.03", "--max-faults-per-prompt", "4"])
    out = os.path.join(tmp, "dedup.out.jsonl")
    env = dict(os.environ, FAULT_KEY=KEY)
    env.pop("PROMPTBATCH_BASE_URL", None)
    cmd = [a.bin, "run", inp, "-o", out, "--base-url", srv.url, "--api-key-env", "FAULT_KEY",
           "--model", "gpt-5.2", "-q", "-c", str(c)]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(records(out)) < distinct // 3 and child.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if child.poll() is not None:
        fail("dedup", "the run ended before the kill")
    child.kill()
    child.wait()
    killed_at = len(records(out))
    code, secs, err = run(a.bin, inp, out, srv.url, ["-c", str(c)], 600)
    if code not in (0, 3):
        fail("dedup", f"exit {code}: {err[-400:]}")
    recs = check_records("dedup", inp, out, expect_ok=n - 30)
    copies = sum(1 for r in recs if "duplicate_of" in r)
    errors = [r for r in recs if r.get("status") == "error"]
    if len(errors) != 30 or any("PERMFAIL" not in r["prompt"] for r in errors):
        fail("dedup", f"{len(errors)} error records, expected the 30 PERMFAIL rows")
    answered = {}
    for r in srv.requests():
        if r.get("status") == 200 and "fault" not in r:
            answered[r["key"]] = answered.get(r["key"], 0) + 1
    twice = sum(v - 1 for v in answered.values())
    if len(answered) != distinct - 10 or twice > c:
        fail("dedup", f"{len(answered)} questions answered ({twice} more than once); expected "
                      f"{distinct - 10}, at most {c} twice (rows in flight at the kill)")
    srv.stop()
    fresh = Server(tmp, "dedup-reuse", ["--latency", "fixed:40"])
    again = os.path.join(tmp, "dedup.again.jsonl")
    code, _, err = run(a.bin, inp, again, fresh.url, ["--reuse", out], 120)
    sent = sum(1 for r in fresh.requests() if "key" in r)
    fresh.stop()
    reused = sum(1 for r in records(again) if "reused_from" in r)
    check_records("dedup --reuse", inp, again)
    if reused != n - 30 or sent != 10:
        fail("dedup --reuse", f"{reused} rows reused and {sent} requests sent; expected {n - 30} "
                              "reused and the 10 refused questions sent once each (errors are never "
                              "reused; their 30 rows are deduplicated)")
    row("dedup", f"{n:,} rows, {distinct} questions, 5 % 429s + 3 % 500s, kill -9 at "
                 f"{killed_at} records", n, secs, None,
        f"{copies} copies, {len(answered)} questions answered, {twice} twice")


CASES = {
    "dedup": case_dedup,
    "random": lambda a, tmp: case_random_429s(a, tmp, 3000 if a.mode == "ci" else 20000),
    "mixed": case_mixed,
    "window": case_window,
    "breaker": lambda a, tmp: (case_breaker_first_rows(a, tmp), case_breaker_rerun(a, tmp)),
    "always": case_always_429,
    "fast": case_fast_announced,
    "night": case_night,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--mode", choices=["ci", "bench"], default="ci")
    ap.add_argument("--only", choices=sorted(CASES), action="append")
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    if not os.path.exists(os.path.join(SERVERS, "faultsrv.py")):
        print(f"faultsrv check: {SERVERS}/faultsrv.py not found (../shared beside the repo)")
        return 1
    with tempfile.TemporaryDirectory(prefix="pb-faultsrv-") as tmp:
        for name in a.only or list(CASES):
            print(f"== {name}", flush=True)
            CASES[name](a, tmp)
    print("\n| case | conditions | rows/s | ratio | notes |\n|---|---|---|---|---|")
    for t in TABLE:
        print("| " + " | ".join(t) + " |")
    if FAILURES:
        print(f"\nfaultsrv check: {len(FAILURES)} failed:")
        for f in FAILURES:
            print(f"- {f}")
        return 1
    print("\nfaultsrv check: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
