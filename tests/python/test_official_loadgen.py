"""`loadgen-client --loadgen official`: the official C++ LoadGen 6.0.17 (built by
scripts/build_official_loadgen.sh from the PyPI sdist) drives the live inference-server, and the
built-in LoadGen, on the same settings against the same server, issues the same schedule.

Each scenario runs with min_duration 0 and a min_query_count, so that both LoadGens issue exactly
the generated queries; a user.conf asks both to log every response in the accuracy log
(accuracy_log_sampling_target, as compliance TEST01 does), so the log lists the whole schedule:
every sample's sequence number and dataset index, and the server's answer.
"""

import json
import signal
import subprocess
import time

import pytest

from harness import DIGITS_DATA
from test_loadgen_e2e import output, read_detail, run_client

# Every response is logged: the sampling target is far above any query count here.
USER_CONF = """\
*.*.accuracy_log_sampling_target = 1000000000
*.*.accuracy_log_rng_seed = 720381539243781796
*.*.min_query_count = 200
"""

SCENARIOS = {
    "SingleStream": [],
    "MultiStream": [],
    "Server": ["--qps", "400", "--max-latency", "1"],
    "Offline": ["--qps", "2000"],
}

# Detail-log keys that describe the schedule, beside every requested_* and effective_* setting.
SCHEDULE_KEYS = ("qsl_reported_total_count", "qsl_reported_performance_count", "loaded_qsl_set",
                 "generated_query_count", "generated_samples_per_query",
                 "generated_query_duration")


def run_with(loadgen, loadgen_client, grpc_url, tmp_path, *args):
    """Runs one test with `loadgen` in its own folder; returns (detail values, accuracy log)."""
    cwd = tmp_path / loadgen
    cwd.mkdir()
    (cwd / "user.conf").write_text(USER_CONF)
    proc = run_client(loadgen_client, cwd, "--loadgen", loadgen, "--user-conf",
                      str(cwd / "user.conf"), "--time", "0", *args, endpoint=grpc_url)
    assert proc.returncode == 0, output(proc)
    out = cwd / "out"
    # The checker's way of reading the detail log: every marker line is JSON.
    values, errors = read_detail(out / "mlperf_log_detail.txt")
    assert errors == [], errors
    with open(out / "mlperf_log_accuracy.json") as f:
        accuracy = json.load(f)
    return values, accuracy, out, proc


def schedule(values):
    return {k: v for k, v in values.items()
            if k in SCHEDULE_KEYS or k.startswith(("requested_", "effective_"))}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_both_loadgens_issue_the_same_schedule(loadgen_client, grpc_url, client, tmp_path,
                                               scenario):
    args = ["--scenario", scenario, *SCENARIOS[scenario]]
    ours, ours_log, _, _ = run_with("builtin", loadgen_client, grpc_url, tmp_path, *args)
    theirs, theirs_log, out, proc = run_with("official", loadgen_client, grpc_url, tmp_path,
                                             *args)

    # The official run's logs are the official LoadGen's own.
    assert "LoadGen: the official LoadGen 6.0.17" in proc.stdout, output(proc)
    assert theirs["loadgen_version"].startswith("6.0.17"), theirs["loadgen_version"]
    assert "not the official LoadGen" not in theirs["loadgen_version"]
    assert "not the official LoadGen" in ours["loadgen_version"]
    assert theirs["sut_name"] == ours["sut_name"]
    # The client's own lines are beside them, not in them.
    assert "client_run" not in theirs
    client_lines = (out / "loadgen_client_detail.txt").read_text()
    assert '"key": "client_run"' in client_lines, client_lines

    assert schedule(theirs) == schedule(ours)
    assert theirs["effective_min_duration_ms"] == 0
    assert theirs["effective_accuracy_log_sampling_target"] == 1000000000

    # The whole schedule, sample by sample, and the server's answers to it.
    def samples(log):
        return sorted((e["seq_id"], e["qsl_idx"], e["data"]) for e in log)
    assert len(theirs_log) == theirs["generated_query_count"] * theirs[
        "generated_samples_per_query"], len(theirs_log)
    assert samples(theirs_log) == samples(ours_log)

    # Both end with a verdict the summary states.
    summary = (out / "mlperf_log_summary.txt").read_text()
    assert "Result is : " in summary, summary
    assert f"({theirs['result_validity']})" in proc.stdout, output(proc)


def test_official_accuracy_run_is_scored_like_the_builtin_one(loadgen_client, grpc_url, client,
                                                              tmp_path):
    texts = {}
    for loadgen in ("builtin", "official"):
        cwd = tmp_path / loadgen
        cwd.mkdir()
        proc = run_client(loadgen_client, cwd, "--loadgen", loadgen, "--scenario", "Offline",
                          "--accuracy", endpoint=grpc_url)
        assert proc.returncode == 0, output(proc)
        texts[loadgen] = (cwd / "out" / "accuracy.txt").read_text()
    # The same figure; the hash= lines differ only because the order of completions does.
    first_line = {k: v.splitlines()[0] for k, v in texts.items()}
    assert first_line["official"] == first_line["builtin"], texts
    assert first_line["official"].startswith("accuracy="), texts


def test_ctrl_c_ends_an_official_run_with_complete_logs(loadgen_client, grpc_url, client,
                                                        tmp_path):
    # A 60 s SingleStream run, interrupted once it started: the official LoadGen cannot stop
    # early, so the client answers the queries left at once as failures, and it ends with its
    # logs written.
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(loadgen_client), "--loadgen", "official", "--profile", "digits-cnn", "--dataset",
         "imagenet", "--dataset-path", str(DIGITS_DATA), "--endpoint", grpc_url,
         "--scenario", "SingleStream", "--time", "60", "--output-dir", str(out)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (out / "mlperf_log_detail.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    text = f"exit {proc.returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    assert proc.returncode == 130, text
    assert time.monotonic() - started < 20, "it did not run on to its 60 s"
    assert "the official LoadGen cannot end a test early" in stderr, text
    values, errors = read_detail(out / "mlperf_log_detail.txt")
    assert values["result_validity"] == "INVALID", values
    assert "Result is : INVALID" in (out / "mlperf_log_summary.txt").read_text()
    client_lines = (out / "loadgen_client_detail.txt").read_text()
    assert "interrupted: not sent" in client_lines, client_lines
