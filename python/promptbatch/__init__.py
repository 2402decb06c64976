"""promptbatch: run a whole dataset of prompts through a chat-completions API, fast, within rate
limits, without losing a row, and know what it cost. The Rust library behind the `promptbatch`
command, in this process.

    import promptbatch, pandas as pd
    df = pd.DataFrame({"id": ["a", "b"], "text": ["Hello", "Bonjour"]})
    promptbatch.run(df, "out.jsonl", template="Translate to English: {text}", dry_run=True)
    answers = promptbatch.read("out.jsonl")          # a pandas DataFrame, one row per record

`run`, `estimate`, `report` and `read` take the command line's options as keyword arguments:
the same names (`--max-cost` is `max_cost`), the same defaults, the same checks and messages.
The output file is the checkpoint, as on the command line: calling `run` again with the same
output resumes it. Docs: PYTHON.md in the repository.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from . import _promptbatch
from ._promptbatch import RunStopped

__all__ = ["run", "estimate", "report", "read", "options", "RunStopped"]


def options(command="run"):
    """The options of `run` or `estimate`, as the command line defines them: a list of dicts
    with each option's keyword `name`, its `flag`, `kind`, `default`, `values` and `help`."""
    return _promptbatch.options(command)


def run(input, output, *, api_key=None, on_record=None, handle_signals=True, **options):
    """Sends every row of `input` to the API and writes one record per row to `output`.

    `input` is a path (CSV, JSONL or Parquet), a pandas or polars DataFrame, a pyarrow Table, a
    Hugging Face `datasets.Dataset` or a list of dicts. `output` is a path: `.jsonl`, `.csv` or
    `.parquet`, as with `-o`. If it exists, the run resumes: rows that have an ok record for
    the same request are kept, only the others are sent.

    Returns the summary as a dict (`ok`, `errors`, `done_before`, `cost_usd`, `tokens`, …).
    Raises `KeyboardInterrupt` after Ctrl-C (in-flight rows finish first; call again to resume),
    `RunStopped` (with `.summary`) when the budget, a refused model or the API ended the run
    early, `ValueError` for a mistake in the options or the input, `RuntimeError` otherwise.

    Python-only arguments: `api_key` (else the environment, as on the command line),
    `on_record` (called with each record, a dict, once it is in the output; if it raises, the
    run stops as after Ctrl-C and `run` raises that exception), `handle_signals` (False leaves
    Ctrl-C to your program). `json_schema` also takes a dict or a pydantic model class.

    Every other keyword is a flag of `promptbatch run` (see the list below, or `options()`):
    durations take seconds, a `timedelta` or text such as "90s"; lists take a list or one
    value; `param` takes a dict.
    """
    with _input_file(input, beside=output) as path:
        return _promptbatch.run(
            path,
            os.fspath(output),
            api_key=api_key,
            on_record=on_record,
            handle_signals=handle_signals,
            **options,
        )


def estimate(input, **options):
    """Counts the prompt tokens of `input` exactly (offline) and estimates the cost and time of a
    run: `promptbatch estimate INPUT --json`, as a dict. `input` is anything `run` takes; the
    keywords are the flags of `promptbatch estimate` (e.g. `model`, `template`, `max_tokens`,
    `expect_output`, `from_output`)."""
    with _input_file(input) as path:
        estimate = _promptbatch.estimate(path, **options)
    if isinstance(input, (str, os.PathLike)):
        return estimate
    import json

    # Wherever the estimate names the temporary file (`input`, `first_invalid`), name the frame.
    return json.loads(json.dumps(estimate).replace(json.dumps(path)[1:-1], _given(input)))


def report(output, *, prices=None, html=None):
    """Summarizes an output (finished or partial): `promptbatch report OUTPUT --json`, as a dict
    (rows, ok, errors, tokens, cost by model, latency, errors grouped by message, the run over
    time). `html="report.html"` also writes the report as one self-contained HTML page."""
    return _promptbatch.report(
        _checkpoint_of(output), prices=prices, html=None if html is None else os.fspath(html)
    )


def read(output, to=None):
    """The records of `output` (finished or partial) as a frame: `to="pandas"`, `"polars"` or
    `"arrow"` (default: pandas if installed, else polars, else a pyarrow Table).

    One row per record, columns typed as `promptbatch export` types them (counts as integers,
    `cost_usd` as float, kept input columns by their values); a `json_schema` run's `parsed`
    answer becomes one typed column per top-level property (named `parsed_NAME` when the name is
    taken), as in a CSV output."""
    import pyarrow.parquet as pq

    to = to or _default_frame_kind()
    if to not in ("pandas", "polars", "arrow"):
        raise ValueError(f'read(): to={to!r}: give "pandas", "polars" or "arrow"')
    source = os.fspath(output)
    if source.endswith(".parquet") and os.path.exists(source):
        table = pq.read_table(source)
    else:
        with tempfile.TemporaryDirectory(prefix="promptbatch-read-") as folder:
            dest = os.path.join(folder, "records.parquet")
            _promptbatch.export(_checkpoint_of(source), dest)
            table = pq.read_table(dest)
    table = _typed_parsed(table)
    if to == "arrow":
        return table
    if to == "polars":
        import polars

        return polars.from_arrow(table)
    return table.to_pandas()


