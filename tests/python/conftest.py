"""Fixtures for the Python client tests against a running inference-server.

The tests need a server already serving models/repository (digits-cnn among its models):

    target/release/inference-server ... &          # however CI starts it
    INFERENCE_SERVER_GRPC=127.0.0.1:8001 python -m pytest tests/python -v

Without INFERENCE_SERVER_GRPC the tests that need the server are skipped (with that reason);
test_models.py needs no server. The client waits up to
INFERENCE_SERVER_WAIT_S seconds (default 30) for the server to report live.
"""

import contextlib
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DIGITS_MODEL = ROOT / "models" / "repository" / "digits-cnn" / "1" / "model.onnx"
DIGITS_DATA = ROOT / "models" / "data" / "digits-val"
ENV_URL = "INFERENCE_SERVER_GRPC"
ENV_HTTP = "INFERENCE_SERVER_HTTP"


@pytest.fixture(scope="session")
def grpc_url():
    url = os.environ.get(ENV_URL, "").strip()
    if not url:
        pytest.skip(f"{ENV_URL} is not set: start inference-server serving models/repository and "
                    f"set {ENV_URL}=host:port (e.g. 127.0.0.1:8001) to run the client tests")
    return url


@pytest.fixture(scope="session")
def http_url():
    url = os.environ.get(ENV_HTTP, "").strip()
    if not url:
        pytest.skip(f"{ENV_HTTP} is not set: start inference-server with --http-addr and set "
                    f"{ENV_HTTP}=host:port (scripts/python_tests.sh does both)")
    return url


@pytest.fixture(scope="session")
def client(grpc_url):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    c = grpcclient.InferenceServerClient(url=grpc_url)
    deadline = time.monotonic() + float(os.environ.get("INFERENCE_SERVER_WAIT_S", "30"))
    last = None
    while True:
        try:
            if c.is_server_live():
                break
        except InferenceServerException as err:
            last = err
        if time.monotonic() > deadline:
            pytest.fail(f"inference-server at {grpc_url} is not live ({last})")
        time.sleep(0.2)
    yield c
    c.close()


@pytest.fixture(scope="session")
def digits_session():
    import onnxruntime as ort

    if not DIGITS_MODEL.is_file():
        pytest.fail(f"{DIGITS_MODEL} is missing; run scripts/make_digits_model.py")
    return ort.InferenceSession(str(DIGITS_MODEL), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def digits_test_set():
    """(inputs FP32 [450,1,8,8], labels int64 [450]) decoded from the PNG data set exactly as a
    client must: 8-bit gray pixel / 255."""
    from PIL import Image

    val_map = DIGITS_DATA / "val_map.txt"
    if not val_map.is_file():
        pytest.fail(f"{val_map} is missing; run scripts/make_digits_dataset.py")
    images, labels = [], []
    for line in val_map.read_text().splitlines():
        name, label = line.split()
        pixels = np.asarray(Image.open(DIGITS_DATA / name).convert("L"), dtype=np.float32)
        images.append(pixels / np.float32(255.0))
        labels.append(int(label))
    return np.stack(images)[:, None, :, :], np.array(labels, dtype=np.int64)


# --- loadgen-client end-to-end tests (test_loadgen_e2e.py) ---------------------------------------

ENV_CLIENT = "LOADGEN_CLIENT"


def _binary(path_text):
    path = Path(path_text)
    return path if path.is_absolute() else ROOT / path


@pytest.fixture(scope="session")
def loadgen_client():
    """Path of the loadgen-client binary named by LOADGEN_CLIENT (scripts/python_tests.sh sets it)."""
    value = os.environ.get(ENV_CLIENT, "").strip()
    if not value:
        pytest.skip(f"{ENV_CLIENT} is not set: build with `cargo build -p loadgen-client` and set "
                    f"{ENV_CLIENT}=target/debug/loadgen-client (scripts/python_tests.sh does both)")
    path = _binary(value)
    if not path.is_file():
        pytest.fail(f"{ENV_CLIENT}={value} does not exist; run `cargo build -p loadgen-client`")
    return path


@pytest.fixture(scope="session")
def inference_server_bin(loadgen_client):
    """The inference-server binary: INFERENCE_SERVER_BIN, else the one beside loadgen-client."""
    value = os.environ.get("INFERENCE_SERVER_BIN", "").strip()
    path = _binary(value) if value else loadgen_client.parent / "inference-server"
    if not path.is_file():
        pytest.skip(f"{path} does not exist: run `cargo build -p inference-server` or set "
                    f"INFERENCE_SERVER_BIN")
    return path


@pytest.fixture(scope="session")
def free_port():
    """A function returning a TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    def pick():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick


@contextlib.contextmanager
def running_server(binary, repository, ready_model, port_picker, log_path, cwd=ROOT):
    """Starts inference-server on `repository` on its own ports and yields (process, url) once
    `ready_model` is ready; stops it afterwards. Fails with the server's log if it never gets
    ready."""
    import tritonclient.grpc as grpcclient

    grpc_port, metrics_port, http_port = port_picker(), port_picker(), port_picker()
    log = open(log_path, "w")
    server = subprocess.Popen(
        [str(binary), "--model-repository", str(repository),
         "--grpc-addr", f"127.0.0.1:{grpc_port}", "--metrics-addr", f"127.0.0.1:{metrics_port}",
         "--http-addr", f"127.0.0.1:{http_port}"],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{grpc_port}"
    try:
        probe = grpcclient.InferenceServerClient(url=url)
        deadline = time.monotonic() + 60
        while True:
            try:
                if probe.is_model_ready(ready_model):
                    break
            except Exception:  # not listening yet
                pass
            if server.poll() is not None:
                pytest.fail(f"inference-server exited during start-up: {Path(log_path).read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"inference-server on {url} was not ready within 60 s: "
                            f"{Path(log_path).read_text()}")
            time.sleep(0.1)
        probe.close()
        yield server, url
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        log.close()
