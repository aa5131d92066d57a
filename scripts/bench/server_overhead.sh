#!/usr/bin/env bash
# Serving-overhead benchmark: the bare ONNX Runtime session in-process vs the same model through
# inference-server over loopback gRPC (concurrency 1, and concurrency 2×B with and without dynamic
# batching). Prints a markdown table of medians with ratios to the in-process figures.
#
# Usage: scripts/bench/server_overhead.sh [BENCH OPTIONS]
#   e.g. --model models/repository/digits-cnn --duration 2 --repeats 3 --batch 8
#   (all options: scripts/bench/server_overhead.sh --help; each also reads SERVING_OVERHEAD_*)
#
# The default model is models/generated/efficientnet-lite0 (make it with scripts/setup_models.sh),
# else models/repository/digits-cnn. cargo builds the release server binary first. ONNX Runtime is
# found as the server finds it (ORT_DYLIB_PATH, system folders, the .venv onnxruntime wheel).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec cargo bench -p inference-server --bench serving_overhead -- "$@"
