# Shell helpers sourced by the scripts (not run on its own).

# wait_for_server PORT PID LOG [SECONDS]: waits until the inference-server with process id PID,
# logging to LOG, answers ServerReady on 127.0.0.1:PORT. Fails, printing the server's log, when
# it exits first or is not ready within SECONDS (default 60).
wait_for_server() {
    local port="$1" pid="$2" log="$3" seconds="${4:-60}"
    local ready="import sys, tritonclient.grpc as g; sys.exit(0 if g.InferenceServerClient('127.0.0.1:$port').is_server_ready() else 1)"
    local deadline=$((SECONDS + seconds))
    while ! .venv/bin/python -c "$ready" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "inference-server exited during start-up; its log:" >&2
            cat "$log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "inference-server was not ready on 127.0.0.1:$port after ${seconds}s; its log:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.2
    done
}
