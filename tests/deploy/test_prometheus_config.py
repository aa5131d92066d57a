"""Checks of the Prometheus and Grafana files under deploy/.

    .venv/bin/python -m pytest tests/deploy/test_prometheus_config.py

Needs promtool on PATH (Debian: apt-get install prometheus); without it the promtool tests fail,
they do not skip. Standard library and pytest only; no server and no network.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboard as dash  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "inference-server.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "inference-server.yml"

DATASOURCE_UID = "prometheus"
# Variables the dashboard substitutes into queries; they must be matched with =~ so that the
# "All" value (.*) and multi-value selections ((a|b)) work.
MATCHED_VARIABLES = ("instance", "model", "device")


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH; it comes with Prometheus: apt-get install prometheus "
            "(Debian/Ubuntu), or put the promtool of a Prometheus release on PATH"
        )
    return path


def run_promtool(promtool: str, *args: str) -> str:
    result = subprocess.run(
        [promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# --- Prometheus


def test_config_is_valid(promtool):
    output = run_promtool(promtool, "check", "config", str(CONFIG.relative_to(ROOT)))
    assert "alerts.yml" in output, output  # the rule file was found and checked too


def test_rules_are_valid(promtool):
    output = run_promtool(promtool, "check", "rules", str(ALERTS.relative_to(ROOT)))
    assert f"{len(alert_blocks())} rules found" in output, output


def test_rule_unit_tests_pass(promtool):
    output = run_promtool(promtool, "test", "rules", str(ALERTS_TEST.relative_to(ROOT)))
    assert "SUCCESS" in output, output


def test_config_scrapes_the_server_and_loads_the_rules():
    text = CONFIG.read_text()
    assert re.search(r"^\s*-\s*job_name:\s*inference-server\s*$", text, re.M), text
    assert re.search(r'targets:\s*\[\s*"localhost:8002"\s*\]', text), text
    assert re.search(r"^\s*scrape_interval:\s*15s\s*$", text, re.M), text
    assert re.search(r"^rule_files:\s*\n\s*-\s*alerts\.yml\s*$", text, re.M), text


def alert_blocks() -> dict[str, str]:
    """Alert name -> its rule's text in alerts.yml."""
    text = ALERTS.read_text()
    starts = [m for m in re.finditer(r"^(\s*)- alert:\s*(\S+)\s*$", text, re.M)]
    assert starts, "no alert rules in alerts.yml"
    blocks = {}
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        # A block ends at the next rule, or at the next group.
        block = text[match.start():end]
        group = re.search(r"^\s*- name:", block, re.M)
        block = block[: group.start()] if group else block
        name = match.group(2)
        assert name not in blocks, f"alert {name} is defined twice"
        blocks[name] = block
    return blocks


def test_every_alert_has_for_severity_and_annotations():
    for name, block in alert_blocks().items():
        assert re.search(r"^\s+for:\s*\d+[smh]\s*$", block, re.M), f"{name}: no for:"
        severity = re.search(r"^\s+severity:\s*(\S+)\s*$", block, re.M)
        assert severity and severity.group(1) in {"critical", "warning"}, f"{name}: severity"
        for annotation in ("summary", "description"):
            assert re.search(rf"^\s+{annotation}:", block, re.M), f"{name}: no {annotation}"
        assert "{{ $labels." in block, f"{name}: the annotations name no label"


def unit_test_checks() -> list[tuple[str, str, bool]]:
    """(alertname, eval_time, fires) for every alert_rule_test entry of alerts_test.yml.

    Reads the layout alerts_test.yml is written in: `- eval_time:` then `alertname:` then
    `exp_alerts: []` (nothing fires) or `exp_alerts:` followed by expected alerts."""
    lines = ALERTS_TEST.read_text().splitlines()
    checks = []
    for i, line in enumerate(lines):
        match = re.match(r"^\s*alertname:\s*(\S+)\s*$", line)
        if not match:
            continue
        eval_time = re.match(r"^\s*-\s*eval_time:\s*(\S+)\s*$", lines[i - 1])
        assert eval_time, f"alerts_test.yml line {i}: alertname not after eval_time"
        expected = re.match(r"^\s*exp_alerts:\s*(\[\])?\s*$", lines[i + 1])
        assert expected, f"alerts_test.yml line {i + 2}: exp_alerts expected after alertname"
        fires = expected.group(1) is None
        if fires:
            assert re.match(r"^\s*-\s*exp_labels:", lines[i + 2]), f"line {i + 3}: exp_labels"
        checks.append((match.group(1), eval_time.group(1), fires))
    return checks


