"""The type stubs editors complete from are shipped and match the options the command line
defines today (python/stubgen.py makes them from `promptbatch.options()`)."""

import ast
import os
import subprocess
import sys

import promptbatch

HERE = os.path.dirname(os.path.abspath(__file__))


def test_the_stubs_are_shipped_and_current():
    package = os.path.dirname(promptbatch.__file__)
    assert os.path.exists(os.path.join(package, "py.typed"))
    stub = os.path.join(package, "__init__.pyi")
    result = subprocess.run([sys.executable, os.path.join(HERE, "..", "stubgen.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with open(stub, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    keywords = {a.arg for a in run.args.kwonlyargs}
    assert {o["name"] for o in promptbatch.options("run")} <= keywords
    assert {"api_key", "on_record", "handle_signals"} <= keywords
