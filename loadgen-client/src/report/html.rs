//! The report page: one self-contained HTML file (inline CSS and SVG, no scripts, nothing
//! fetched when it is opened).

use std::fmt::Write;

use super::charts::{self, Point, Series, XScale, PALETTE};
use super::pareto::{frontier, Objectives};
use super::run::{Accuracy, RunRecord};
use super::ReportError;

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1340px;color:#222}\
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}\
th{background:#f3f3f3}td.n{text-align:right}tr.dominated td{color:#aaa}\
.valid{color:#1a7f37;font-weight:bold}.invalid{color:#c62828;font-weight:bold}\
.charts{display:flex;flex-wrap:wrap;gap:8px}.charts svg{border:1px solid #eee}\
details{margin:.5em 0}";

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ms(ns: f64) -> String {
    format!("{:.3}", ns / 1e6)
}

/// The accuracy of `run`, or that of an accuracy run of the same model on the same device.
fn accuracy_of<'a>(run: &'a RunRecord, runs: &'a [RunRecord]) -> Option<&'a Accuracy> {
    run.accuracy.as_ref().or_else(|| {
        let key = run.system_key()?;
        runs.iter()
            .filter(|other| other.system_key().as_ref() == Some(&key))
            .find_map(|other| other.accuracy.as_ref())
    })
}

/// Renders the report of `runs` (at least one).
pub fn render(runs: &[RunRecord], generated: &str) -> Result<String, ReportError> {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>loadgen-client report</title><style>{STYLE}</style></head><body>\n\
         <h1>loadgen-client report</h1><p>{} run(s); generated {}.</p>\n",
        runs.len(),
        escape(generated)
    );
    if runs.len() > 1 {
        page += &comparison(runs)?;
    }
    for (i, run) in runs.iter().enumerate() {
        page += &run_section(i + 1, run, accuracy_of(run, runs))?;
    }
    page += "</body></html>\n";
    Ok(page)
}

/// The scenarios of `runs`, each once, in order of name.
fn scenarios(runs: &[RunRecord]) -> std::collections::BTreeSet<String> {
    runs.iter().map(RunRecord::scenario).collect()
}

/// The runs' objectives and whether each is on its scenario's frontier.
fn frontier_by_scenario(runs: &[RunRecord]) -> Vec<Option<(Objectives, bool)>> {
    let objectives: Vec<Option<Objectives>> = runs
        .iter()
        .map(|run| {
            // Only VALID performance results compete.
            if run.validity().as_deref() != Some("VALID") {
                return None;
            }
            Some(Objectives {
                throughput: run.throughput()?,
                latency: run.latency().map(|l| l.0),
                accuracy: accuracy_of(run, runs).map(|a| a.percent),
            })
        })
        .collect();
    let mut result = vec![None; runs.len()];
    for scenario in scenarios(runs) {
        let members: Vec<usize> = (0..runs.len())
            .filter(|&i| runs[i].scenario() == scenario && objectives[i].is_some())
            .collect();
        let group: Vec<Objectives> = members.iter().filter_map(|&i| objectives[i]).collect();
        for (&i, on) in members.iter().zip(frontier(&group)) {
            result[i] = objectives[i].map(|o| (o, on));
        }
    }
    result
}

fn comparison(runs: &[RunRecord]) -> Result<String, ReportError> {
    let fronts = frontier_by_scenario(runs);
    let mut html = String::from(
        "<h2 id=\"comparison\">Comparison</h2><p>Within each scenario, a run is on the Pareto \
         frontier when no other run has at least its throughput, at most its latency and at \
         least its accuracy (where both have them) and is better in one. Only VALID runs \
         compete; the others and the dominated ones are grey.</p><table><tr><th>#</th><th>Run</th><th>Scenario</th><th>Mode</th>\
         <th>Result</th><th>Samples/s</th><th>Latency (ms)</th><th>Accuracy</th>\
         <th>Frontier</th></tr>\n",
    );
    for (i, (run, front)) in runs.iter().zip(&fronts).enumerate() {
        let dominated = !matches!(front, Some((_, true)));
        let _ = writeln!(
            html,
            "<tr{}><td><a href=\"#run-{n}\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td>{}</td></tr>",
            if dominated {
                " class=\"dominated\""
            } else {
                ""
            },
            escape(&run.label()),
            escape(&run.scenario()),
            escape(&run.mode()),
            validity_html(run),
            run.throughput()
                .map(|t| format!("{t:.1}"))
                .unwrap_or_default(),
            run.latency()
                .map(|(l, what)| format!("{} ({what})", ms(l)))
                .unwrap_or_default(),
            accuracy_of(run, runs)
                .map(|a| format!("{} {:.3}%", a.metric, a.percent))
                .unwrap_or_default(),
            match (front, run.validity()) {
                (Some((_, true)), _) => "on the frontier",
                (Some((_, false)), _) => "dominated",
                (None, Some(_)) => "not VALID",
                (None, None) => "",
            },
            n = i + 1,
        );
    }
    html += "</table>\n<div class=\"charts\">";
    for scenario in scenarios(runs) {
        let members: Vec<(usize, Objectives, bool)> = fronts
            .iter()
            .enumerate()
            .filter(|(i, _)| runs[*i].scenario() == scenario)
            .filter_map(|(i, f)| f.map(|(o, on)| (i, o, on)))
            .collect();
        if members.is_empty() {
            continue;
        }
        // Latency across, throughput up; without a latency (Offline), accuracy across, else
        // the runs in order.
        let across = |o: &Objectives| {
            if members.iter().all(|(_, o, _)| o.latency.is_some()) {
                o.latency.map(|l| ("latency (ms)", l / 1e6))
            } else if members.iter().all(|(_, o, _)| o.accuracy.is_some()) {
                o.accuracy.map(|a| ("accuracy (%)", a))
            } else {
                None
            }
        };
        let x_desc = members
            .first()
            .and_then(|(_, o, _)| across(o))
            .map_or("run", |(desc, _)| desc);
        let points: Vec<Point> = members
            .iter()
            .enumerate()
            .map(|(k, (i, o, on))| Point {
                x: across(o).map_or(k as f64 + 1.0, |(_, x)| x),
                y: o.throughput,
                label: format!("#{}", i + 1),
                highlighted: *on,
            })
            .collect();
        html += &charts::scatter(
            &format!("Pareto frontier: {scenario}"),
            (x_desc, "samples/s"),
            &points,
        )?;
    }
    html += "</div>\n";
    Ok(html)
}

fn validity_html(run: &RunRecord) -> String {
    match run.validity().as_deref() {
        Some("VALID") => "<span class=\"valid\">VALID</span>".to_string(),
        Some(other) => format!("<span class=\"invalid\">{}</span>", escape(other)),
        None => escape(&run.mode()),
    }
}

fn table(rows: &[(String, String)]) -> String {
    let mut html = String::from("<table>");
    for (key, value) in rows {
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(key),
            escape(value)
        );
    }
    html + "</table>\n"
}

fn run_section(
    n: usize,
    run: &RunRecord,
    accuracy: Option<&Accuracy>,
) -> Result<String, ReportError> {
    let mut html = String::new();
    let _ = write!(
        html,
        "<h2 id=\"run-{n}\">#{n} {}</h2><p>{} · {} · {} · <code>{}</code></p>",
        escape(&run.label()),
        validity_html(run),
        escape(&run.mode()),
        escape(&run.date()),
        escape(&run.dir.display().to_string()),
    );
    if !run.reasons.is_empty() {
        html += "<p>Why it is not VALID:</p><ul>";
        for reason in &run.reasons {
            let _ = write!(html, "<li>{}</li>", escape(reason));
        }
        html += "</ul>";
    }
    let mut results: Vec<(String, String)> = Vec::new();
    if let Some(t) = run.throughput() {
        results.push(("samples per second".into(), format!("{t:.2}")));
    }
    if let Some((l, what)) = run.latency() {
        results.push((format!("latency, {what} (ms)"), ms(l)));
    }
    if let Some(a) = accuracy {
        results.push((a.metric.clone(), format!("{:.3}%", a.percent)));
    }
    results.extend(run.values_with_prefix("result_"));
    if let Some(info) = &run.info {
        results.push(("profile".into(), info.profile.clone()));
        results.push(("dataset".into(), info.dataset.clone()));
        results.push(("endpoints".into(), info.endpoints.join(" ")));
        results.push(("served by".into(), info.label()));
    }
    html += &table(&results);
    if let Some(timeline) = &run.timeline {
        html += "<div class=\"charts\">";
        html += &timeline_charts(timeline)?;
        html += "</div>";
    }
    if !run.telemetry.is_empty() {
        html += "<h3>Device telemetry</h3>";
        for t in &run.telemetry {
            let rows: Vec<(String, String)> = t
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| k.as_str() != "telemetry" && !v.is_null())
                .map(|(k, v)| (k.clone(), v.to_string().trim_matches('"').to_string()))
                .collect();
            html += &table(&rows);
        }
    }
    if !run.warnings.is_empty() {
        html += "<details><summary>Warnings</summary><ul>";
        for w in &run.warnings {
            let _ = write!(html, "<li>{}</li>", escape(w));
        }
        html += "</ul></details>";
    }
    html += "<details><summary>Settings</summary>";
    html += &table(&run.values_with_prefix("effective_"));
    html += "</details>\n";
    Ok(html)
}

