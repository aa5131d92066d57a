"""End-to-end tests of loadgen-client against a live inference-server serving digits-cnn.

Run by scripts/python_tests.sh, which starts the debug inference-server on models/repository and
sets INFERENCE_SERVER_GRPC and LOADGEN_CLIENT (see conftest.py); without them the tests skip.
Every client run happens in its own temporary folder (the client reads audit.config from its
working directory) and takes a few seconds at most.

Exit status of loadgen-client: 0 success; 1 the test could not run; 2 bad options, an
unreadable config file or a schedule too large for the memory; 3 the test ran and wrote its logs
but some samples failed (the result is INVALID).
"""

import hashlib
import json
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from harness import DIGITS_DATA, running_server

# Accuracy of digits-cnn on digits-val is ~98 %; the bar leaves room for nothing but real bugs.
MIN_ACCURACY = 95.0
RUN_TIMEOUT_S = 60


def run_client(loadgen_client, cwd, *args, endpoint=None):
    """Runs loadgen-client in `cwd` with the digits profile and data set; returns the process."""
    cmd = [str(loadgen_client), "--profile", "digits-cnn", "--dataset", "imagenet",
           "--dataset-path", str(DIGITS_DATA), "--output-dir", str(cwd / "out")]
    if endpoint is not None:
        cmd += ["--endpoint", endpoint]
    cmd += list(args)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def output(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def read_detail(path):
    """Parses the detail log as the submission checker does: line 1 must start with :::MLLOG,
    every marker line is JSON (anything else raises), the first occurrence of a key wins.
    Returns (first value per key, list of error lines)."""
    lines = path.read_text().splitlines()
    assert lines and lines[0].startswith(":::MLLOG"), f"line 1 of {path}: {lines[:1]}"
    values, errors = {}, []
    for line in lines:
        if not line.startswith(":::MLLOG"):
            continue
        entry = json.loads(line[8:])
        values.setdefault(entry["key"], entry["value"])
        if entry["metadata"]["is_error"]:
            errors.append(entry)
    return values, errors


def official_imagenet_accuracy(accuracy_json, val_map):
    """accuracy-imagenet.py's figure (spec §15): json.load, the first entry of each qsl_idx wins,
    data = float32 hex, predicted class = int(element 0), compared with val_map's label (QSL
    order = val_map order). Returns (accuracy %, good, total)."""
    labels = [int(line.split()[1]) for line in val_map.read_text().splitlines() if line.strip()]
    with open(accuracy_json) as f:
        results = json.load(f)
    seen, good = set(), 0
    for entry in results:
        idx = entry["qsl_idx"]
        if idx in seen:
            continue
        seen.add(idx)
        data = np.frombuffer(bytes.fromhex(entry["data"]), np.float32)
        if int(data[0]) == labels[idx]:
            good += 1
    total = len(seen)
    return 100.0 * good / total, good, total


@pytest.mark.parametrize("scenario", ["Offline", "SingleStream"])
def test_accuracy_run_matches_the_official_script(loadgen_client, grpc_url, client, tmp_path,
                                                   scenario):
    proc = run_client(loadgen_client, tmp_path, "--mode", "AccuracyOnly", "--scenario", scenario,
                      endpoint=grpc_url)
    assert proc.returncode == 0, output(proc)
    out = tmp_path / "out"
    log = out / "mlperf_log_accuracy.json"
    text = (out / "accuracy.txt").read_text()
    m = re.fullmatch(r"accuracy=([\d.]+)%, good=(\d+), total=(\d+)\nhash=([0-9a-f]{64})\n", text)
    assert m, text
    assert m.group(4) == hashlib.sha256(log.read_bytes()).hexdigest(), "hash= is not the log's"
    # The submission checker's resnet pattern must find the same figure.
    checker = re.match(r'^(?:\{"accuracy|accuracy)[": ]*=?\s*([\d\.]+)', text)
    assert checker and float(checker.group(1)) == float(m.group(1))

    accuracy, good, total = official_imagenet_accuracy(log, DIGITS_DATA / "val_map.txt")
    assert (good, total) == (int(m.group(2)), int(m.group(3))), text
    assert f"{accuracy:.3f}" == m.group(1), text
    assert total == 450, "every sample is in the log"
    assert accuracy >= MIN_ACCURACY, text

    values, errors = read_detail(out / "mlperf_log_detail.txt")
    assert errors == [], errors
    assert values["effective_test_mode"] == "AccuracyOnly"
    assert values["effective_accuracy_sample_count"] == 450
    summary = (out / "mlperf_log_summary.txt").read_text()
    official = "\nNo warnings encountered during test.\n\nNo errors encountered during test.\n"
    # The official text, then only the sections loadgen-client adds after it: device telemetry
    # and the retries of overloaded requests (none here).
    assert summary.startswith(official), summary
    assert summary[len(official):].startswith("\n=====") and "Device telemetry" in summary, summary
    assert "\nretries: 0 (RESOURCE_EXHAUSTED)\n" in summary, summary


def test_server_performance_run_is_valid(loadgen_client, grpc_url, client, tmp_path):
    # Early stopping at p99 needs at least 459 queries with none over the bound, so 2 s need
    # ~300 QPS (50 QPS would need ~10 s); the 1 s bound leaves room for a busy machine.
    proc = run_client(loadgen_client, tmp_path, "--scenario", "Server", "--qps", "300",
                      "--time", "2", "--max-latency", "1", endpoint=grpc_url)
    assert proc.returncode == 0, output(proc)
    out = tmp_path / "out"

    summary = (out / "mlperf_log_summary.txt").read_text()
    for line in ["================================================\nMLPerf Results Summary\n"
                 "================================================\n",
                 "\nScenario : Server\n", "\nMode     : PerformanceOnly\n",
                 "\nResult is : VALID\n", "  Performance constraints satisfied : Yes\n",
                 "  Min duration satisfied : Yes\n", "  Min queries satisfied : Yes\n",
                 "  Early stopping satisfied: Yes\n", "\nAdditional Stats\n",
                 "\nTest Parameters Used\n", "target_qps : 300\n",
                 "target_latency (ns): 1000000000\n", "min_duration (ms): 2000\n",
                 "\nNo warnings encountered during test.\n",
                 "\nNo errors encountered during test.\n"]:
        assert line in summary, f"summary lacks {line!r}:\n{summary}"
    assert re.search(r"^Completed samples per second    : \d+\.\d\d$", summary, re.M), summary
    assert re.search(r"^SUT name : .*Network SUT", summary, re.M), summary

    values, errors = read_detail(out / "mlperf_log_detail.txt")
    assert errors == [], errors
    assert "Network SUT" in values["sut_name"]
    assert values["result_validity"] == "VALID"
    assert values["effective_scenario"] == "Server"
    assert values["effective_target_qps"] == 300
    assert values["early_stopping_met"] is True
    assert values["result_completed_samples_per_sec"] > 0
    assert values["num_errors"] == 0
    assert values["result_query_count"] >= 459
    assert "result_failed_sample_count" not in values and "result_invalid_reason" not in values
    assert values["client_retries"] == {"resource_exhausted_retries": 0,
                                        "requests_refused_after_retries": 0,
                                        "max_retries_per_request": 3}
    assert "\nretries: 0 (RESOURCE_EXHAUSTED)\n" in summary, summary

    breakdown = (out / "mlperf_log_breakdown.txt").read_text()
    m = re.search(r"Samples with server timings : (\d+) of (\d+)", breakdown)
    assert m and int(m.group(1)) > 0 and m.group(1) == m.group(2), breakdown
    for row in ["Server queue", "Server compute"]:
        m = re.search(rf"^{row}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", breakdown, re.M)
        assert m, f"no {row} figures:\n{breakdown}"
    m = re.search(r"^Server compute\s+(\d+)", breakdown, re.M)
    assert int(m.group(1)) > 0, "the server computed for some time"


def test_a_first_run_after_calibrate_is_valid(loadgen_client, grpc_url, client, tmp_path):
    """calibrate probes all four scenarios against the live server and writes user.conf; a
    run of each scenario with it is VALID, where SingleStream and Offline with mlperf.conf's
    expected latency and QPS run out of queries (the baffling first-run INVALID). The margin is
    wide (0.5) because client and server share this machine's two cores, and the server is a
    debug build: at 0.3 the Server run missed its bound once, with other work on the machine."""
    base = tmp_path / "base.conf"
    # Short runs. Server's is longer and its bound 100 ms, so that early stopping survives the
    # stalls of this shared machine, where client and a debug server share two cores (with
    # 15 ms, one run in several missed it).
    base.write_text("# short runs\n*.*.min_duration = 3000\n*.*.min_query_count = 100\n"
                    "*.Server.min_duration = 8000\n*.Server.target_latency = 100\n")
    user_conf = tmp_path / "user.conf"
    cmd = [str(loadgen_client), "calibrate", "--all-scenarios", "--probe-time", "2", "--margin", "0.5",
           "--profile", "digits-cnn", "--dataset", "imagenet", "--dataset-path", str(DIGITS_DATA),
           "--endpoint", grpc_url, "--user-conf", str(base), "--write", str(user_conf),
           "--output-dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, output(proc)
    text = user_conf.read_text()
    assert text.startswith(base.read_text()), text
    values = {}
    for scenario, key in [("SingleStream", "target_latency"), ("MultiStream", "target_latency"),
                          ("Offline", "target_qps"), ("Server", "target_qps")]:
        m = re.search(rf"^resnet50\.{scenario}\.{key} = ([0-9.]+)$", text, re.M)
        assert m, f"no {scenario} {key} in\n{text}"
        values[scenario] = float(m.group(1))
        assert f"calibrating {scenario}" in proc.stdout, output(proc)
    assert re.search(r"^# calibrate: .*Target QPS = the highest that met the 100(\.0+)? ms bound", text, re.M), text
    assert values["Server"] > 0 and values["Offline"] > values["Server"] * 0.9, values
    probes = sorted(p.name for p in (tmp_path / "out" / "calibration").iterdir())
    assert any("Server" in p for p in probes) and any("Offline" in p for p in probes), probes
    for probe in probes:
        assert (tmp_path / "out" / "calibration" / probe / "mlperf_log_summary.txt").is_file()

    def run_with(conf, scenario):
        proc = run_client(loadgen_client, tmp_path, "--scenario", scenario, "--user-conf",
                          str(conf), endpoint=grpc_url)
        summary = (tmp_path / "out" / "mlperf_log_summary.txt").read_text()
        return proc, summary

    for scenario in ["SingleStream", "Offline"]:
        proc, summary = run_with(base, scenario)
        assert "\nResult is : INVALID\n" in summary, output(proc) + summary
    for scenario in ["SingleStream", "MultiStream", "Offline", "Server"]:
        proc, summary = run_with(user_conf, scenario)
        assert proc.returncode == 0, output(proc)
        assert "\nResult is : VALID\n" in summary, f"{scenario} with\n{text}\n{summary}"


def test_unknown_model_fails_before_the_test(loadgen_client, grpc_url, client, tmp_path):
    proc = run_client(loadgen_client, tmp_path, "--model", "no-such-model", endpoint=grpc_url)
    assert proc.returncode == 1, output(proc)
    assert "no-such-model" in proc.stderr and "--model" in proc.stderr, output(proc)
    summary = tmp_path / "out" / "mlperf_log_summary.txt"
    assert not summary.exists() or summary.read_text() == "", "no timing was started"


def test_unreachable_endpoint_fails_clearly(loadgen_client, tmp_path, free_port):
    endpoint = f"http://127.0.0.1:{free_port()}"
    proc = run_client(loadgen_client, tmp_path, endpoint=endpoint)
    assert proc.returncode == 1, output(proc)
    assert f"cannot connect to {endpoint}" in proc.stderr, output(proc)
    assert not (tmp_path / "out" / "mlperf_log_summary.txt").exists()


@pytest.fixture
def doomed_server(inference_server_bin, free_port, tmp_path):
    """A second inference-server on its own ports, for a test to kill; yields (process, url)."""
    with running_server(inference_server_bin, "models/repository", "digits-cnn", free_port,
                        tmp_path / "doomed-server.log", cwd=DIGITS_DATA.parents[2]) as served:
        yield served


def test_server_lost_mid_run_reports_failed_samples(loadgen_client, doomed_server, tmp_path):
    server, url, _ = doomed_server
    cmd = [str(loadgen_client), "--profile", "digits-cnn", "--dataset", "imagenet",
           "--dataset-path", str(DIGITS_DATA), "--output-dir", str(tmp_path / "out"),
           "--endpoint", f"http://{url}", "--scenario", "Server", "--qps", "100", "--time", "3",
           "--max-latency", "1", "--request-timeout", "5"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # The client prints "SUT: ..." just before the test starts; kill the server ~1 s later.
    before = []
    for line in proc.stdout:
        before.append(line)
        if line.startswith("SUT:"):
            break
    else:
        proc.wait()
        pytest.fail(f"the client never started the test: {''.join(before)}{proc.stderr.read()}")
    time.sleep(1.0)
    server.send_signal(signal.SIGKILL)
    server.wait()
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"the client did not finish after the server died:\n{stdout}\n{stderr}")
    text = f"exit {proc.returncode}\n{''.join(before)}{stdout}\n--- stderr\n{stderr}"

    # Exit 3: the test ran to the end and wrote its logs, but samples failed.
    assert proc.returncode == 3, text
    assert "sample(s) failed" in stderr and "the result is INVALID" in stderr, text
    out = tmp_path / "out"
    summary = (out / "mlperf_log_summary.txt").read_text()
    m = re.search(r"^(\d+) ERRORS? encountered\. See detailed log\.$", summary, re.M)
    assert m, summary
    values, errors = read_detail(out / "mlperf_log_detail.txt")
    assert int(m.group(1)) == len(errors) > 0
    assert all(e["key"] == "error_runtime" for e in errors), errors[:3]
    assert "failed" in errors[0]["value"], errors[0]
    assert values["num_errors"] == len(errors)
    # The results were still computed and logged, and the failures make the run INVALID
    # whatever the latencies of the samples that succeeded.
    assert values["result_validity"] == "INVALID", values
    failed = values["result_failed_sample_count"]
    assert 0 < failed <= len(errors)
    assert re.match(rf"{failed} samples? failed: ", values["result_invalid_reason"]), values
    assert "\nResult is : INVALID\n" in summary, summary
    m = re.search(r"^  All samples succeeded : NO \((\d+) of (\d+) failed\)$", summary, re.M)
    assert m and int(m.group(1)) == failed, summary
    assert re.search(rf"^ \* {failed} samples? failed: ", summary, re.M), summary
    assert f"\nFailed samples (left out below): {failed}\n" in summary, summary


def test_a_schedule_too_large_for_the_memory_is_refused(loadgen_client, grpc_url, tmp_path):
    # The Server schedule is generated up front: 1e12 QPS (1 ps intervals, which truncate to
    # 0 ns) would never finish generating; refused before anything is sent.
    proc = run_client(loadgen_client, tmp_path, "--scenario", "Server", "--qps", "1e12",
                      "--time", "600", endpoint=grpc_url)
    assert proc.returncode == 2, output(proc)
    assert "schedule of these settings would need" in proc.stderr, output(proc)
    assert "lower target_qps, min_duration or min_query_count" in proc.stderr, output(proc)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def tiny_queue_server(inference_server_bin, free_port, tmp_path):
    """digits-cnn with a queue of one request that waits 200 ms for a fuller batch: almost every
    concurrent request is refused with RESOURCE_EXHAUSTED."""
    repo = tmp_path / "repo"
    shutil.copytree(DIGITS_DATA.parents[2] / "models" / "repository" / "digits-cnn",
                    repo / "digits-cnn")
    config = repo / "digits-cnn" / "config.toml"
    text = config.read_text()
    text = re.sub(r"max_queue_delay_us = \d+", "max_queue_delay_us = 200000", text)
    text = re.sub(r"preferred_batch_sizes = \[[^]]*\]", "preferred_batch_sizes = [64]", text)
    text = re.sub(r"max_queue_size = \d+", "max_queue_size = 1", text)
    config.write_text(text)
    with running_server(inference_server_bin, repo, "digits-cnn", free_port,
                        tmp_path / "tiny-queue-server.log", cwd=DIGITS_DATA.parents[2]) as served:
        yield served


def test_overload_retries_are_bounded_and_counted(loadgen_client, tiny_queue_server, tmp_path):
    _, url, _ = tiny_queue_server
    started = time.monotonic()
    proc = run_client(loadgen_client, tmp_path, "--mode", "AccuracyOnly", "--scenario", "Offline",
                      "--max-batchsize", "1", "--retries", "1", "--server-metrics", "off",
                      endpoint=f"http://{url}")
    elapsed = time.monotonic() - started
    # Samples refused after their one retry fail with the server's status: exit 3.
    assert proc.returncode == 3, output(proc)
    assert "refused after 1 retry" in proc.stderr, output(proc)
    assert elapsed < 30, f"bounded retries end quickly ({elapsed:.1f} s)"
    out = tmp_path / "out"
    summary = (out / "mlperf_log_summary.txt").read_text()
    m = re.search(r"^retries: (\d+) \(RESOURCE_EXHAUSTED\)$", summary, re.M)
    assert m and int(m.group(1)) > 0, summary
    retries = int(m.group(1))
    m = re.search(r"^Requests refused after the last retry : (\d+)$", summary, re.M)
    refused = int(m.group(1))
    assert 0 < refused <= retries, summary
    assert "Retry policy : up to 1 per request (--retries)" in summary, summary
    values, errors = read_detail(out / "mlperf_log_detail.txt")
    assert values["client_retries"]["resource_exhausted_retries"] == retries
    assert values["client_retries"]["requests_refused_after_retries"] == refused
    assert sum("refused after 1 retry" in e["value"] for e in errors) == refused, errors[:3]
