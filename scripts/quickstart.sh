#!/usr/bin/env bash
# Quick start: set up the Python side, build both programs, start inference-server on the bundled
# model repository and benchmark the digits-cnn model with loadgen-client in the MLPerf Server
# scenario over loopback gRPC. Results land in output/quickstart/.
#
# Environment: QPS (default 200), TIME (minimum duration in seconds, default 10),
#              GRPC_PORT (default 8001), METRICS_PORT (default 8002), HTTP_PORT (default 8000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

qps="${QPS:-200}"
duration="${TIME:-10}"
grpc_port="${GRPC_PORT:-8001}"
metrics_port="${METRICS_PORT:-8002}"
http_port="${HTTP_PORT:-8000}"

bash scripts/setup.sh
cargo build --release --locked -p inference-server -p loadgen-client

log=output/quickstart/server.log
mkdir -p output/quickstart
target/release/inference-server --model-repository models/repository \
    --grpc-addr "127.0.0.1:$grpc_port" --metrics-addr "127.0.0.1:$metrics_port" \
    --http-addr "127.0.0.1:$http_port" >"$log" 2>&1 &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

wait_for_server "$grpc_port" "$server" "$log" 60
echo "inference-server is serving models/repository on 127.0.0.1:$grpc_port (gRPC), http://127.0.0.1:$http_port/v2 (REST), metrics: http://127.0.0.1:$metrics_port/metrics"

target/release/loadgen-client --endpoint "http://127.0.0.1:$grpc_port" --model digits-cnn \
    --profile digits-cnn --dataset imagenet --dataset-path models/data/digits-val \
    --scenario Server --qps "$qps" --time "$duration" --output-dir output/quickstart
