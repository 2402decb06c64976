#!/usr/bin/env bash
# The Python package as a user meets it: builds the wheel (python/build-wheel.sh: maturin, with
# the release binary as its script), installs it into a fresh venv with pandas, polars, pyarrow,
# datasets and pytest from PyPI, and runs python/tests against `promptbatch mock-server` and the
# built-in simulator. Exits 0 without running when PyPI cannot be reached (the check is extra:
# `cargo test` never needs it).
set -uo pipefail
cd "$(dirname "$0")/.."
venv="${PYTHON_CHECK_VENV:-$(mktemp -d)/venv}"
if ! python3 -m venv "$venv"; then
  echo "python-check: cannot make a venv; skipped"
  exit 0
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
if ! pip install -q maturin pandas polars pyarrow datasets pytest; then
  echo "python-check: cannot install maturin/pandas/polars/pyarrow/datasets/pytest from PyPI; skipped"
  exit 0
fi
set -e
# The extension's own code, linted as the library is.
cargo clippy --locked --manifest-path python/Cargo.toml -- -D warnings
wheels="$(mktemp -d)"
bash python/build-wheel.sh "$wheels"
pip install -q --force-reinstall "$wheels"/promptbatch-*.whl
echo "python-check: wheel $(du -h "$wheels"/promptbatch-*.whl | cut -f1)"
cd python/tests
python -c "import time; t = time.time(); import promptbatch; print(f'python-check: import promptbatch {time.time() - t:.3f} s')"
python -m pytest -q
