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
bash scripts/setup_models.sh
