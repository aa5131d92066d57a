"""Compiles the DNA backend's test deployments with Edgecortix's MERA compiler (mera 1.6).

Usage: compile_deployments.py TEST_MODELS_DIR DIGITS_MODEL DIGITS_DATA OUT_DIR

Run by scripts/setup_dna.sh inside .venv-dna (Python 3.10) under the private loader. Writes one
MERA project per deployment into OUT_DIR/projects and copies each built result
(deploy.so, deploy.json, deploy.params) to OUT_DIR/<name>/:

  <target>/<model>          the conformance models (affine as [1,4], affine_fixed2 [2,4],
                            unbatched [3], two_io as [2,3]), fp32, for the Interpreter,
                            InterpreterHw and Simulator targets (interpreter/, interpreterhw/,
                            simulator/)
  digits-<target>           digits-cnn quantized by MERA's quantizer (calibrated on the first
                            digits-val images), batch 1, for InterpreterHw and Simulator
  digits-ip                 the same for the DNA IP (Sakura-1); it builds, and runs only on a board
"""

import os
import sys
from pathlib import Path
import shutil

import numpy as np
from PIL import Image

import mera

models, digits_model, digits_data, out = (Path(a).resolve() for a in sys.argv[1:5])
projects = out / "projects"
CALIBRATION_IMAGES = 64
# The compiler writes its graph dumps (*.dot) into the working folder.
projects.mkdir(parents=True, exist_ok=True)
os.chdir(projects)


def deploy(name, model_of, target):
    """Compiles into projects/<name> and copies the result to OUT/<name>."""
    project = projects / name
    with mera.TVMDeployer(str(project), overwrite=True) as deployer:
        deployer.deploy(model_of(deployer), mera_platform=mera.Platform.SAKURA_1,
                        target=target, host_arch="x86")
    result = project / "build" / str(target) / "result"
    dest = out / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("deploy.so", "deploy.json", "deploy.params"):
        shutil.copy(result / f, dest / f)
    print(f"compiled {name} ({target})", flush=True)


# The conformance models, fp32, batch fixed where the ONNX model has a symbolic one, for each
# software target (fp32 graphs stay on the host: MERA offloads quantized ones to the DNA IP).
for folder, target in [("interpreter", mera.Target.Interpreter),
                       ("interpreterhw", mera.Target.InterpreterHw),
                       ("simulator", mera.Target.Simulator)]:
    for model, batch in [("affine", 1), ("affine_fixed2", 2), ("unbatched", 1), ("two_io", 2)]:
        deploy(f"{folder}/{model}",
               lambda d, m=model, b=batch: mera.ModelLoader(d).from_onnx(
                   str(models / f"{m}.onnx"), batch_num=b),
               target)

# digits-cnn, quantized: its input is x = pixel / 255, [1, 1, 8, 8] float32.
lines = (digits_data / "val_map.txt").read_text().split("\n")
images = [line.split()[0] for line in lines if line.strip()][:CALIBRATION_IMAGES]
calibration = [
    (np.asarray(Image.open(digits_data / f), dtype=np.float32) / 255.0).reshape(1, 1, 8, 8)
    for f in images
]
quantizer = mera.ModelQuantizer(str(digits_model), input_shape=(1, 1, 8, 8),
                                layout=mera.Layout.NCHW)
quantized = quantizer.calibrate(calibration).quantize()
quantized_path = projects / "digits-cnn.mera"
quantized.save(str(quantized_path))
for name, target in [("digits-interpreterhw", mera.Target.InterpreterHw),
                     ("digits-simulator", mera.Target.Simulator),
                     ("digits-ip", mera.Target.IP)]:
    deploy(name, lambda d: mera.ModelLoader(d).from_quantized_mera(str(quantized_path)), target)
