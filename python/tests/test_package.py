"""The Python package as a user meets it: the wheel installed into a fresh venv, runs against
`promptbatch mock-server` over loopback HTTP (or `dry_run=True`). Run by ci/python-check.sh."""

import json
import os
import shutil
import subprocess

import datasets
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import promptbatch
from conftest import records

ROWS = [
    {"id": f"r{i}", "text": f"héllo wörld {i} 日本 🙂", "n": i, "score": i / 4, "flag": i % 2 == 0}
    for i in range(50)
]

KINDS = {
    "pandas": lambda rows: pd.DataFrame(rows),
    "polars": lambda rows: pl.DataFrame(rows),
    "arrow": lambda rows: pa.Table.from_pylist(rows),
    "datasets": lambda rows: datasets.Dataset.from_list(rows),
    "list-of-dicts": lambda rows: rows,
}


@pytest.mark.parametrize("kind", KINDS)
def test_each_input_kind_round_trips_and_resumes_without_paying_twice(tmp_path, kind, live):
    make = KINDS[kind]
    output = tmp_path / "out.jsonl"
    options = dict(template="Say: {text}", keep_columns=["n", "score", "flag", "text"], **live)
    first = promptbatch.run(make(ROWS), output, **options)
    assert (first["ok"], first["errors"], first["stop"]) == (50, 0, "completed")
    got = records(output)
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in ROWS)
    by_id = {r["id"]: r for r in got}
    assert by_id["r7"]["prompt"] == "Say: héllo wörld 7 日本 🙂"
    assert by_id["r7"]["completion"] == "echo: Say: héllo wörld 7 日本 🙂"
    # Kept columns keep their types: JSON numbers and booleans, not text.
    assert (by_id["r7"]["n"], by_id["r7"]["score"], by_id["r7"]["flag"]) == (7, 1.75, False)

    again = promptbatch.run(make(ROWS), output, **options)
    assert (again["ok"], again["done_before"], again["cost_usd"]) == (0, 50, 0)
    assert len(records(output)) == 50
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".promptbatch-input")]


def test_a_shuffled_dataset_sends_its_rows_in_its_own_order(tmp_path):
    rows = datasets.Dataset.from_list(ROWS).shuffle(seed=1).select(range(10))
    output = tmp_path / "out.jsonl"
    promptbatch.run(rows, output, template="{text}", dry_run=True, ordered=True, handle_signals=False)
    assert [r["id"] for r in records(output)] == rows["id"]


@pytest.mark.parametrize("to", ["pandas", "polars", "arrow"])
def test_read_gives_the_callers_frame_with_typed_columns(tmp_path, to):
    output = tmp_path / "out.jsonl"
    promptbatch.run(pd.DataFrame(ROWS), output, template="{text}", keep_columns="all", dry_run=True, handle_signals=False)
    frame = promptbatch.read(output, to=to)
    table = frame if to == "arrow" else pa.Table.from_pandas(frame) if to == "pandas" else frame.to_arrow()
    assert table.num_rows == 50
    types = {f.name: f.type for f in table.schema}
    assert types["n"] == pa.int64() and types["score"] == pa.float64() and types["flag"] == pa.bool_()
    assert types["prompt_tokens"] in (pa.uint64(), pa.int64())
    assert types["cost_usd"] == pa.float64()
    assert pa.types.is_string(types["text"]) or pa.types.is_large_string(types["text"])
    got = {row["id"]: row for row in table.to_pylist()}
    assert got["r3"]["text"] == "héllo wörld 3 日本 🙂" and got["r3"]["score"] == 0.75
    assert {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.Table}[to] is type(frame)


