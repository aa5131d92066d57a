"""The generated models and data honour their contracts (no server needed).

digits-cnn (committed): ONNX input/output names, dtypes and dynamic batch; config.toml keys;
accuracy >= 95 % on the committed PNG test split decoded as a client must (gray u8 / 255).
efficientnet-lite0 (made by scripts/setup_models.sh, skipped when absent): contract, and the two
photos shipped with scikit-learn get sensible ImageNet classes (daisy; a palace-like building).
"""

import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DIGITS_MODEL = ROOT / "models" / "repository" / "digits-cnn" / "1" / "model.onnx"

EFFICIENTNET = ROOT / "models" / "generated" / "efficientnet-lite0"
CONFIG_KEYS = {"backend", "device", "max_batch_size", "instances", "dynamic_batching"}
OPTIONAL_CONFIG_KEYS = {"latency_objective_ms", "onnxruntime"}


def io_signature(path):
    graph = onnx.load(str(path), load_external_data=False).graph
    def sig(values):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in values]
    return sig(graph.input), sig(graph.output)


def check_config(model_dir, max_batch_size):
    cfg = tomllib.loads((model_dir / "config.toml").read_text())
    assert CONFIG_KEYS <= set(cfg) <= CONFIG_KEYS | OPTIONAL_CONFIG_KEYS, set(cfg)
    assert cfg["backend"] == "onnxruntime" and cfg["device"] == "cpu"
    assert cfg["max_batch_size"] == max_batch_size and cfg["instances"] == 1
    assert set(cfg["dynamic_batching"]) == {"max_queue_delay_us", "preferred_batch_sizes",
                                            "max_queue_size"}
    return cfg


def test_digits_contract():
    f32 = onnx.TensorProto.FLOAT
    assert io_signature(DIGITS_MODEL) == ([("input", f32, ["N", 1, 8, 8])],
                                          [("logits", f32, ["N", 10])])
    assert DIGITS_MODEL.stat().st_size < 1_000_000
    cfg = check_config(DIGITS_MODEL.parents[1], 64)
    # A tiny model: one intra-op thread (a second one only costs a wake-up per batch).
    assert cfg["onnxruntime"] == {"intra_op_threads": 1}


def test_digits_accuracy_from_png(digits_session, digits_test_set):
    x, y = digits_test_set
    assert x.shape == (450, 1, 8, 8) and x.dtype == np.float32
    assert sorted(np.bincount(y).tolist())[0] >= 40  # every class present
    logits = digits_session.run(["logits"], {"input": x})[0]
    assert float((logits.argmax(axis=1) == y).mean()) >= 0.95


@pytest.fixture(scope="module")
def efficientnet():
    path = EFFICIENTNET / "1" / "model.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not generated; run scripts/setup_models.sh")
    return path


def test_efficientnet_contract(efficientnet):
    f32 = onnx.TensorProto.FLOAT
    assert io_signature(efficientnet) == ([("input", f32, ["N", 3, 224, 224])],
                                          [("logits", f32, ["N", 1000])])
    check_config(EFFICIENTNET, 8)


def test_efficientnet_classifies_sample_photos(efficientnet):
    import onnxruntime as ort
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_efficientnet_lite0 import preprocess

    samples = load_sample_images()
    batch = np.stack([preprocess(Image.fromarray(img)) for img in samples.images])
    sess = ort.InferenceSession(str(efficientnet), providers=["CPUExecutionProvider"])
    top1 = sess.run(["logits"], {"input": batch})[0].argmax(axis=1)
    names = [f.rsplit("/", 1)[-1] for f in samples.filenames]
    got = dict(zip(names, top1.tolist()))
    assert got["flower.jpg"] == 985  # daisy
    assert got["china.jpg"] in {698, 663, 832, 668, 483, 442, 497}  # palace, monastery, stupa...
