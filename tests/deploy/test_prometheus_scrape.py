"""A real Prometheus (Debian's `prometheus`) scrapes a real inference-server under load, with the
scrape config and alert rules of deploy/prometheus and the server reading a fake Raspberry Pi
sysfs tree for its device telemetry. Read back through Prometheus' HTTP API: a latency quantile,
the executed batch-size distribution (equal to the server's own counters), every query of the
Grafana dashboard (each must return data) and its template variables, and the rules' health.

    .venv/bin/python -m pytest tests/deploy/test_prometheus_scrape.py

Needs `prometheus` on PATH (apt-get install prometheus) and the debug binaries (LOADGEN_CLIENT,
as scripts/python_tests.sh sets it).
"""

import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboard  # noqa: E402
from harness import ROOT, running_server  # noqa: E402

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "inference-server.json"
FAKE_PI = ROOT / "tests" / "data" / "telemetry" / "pi4-coral"
MODEL = "digits-cnn"
SCRAPE_INTERVAL_S = 1
LOAD_SECONDS = 8


def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def get_text(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.read().decode()


class Prometheus:
    def __init__(self, base):
        self.base = base

    def query(self, expr):
        """Instant query; returns the result list (fails on any API error)."""
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        answer = get_json(url)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def label_values(self, label, metric):
        url = (f"{self.base}/api/v1/label/{label}/values?"
               + urllib.parse.urlencode({"match[]": metric}))
        answer = get_json(url)
        assert answer["status"] == "success", answer
        return answer["data"]

    def wait_for(self, what, expr, check, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if check(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus never showed {what}: {expr} = {result}")
            time.sleep(0.5)


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_config(metrics_target, workdir):
    """deploy/prometheus/prometheus.yml, pointed at this server and scraping every second."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = f"{SCRAPE_INTERVAL_S}s"
    config["global"]["evaluation_interval"] = f"{SCRAPE_INTERVAL_S}s"
    config["global"]["scrape_timeout"] = f"{SCRAPE_INTERVAL_S}s"
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == "inference-server"]
    assert len(jobs) == 1, config["scrape_configs"]
    jobs[0]["static_configs"] = [{"targets": [metrics_target]}]
    jobs[0].pop("scrape_interval", None)
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def prometheus_binary():
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("prometheus is not on PATH; install it (Debian: apt-get install prometheus; "
                    "scripts/setup.sh does)")
    return path


@pytest.fixture(scope="module")
def scraped(inference_server_bin, loadgen_client, free_port, prometheus_binary,
            tmp_path_factory):
    """A server under load for LOAD_SECONDS, scraped by Prometheus; yields (prometheus, server's
    metrics URL). Prometheus keeps running (and the server stays up) while the module's tests
    read it."""
    workdir = tmp_path_factory.mktemp("prometheus")
    box = workdir / "box"
    shutil.copytree(FAKE_PI, box)
    with running_server(inference_server_bin, "models/repository", MODEL, free_port,
                        workdir / "server.log",
                        extra_args=["--telemetry-root", str(box)]) as (_, grpc, metrics_url):
        target = urllib.parse.urlparse(metrics_url).netloc
        web = f"127.0.0.1:{free_tcp_port()}"
        log = open(workdir / "prometheus.log", "w")
        prometheus = subprocess.Popen(
            [prometheus_binary, f"--config.file={scrape_config(target, workdir)}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={web}"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            api = Prometheus(f"http://{web}")
            deadline = time.monotonic() + 60
            while True:
                try:
                    get_text(f"http://{web}/-/ready")
                    break
                except OSError:
                    if prometheus.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("prometheus did not start: "
                                    + (workdir / "prometheus.log").read_text())
                    time.sleep(0.2)
            api.wait_for("the server's target up", 'up{job="inference-server"}',
                         lambda r: r and r[0]["value"][1] == "1")

            # Load: MLPerf Server scenario at 150 QPS, plus a few malformed requests so that
            # the error panels have real errors to show.
            client = subprocess.run(
                [str(loadgen_client), "--profile", MODEL, "--dataset", "synthetic",
                 "--count", "64", "--endpoint", f"http://{grpc}", "--scenario", "Server",
                 "--qps", "150", "--time", str(LOAD_SECONDS), "--server-metrics", metrics_url,
                 "--output-dir", str(workdir / "loadgen")],
                cwd=workdir, capture_output=True, text=True, timeout=120)
            assert client.returncode == 0, client.stdout + client.stderr
            send_malformed_requests(grpc)
            # Two more scrapes after the load, so the last counters are in Prometheus.
            time.sleep(3 * SCRAPE_INTERVAL_S)
            yield api, metrics_url
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)
            log.close()


def send_malformed_requests(grpc):
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=grpc)
    wrong = grpcclient.InferInput("input", [1, 1, 7, 7], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 1, 7, 7), dtype=np.float32))
    for _ in range(3):
        with pytest.raises(InferenceServerException):
            client.infer(MODEL, [wrong])
    client.close()


def counter_from_page(page, name, **labels):
    """The sum of a metric's samples on a /metrics page whose labels include `labels`."""
    total = 0.0
    for line in page.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def test_a_latency_quantile_reads_back_through_prometheus(scraped):
    api, _ = scraped
    result = api.query(
        "histogram_quantile(0.99, sum by (le) (rate("
        f'inference_request_duration_seconds_bucket{{job="inference-server", model="{MODEL}"}}'
        f"[{LOAD_SECONDS}s])))")
    assert len(result) == 1, result
    p99 = float(result[0]["value"][1])
    assert math.isfinite(p99) and 0 < p99 < 1.0, f"p99 {p99} s of a CPU digits model"


def test_the_batch_size_distribution_matches_the_servers_own_counters(scraped):
    api, metrics_url = scraped
    page = get_text(metrics_url)
    buckets = api.query(
        f'sum by (le) (inference_batch_size_bucket{{job="inference-server", model="{MODEL}"}})')
    by_le = {b["metric"]["le"]: float(b["value"][1]) for b in buckets}
    assert {"1", "2", "4", "8", "16", "+Inf"} <= by_le.keys(), by_le
    for le, count in by_le.items():
        own = counter_from_page(page, "inference_batch_size_bucket", model=MODEL, le=le)
        assert count == own, f"batches with ≤ {le} samples: Prometheus {count}, server {own}"
    executed = by_le["+Inf"]
    samples = float(api.query(
        f'sum(inference_batch_size_sum{{job="inference-server", model="{MODEL}"}})')[0]["value"][1])
    assert executed > 100 and samples >= executed, (executed, samples)
    # Cumulative buckets: never fewer batches under a larger bound.
    ordered = sorted(by_le.items(), key=lambda kv: float(kv[0]))
    assert all(a[1] <= b[1] for a, b in zip(ordered, ordered[1:])), ordered


def test_every_dashboard_query_returns_data(scraped):
    api, _ = scraped
    queries = dashboard.panel_queries(DASHBOARD, interval="30s", time_range="1h")
    assert len(queries) >= 30, queries
    empty = [(title, expr) for title, expr in queries if not api.query(expr)]
    assert not empty, "panels without data:\n" + "\n".join(f"  {t}: {e}" for t, e in empty)


def test_the_dashboard_variables_have_values(scraped):
    api, _ = scraped
    for variable in dashboard.variable_queries(DASHBOARD):
        values = api.label_values(variable.label, variable.metric)
        assert values, f"${variable.name}: no {variable.label} values for {variable.metric}"
    assert MODEL in api.label_values("model", 'model_state{job="inference-server"}')


def test_the_alert_rules_load_and_evaluate(scraped):
    api, _ = scraped
    rules = get_json(f"{api.base}/api/v1/rules")["data"]["groups"]
    evaluated = [r for g in rules for r in g["rules"]]
    names = {r["name"] for r in evaluated}
    assert {"InferenceServerDown", "InferenceLatencyObjectiveMissed",
            "InferencePiThrottled"} <= names, names
    unhealthy = [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    # The fake Pi is not throttling now and the server is up: those alerts are quiet.
    alerts = get_json(f"{api.base}/api/v1/alerts")["data"]["alerts"]
    noisy = {a["labels"]["alertname"] for a in alerts} & {"InferenceServerDown",
                                                           "InferencePiThrottled"}
    assert not noisy, alerts