def test_every_alert_is_unit_tested_firing_and_not_firing():
    alerts = set(alert_blocks())
    checks = unit_test_checks()
    tested = {name for name, _, _ in checks}
    assert not tested - alerts, f"alerts_test.yml tests alerts that do not exist: {tested - alerts}"
    firing = {name for name, _, fires in checks if fires}
    quiet = {name for name, _, fires in checks if not fires}
    assert alerts <= firing, f"alerts never tested firing: {sorted(alerts - firing)}"
    assert alerts <= quiet, f"alerts never tested staying quiet: {sorted(alerts - quiet)}"
    assert re.search(r"^rule_files:\s*\n\s*-\s*alerts\.yml\s*$", ALERTS_TEST.read_text(), re.M)


def test_dashboard_queries_parse(promtool, tmp_path):
    """promtool checks the PromQL of every panel and variable query, as recording rules."""
    queries = [expr for _, expr in dash.panel_queries(DASHBOARD)]
    queries += [q.metric for q in dash.variable_queries(DASHBOARD) if q.metric]
    rules = [{"record": f"dashboard_query_{i}", "expr": expr} for i, expr in enumerate(queries)]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
    output = run_promtool(promtool, "check", "rules", str(path))
    assert f"{len(rules)} rules found" in output, output


# --- Grafana


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return dash.load(DASHBOARD)


def test_dashboard_header(dashboard):
    assert dashboard["uid"] == "inference-server"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41, dashboard["schemaVersion"]
    assert dashboard.get("id") is None, "a provisioned dashboard must not carry a database id"


def test_dashboard_panels_have_unique_ids_and_targets(dashboard):
    ids = [panel["id"] for panel in dashboard["panels"]]
    ids += [child["id"] for row in dash.iter_rows(dashboard) for child in row.get("panels", [])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    panels = list(dash.iter_panels(dashboard))
    assert len(panels) >= 20
    titles = [panel.get("title") for panel in panels]
    assert all(titles), "a panel without a title"
    assert len(titles) == len(set(titles)), "two panels with the same title"
    for panel in panels:
        assert panel.get("gridPos"), f"{panel['title']}: no gridPos"
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no target"
        ref_ids = [target.get("refId") for target in targets]
        assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), f"{panel['title']}: refIds"
        for target in targets:
            assert target.get("expr", "").strip(), f"{panel['title']} {target.get('refId')}: no expr"


def datasource_uid(dashboard: dict, datasource) -> str:
    """The data source uid a panel or target uses, through the datasource variable if templated."""
    assert isinstance(datasource, dict), f"datasource should be an object: {datasource!r}"
    assert datasource.get("type") == "prometheus", datasource
    uid = datasource.get("uid", "")
    match = re.fullmatch(r"\$\{?(\w+)\}?", uid)
    if match:
        (var,) = [v for v in dash.variables(dashboard) if v.get("name") == match.group(1)]
        assert var["type"] == "datasource" and var["query"] == "prometheus", var
        current = var["current"]["value"]
        return current
    return uid


def test_dashboard_uses_the_provisioned_datasource(dashboard):
    for panel in dash.iter_panels(dashboard):
        assert datasource_uid(dashboard, panel.get("datasource")) == DATASOURCE_UID, panel["title"]
        for target in panel["targets"]:
            assert datasource_uid(dashboard, target.get("datasource")) == DATASOURCE_UID, panel["title"]
    for var in dash.variables(dashboard):
        if var["type"] == "query":
            assert datasource_uid(dashboard, var.get("datasource")) == DATASOURCE_UID, var["name"]


def test_dashboard_variables(dashboard):
    by_name = {var["name"]: var for var in dash.variables(dashboard)}
    for name in ("model", "device"):
        assert name in by_name, f"no {name} variable"
    for name in MATCHED_VARIABLES:
        var = by_name[name]
        assert var["type"] == "query"
        assert var.get("includeAll") and var.get("allValue") == ".*", f"{name}: All must be .*"
    queries = {q.name: q for q in dash.variable_queries(DASHBOARD)}
    assert queries["model"].label == "model"
    assert queries["device"].label == "device"
    for q in queries.values():
        assert q.metric and "$" not in q.metric, q