fn timeline_charts(t: &loadgen::timeline::Timeline) -> Result<String, ReportError> {
    let at = |f: &dyn Fn(&loadgen::timeline::Interval) -> f64| -> Vec<(f64, f64)> {
        t.intervals
            .iter()
            .filter(|i| i.completed > 0)
            .map(|i| (i.start_s, f(i)))
            .collect()
    };
    let latency = [
        ("p50", PALETTE[0], at(&|i| i.p50_ns as f64 / 1e6)),
        ("p99", PALETTE[1], at(&|i| i.p99_ns as f64 / 1e6)),
        ("max", PALETTE[3], at(&|i| i.max_ns as f64 / 1e6)),
    ]
    .map(|(name, color, points)| Series {
        name: name.to_string(),
        color,
        points,
    });
    let mut html = charts::lines(
        "Latency over time",
        ("seconds into the run", "ms"),
        &latency,
        XScale::Linear,
    )?;
    let throughput = [Series {
        name: "completed".into(),
        color: PALETTE[2],
        points: t
            .intervals
            .iter()
            .map(|i| (i.start_s, i.completed as f64 / t.interval_s))
            .collect(),
    }];
    html += &charts::lines(
        "Throughput over time",
        ("seconds into the run", "samples/s"),
        &throughput,
        XScale::Linear,
    )?;
    let cdf = [Series {
        name: "CDF".into(),
        color: PALETTE[0],
        points: t
            .cdf
            .iter()
            .map(|&(ns, p)| (ns as f64 / 1e6, p * 100.0))
            .collect(),
    }];
    html += &charts::lines(
        "Latency CDF",
        ("latency (ms, log scale)", "% of samples at or below"),
        &cdf,
        XScale::Log,
    )?;
    let buckets: Vec<(f64, f64, f64)> = t
        .histogram
        .iter()
        .map(|b| {
            (
                b.low_ns as f64 / 1e6,
                b.high_ns as f64 / 1e6,
                b.count as f64,
            )
        })
        .collect();
    html += &charts::ranges(
        "Latency histogram",
        ("latency (ms, log scale)", "samples"),
        &buckets,
        XScale::Log,
    )?;
    if let Some(b) = &t.breakdown {
        let parts = [
            ("network + client".to_string(), b.network_ns / 1e6),
            ("server queue".to_string(), b.queue_ns / 1e6),
            ("server compute".to_string(), b.compute_ns / 1e6),
        ];
        html += &charts::bars(
            &format!("Where the time goes (mean of {} samples)", b.samples),
            ("", "ms per sample"),
            &parts,
        )?;
    }
    if !t.batch_sizes.is_empty() {
        let batches: Vec<(String, f64)> = t
            .batch_sizes
            .iter()
            .map(|&(size, samples)| (size.to_string(), samples as f64 / f64::from(size.max(1))))
            .collect();
        html += &charts::bars("Executed batch sizes", ("batch size", "batches"), &batches)?;
    }
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
