#!/usr/bin/env bash
# Builds the Python wheel: the repository's release binary goes into the wheel's scripts (so
# `pip install` puts the `promptbatch` command on PATH, exactly the CLI), then maturin builds
# the extension module around it. Usage: python/build-wheel.sh [OUT_DIR] (default target/wheels)
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-target/wheels}"
cargo build --locked --release --manifest-path ../Cargo.toml
mkdir -p promptbatch.data/scripts
cp ../target/release/promptbatch promptbatch.data/scripts/promptbatch
maturin build --release --locked -o "$out"
