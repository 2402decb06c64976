"""promptbatch for Python: the Rust library behind the `promptbatch` command.

Work in progress (issue 25): `run(input, output, **options)` and `report(output)` over file
inputs; frames (pandas, polars, pyarrow, datasets) go through a Parquet file written by pyarrow.
"""

from __future__ import annotations

import os
import tempfile

from ._promptbatch import report, run as _run

__all__ = ["run", "report"]


def _as_path(data, output):
    """A path for `data`: itself when it is one, else an Arrow table written as Parquet beside
    the output (so a frame is fingerprinted like any input and a re-run resumes)."""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(data, pa.Table):
        table = data
    elif hasattr(data, "to_arrow"):  # polars
        table = data.to_arrow()
    elif hasattr(data, "data") and hasattr(data.data, "table"):  # datasets.Dataset
        table = data.data.table
    elif isinstance(data, list):
        table = pa.Table.from_pylist(data)
    else:  # pandas
        table = pa.Table.from_pandas(data, preserve_index=False)
    folder = os.path.dirname(os.path.abspath(os.fspath(output)))
    handle, path = tempfile.mkstemp(prefix=".promptbatch-input-", suffix=".parquet", dir=folder)
    os.close(handle)
    pq.write_table(table, path)
    return path


def run(input, output, **options):
    """Runs `input` (a path, a DataFrame, an Arrow table, a Dataset or a list of dicts) into
    `output`, with the command line's options as keyword arguments. Returns the summary."""
    given_a_path = isinstance(input, (str, os.PathLike))
    path = _as_path(input, output)
    try:
        return _run(path, os.fspath(output), **options)
    except (ValueError, RuntimeError) as error:
        if given_a_path:
            raise
        # The message names the Parquet file the frame was written to; the user gave a frame.
        message = str(error).replace(path, f"the {type(input).__name__} given as input")
        raise type(error)(message) from None
    finally:
        if not given_a_path:
            try:
                os.remove(path)
            except OSError:
                pass
