"""Fixtures: `promptbatch mock-server` (the simulator as its own process, reached over loopback
HTTP by `base_url`, the way a real server is) and helpers to read an output."""

import json
import shutil
import socket
import subprocess
import time

import pytest


@pytest.fixture(scope="session")
def server():
    """A running `promptbatch mock-server` (from the venv's PATH): its base URL."""
    exe = shutil.which("promptbatch")
    assert exe, "pip put no `promptbatch` on PATH"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [exe, "mock-server", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, "mock-server exited"
            assert time.time() < deadline, "mock-server did not listen within 20 s"
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    process.terminate()
    process.wait(10)


@pytest.fixture
def live(server):
    """Keyword arguments that send a run to the mock server with a key, as to a real API."""
    return {"base_url": server, "api_key": "sk-test-not-a-real-key", "handle_signals": False}


def records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
