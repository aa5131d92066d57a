"""Device telemetry end to end: inference-server reads a fake sysfs/procfs tree (a Raspberry Pi 4
with a Coral PCIe, tests/data/telemetry/pi4-coral) and exports it on /metrics; loadgen-client
reads it at the start and end of a run and samples it during it. A box that throttles or whose
accelerator resets mid-run gets the run marked (summary, detail-log warning, exit 4); a steady
box passes; missing sources are left out, never faked.
"""

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from harness import ROOT, running_server

FAKE_TREE = ROOT / "tests" / "data" / "telemetry" / "pi4-coral"
GET_THROTTLED = Path("sys/devices/platform/soc/soc:firmware/get_throttled")
RESET_COUNT = Path("sys/class/apex/apex_0/reset_count")


@pytest.fixture
def box(tmp_path):
    """A writable copy of the fake Pi's sysfs/procfs tree."""
    root = tmp_path / "box"
    shutil.copytree(FAKE_TREE, root)
    return root


@pytest.fixture
def pi_server(inference_server_bin, free_port, tmp_path, box):
    with running_server(inference_server_bin, "models/repository", "digits-cnn", free_port,
                        tmp_path / "server.log", extra_args=["--telemetry-root", str(box)]) as served:
        yield served


def scrape(metrics_url):
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        return answer.read().decode()


def run_client(loadgen_client, cwd, url, *args):
    cmd = [str(loadgen_client), "--profile", "digits-cnn", "--dataset", "synthetic",
           "--count", "64", "--endpoint", f"http://{url}", "--scenario", "Server", "--qps", "100",
           "--time", "3", "--telemetry-interval", "0.2", "--output-dir", str(cwd / "out"), *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc):
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, f"exit {proc.returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"


def telemetry_lines(detail):
    lines = [json.loads(l[len(":::MLLOG"):]) for l in detail.read_text().splitlines()
             if l.startswith(":::MLLOG")]
    return [l for l in lines if l["key"].startswith("telemetry_")]


def test_the_server_exports_the_fake_pis_telemetry(pi_server):
    _, _, metrics_url = pi_server
    page = scrape(metrics_url)
    for line in [
        'inference_soc_temperature_celsius{zone="thermal_zone0",type="cpu-thermal"} 52.582',
        'inference_cpu_frequency_hertz{cpu="3"} 1500000000',
        'inference_cpu_frequency_hardware_max_hertz{cpu="0"} 1800000000',
        'inference_cpu_governor{cpu="2",governor="ondemand"} 1',
        'inference_pi_throttled{condition="under_voltage",when="since_boot"} 1',
        'inference_pi_throttled{condition="throttled",when="now"} 0',
        'inference_accelerator_temperature_celsius{device="apex_0"} 41.3',
        'inference_accelerator_resets_total{device="apex_0"} 0',
        'inference_accelerator_alive{device="apex_0"} 1',
        "inference_memory_total_bytes 3977314304",
    ]:
        assert line in page, f"{line!r} not in /metrics:\n{page}"


def test_a_box_without_sources_exports_none(inference_server_bin, free_port, tmp_path):
    empty = tmp_path / "empty-box"
    empty.mkdir()
    with running_server(inference_server_bin, "models/repository", "digits-cnn", free_port,
                        tmp_path / "server.log",
                        extra_args=["--telemetry-root", str(empty)]) as (_, _, metrics_url):
        page = scrape(metrics_url)
    for name in ["inference_soc_temperature", "inference_cpu_", "inference_pi_throttled",
                 "inference_accelerator_", "inference_memory_"]:
        assert name not in page, f"{name} exported without a source:\n{page}"
    assert "inference_queue_capacity" in page