@contextlib.contextmanager
def _input_file(data, beside=None):
    """The path of the input: `data` itself when it is one, else a temporary Parquet file
    holding it (removed afterwards), with the messages naming what the user gave instead."""
    if isinstance(data, (str, os.PathLike)):
        yield os.fspath(data)
        return
    path = _as_path(data, beside)
    try:
        yield path
    except (ValueError, RuntimeError) as error:
        if path not in str(error):
            raise
        # The message names the Parquet file the frame went through; the user gave a frame.
        raise type(error)(str(error).replace(path, _given(data))) from None
    finally:
        _remove(path)


def _default_frame_kind():
    for module in ("pandas", "polars"):
        try:
            __import__(module)
            return module
        except ImportError:
            pass
    return "arrow"


def _checkpoint_of(output):
    """An output's records: `x.parquet`'s are in its checkpoint `x.parquet.jsonl` until the run
    ends."""
    output = os.fspath(output)
    checkpoint = output + ".jsonl"
    if output.endswith(".parquet") and not os.path.exists(output) and os.path.exists(checkpoint):
        return checkpoint
    return output


def _typed_parsed(table):
    """`parsed` (the answer's JSON text) as one typed column per top-level property."""
    import json

    import pyarrow as pa

    if "parsed" not in table.column_names or not pa.types.is_string(table.schema.field("parsed").type):
        return table
    values = [None if v is None else json.loads(v) for v in table.column("parsed").to_pylist()]
    if not all(v is None or isinstance(v, dict) for v in values):
        return table
    parsed = pa.array(values)
    if not pa.types.is_struct(parsed.type):
        return table
    at = table.column_names.index("parsed")
    table = table.remove_column(at)
    for offset, field in enumerate(parsed.type):
        name = field.name
        while name in table.column_names:
            name = "parsed_" + name
        table = table.add_column(at + offset, name, parsed.field(field.name))
    return table


def _as_path(data, output):
    """A Parquet file holding `data` (written by pyarrow, without copying the frame row by row):
    beside the output, so it is on the same disk, or in the temporary folder. The run
    fingerprints its rows like any input's, so a re-run with the same frame resumes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = _as_arrow(data, pa)
    folder = os.path.dirname(os.path.abspath(os.fspath(output))) if output is not None else tempfile.gettempdir()
    _remove_leftovers(folder)
    path = None
    try:
        handle, path = tempfile.mkstemp(prefix=f"{_INPUT_PREFIX}{os.getpid()}-", suffix=".parquet", dir=folder)
        os.close(handle)
        pq.write_table(table, path)
    except OSError as error:
        if path:
            _remove(path)
        raise RuntimeError(
            f"cannot write the {type(data).__name__} given as input to a temporary Parquet file in "
            f"{folder} (the run reads it from there, beside the output): {error}; check that the "
            f"folder exists and has free space, or write the rows to a file and give its path"
        ) from error
    except BaseException:
        if path:
            _remove(path)
        raise
    return path


_INPUT_PREFIX = ".promptbatch-input-"


def _remove_leftovers(folder):
    """Removes the input files of runs whose process is gone (`kill -9` leaves its file): each
    is named `.promptbatch-input-PID-….parquet`."""
    if os.name != "posix":  # os.kill(pid, 0) probes a process only there
        return
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(_INPUT_PREFIX) and name.endswith(".parquet")):
            continue
        pid = name[len(_INPUT_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(os.path.join(folder, name))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def _as_arrow(data, pa):
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, list):
        return pa.Table.from_pylist(data)
    kind = type(data).__module__.split(".")[0]
    if kind == "polars":
        return data.to_arrow()
    if kind == "datasets":
        if getattr(data, "_indices", None) is not None:  # after select / shuffle / filter
            data = data.flatten_indices()
        return data.data.table
    if kind == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "__arrow_c_stream__"):  # any Arrow-native frame (duckdb, …)
        return pa.table(data)
    raise TypeError(
        f"run(): input must be a path, a pandas or polars DataFrame, a pyarrow Table, a "
        f"datasets.Dataset or a list of dicts, not {type(data).__name__}"
    )


def _given(data):
    return f"the {type(data).__name__} given as input"


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _options_text(command):
    """The options of `command` for its docstring: one paragraph per flag."""
    lines = []
    for option in _promptbatch.options(command):
        default = f" (default: {option['default']})" if option["default"] else ""
        help_text = " ".join(option["help"].split())
        lines.append(f"    {option['name']}{default}: {help_text}")
    return "\n".join(lines)


run.__doc__ += "\n    Options:\n" + _options_text("run") + "\n"
estimate.__doc__ += "\n\n    Options:\n" + _options_text("estimate") + "\n"
