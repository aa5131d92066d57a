#!/usr/bin/env bash
# Creates ./.venv with the native runtimes (ONNX Runtime), model/data generators and the official
# reference tools, then generates the models that are not committed. Idempotent: a second run
# only checks. Fails loudly, naming what to install, when a step cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "setup.sh: $*" >&2; exit 1; }

command -v python3 >/dev/null || fail "python3 not found; install it (Debian: apt-get install python3)"
if [ ! -x .venv/bin/python ]; then
    # Debian splits venv/ensurepip into python3-venv.
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "==> installing python3-venv (python3 -m venv needs it)"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        else
            fail "python3 -m venv needs the venv module: sudo apt-get install python3-venv"
        fi
    fi
    python3 -m venv .venv || fail "python3 -m venv .venv failed"
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt \
    || fail "pip install -r scripts/requirements.txt failed (see above)"

# curl for the README's REST examples, which the tests run.
if ! command -v curl >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
    else
        fail "the tests run curl: sudo apt-get install curl"
    fi
fi

# perf_analyzer (Triton's benchmark client) for the compatibility tests, in its own virtualenv.
if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing libb64-0d (perf_analyzer needs it)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d >/dev/null
    else
        fail "perf_analyzer needs Debian's libb64-0d: sudo apt-get install libb64-0d"
    fi
fi
[ -x .venv-perf/bin/python ] || python3 -m venv .venv-perf || fail "python3 -m venv .venv-perf failed"
.venv-perf/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-perf.txt \
    || fail "pip install -r scripts/requirements-perf.txt failed (see above)"
[ -x .venv-perf/bin/perf_analyzer ] || fail "the tritonclient 2.41.0 wheel did not install perf_analyzer"
bash scripts/setup_models.sh
