"""The Edgecortix DNA backend through the real server and client: digits-cnn quantized by MERA
for the Simulator target (scripts/setup_dna.sh compiles it) serves loadgen-client's accuracy
and performance runs beside the same model on ONNX Runtime; the IP target without a board and a
killed worker process get clear statuses while the other models keep serving.
"""

import os
import shutil
import signal
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from harness import DIGITS_DATA, ROOT, running_server
from test_loadgen_e2e import MIN_ACCURACY, output, read_detail

DEPLOYMENTS = ROOT / "target" / "dna" / "deployments"
LIBDIR = ROOT / "target" / "dna" / "sysroot" / "usr" / "lib" / "x86_64-linux-gnu"
MERA = ROOT / ".venv-dna" / "lib" / "python3.10" / "site-packages" / "tvm" / "libmeratvm.so"


def dna_model(repo, name, deployment, target, device, extra=""):
    (repo / name / "1").mkdir(parents=True)
    for f in ("deploy.so", "deploy.json", "deploy.params"):
        shutil.copy(DEPLOYMENTS / deployment / f, repo / name / "1" / f)
    (repo / name / "config.toml").write_text(
        f'backend = "dna"\ndevice = "{device}"\nmax_batch_size = 8\n{extra}'
        f'[dna]\ntarget = "{target}"\noutputs = ["logits"]\n')


@pytest.fixture(scope="module")
def dna_server(inference_server_bin, free_port, tmp_path_factory):
    if not (DEPLOYMENTS / "digits-simulator" / "deploy.so").is_file() or not MERA.is_file():
        pytest.fail("the DNA deployments or MERA are missing; run scripts/setup_dna.sh")
    repo = tmp_path_factory.mktemp("dna-repo")
    shutil.copytree(ROOT / "models" / "repository" / "digits-cnn", repo / "digits-cnn")
    dna_model(repo, "digits-dna", "digits-simulator", "Simulator", "cpu")
    dna_model(repo, "digits-dna-hw", "digits-interpreterhw", "InterpreterHw", "cpu")
    dna_model(repo, "digits-dna-ip", "digits-ip", "IP", "dna:0", extra="required = false\n")
    env = {
        "MERA_TVM_LIBRARY": str(MERA),
        "INFERENCE_SERVER_DNA_LOADER": str(LIBDIR / "ld-linux-x86-64.so.2"),
        "INFERENCE_SERVER_DNA_LIBRARY_PATH": f"{LIBDIR}:{ROOT / '.venv-dna' / 'lib'}",
    }
    with running_server(inference_server_bin, repo, None, free_port, repo / "server.log",
                        env=env) as (server, url, metrics):
        yield server, url, metrics, repo


def infer(url, model, x):
    import tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient(url=url)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        return client.infer(model, [inp])
    finally:
        client.close()


def run_client(loadgen_client, cwd, url, *args):
    cmd = [str(loadgen_client), "--profile", "digits-cnn", "--model", "digits-dna", "--dataset",
           "imagenet", "--dataset-path", str(DIGITS_DATA), "--endpoint", url,
           "--output-dir", str(cwd / "out"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_simulator_deployment_serves_the_client_with_the_models_accuracy(
        dna_server, loadgen_client, tmp_path):
    _, url, metrics, _ = dna_server
    accuracy = tmp_path / "accuracy"
    accuracy.mkdir()
    proc = run_client(loadgen_client, accuracy, url, "--scenario", "Offline", "--accuracy")
    assert proc.returncode == 0, output(proc)
    text = (accuracy / "out" / "accuracy.txt").read_text()
    assert float(text.split("%")[0].split("=")[1]) >= MIN_ACCURACY, text

    performance = tmp_path / "performance"
    performance.mkdir()
    proc = run_client(loadgen_client, performance, url, "--scenario", "SingleStream", "--time", "2")
    assert proc.returncode == 0, output(proc)
    values, errors = read_detail(performance / "out" / "mlperf_log_detail.txt")
    assert errors == [], errors
    served = values["client_run"]["served"]
    assert (served["backend"], served["device"]) == ("dna", "cpu"), served

    # The simulator's own figures: in the response parameters and on /metrics.
    x = np.full((1, 1, 8, 8), 0.5, np.float32)
    params = infer(url, "digits-dna", x).get_response(as_json=True)["parameters"]
    assert params["runtime_total_sim_cycles"]["double_param"] > 0, params
    assert params["runtime_freq_mhz"]["double_param"] > 0, params
    body = urllib.request.urlopen(metrics, timeout=10).read().decode()
    assert 'inference_runtime_metric{model="digits-dna",backend="dna",device="cpu",' \
           'model_instance="0",metric="total_sim_cycles"}' in body


@pytest.mark.parametrize("model", ["digits-dna", "digits-dna-hw"])
def test_its_outputs_match_onnx_runtime_within_the_quantization_tolerance(dna_server, model):
    _, url, _, _ = dna_server
    rng = np.random.default_rng(7)
    for _ in range(8):
        x = (rng.integers(0, 17, (1, 1, 8, 8)) / 16.0).astype(np.float32)
        dna = infer(url, model, x).as_numpy("logits")
        onnx = infer(url, "digits-cnn", x).as_numpy("logits")
        assert dna.shape == onnx.shape == (1, 10)
        scale = max(float(np.abs(onnx).max()), 1.0)
        assert float(np.abs(dna - onnx).max()) < 0.08 * scale, (dna, onnx)


def repository_index(url):
    import tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient(url=url)
    try:
        return {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    finally:
        client.close()


def test_the_ip_target_without_a_board_is_unavailable_with_the_reason(dna_server):
    _, url, _, _ = dna_server
    ip = repository_index(url)["digits-dna-ip"]
    assert ip["state"] == "UNAVAILABLE", ip
    assert "/dev/sakura_pcie_0" in ip["reason"], ip


def dna_workers(server_pid):
    """The DNA worker processes the server started, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == server_pid and b"dna-worker" in cmdline:
            pids.append(int(entry))
    return pids


def test_a_killed_worker_is_reported_and_replaced_while_the_others_serve(dna_server):
    from tritonclient.utils import InferenceServerException

    server, url, _, _ = dna_server
    x = np.full((1, 1, 8, 8), 0.25, np.float32)
    dna_models = ["digits-dna", "digits-dna-hw"]
    before = {m: infer(url, m, x).as_numpy("logits") for m in dna_models}
    workers = dna_workers(server.pid)
    assert len(workers) == 2, workers  # one per DNA model instance
    os.kill(workers[0], signal.SIGKILL)
    # Exactly one DNA model lost its worker: its request fails with the reason; the other DNA
    # model and digits-cnn never notice.
    failed = {}
    for model in dna_models:
        try:
            infer(url, model, x)
        except InferenceServerException as err:
            failed[model] = err
    assert len(failed) == 1, failed
    (victim, err), = failed.items()
    assert "UNAVAILABLE" in str(err.status()), err
    assert "SIGKILL" in err.message(), err.message()
    infer(url, "digits-cnn", x)
    reason = repository_index(url)[victim]["reason"]
    assert "the DNA worker process died" in reason, reason
    deadline = time.monotonic() + 30
    while True:
        try:
            after = infer(url, victim, x).as_numpy("logits")
            break
        except InferenceServerException as err:
            assert time.monotonic() < deadline, f"still out after 30 s: {err}"
            time.sleep(0.2)
    np.testing.assert_array_equal(after, before[victim])
    assert len(dna_workers(server.pid)) == 2
    assert server.poll() is None, "the server is still running"