def test_a_steady_box_passes_with_its_telemetry_in_the_logs(loadgen_client, pi_server, tmp_path):
    _, url, metrics_url = pi_server
    code, text = finish(run_client(loadgen_client, tmp_path, url,
                                   "--server-metrics", metrics_url))
    assert code == 0, text
    summary = (tmp_path / "out" / "mlperf_log_summary.txt").read_text()
    assert "Run during device trouble : OK" in summary, summary
    assert "SoC temperature thermal_zone0 (cpu-thermal) : start 52.6 C" in summary, summary
    assert "Accelerator resets apex_0 : 0 during the run" in summary, summary
    # The MLCommons summary comes first and is untouched: the section follows its footer.
    assert summary.index("No errors encountered") < summary.index("Device telemetry"), summary
    lines = telemetry_lines(tmp_path / "out" / "mlperf_log_detail.txt")
    keys = [l["key"] for l in lines]
    assert keys == ["telemetry_start", "telemetry_end"], keys
    start = lines[0]["value"]["telemetry"]
    assert start["accelerator_temperature_celsius"] == {"apex_0": 41.3}
    assert start["pi_throttled_since_boot"] == ["throttled", "under_voltage"]
    assert lines[1]["value"]["samples"] >= 5, lines[1]


@pytest.mark.parametrize("trouble, expected", [
    ({GET_THROTTLED: "0x40004\n"}, "throttled: Raspberry Pi firmware reports throttled"),
    ({RESET_COUNT: "1\n"}, "device reset: apex_0 reset"),
])
def test_throttling_or_a_reset_mid_run_marks_the_run(loadgen_client, pi_server, box, tmp_path,
                                                     trouble, expected):
    _, url, metrics_url = pi_server
    proc = run_client(loadgen_client, tmp_path, url, "--server-metrics", metrics_url)

    def make_trouble():
        # Once the run has started (its detail log exists), let a few clean samples pass.
        deadline = time.monotonic() + 30
        while not (tmp_path / "out" / "mlperf_log_detail.txt").exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        time.sleep(1.0)
        for path, text in trouble.items():
            (box / path).write_text(text)

    trouble_maker = threading.Thread(target=make_trouble)
    trouble_maker.start()
    code, text = finish(proc)
    trouble_maker.join()
    assert code == 4, text
    assert expected in text and "--allow-device-trouble" in text, text
    summary = (tmp_path / "out" / "mlperf_log_summary.txt").read_text()
    assert f"Run during device trouble : MARKED: {expected}" in summary, summary
    assert "1 warning encountered" in summary, summary
    marked = [l for l in telemetry_lines(tmp_path / "out" / "mlperf_log_detail.txt")
              if l["key"] == "telemetry_run_marked"]
    assert [m["value"] for m in marked] == [expected], marked
    assert marked[0]["metadata"]["is_warning"] is True

    # A rerun, with --allow-device-trouble: a Pi still throttling is marked again but exits 0;
    # a reset before the run started is history and does not mark it.
    rerun = tmp_path / "accepted"
    rerun.mkdir()
    code, text = finish(run_client(loadgen_client, rerun, url, "--server-metrics", metrics_url,
                                   "--allow-device-trouble"))
    assert code == 0, text
    summary = (rerun / "out" / "mlperf_log_summary.txt").read_text()
    still = "MARKED" if GET_THROTTLED in trouble else "OK"
    assert f"Run during device trouble : {still}" in summary, summary


def test_telemetry_off_and_an_unreachable_endpoint(loadgen_client, pi_server, tmp_path, free_port):
    _, url, _ = pi_server
    code, text = finish(run_client(loadgen_client, tmp_path, url, "--server-metrics", "off"))
    assert code == 0, text
    assert "Device telemetry" not in (tmp_path / "out" / "mlperf_log_summary.txt").read_text()

    elsewhere = tmp_path / "unreachable"
    elsewhere.mkdir()
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    code, text = finish(run_client(loadgen_client, elsewhere, url, "--server-metrics", dead))
    assert code == 0, text
    assert "device telemetry unchecked" in text, text
    assert "UNCHECKED" in (elsewhere / "out" / "mlperf_log_summary.txt").read_text()
