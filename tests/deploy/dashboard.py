"""Reads the Grafana dashboard's queries so that plain Prometheus can run them.

Standard library only. Grafana fills in variables before it sends a query; these functions do the
same with values that select everything, so the test that scrapes a live server (and the syntax
checks in test_prometheus_config.py) can run every panel's PromQL through /api/v1/query:

    from dashboard import panel_queries, variable_queries
    for title, expr in panel_queries("deploy/grafana/dashboards/inference-server.json"):
        ...  # GET /api/v1/query?query=<expr>

- Template variables of the dashboard (query, custom, textbox, constant, interval) become ".*"
  unless `values` names them. The dashboard matches them with =~, so ".*" selects every value,
  as Grafana's "All" (allValue ".*") does.
- $__rate_interval, $__interval and $__range become durations (`interval`, `interval`,
  `time_range`); $__range_s / $__range_ms and $__interval_ms become numbers.
- $var, ${var}, ${var:format} and [[var]] are all recognised. A variable left over afterwards (a
  typo, or one the dashboard does not define) raises ValueError rather than sending Prometheus a
  query it cannot parse.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator, NamedTuple

# Variable types whose value is chosen from, or typed into, the dashboard.
_VALUE_VARIABLE_TYPES = {"query", "custom", "textbox", "constant", "interval"}

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_LEFT_OVER = re.compile(r"\$\{?[A-Za-z_]\w*|\[\[[A-Za-z_]\w*")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<metric>.*\S)\s*,\s*)?(?P<label>[A-Za-z_]\w*)\s*\)\s*$", re.S)


class VariableQuery(NamedTuple):
    """A dashboard variable filled from label_values(metric, label).

    Against plain Prometheus: GET /api/v1/label/<label>/values?match[]=<metric>. `metric` is the
    series selector with the variables it uses replaced (like panel queries), or "" for the
    one-argument form label_values(label).
    """

    name: str
    metric: str
    label: str


class PanelTarget(NamedTuple):
    """One query of one panel."""

    panel_id: int | None
    title: str
    panel_type: str
    ref_id: str
    expr: str  # as written in the dashboard, variables not yet replaced
    instant: bool


def load(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def iter_panels(dashboard: dict) -> Iterator[dict]:
    """Every panel that is not a row, including those nested in rows (collapsed rows keep theirs
    in the row's "panels")."""

    def walk(panels):
        for panel in panels or []:
            if panel.get("type") == "row":
                yield from walk(panel.get("panels"))
            else:
                yield panel
                # Library panels and old-style nesting: panels inside a panel.
                yield from walk(panel.get("panels"))

    yield from walk(dashboard.get("panels"))


def iter_rows(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard.get("panels") or []:
        if panel.get("type") == "row":
            yield panel


def panel_targets(dashboard: dict) -> list[PanelTarget]:
    """Every target of every panel, with its expression as written."""
    out = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets") or []:
            out.append(
                PanelTarget(
                    panel_id=panel.get("id"),
                    title=panel.get("title", ""),
                    panel_type=panel.get("type", ""),
                    ref_id=target.get("refId", ""),
                    expr=target.get("expr", ""),
                    instant=bool(target.get("instant")) and not target.get("range", False),
                )
            )
    return out


def variables(dashboard: dict) -> list[dict]:
    return list((dashboard.get("templating") or {}).get("list") or [])


def seconds(duration: str) -> float:
    match = _DURATION.match(duration)
    if not match:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def substitution_table(
    dashboard: dict,
    interval: str = "1m",
    time_range: str = "1h",
    values: dict[str, str] | None = None,
) -> dict[str, str]:
    """Variable name -> text that replaces it."""
    table = {
        "__rate_interval": interval,
        "__interval": interval,
        "__interval_ms": _number(seconds(interval) * 1000),
        "__range": time_range,
        "__range_s": _number(seconds(time_range)),
        "__range_ms": _number(seconds(time_range) * 1000),
    }
    for var in variables(dashboard):
        if var.get("type") in _VALUE_VARIABLE_TYPES and var.get("name"):
            table[var["name"]] = ".*"
    table.update(values or {})
    return table


def substitute(expr: str, table: dict[str, str]) -> str:
    """Replaces $name, ${name}, ${name:format} and [[name]] for every name in `table`."""
    # Longest names first, so that $__range_s is not read as $__range followed by "_s".
    for name in sorted(table, key=len, reverse=True):
        value = table[name]
        pattern = re.compile(
            r"\$\{" + re.escape(name) + r"(?::[^}]*)?\}"
            r"|\[\[" + re.escape(name) + r"(?::[^\]]*)?\]\]"
            r"|\$" + re.escape(name) + r"(?![\w])"
        )
        expr = pattern.sub(lambda _m, v=value: v, expr)
    left = _LEFT_OVER.findall(expr)
    if left:
        raise ValueError(f"unknown Grafana variable(s) {sorted(set(left))} in: {expr}")
    return expr


def panel_queries(
    path: str | Path,
    interval: str = "1m",
    time_range: str = "1h",
    values: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, ready for plain Prometheus.

    `interval` replaces $__rate_interval and $__interval, `time_range` replaces $__range;
    `values` overrides the ".*" given to template variables (e.g. {"model": "resnet50"}).
    Targets without an expression are left out (test_prometheus_config.py checks there are none).
    """
    dashboard = load(path)
    table = substitution_table(dashboard, interval, time_range, values)
    return [(t.title, substitute(t.expr, table)) for t in panel_targets(dashboard) if t.expr.strip()]


def variable_queries(path: str | Path, values: dict[str, str] | None = None) -> list[VariableQuery]:
    """The label_values(...) queries of the dashboard's query variables, variables replaced."""
    dashboard = load(path)
    table = substitution_table(dashboard, values=values)
    out = []
    for var in variables(dashboard):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        match = _LABEL_VALUES.match(query or "")
        if not match:
            raise ValueError(f"variable {var.get('name')!r}: not a label_values query: {query!r}")
        metric = substitute(match.group("metric") or "", table)
        out.append(VariableQuery(var["name"], metric, match.group("label")))
    return out


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


if __name__ == "__main__":
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else str(
        Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/inference-server.json"
    )
    for name, metric, label in variable_queries(target):
        print(f"${name}: label_values({metric}, {label})")
    for title, expr in panel_queries(target):
        print(f"{title}: {expr}")
