#!/usr/bin/env bash
# Runs the Python-side tests against the real binaries: tritonclient against a live inference-server,
# and the official tools against loadgen-client's output. Uses the debug build made by `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/debug
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
"$bin/inference-server" --model-repository models/repository --grpc-addr "127.0.0.1:$port" \
    --metrics-addr "127.0.0.1:$((port + 1))" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
    if .venv/bin/python -c "import tritonclient.grpc as g, sys; sys.exit(0 if g.InferenceServerClient('127.0.0.1:$port').is_server_ready() else 1)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server" 2>/dev/null; then
        echo "inference-server exited during start-up:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.2
done

INFERENCE_SERVER_GRPC="127.0.0.1:$port" LOADGEN_CLIENT="$bin/loadgen-client" \
    .venv/bin/python -m pytest -q tests/python