def test_structured_answers_come_back_as_typed_columns(tmp_path):
    rows = [{"id": f"q{i}", "prompt": json.dumps({"label": f"L{i}", "confidence": i / 10, "id": i})} for i in range(5)]
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "confidence": {"type": "number"}, "id": {"type": "integer"}},
        "required": ["label", "confidence", "id"],
    }
    output = tmp_path / "out.jsonl"
    summary = promptbatch.run(rows, output, json_schema=schema, dry_run=True, handle_signals=False)
    assert summary["ok"] == 5
    table = promptbatch.read(output, to="arrow")
    types = {f.name: f.type for f in table.schema}
    assert types["label"] == pa.string() and types["confidence"] == pa.float64()
    # `id` is taken by the record's own id: the answer's goes to `parsed_id`, as in a CSV output.
    assert types["parsed_id"] == pa.int64()
    by_id = {row["id"]: row for row in table.to_pylist()}
    assert (by_id["q3"]["label"], by_id["q3"]["confidence"], by_id["q3"]["parsed_id"]) == ("L3", 0.3, 3)


def test_a_pydantic_style_model_class_is_a_schema_and_a_record_batch_an_input(tmp_path):
    class Verdict:
        """What pydantic's BaseModel offers: a class with `model_json_schema()`."""

        @classmethod
        def model_json_schema(cls):
            return {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

    batch = pa.RecordBatch.from_pylist([{"id": "a", "prompt": '{"ok": true}'}, {"id": "b", "prompt": '{"ok": false}'}])
    output = tmp_path / "out.jsonl"
    assert promptbatch.run(batch, output, json_schema=Verdict, dry_run=True, handle_signals=False)["ok"] == 2
    frame = promptbatch.read(output, to="polars").sort("id")
    assert frame["ok"].to_list() == [True, False] and frame.schema["ok"] == pl.Boolean
    with pytest.raises(ValueError, match="json_schema: not a valid JSON Schema"):
        promptbatch.run(batch, tmp_path / "x.jsonl", json_schema={"type": "object", "properties": 3}, dry_run=True)


def test_records_stream_to_a_callback_as_they_are_written(tmp_path, live):
    seen = []
    output = tmp_path / "out.jsonl"
    promptbatch.run(ROWS, output, template="{text}", on_record=seen.append, **live)
    assert sorted(r["id"] for r in seen) == sorted(r["id"] for r in ROWS)
    on_disk = {r["id"]: r for r in records(output)}
    assert all(on_disk[r["id"]] == r for r in seen), "the callback sees exactly the line written"


def test_a_callback_that_raises_stops_the_run_and_the_rerun_finishes(tmp_path, live):
    rows = [{"id": f"r{i}", "prompt": f"p {i} #sim:sleep=5ms"} for i in range(500)]
    output = tmp_path / "out.jsonl"
    seen = []

    def fail_at_ten(record):
        seen.append(record["id"])
        if len(seen) == 10:
            raise LookupError("my callback's bug")

    with pytest.raises(LookupError, match="my callback's bug"):
        promptbatch.run(rows, output, concurrency=4, on_record=fail_at_ten, **live)
    written = len(records(output))
    assert 10 <= written < 500 and len(seen) == 10
    rest = promptbatch.run(rows, output, concurrency=64, **live)
    assert (rest["done_before"], rest["ok"]) == (written, 500 - written)
    assert len({r["id"] for r in records(output)}) == len(records(output)) == 500


def test_estimate_and_report_are_the_command_lines_json(tmp_path):
    exe = shutil.which("promptbatch")
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    estimate = promptbatch.estimate(path, template="{text}", max_tokens=100, model=["gpt-5.2", "gemini-3.1-pro-preview"])
    cli = subprocess.run(
        [exe, "estimate", str(path), "--template", "{text}", "--max-tokens", "100",
         "--model", "gpt-5.2,gemini-3.1-pro-preview", "--json"],
        capture_output=True, text=True, check=True,
    )
    assert estimate == json.loads(cli.stdout)
    assert (estimate["rows"], estimate["models_per_row"]) == (100, 2)
    # A frame is estimated like a file.
    from_frame = promptbatch.estimate(pd.DataFrame(ROWS), template="{text}", max_tokens=100, model=["gpt-5.2", "gemini-3.1-pro-preview"])
    assert (from_frame["rows"], from_frame["prompt_tokens"]) == (100, estimate["prompt_tokens"])
    assert from_frame["input"] == "the DataFrame given as input", from_frame["input"]

    output = tmp_path / "out.jsonl"
    promptbatch.run(path, output, template="{text}", dry_run=True, handle_signals=False)
    cli = subprocess.run([exe, "report", str(output), "--json"], capture_output=True, text=True, check=True)
    assert promptbatch.report(output) == json.loads(cli.stdout)
    page = tmp_path / "report.html"
    assert promptbatch.report(output, html=page)["rows"] == 50
    assert page.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_options_are_the_flags_with_their_defaults():
    exe = shutil.which("promptbatch")
    help_text = subprocess.run([exe, "run", "--help"], capture_output=True, text=True, check=True).stdout
    options = promptbatch.options("run")
    for option in options:
        assert option["flag"] in help_text, option
    by_name = {o["name"]: o for o in options}
    assert by_name["concurrency"]["default"] == "16"
    assert by_name["timeout"]["kind"] == "duration" and by_name["timeout"]["default"] == "10m"
    assert by_name["via"]["values"] == ["live", "batch"]
    assert "max_cost:" in promptbatch.run.__doc__


def test_bad_options_fail_like_the_flags_do(tmp_path):
    exe = shutil.which("promptbatch")
    cli = subprocess.run([exe, "run", "x.csv", "-o", "o.jsonl", "--concurrency", "0"], capture_output=True, text=True)
    with pytest.raises(ValueError) as raised:
        promptbatch.run(ROWS, tmp_path / "o.jsonl", concurrency=0)
    message = str(raised.value)
    assert message.startswith("run(): invalid value '0' for concurrency"), message
    reason = cli.stderr.splitlines()[0].split(": ", 2)[-1]
    assert reason in message, (reason, message)
    with pytest.raises(TypeError, match="unexpected keyword argument 'concurency'; did you mean 'concurrency'"):
        promptbatch.run(ROWS, tmp_path / "o.jsonl", concurency=4)
    with pytest.raises(TypeError, match="dry_run takes True or False"):
        promptbatch.run(ROWS, tmp_path / "o.jsonl", dry_run="yes")
    with pytest.raises(ValueError, match=r"invalid value 'train' for via\n  \[possible values: live, batch\]"):
        promptbatch.run(ROWS, tmp_path / "o.jsonl", via="train")
    with pytest.raises(ValueError, match="timeout=-1 is not a duration"):
        promptbatch.run(ROWS, tmp_path / "o.jsonl", timeout=-1)
    assert not (tmp_path / "o.jsonl").exists()


def test_errors_carry_the_command_lines_messages(tmp_path):
    with pytest.raises(RuntimeError, match="cannot open input .*nope.csv"):
        promptbatch.run(tmp_path / "nope.csv", tmp_path / "out.jsonl", dry_run=True, handle_signals=False)
    bad = pd.DataFrame({"id": ["a"], "text": ["x"]})
    with pytest.raises(ValueError, match="--template names column `nope`, which the file lacks") as raised:
        promptbatch.run(bad, tmp_path / "out.jsonl", template="{nope}", dry_run=True, handle_signals=False)
    # The frame is named as what the user gave, not as the temporary file it went through.
    assert str(raised.value).startswith("the DataFrame given as input: "), raised.value
    assert ".promptbatch-input" not in str(raised.value)


def test_an_output_folder_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(RuntimeError, match=f"temporary Parquet file in {missing} .*check that the folder exists"):
        promptbatch.run(ROWS, missing / "out.jsonl", dry_run=True, handle_signals=False)
    # A path input reaches the library, whose message names the output.
    (tmp_path / "in.csv").write_text("id,prompt\na,hi\n")
    with pytest.raises((RuntimeError, ValueError), match="nope"):
        promptbatch.run(tmp_path / "in.csv", missing / "out.jsonl", dry_run=True, handle_signals=False)


def test_a_refused_key_raises_run_stopped_with_the_summary(tmp_path):
    # A server that answers 401 to every request: the run stops fast, without error records.
    rows = [{"id": f"r{i}", "prompt": "hi #sim:status=401"} for i in range(30)]
    with pytest.raises(promptbatch.RunStopped) as raised:
        promptbatch.run(rows, tmp_path / "out.jsonl", dry_run=True, handle_signals=False)
    assert raised.value.summary["stop"] in ("fatal", "refused"), raised.value.summary
    assert raised.value.summary["ok"] == 0


def test_messages_reach_pythons_stderr_where_a_notebook_shows_them(tmp_path, capsys):
    output = tmp_path / "out.jsonl"
    promptbatch.run(ROWS[:5], output, dry_run=True, template="{text}", handle_signals=False)
    promptbatch.run(ROWS, output, dry_run=True, template="{text}", handle_signals=False)
    err = capsys.readouterr().err
    assert "resuming: 5 of 50 rows done, 45 to send" in err, err
    assert "rows: 45 ok" in err, err
    promptbatch.run(ROWS, output, dry_run=True, template="{text}", handle_signals=False, quiet=True)
    assert "rows:" not in capsys.readouterr().err


def test_the_command_line_is_on_path():
    exe = shutil.which("promptbatch")
    assert exe, "pip put no `promptbatch` on PATH"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "run a whole dataset of prompts" in out


def test_a_detached_batch_run_is_collected_by_the_same_call(tmp_path, live):
    rows = [{"id": f"b{i}", "prompt": f"question {i}"} for i in range(30)]
    output = tmp_path / "out.jsonl"
    first = promptbatch.run(rows, output, via="batch", detach=True, poll_every=0.1, **live)
    assert first["stop"] == "detached" and first["detached"]["rows"] == 30, first
    assert os.path.exists(first["detached"]["state"])
    done = promptbatch.run(rows, output, via="batch", poll_every=0.1, **live)
    assert (done["stop"], done["ok"], done["errors"]) == ("completed", 30, 0), done
    got = records(output)
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows)