def test_dashboard_queries_use_regex_matchers_and_rate_interval(dashboard):
    used = set()
    for target in dash.panel_targets(dashboard):
        for label, op, var in re.findall(r'(\w+)\s*(=~|!~|=|!=)\s*"\$\{?(\w+)', target.expr):
            assert op == "=~", f"{target.title}: {label}{op}\"${var}\" should use =~"
            used.add(var)
        for window in re.findall(r"\[([^\]]+)\]", target.expr):
            assert window.startswith("$__"), f"{target.title}: fixed range [{window}]; use $__rate_interval"
        assert 'job="inference-server"' in target.expr, f"{target.title}: no job matcher"
    assert {"model", "device", "instance"} <= used, used


def test_panel_queries_substitute_every_variable():
    queries = dash.panel_queries(DASHBOARD, interval="30s", time_range="6h")
    assert len(queries) >= 30
    for title, expr in queries:
        assert "$" not in expr and "[[" not in expr, (title, expr)
    exprs = "\n".join(expr for _, expr in queries)
    assert "[30s]" in exprs and "[6h]" in exprs and 'model=~".*"' in exprs
    chosen = dash.panel_queries(DASHBOARD, values={"model": "resnet50"})
    assert any('model=~"resnet50"' in expr for _, expr in chosen)


def test_panel_queries_reads_rows_and_all_variable_forms(tmp_path):
    board = {
        "templating": {"list": [{"type": "query", "name": "model", "query": "label_values(m, model)"},
                                {"type": "datasource", "name": "datasource", "query": "prometheus"}]},
        "panels": [
            {"type": "row", "title": "collapsed", "panels": [
                {"type": "timeseries", "title": "nested", "targets": [
                    {"refId": "A", "expr": 'rate(x{model=~"${model:regex}"}[$__rate_interval])'}]}]},
            {"type": "stat", "title": "top", "targets": [
                {"refId": "A", "expr": 'increase(x{model=~"[[model]]"}[$__range]) / $__range_s'},
                {"refId": "B", "expr": 'x{model=~"$model"} offset $__interval'}]},
        ],
    }
    path = tmp_path / "board.json"
    path.write_text(json.dumps(board))
    assert dash.panel_queries(path, interval="2m", time_range="1d") == [
        ("nested", 'rate(x{model=~".*"}[2m])'),
        ("top", 'increase(x{model=~".*"}[1d]) / 86400'),
        ("top", 'x{model=~".*"} offset 2m'),
    ]
    assert dash.variable_queries(path) == [("model", "m", "model")]
    board["panels"][1]["targets"][1]["expr"] = 'x{model=~"$modle"}'
    path.write_text(json.dumps(board))
    with pytest.raises(ValueError, match="modle"):
        dash.panel_queries(path)


def test_dashboard_covers_the_exported_metrics(dashboard):
    exprs = "\n".join(target.expr for target in dash.panel_targets(dashboard))
    metrics = [
        "inference_requests_total", "inference_request_duration_seconds_bucket",
        "inference_queue_duration_seconds_bucket", "inference_compute_duration_seconds_bucket",
        "inference_batch_size_bucket", "inference_batch_size_sum", "inference_batch_size_count",
        "inference_backend_errors_total", "inference_instance_up", "inference_queue_depth",
        "inference_queue_capacity", "inference_inflight_requests",
        "inference_latency_objective_seconds", "model_load_duration_seconds_count", "model_state",
        "process_resident_memory_bytes", "inference_memory_total_bytes",
        "inference_memory_available_bytes", "inference_soc_temperature_celsius",
        "inference_accelerator_temperature_celsius", "inference_accelerator_alive",
        "inference_accelerator_resets_total", "inference_cpu_frequency_hertz",
        "inference_cpu_frequency_max_hertz", "inference_cpu_governor", "inference_pi_throttled",
    ]
    missing = [m for m in metrics if not re.search(rf"\b{m}\b", exprs)]
    assert not missing, f"no panel shows {missing}"


def test_grafana_provisioning():
    datasource = DATASOURCE.read_text()
    assert re.search(r"^\s*uid:\s*prometheus\s*$", datasource, re.M), datasource
    assert re.search(r"^\s*type:\s*prometheus\s*$", datasource, re.M), datasource
    assert re.search(r"^\s*url:\s*http://prometheus:9090\s*$", datasource, re.M), datasource
    provider = PROVIDER.read_text()
    assert re.search(r"^\s*type:\s*file\s*$", provider, re.M), provider
    assert re.search(r"^\s*path:\s*/var/lib/grafana/dashboards\s*$", provider, re.M), provider
