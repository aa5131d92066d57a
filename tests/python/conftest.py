"""Fixtures for the Python client tests against a running inference-server.

The tests need a server already serving models/repository (digits-cnn among its models):

    target/release/inference-server ... &          # however CI starts it
    INFERENCE_SERVER_GRPC=127.0.0.1:8001 python -m pytest tests/python -v

Without INFERENCE_SERVER_GRPC the tests that need the server are skipped (with that reason);
test_models.py needs no server. The client waits up to
INFERENCE_SERVER_WAIT_S seconds (default 30) for the server to report live.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Shared with tests/deploy: the binaries, free ports and a server on its own ports.
from harness import (DIGITS_DATA, DIGITS_MODEL, free_port,  # noqa: E402,F401
                     inference_server_bin, loadgen_client)
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
