"""The OpenVINO backend through the real server and tritonclient: EfficientNet-Lite0 read by
OpenVINO from the ONNX file and from IR answers like ONNX Runtime, and the quantized uint8 .tflite
model read by OpenVINO classifies the photos shipped with scikit-learn (a daisy; a palace-like
building). Needs the models made by scripts/setup_models.sh.
"""

import sys

import numpy as np
import pytest

from harness import ROOT, running_server

GENERATED = ROOT / "models" / "generated"
PALACE_LIKE = {698, 663, 832, 668, 483, 442, 497}  # palace, monastery, stupa, mosque, castle...


def link_model(repo, name, source_version_dir, config):
    version = repo / name / "1"
    version.mkdir(parents=True)
    for item in source_version_dir.iterdir():
        (version / item.name).symlink_to(item)
    (repo / name / "config.toml").write_text(config)


@pytest.fixture(scope="module")
def openvino_server(inference_server_bin, free_port, tmp_path_factory):
    for needed in ["efficientnet-lite0", "efficientnet-lite0-openvino", "efficientnet-lite0-uint8"]:
        if not (GENERATED / needed / "1").is_dir():
            pytest.fail(f"models/generated/{needed} is missing; run scripts/setup_models.sh")
    repo = tmp_path_factory.mktemp("openvino-repo")
    batched = "max_batch_size = 4\n"
    link_model(repo, "eff-ort", GENERATED / "efficientnet-lite0" / "1",
               'backend = "onnxruntime"\n' + batched)
    link_model(repo, "eff-ov-onnx", GENERATED / "efficientnet-lite0" / "1",
               'backend = "openvino"\n' + batched)
    link_model(repo, "eff-ov-ir", GENERATED / "efficientnet-lite0-openvino" / "1",
               'backend = "openvino"\n' + batched)
    link_model(repo, "eff-uint8", GENERATED / "efficientnet-lite0-uint8" / "1",
               (GENERATED / "efficientnet-lite0-uint8" / "config.toml").read_text())
    with running_server(inference_server_bin, repo, "eff-uint8", free_port,
                        repo / "server.log") as (_, url, _):
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient(url=url)
        yield client
        client.close()


@pytest.fixture(scope="module")
def photos():
    """(names, FP32 NCHW normalised batch, uint8 NHWC centre crops) of scikit-learn's photos."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_efficientnet_lite0 import preprocess

    samples = load_sample_images()
    names = [f.rsplit("/", 1)[-1] for f in samples.filenames]
    floats = np.stack([preprocess(Image.fromarray(img)) for img in samples.images])
    # The same crop as bytes: undo (x - 127) / 128 and go back to HWC.
    pixels = np.clip(np.rint(floats * 128.0 + 127.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return names, floats, pixels


def infer(client, model, name, array):
    import tritonclient.grpc as grpcclient

    datatype = "UINT8" if array.dtype == np.uint8 else "FP32"
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    result = client.infer(model, [tensor])
    return result


def test_metadata_reports_the_openvino_platform(openvino_server):
    meta = openvino_server.get_model_metadata("eff-ov-ir", as_json=True)
    assert meta["platform"] == "openvino"
    assert meta["inputs"][0]["shape"] == ["-1", "3", "224", "224"]
    config = openvino_server.get_model_config("eff-ov-ir", as_json=True)["config"]
    assert config["backend"] == "openvino"
    assert config["default_model_filename"] == "model.xml"


def test_onnx_and_ir_through_openvino_answer_like_onnxruntime(openvino_server, photos):
    _, floats, _ = photos
    reference = infer(openvino_server, "eff-ort", "input", floats).as_numpy("logits")
    for model in ["eff-ov-onnx", "eff-ov-ir"]:
        result = infer(openvino_server, model, "input", floats)
        logits = result.as_numpy("logits")
        assert logits.shape == reference.shape
        assert np.abs(logits - reference).max() < 1e-3, model
        assert (logits.argmax(axis=1) == reference.argmax(axis=1)).all()
        params = result.get_response().parameters
        assert params["device"].string_param == "CPU"


def test_the_uint8_tflite_model_classifies_the_photos(openvino_server, photos):
    names, _, pixels = photos
    top1 = {}
    for name, image in zip(names, pixels):
        scores = infer(openvino_server, "eff-uint8", "images", image[None]).as_numpy("Softmax")
        assert scores.dtype == np.uint8 and scores.shape == (1, 1000)
        top1[name] = int(scores.argmax())
    assert top1["flower.jpg"] == 985, top1  # daisy
    assert top1["china.jpg"] in PALACE_LIKE, top1
