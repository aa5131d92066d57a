#!/usr/bin/env bash
# The project's test command (README "Quick start"): lint, build once, run every Rust and Python test.
# Expects the Python environment from scripts/setup.sh (./.venv with the runtimes and reference tools).
set -euo pipefail
cd "$(dirname "$0")/.."

export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(.venv/bin/python -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[0])')}"

# Tests that compare with the official Python tools must run here, never skip.
export LOADGEN_REQUIRE_PYTHON=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
scripts/python_tests.sh
