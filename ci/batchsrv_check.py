#!/usr/bin/env python3
"""promptbatch `--via batch` against an independent Batch API server (`../shared/servers/batchsrv.py`,
not ours) and its misbehaving variant (`ci/batchsrv_variant.py`, which imports it).

Each case starts its server on a free loopback port in a temporary folder, writes a JSONL input
(`{"id": "r1", "prompt": ...}`, 200 rows; `--batch-max-requests 25`: 8 batches), runs the
promptbatch binary (`--poll-every 100ms`, the server's `--process-s 1`) and checks from counts:

- rows in = records out: exactly one record per row (per row and model with `--model a,b`), and
  every ok record holds its own row's answer (batchsrv answers `ANSWER:<sha256(prompt)[:16]>`);
- nothing was bought twice: the server's log of created batches names no custom_id twice
  (`/stats` `submitted_twice` is 0), unless the case says otherwise.

Cases:
  dedup              150 rows asking 50 questions, `--detach`, a repeating row inserted at the
                     top, then collect: 50 rows submitted in all, every row one record with its
                     own question's answer, the 101 repeats marked `duplicate_of`.
  happy              a plain batch run: 200 ok records.
  live-over-batches  `--detach`, then the same command without `--via batch`: refused (non-zero
                     exit), no live request (`/stats` `live` 0), output untouched; then the
                     `--via batch` command collects all 200.
  insert-row         `--detach`, one new row inserted at the top of the input, then collect: no
                     row submitted twice (only the new row is new), one record per row of the
                     edited input, each with its own answer.
  delete-row         the same with row 7 deleted; what the run says of the deleted row's paid
                     answer is printed (not asserted).
  max-cost           a cap (found by a probe run's "could cost up to" per batch, with
                     `--max-tokens 256`) that lets a few batches be submitted but not all: the
                     run collects every batch it submitted (no batch in flight left in
                     OUTPUT.batch.json, a record for every submitted row) and exits 4; a re-run
                     with a large cap completes, nothing submitted twice.
  model-list         `--model gpt-5.2,gemini-3.1-pro-preview --detach`, then `--model
                     gpt-5.2,gpt-4o` is refused (non-zero, state file unchanged, no new file or
                     batch); the original list then collects 400 records.
  wrong-body-html    the variant's `--bad-downloads 2 --bad-kind html|empty|half`: the first two
  wrong-body-empty   downloads of each output file are a 200 with a wrong body; the run
  wrong-body-half    downloads again (never resubmits): 200 ok records, nothing submitted twice.
  duplicate-ids      variant `--dup-ids 3` (an output file repeats 3 custom_ids with another
                     row's answer) / `--both-files 3` (3 answered rows also in the error file as
  output-and-error   500s): nothing submitted twice, every row an ok record with ITS OWN answer,
                     a documented exit code; the stderr lines about the contradictions printed.
  killed-during-create  variant `--create-delay 5`: the run is killed (SIGKILL) while a batch
                     create is in flight (the batch exists, the run never learnt its id); the
                     re-run must not advise `--via live`, must not create a second batch for the
                     same rows, and stops naming the uploaded file id; answered with
                     `--batch-of-file FILE=BATCH` it collects all 200, nothing submitted twice.
  cost-this-run      `--detach`, then collect: the collecting run's "cost this run: $X" equals the
                     sum of the `cost_usd` of the records it wrote (within the printed precision,
                     at least 1e-6); a later no-op re-run spends $0.

Usage: batchsrv_check.py --bin target/release/promptbatch [--only NAME]... [--keep DIR]
Exit 0 when every check passes; 1 otherwise, with each failure named. About two minutes.
"""
import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "servers"))
VARIANT = os.path.join(HERE, "batchsrv_variant.py")
KEY = "sk-batchsrv-test-key"
ROWS = 200
# The exit codes `promptbatch run --help` documents.
DOCUMENTED_EXITS = {0, 1, 2, 3, 4, 130}
# Statuses of a batch still running at the provider (and promptbatch's own before it is created).
IN_FLIGHT = {"uploading", "uploaded", "creating", "validating", "in_progress", "finalizing", "cancelling"}

FAILURES = {}
NOTES = {}


