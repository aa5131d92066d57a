#!/usr/bin/env bash
# Runs the Python-side tests against the real binaries: tritonclient against a live inference-server,
# the deployment files (Prometheus, Grafana, systemd, Kubernetes, the install script) for real,
# and the official tools against loadgen-client's output. Uses the debug build made by `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

bin=target/debug
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
"$bin/inference-server" --model-repository models/repository --grpc-addr "127.0.0.1:$port" \
    --metrics-addr "127.0.0.1:$((port + 1))" --http-addr "127.0.0.1:$((port + 2))" \
    --allow-shared-memory >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

wait_for_server "$port" "$server" "$log" 60

# The TFLite test libraries and models behave as the tests expect (tests/fixtures).
.venv/bin/python tests/fixtures/check_tflite_fixtures.py >/dev/null

# The client's results store stays inside the clone.
export LOADGEN_RESULTS_DB="$PWD/target/tmp/python-tests-results.sqlite"
mkdir -p target/tmp && rm -f "$LOADGEN_RESULTS_DB"
INFERENCE_SERVER_GRPC="127.0.0.1:$port" INFERENCE_SERVER_HTTP="127.0.0.1:$((port + 2))" \
    INFERENCE_SERVER_METRICS="127.0.0.1:$((port + 1))" LOADGEN_CLIENT="$bin/loadgen-client" \
    .venv/bin/python -m pytest -q tests/python tests/deploy
