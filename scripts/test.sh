#!/usr/bin/env bash
# The project's test command (README "Quick start"): set up (idempotent), lint, build once, run
# every Rust and Python test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# The Edgecortix DNA backend's tests only: MERA 1.6 in .venv-dna (Python 3.10), a private C++
# runtime for its libraries, and the test deployments compiled with it (target/dna/).
bash scripts/setup_dna.sh

ort_library=$(.venv/bin/python -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[0])') \
    || { echo "test.sh: cannot find libonnxruntime in .venv's onnxruntime wheel" >&2; exit 1; }
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ort_library}"

# Tests that compare with the official Python tools must run here, never skip.
export LOADGEN_REQUIRE_PYTHON=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The arm64 server the install test puts in an arm64 scratch root and runs under qemu.
cargo build --locked -p inference-server --target aarch64-unknown-linux-gnu
bash scripts/python_tests.sh