def fail(case, what):
    FAILURES.setdefault(case, []).append(what)
    print(f"  FAIL {case}: {what}", flush=True)


def note(case, what):
    NOTES.setdefault(case, []).append(what)
    print(f"  note {case}: {what}", flush=True)


def expected_answer(prompt):
    return "ANSWER:" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


class Server:
    """batchsrv (or the variant with ARGS) on a free loopback port, with its batch log."""

    def __init__(self, tmp, name, args=(), variant=False, process_s=1):
        self.port_file = os.path.join(tmp, f"{name}.port")
        self.log = os.path.join(tmp, f"{name}.log.jsonl")
        script = VARIANT if variant else os.path.join(SERVERS, "batchsrv.py")
        self.proc = subprocess.Popen(
            [sys.executable, script, "--port", "0", "--port-file", self.port_file, "--key", KEY,
             "--log", self.log, "--process-s", str(process_s), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while not (os.path.exists(self.port_file) and open(self.port_file).read().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"batchsrv did not start ({name})")
            time.sleep(0.05)
        self.port = int(open(self.port_file).read().strip())
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def get(self, path):
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10).read())

    def stats(self):
        """`/stats`: files, batches, live, submitted_total, submitted_distinct, submitted_twice."""
        return self.get("/stats")

    def events(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def batches(self):
        """The created batches in order: (batch id, [custom_id, ...])."""
        return [(e["batch"], e["custom_ids"]) for e in self.events() if "custom_ids" in e]

    def submitted(self):
        """custom_id -> how many batches it was submitted in."""
        counts = {}
        for _, ids in self.batches():
            for c in ids:
                counts[c] = counts.get(c, 0) + 1
        return counts

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def prompt_of(i):
    # Fixed width, so every batch of 25 rows has the same worst case (--max-cost).
    return f"[row:{i:04d}] question number {i:04d}"


def write_rows(path, rows):
    """ROWS: [(id, prompt)]."""
    with open(path, "w") as f:
        for rid, prompt in rows:
            f.write(json.dumps({"id": rid, "prompt": prompt}) + "\n")


def make_input(tmp, name, n=ROWS):
    path = os.path.join(tmp, f"{name}.in.jsonl")
    rows = [(f"r{i}", prompt_of(i)) for i in range(1, n + 1)]
    write_rows(path, rows)
    return path, rows


def read_rows(path):
    with open(path) as f:
        return [(r["id"], r["prompt"]) for r in map(json.loads, f) if r]


def run(a, inp, out, url, extra=(), via="batch", model="gpt-5.2", per_batch=25, timeout=120):
    """The binary on INP → OUT; returns (exit code or "timeout", seconds, stderr)."""
    env = dict(os.environ, BATCHSRV_KEY=KEY)
    env.pop("PROMPTBATCH_BASE_URL", None)
    cmd = [a.bin, "run", inp, "-o", out, "--base-url", url, "--api-key-env", "BATCHSRV_KEY",
           "--model", model, "-q", "--poll-every", "100ms", "--batch-max-requests", str(per_batch)]
    if via:
        cmd += ["--via", via]
    cmd += list(extra)
    start = time.time()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        code, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired as e:
        code = "timeout"
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    secs = time.time() - start
    with open(out + ".stderr.txt", "a") as f:
        f.write(f"$ {' '.join(cmd)}\n# exit {code} in {secs:.1f} s\n{err}\n")
    return code, secs, err


def records(out):
    if not os.path.exists(out):
        return []
    with open(out) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_records(case, rows, out, models=None, expect_ok=None, allowed=None):
    """One record per row of ROWS (per row and model with MODELS); every ok record holds its
    own row's answer. ALLOWED: other rows (id -> prompt) whose record may be there. Returns the
    records."""
    prompts = dict(rows)
    others = dict(allowed or {})
    recs = records(out)
    seen = {}
    wrong = []
    for r in recs:
        key = (r.get("id"), r.get("model")) if models else r.get("id")
        seen[key] = seen.get(key, 0) + 1
        if r.get("id") not in prompts and r.get("id") not in others:
            fail(case, f"a record for a row not in the input: {r.get('id')!r}")
            continue
        prompt = prompts.get(r["id"], others.get(r["id"]))
        if r.get("status") == "ok" and r.get("completion") != expected_answer(prompt):
            wrong.append(f"{r['id']}: {r.get('completion')!r}")
    if wrong:
        fail(case, f"{len(wrong)} ok records hold another row's answer (e.g. {wrong[:3]})")
    keys = [(rid, m) for rid, _ in rows for m in models] if models else [rid for rid, _ in rows]
    twice = [k for k, n in seen.items() if n > 1]
    missing = [k for k in keys if k not in seen]
    if twice:
        fail(case, f"{len(twice)} rows have more than one record (e.g. {twice[:3]})")
    if missing:
        fail(case, f"{len(missing)} of {len(keys)} rows have no record (e.g. {missing[:3]})")
    ok = sum(1 for r in recs if r.get("status") == "ok")
    if expect_ok is not None and ok != expect_ok:
        errors = [f"{r.get('id')}: {str(r.get('error'))[:120]}" for r in recs if r.get("status") != "ok"]
        fail(case, f"{ok} ok records, expected {expect_ok} (errors e.g. {errors[:2]})")
    return recs


def check_once(case, srv, allowed_twice=()):
    """No custom_id submitted in two batches (the server's log and /stats agree)."""
    twice = {c: n for c, n in srv.submitted().items() if n > 1 and c not in allowed_twice}
    stats = srv.stats()
    if twice:
        fail(case, f"{len(twice)} custom_ids submitted more than once (e.g. {sorted(twice)[:4]}); "
                   f"/stats {stats}")
    elif stats["submitted_twice"] > len(allowed_twice):
        fail(case, f"/stats says {stats['submitted_twice']} custom_ids submitted twice: {stats}")
    return stats


def expect_exit(case, code, want, err, what=""):
    if code != want:
        fail(case, f"{what}exit {code}, expected {want}: {tail(err)}")


def tail(err, n=400):
    err = (err or "").strip().replace("\n", " | ")
    return err[-n:]


def file_bytes(path):
    return open(path, "rb").read() if os.path.exists(path) else None


def state_of(out):
    path = out + ".batch.json"
    return json.load(open(path)) if os.path.exists(path) else None


def lines_naming(err, ids, words=()):
    """stderr lines naming one of IDS (as a word) or holding one of WORDS."""
    pat = re.compile(r"(?<![\w-])(" + "|".join(re.escape(i) for i in ids) + r")(?![\w-])") if ids else None
    # Paths are left out of the words' search (the case's name is in the output's path).
    return [l for l in err.splitlines()
            if (pat and pat.search(l)) or any(w in re.sub(r"\S*/\S*", "", l).lower() for w in words)]


# ---------------------------------------------------------------------------------------- cases


def case_happy(a, tmp):
    case = "happy"
    srv = Server(tmp, case)
    inp, rows = make_input(tmp, case)
    out = os.path.join(tmp, f"{case}.out.jsonl")
    code, secs, err = run(a, inp, out, srv.url)
    expect_exit(case, code, 0, err)
    check_records(case, rows, out, expect_ok=ROWS)
    stats = check_once(case, srv)
    srv.stop()
    note(case, f"{stats['batches']} batches, {secs:.1f} s")


def case_live_over_batches(a, tmp):
    case = "live-over-batches"
    srv = Server(tmp, case, process_s=3)
    inp, rows = make_input(tmp, case)
    out = os.path.join(tmp, f"{case}.out.jsonl")
    code, _, err = run(a, inp, out, srv.url, ["--detach"])
    expect_exit(case, code, 0, err, "--detach: ")
    before, state_before = file_bytes(out), file_bytes(out + ".batch.json")
    code, _, err = run(a, inp, out, srv.url, via=None)
    stats = srv.stats()
    if code == 0 or code == "timeout":
        fail(case, f"the live run over running batches exited {code}, expected a refusal")
    if stats["live"]:
        fail(case, f"the live run sent {stats['live']} live requests over rows in running batches")
    if file_bytes(out) != before:
        fail(case, f"the live run changed the output ({len(records(out))} records now)")
    if file_bytes(out + ".batch.json") != state_before:
        fail(case, "the live run changed the batch state file")
    note(case, f"live run: exit {code}: {tail(err, 300)}")
    live_before = stats["live"]
    code, _, err = run(a, inp, out, srv.url)
    expect_exit(case, code, 0, err, "collect: ")
    check_records(case, rows, out, expect_ok=ROWS)
    check_once(case, srv)
    if live_before:
        note(case, f"after {live_before} live answers, the collecting run said: "
                   f"{' | '.join(err.strip().splitlines()[-4:])}")
    srv.stop()


def case_edit_row(a, tmp, case, edit):
    srv = Server(tmp, case, process_s=2)
    inp, rows = make_input(tmp, case)
    out = os.path.join(tmp, f"{case}.out.jsonl")
    code, _, err = run(a, inp, out, srv.url, ["--detach"])
    expect_exit(case, code, 0, err, "--detach: ")
    edited, gone = edit(rows)
    write_rows(inp, edited)
    code, _, err = run(a, inp, out, srv.url)
    if code not in DOCUMENTED_EXITS:
        fail(case, f"collect: exit {code}: {tail(err)}")
    note(case, f"collect: exit {code}")
    check_records(case, edited, out, expect_ok=len(edited), allowed=dict(gone))
    check_once(case, srv)
    new = set(dict(edited)) - set(dict(rows))
    sent_new = {c for c in srv.submitted() if c in new}
    if new and not sent_new and not any(r.get("id") in new for r in records(out)):
        fail(case, f"the new row {sorted(new)} was never sent")
    for rid, _ in gone:
        recs = [r for r in records(out) if r.get("id") == rid]
        said = lines_naming(err, [rid], ("removed", "no longer", "left the input", "not in the input"))
        note(case, f"deleted row {rid}: {len(recs)} record(s) in the output "
                   f"({recs[0].get('status') if recs else '-'}); the run said: "
                   f"{' | '.join(said[:3]) or '(nothing about it)'}")
    srv.stop()


def case_insert_row(a, tmp):
    case_edit_row(a, tmp, "insert-row",
                  lambda rows: ([("r-new", "a new first row, inserted after the submission")] + rows, []))


def case_delete_row(a, tmp):
    case_edit_row(a, tmp, "delete-row", lambda rows: (rows[:6] + rows[7:], [rows[6]]))


def case_max_cost(a, tmp):
    case = "max-cost"
    srv = Server(tmp, case)
    inp, rows = make_input(tmp, case)
    # The worst case of one batch: a cap no batch fits in, on an output of its own.
    probe = os.path.join(tmp, f"{case}.probe.jsonl")
    code, _, err = run(a, inp, probe, srv.url, ["--max-tokens", "256", "--max-cost", "0.000001"])
    m = re.search(r"could cost up to \$([0-9.]+)", err)
    if code != 4 or not m or srv.stats()["batches"]:
        fail(case, f"probe run (--max-cost 0.000001): exit {code}, no batch expected: {tail(err)}")
        srv.stop()
        return
    worst = float(m.group(1))
    cap = round(worst * 2.5, 6)
    out = os.path.join(tmp, f"{case}.out.jsonl")
    code, _, err = run(a, inp, out, srv.url, ["--max-tokens", "256", "--max-cost", str(cap)])
    submitted = srv.submitted()
    note(case, f"worst case per batch of 25 ${worst}, cap ${cap}: {len(srv.batches())} batches, "
               f"{len(submitted)} rows submitted; exit {code}")
    if not 0 < len(submitted) < ROWS:
        fail(case, f"the cap ${cap} let {len(submitted)} of {ROWS} rows be submitted: "
                   "the case needs a few batches, not all")
    expect_exit(case, code, 4, err, f"--max-cost {cap}: ")
    state = state_of(out)
    running = [(b.get("batch_id"), b.get("status")) for b in (state or {}).get("batches", [])
               if b.get("status") in IN_FLIGHT]
    if running:
        fail(case, f"{len(running)} batches left in flight in the state: {running[:3]}")
    by_id = {r["id"]: r for r in records(out)}
    prompts = dict(rows)
    missing = [c for c in submitted if c not in by_id]
    if missing:
        fail(case, f"{len(missing)} of {len(submitted)} submitted rows have no record (e.g. {missing[:3]})")
    wrong = [c for c in submitted if c in by_id and by_id[c].get("completion") != expected_answer(prompts[c])]
    if wrong:
        fail(case, f"{len(wrong)} submitted rows lack their own ok answer (e.g. {wrong[:3]})")
    code, _, err = run(a, inp, out, srv.url, ["--max-tokens", "256", "--max-cost", "100"])
    expect_exit(case, code, 0, err, "re-run with --max-cost 100: ")
    check_records(case, rows, out, expect_ok=ROWS)
    check_once(case, srv)
    srv.stop()


def case_model_list(a, tmp):
    case = "model-list"
    srv = Server(tmp, case, process_s=2)
    inp, rows = make_input(tmp, case)
    out = os.path.join(tmp, f"{case}.out.jsonl")
    models = ["gpt-5.2", "gemini-3.1-pro-preview"]
    code, _, err = run(a, inp, out, srv.url, ["--detach"], model=",".join(models))
    expect_exit(case, code, 0, err, "--detach: ")
    state, stats = file_bytes(out + ".batch.json"), srv.stats()
    code, _, err = run(a, inp, out, srv.url, model="gpt-5.2,gpt-4o")
    if code == 0 or code == "timeout":
        fail(case, f"--model gpt-5.2,gpt-4o over batches of {','.join(models)}: exit {code}, expected a refusal")
    if file_bytes(out + ".batch.json") != state:
        fail(case, "the refused run changed the state file")
    now = srv.stats()
    if (now["files"], now["batches"]) != (stats["files"], stats["batches"]):
        fail(case, f"the refused run uploaded {now['files'] - stats['files']} files, created "
                   f"{now['batches'] - stats['batches']} batches")
    if records(out):
        note(case, f"the other list's run wrote {len(records(out))} records")
    note(case, f"other list: exit {code}: {tail(err, 250)}")
    code, _, err = run(a, inp, out, srv.url, model=",".join(models))
    expect_exit(case, code, 0, err, "collect with the original list: ")
    check_records(case, rows, out, models=models, expect_ok=ROWS * len(models))
    check_once(case, srv)
    srv.stop()


def case_wrong_body(a, tmp, kind):
    case = f"wrong-body-{kind}"
    srv = Server(tmp, case, ["--bad-downloads", "2", "--bad-kind", kind], variant=True)
    inp, rows = make_input(tmp, case)
    out = os.path.join(tmp, f"{case}.out.jsonl")
    code, secs, err = run(a, inp, out, srv.url, timeout=90)
    expect_exit(case, code, 0, err)
    check_records(case, rows, out, expect_ok=ROWS)
    stats = check_once(case, srv)
    v = srv.get("/variant-stats")
    note(case, f"{stats['batches']} batches, {v['downloads']} downloads ({v['bad_downloads']} wrong), "
               f"{secs:.1f} s")
    srv.stop()


def case_contradiction(a, tmp, case, args, words):
    """An output file contradicting itself or the error file: each row its own answer, once."""
    srv = Server(tmp, case, args, variant=True)
    inp, rows = make_input(tmp, case)
    out = os.path.join(tmp, f"{case}.out.jsonl")
    code, _, err = run(a, inp, out, srv.url, timeout=90)
    if code not in DOCUMENTED_EXITS:
        fail(case, f"exit {code}: {tail(err)}")
    check_records(case, rows, out, expect_ok=ROWS)
    check_once(case, srv)
    # The rows the variant made contradictory: the first 3 of each batch (output file order).
    affected = [c for _, ids in srv.batches() for c in ids[:3]]
    said = lines_naming(err, affected, words)
    named = {c for c in affected if any(re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", l) for l in said)}
    note(case, f"exit {code}; stderr names {len(named)} of the {len(affected)} affected rows; "
               f"{len(said)} lines about it" + ("".join(f"\n      | {l[:220]}" for l in said[:6])))
    srv.stop()


def case_duplicate_ids(a, tmp):
    case_contradiction(a, tmp, "duplicate-ids", ["--dup-ids", "3"],
                       ("duplicate", "twice", "more than once", "contradict", "repeat"))


def case_output_and_error(a, tmp):
    case_contradiction(a, tmp, "output-and-error", ["--both-files", "3"],
                       ("both", "error file", "contradict", "twice"))


def case_killed_during_create(a, tmp):
    case = "killed-during-create"
    srv = Server(tmp, case, ["--create-delay", "5"], variant=True)
    inp, rows = make_input(tmp, case)
    out = os.path.join(tmp, f"{case}.out.jsonl")
    env = dict(os.environ, BATCHSRV_KEY=KEY)
    env.pop("PROMPTBATCH_BASE_URL", None)
    # 100 rows a batch: two creates of 5 s each.
    common = ["--base-url", srv.url, "--api-key-env", "BATCHSRV_KEY", "--model", "gpt-5.2", "-q",
              "--via", "batch", "--poll-every", "100ms", "--batch-max-requests", "100"]
    proc = subprocess.Popen([a.bin, "run", inp, "-o", out, *common], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not any(e.get("event") == "create-delayed" for e in srv.events()):
        if time.time() > deadline or proc.poll() is not None:
            break
        time.sleep(0.05)
    time.sleep(1.0)  # the create is in flight: the batch exists, its answer comes in 4 s
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    created = srv.batches()
    state = state_of(out) or {}
    unknown = [b.get("input_file_id") for b in state.get("batches", []) if not b.get("batch_id")]
    if len(created) != 1 or not unknown:
        fail(case, f"setup: {len(created)} batches created before the kill, state entries without "
                   f"a batch id: {unknown} (expected one of each)")
    code, _, err = run(a, inp, out, srv.url, per_batch=100, timeout=90)
    if "--via live" in err:
        fail(case, "the re-run advises --via live (it would buy the rows of the unknown batch again)")
    check_once(case, srv)
    if len(srv.batches()) > len(created) and any(c in set(created[0][1]) for _, ids in srv.batches()[1:]
                                                   for c in ids):
        fail(case, "the re-run created a second batch for the rows of the batch created before the kill")
    for fid in unknown:
        if fid and fid not in err:
            fail(case, f"the re-run does not name the uploaded file {fid}")
    said = err.strip().splitlines() or ["(nothing)"]
    note(case, f"re-run: exit {code}: {said[0][:300]}" + "".join(f"\n      | {l[:400]}" for l in said[:8]))
    # The user answers the question with what the provider shows: the batch of that file.
    if len(created) == 1 and len(unknown) == 1:
        told = f"{unknown[0]}={created[0][0]}"
        code, _, err = run(a, inp, out, srv.url, ["--batch-of-file", told], per_batch=100, timeout=90)
        expect_exit(case, code, 0, err, f"with --batch-of-file {told}")
        check_records(case, rows, out, expect_ok=ROWS)
        check_once(case, srv)
    srv.stop()


def case_cost_this_run(a, tmp):
    case = "cost-this-run"
    srv = Server(tmp, case)
    inp, rows = make_input(tmp, case)
    out = os.path.join(tmp, f"{case}.out.jsonl")
    code, _, err = run(a, inp, out, srv.url, ["--detach"])
    expect_exit(case, code, 0, err, "--detach: ")
    before = len(records(out))
    code, _, err = run(a, inp, out, srv.url)
    expect_exit(case, code, 0, err, "collect: ")
    recs = check_records(case, rows, out, expect_ok=ROWS)
    written = sum(float(r.get("cost_usd") or 0) for r in recs[before:])
    m = re.search(r"^cost this run: \$([0-9,.]+)", err, re.M)
    if not m:
        fail(case, f"collect: no 'cost this run' line: {tail(err)}")
    else:
        shown = m.group(1).replace(",", "")
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        slack = max(1e-6, 0.5 * 10 ** -decimals + 1e-12)
        if abs(float(shown) - written) > slack:
            fail(case, f"collect: cost this run ${shown}, the {len(recs) - before} records it wrote "
                       f"cost ${written:.6f} (slack {slack:g})")
        note(case, f"collect: cost this run ${shown}, its records ${written:.6f}")
    code, _, err = run(a, inp, out, srv.url)
    expect_exit(case, code, 0, err, "no-op re-run: ")
    m = re.search(r"^cost this run: \$([0-9,.]+)", err, re.M)
    if m and float(m.group(1).replace(",", "")) != 0:
        fail(case, f"the no-op re-run says cost this run ${m.group(1)}")
    if not m and "nothing" not in err:
        fail(case, f"the no-op re-run says neither its cost nor that nothing was sent: {tail(err)}")
    check_once(case, srv)
    srv.stop()


def case_dedup(a, tmp):
    """Repeated requests (issue 27): 150 rows asking 50 questions. A `--detach`ed run submits
    each question once; a row repeating a question in a batch is then inserted at the top; the
    collecting run submits nothing new (the batch's rows are their questions' first rows) and
    every row gets one record with its own question's answer, the repeats marked
    `duplicate_of`. Nothing submitted twice, no live request, no unmatched answer."""
    case = "dedup"
    srv = Server(tmp, case, process_s=2)
    path = os.path.join(tmp, f"{case}.in.jsonl")
    rows = [(f"r{i}", prompt_of(1 + i % 50)) for i in range(1, 151)]
    write_rows(path, rows)
    out = os.path.join(tmp, f"{case}.out.jsonl")
    code, _, err = run(a, path, out, srv.url, ["--detach"])
    expect_exit(case, code, 0, err, "--detach: ")
    submitted = srv.submitted()
    if len(submitted) != 50:
        fail(case, f"the detached run submitted {len(submitted)} rows, expected one per question (50)")
    rows = [("r0", prompt_of(2))] + rows
    write_rows(path, rows)
    code, _, err = run(a, path, out, srv.url)
    expect_exit(case, code, 0, err, "collect: ")
    recs = check_records(case, rows, out, expect_ok=len(rows))
    copies = [r for r in recs if "duplicate_of" in r]
    if len(copies) != len(rows) - 50:
        fail(case, f"{len(copies)} records are copies, expected {len(rows) - 50}")
    stats = check_once(case, srv)
    if stats["submitted_total"] != 50 or stats["live"]:
        fail(case, f"{stats['submitted_total']} rows submitted and {stats['live']} live requests, "
                   "expected 50 and none")
    if os.path.exists(out + ".unmatched.jsonl"):
        fail(case, "answers left in OUTPUT.unmatched.jsonl")
    srv.stop()
    note(case, f"{stats['batches']} batches, {len(copies)} copies")


CASES = {
    "dedup": case_dedup,
    "happy": case_happy,
    "live-over-batches": case_live_over_batches,
    "insert-row": case_insert_row,
    "delete-row": case_delete_row,
    "max-cost": case_max_cost,
    "model-list": case_model_list,
    "wrong-body-html": lambda a, tmp: case_wrong_body(a, tmp, "html"),
    "wrong-body-empty": lambda a, tmp: case_wrong_body(a, tmp, "empty"),
    "wrong-body-half": lambda a, tmp: case_wrong_body(a, tmp, "half"),
    "duplicate-ids": case_duplicate_ids,
    "output-and-error": case_output_and_error,
    "killed-during-create": case_killed_during_create,
    "cost-this-run": case_cost_this_run,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--only", choices=list(CASES), action="append")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR (kept: inputs, outputs, server logs, "
                                                  "each run's stderr in OUTPUT.stderr.txt)")
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    if not os.path.exists(os.path.join(SERVERS, "batchsrv.py")):
        print(f"batchsrv check: {SERVERS}/batchsrv.py not found (../shared beside the repo)")
        return 1
    names = a.only or list(CASES)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="pb-batchsrv-") as scratch:
        tmp = a.keep or scratch
        os.makedirs(tmp, exist_ok=True)
        for name in names:
            print(f"== {name}", flush=True)
            t = time.time()
            try:
                CASES[name](a, tmp)
            except Exception as e:  # a broken case is a failure, the others still run
                fail(name, f"the check itself raised {type(e).__name__}: {e}")
            print(f"   ({time.time() - t:.1f} s)", flush=True)
    print("\n| case | result | why / notes |\n|---|---|---|")
    for name in names:
        why = FAILURES.get(name) or [n.split("\n")[0] for n in NOTES.get(name, [])[:1]]
        print(f"| {name} | {'FAIL' if name in FAILURES else 'PASS'} | "
              + "; ".join(w.replace("|", "/")[:300] for w in why) + " |")
    print(f"\n({time.time() - started:.0f} s)")
    if FAILURES:
        print(f"batchsrv check: {len(FAILURES)} of {len(names)} cases failed")
        return 1
    print("batchsrv check: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