def test_other_python_threads_run_while_a_run_works(tmp_path, live):
    import threading
    import time

    seen = []  # when the counting thread got to run
    done = threading.Event()

    def count():
        ticks = 0
        while not done.is_set():
            ticks += 1
            if ticks % 1000 == 0:
                seen.append(time.monotonic())

    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": f"g{i}", "prompt": f"p {i} #sim:sleep=20ms"}) + "\n" for i in range(100)))
    counter = threading.Thread(target=count)
    counter.start()
    try:
        start = time.monotonic()
        summary = promptbatch.run(path, tmp_path / "out.jsonl", concurrency=4, quiet=True, **live)  # ≥ 0.5 s
        end = time.monotonic()
    finally:
        done.set()
        counter.join()
    assert summary["ok"] == 100
    # The middle of the run is Rust's alone: with the GIL held there, the thread would not run.
    third = (end - start) / 3
    middle = [t for t in seen if start + third < t < end - third]
    assert len(middle) > 10, (len(middle), end - start)


def test_repeated_questions_are_paid_once_and_reuse_takes_earlier_answers(tmp_path, live):
    rows = [{"id": f"r{i}", "question": f"q{i % 7}"} for i in range(30)]
    output = tmp_path / "out.jsonl"
    estimate = promptbatch.estimate(pd.DataFrame(rows), template="{question}")
    assert (estimate["request_rows"], estimate["not_sent"]["duplicate_rows"]) == (7, 23)
    summary = promptbatch.run(pd.DataFrame(rows), output, template="{question}", **live)
    assert (summary["ok"], summary["deduplicated"], summary["reused"]) == (30, 23, 0)
    frame = promptbatch.read(output)
    copies = frame[frame["duplicate_of"].notna()]
    assert len(copies) == 23 and (copies["cost_usd"] == 0).all()
    assert set(copies["duplicate_of"]) <= set(frame.loc[frame["duplicate_of"].isna(), "id"])
    # Another output, the same questions asked again: every answer is taken from the first.
    again = promptbatch.run(pd.DataFrame(rows), tmp_path / "again.jsonl", template="{question}",
                            reuse=[output], **live)
    assert (again["ok"], again["reused"], again["cost_usd"]) == (30, 30, 0)
    report = promptbatch.report(tmp_path / "again.jsonl")
    assert report["answered"]["reused"] == 30 and report["answered"]["sent"] == 0
