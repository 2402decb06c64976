"""The Python package as a user meets it: the wheel installed into a fresh venv, the built-in
simulator (`dry_run=True`, no key, no network). Run by ci/python-check.sh."""

import os
import shutil
import subprocess

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import promptbatch


def records(path):
    import json

    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize(
    "make",
    [
        lambda rows: pd.DataFrame(rows),
        lambda rows: pl.DataFrame(rows),
        lambda rows: pa.Table.from_pylist(rows),
        lambda rows: rows,
    ],
    ids=["pandas", "polars", "arrow", "list-of-dicts"],
)
def test_each_input_kind_round_trips_and_resumes_without_paying_twice(tmp_path, make):
    rows = [{"id": f"r{i}", "text": f"héllo wörld {i} 日本"} for i in range(50)]
    output = tmp_path / "out.jsonl"
    first = promptbatch.run(make(rows), output, template="Say: {text}", dry_run=True, handle_signals=False)
    assert (first["ok"], first["errors"], first["stop"]) == (50, 0, "Completed")
    got = records(output)
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows)
    by_id = {r["id"]: r for r in got}
    assert by_id["r7"]["prompt"] == "Say: héllo wörld 7 日本"
    again = promptbatch.run(make(rows), output, template="Say: {text}", dry_run=True, handle_signals=False)
    assert (again["ok"], again["done_before"]) == (0, 50)
    assert len(records(output)) == 50
    report = promptbatch.report(output)
    assert (report["rows"], report["ok"]) == (50, 50)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".promptbatch-input")]


def test_errors_carry_the_command_lines_messages(tmp_path):
    with pytest.raises(RuntimeError, match="cannot open input .*nope.csv"):
        promptbatch.run(tmp_path / "nope.csv", tmp_path / "out.jsonl", dry_run=True, handle_signals=False)
    bad = pd.DataFrame({"id": ["a"], "text": ["x"]})
    with pytest.raises(ValueError, match="--template names column `nope`, which the file lacks") as raised:
        promptbatch.run(bad, tmp_path / "out.jsonl", template="{nope}", dry_run=True, handle_signals=False)
    # The frame is named as what the user gave, not as the temporary file it went through.
    assert str(raised.value).startswith("the DataFrame given as input: "), raised.value
    assert ".promptbatch-input" not in str(raised.value)


def test_the_command_line_is_on_path():
    exe = shutil.which("promptbatch")
    assert exe, "pip put no `promptbatch` on PATH"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "run a whole dataset of prompts" in out


def test_ctrl_c_stops_the_run_resumably_and_the_rerun_pays_nothing_twice(tmp_path):
    import signal
    import threading
    import time

    rows = [{"id": f"r{i}", "prompt": f"p {i} #sim:sleep=50ms"} for i in range(2000)]
    output = tmp_path / "out.jsonl"
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        promptbatch.run(rows, output, dry_run=True, concurrency=8)
    written = len(records(output))
    assert 0 < written < 2000, written
    # Python's own Ctrl-C still works after a run.
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        time.sleep(10)
    rest = promptbatch.run(rows, output, dry_run=True, concurrency=64, handle_signals=False)
    assert (rest["done_before"], rest["ok"]) == (written, 2000 - written)
    got = records(output)
    assert len(got) == 2000 and len({r["id"] for r in got}) == 2000
