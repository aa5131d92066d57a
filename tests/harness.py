"""Helpers shared by the Python test suites (tests/python, tests/deploy): where the binaries are,
free ports, and an inference-server started on its own ports for one test. The fixtures here are
imported into each suite's conftest.py.
"""

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIGITS_MODEL = ROOT / "models" / "repository" / "digits-cnn" / "1" / "model.onnx"
DIGITS_DATA = ROOT / "models" / "data" / "digits-val"
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
def running_server(binary, repository, ready_model, port_picker, log_path, cwd=ROOT,
                   extra_args=(), env=None, tls=None, headers=None):
    """Starts inference-server on `repository` on its own ports (with `extra_args`, and `env`
    added to the environment) and yields (process, gRPC host:port, metrics URL) once
    `ready_model` is ready — or, when it is None, once no model is still loading; stops it
    afterwards. Fails with the server's log if it never gets there. A server with TLS is probed
    with `tls` (tritonclient.grpc's ssl keyword arguments) and `headers` (e.g. a bearer token),
    and its metrics URL is https."""
    import tritonclient.grpc as grpcclient

    grpc_port, metrics_port, http_port = port_picker(), port_picker(), port_picker()
    log = open(log_path, "w")
    server = subprocess.Popen(
        [str(binary), "--model-repository", str(repository),
         "--grpc-addr", f"127.0.0.1:{grpc_port}", "--metrics-addr", f"127.0.0.1:{metrics_port}",
         "--http-addr", f"127.0.0.1:{http_port}", *extra_args],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"127.0.0.1:{grpc_port}"
    try:
        probe = grpcclient.InferenceServerClient(url=url, **(tls or {}))
        deadline = time.monotonic() + 60
        while True:
            try:
                if ready_model is not None and probe.is_model_ready(ready_model, headers=headers):
                    break
                if ready_model is None and probe.is_server_live(headers=headers):
                    index = probe.get_model_repository_index(
                        headers=headers, as_json=True).get("models", [])
                    if all(m.get("state") in ("READY", "UNAVAILABLE") for m in index):
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
        scheme = "https" if tls else "http"
        yield server, url, f"{scheme}://127.0.0.1:{metrics_port}/metrics"
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        log.close()
