"""Triton's own benchmark client, perf_analyzer (from the tritonclient 2.41.0 wheel, installed by
scripts/setup.sh into .venv-perf), against the server in every load mode a Triton user runs:
concurrency and request-rate sweeps, batch sizes, sync, async and streaming, zero and random
input data, system shared memory, gzip, CSV with --verbose-csv, over gRPC and over HTTP. Every run
must exit 0, and the server-side breakdown it reads from ModelStatistics (queue, compute input,
compute infer, compute output) must add up inside the client's latency and agree with the
per-response timing parameters.
"""

import csv
import os
import statistics
import subprocess

import numpy as np
import pytest

from harness import ROOT

MODEL = "digits-cnn"
PERF_VENV = ROOT / ".venv-perf"
RUN_TIMEOUT_S = 180
# Short windows, and a stability bar loose enough for a shared 2-core machine: these tests check
# that perf_analyzer works against the server, not how fast it is.
WINDOWS = ["--measurement-interval", "1000", "--stability-percentage", "500", "--max-trials", "10"]


@pytest.fixture(scope="module")
def perf_analyzer():
    binary = PERF_VENV / "bin" / "perf_analyzer"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing; run scripts/setup.sh")
    import glob
    libs = glob.glob(str(PERF_VENV / "lib" / "python3*" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"))
    if not libs:
        pytest.fail("libcudart from nvidia-cuda-runtime-cu12 is missing in .venv-perf; run scripts/setup.sh")
    env = dict(os.environ, LD_LIBRARY_PATH=libs[0])
    return binary, env


def run(perf_analyzer, tmp_path, url, protocol, *args):
    binary, env = perf_analyzer
    cmd = [str(binary), "-m", MODEL, "-u", url, "-i", protocol, *WINDOWS, *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    text = f"$ {' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, text
    assert "Inferences/Second" in proc.stdout or "Throughput" in proc.stdout, text
    return proc.stdout


MODES = {
    "concurrency-sweep": ["--concurrency-range", "1:3"],
    "request-rate-sweep": ["--request-rate-range", "50:100:50"],
    "batch-4": ["-b", "4", "--concurrency-range", "2"],
    "async": ["--async", "--concurrency-range", "4"],
    "zero-input": ["--input-data", "zero"],
    "random-input": ["--input-data", "random"],
    "shared-memory": ["--shared-memory", "system", "-b", "2", "--output-shared-memory-size", "80"],
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_grpc_modes(perf_analyzer, tmp_path, grpc_url, mode):
    run(perf_analyzer, tmp_path, grpc_url, "grpc", *MODES[mode])


def test_grpc_streaming(perf_analyzer, tmp_path, grpc_url):
    run(perf_analyzer, tmp_path, grpc_url, "grpc", "--streaming", "--concurrency-range", "2")


def test_grpc_gzip(perf_analyzer, tmp_path, grpc_url):
    run(perf_analyzer, tmp_path, grpc_url, "grpc", "--grpc-compression-algorithm", "gzip")


HTTP_MODES = {
    "concurrency-sweep": ["--concurrency-range", "1:2"],
    "batch-4-async": ["-b", "4", "--async"],
    "random-input": ["--input-data", "random"],
    "shared-memory": ["--shared-memory", "system", "--output-shared-memory-size", "40"],
}


@pytest.mark.parametrize("mode", sorted(HTTP_MODES))
def test_http_modes(perf_analyzer, tmp_path, http_url, mode):
    run(perf_analyzer, tmp_path, http_url, "http", *HTTP_MODES[mode])


def compute_time_params(client, n=20):
    """compute_time_us of `n` batch-1 answers (the per-response timing parameter)."""
    import tritonclient.grpc as grpcclient

    times = []
    for _ in range(n):
        inp = grpcclient.InferInput("input", [1, 1, 8, 8], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float32))
        result = client.infer(MODEL, [inp])
        times.append(result.get_response().parameters["compute_time_us"].int64_param)
    return times


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_csv_breakdown_adds_up_and_matches_the_response_timings(
        perf_analyzer, tmp_path, grpc_url, http_url, client, protocol):
    url = grpc_url if protocol == "grpc" else http_url
    run(perf_analyzer, tmp_path, url, protocol, "--concurrency-range", "1", "-f", "out.csv",
        "--verbose-csv")
    with open(tmp_path / "out.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows, "perf_analyzer wrote no rows"
    row = rows[0]
    parts = [float(row[k]) for k in ("Server Queue", "Server Compute Input",
                                     "Server Compute Infer", "Server Compute Output")]
    assert all(p >= 0 for p in parts), row
    assert parts[2] > 0, f"no compute time in {row}"
    latency = float(row["Avg latency"])
    assert sum(parts) <= latency, f"server parts {parts} exceed the client's latency {latency}"
    # The statistics' compute infer and the responses' compute_time_us measure the same runs.
    per_response = statistics.median(compute_time_params(client))
    assert per_response / 5 <= parts[2] <= max(per_response * 5, 50), (parts[2], per_response)
