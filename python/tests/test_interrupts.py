"""A run stopped from Python — Ctrl-C in the script, `kill -9` of the whole Python process —
leaves an output that the same call resumes, paying for no row twice."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import promptbatch
from conftest import records

ROWS = [{"id": f"r{i}", "prompt": f"p {i} #sim:sleep=50ms"} for i in range(2000)]


def test_ctrl_c_stops_the_run_resumably_and_the_rerun_pays_nothing_twice(tmp_path, server):
    output = tmp_path / "out.jsonl"
    live = {"base_url": server, "api_key": "sk-test"}
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        promptbatch.run(ROWS, output, concurrency=8, **live)
    written = len(records(output))
    assert 0 < written < 2000, written
    # Python's own Ctrl-C still works after a run.
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        time.sleep(10)
    rest = promptbatch.run(ROWS, output, concurrency=64, handle_signals=False, **live)
    assert (rest["done_before"], rest["ok"]) == (written, 2000 - written)
    got = records(output)
    assert len(got) == 2000 and len({r["id"] for r in got}) == 2000


def test_kill_9_of_the_python_process_loses_nothing_and_resumes(tmp_path, server):
    output = tmp_path / "out.jsonl"
    script = textwrap.dedent(
        f"""
        import pandas as pd, promptbatch
        rows = pd.DataFrame({{"id": [f"r{{i}}" for i in range(2000)],
                              "prompt": [f"p {{i}} #sim:sleep=50ms" for i in range(2000)]}})
        promptbatch.run(rows, {str(output)!r}, concurrency=16, base_url={server!r}, api_key="sk-test")
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not output.exists() or len(output.read_bytes().splitlines()) < 100:
        assert child.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no 100 records within 60 s"
        time.sleep(0.05)
    child.kill()  # SIGKILL: no handler runs, nothing is flushed on the way out
    child.wait()
    whole = [line for line in output.read_bytes().splitlines() if line.endswith(b"}")]
    assert 100 <= len(whole) < 2000, len(whole)
    # The frame went through a temporary Parquet file, which the killed process left behind.
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".promptbatch-input")]
    assert len(leftovers) == 1, leftovers

    import pandas as pd

    rows = pd.DataFrame({"id": [f"r{i}" for i in range(2000)], "prompt": [f"p {i} #sim:sleep=50ms" for i in range(2000)]})
    rest = promptbatch.run(rows, output, concurrency=64, base_url=server, api_key="sk-test", handle_signals=False)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".promptbatch-input")], "left over"
    assert rest["done_before"] >= len(whole) - 1  # the last line may be torn, and is sent again
    assert rest["done_before"] + rest["ok"] == 2000 and rest["errors"] == 0
    got = records(output)
    assert len(got) == 2000 and len({r["id"] for r in got}) == 2000
