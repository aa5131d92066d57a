#!/usr/bin/env bash
# Creates ./.venv with the native runtimes (ONNX Runtime), model/data generators and the official
# reference tools, then generates the models that are not committed. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
if [ -x scripts/setup_models.sh ]; then scripts/setup_models.sh; fi
