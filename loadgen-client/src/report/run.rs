//! One run read back from its output folder: the detail log's values (as the MLCommons parsers
//! read them: the first value of each key), the client's `client_run` line, the timeline and
//! accuracy.txt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use loadgen::timeline::Timeline;
use serde_json::Value;

use super::ReportError;
use crate::client_log;
use crate::run_info::{self, RunInfo};

/// The detail log's file name.
pub const DETAIL: &str = "mlperf_log_detail.txt";
const TIMELINE: &str = "mlperf_log_timeline.json";
const ACCURACY_TXT: &str = "accuracy.txt";

/// An accuracy figure from accuracy.txt.
#[derive(Debug, Clone, PartialEq)]
pub struct Accuracy {
    /// `accuracy` (top-1, %) or `mAP` (%).
    pub metric: String,
    pub percent: f64,
}

/// A run's results, as its files tell them.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub dir: PathBuf,
    pub info: Option<RunInfo>,
    /// The first value of each key in the detail log.
    pub values: BTreeMap<String, Value>,
    /// Why the run is INVALID: unmet constraints, then the logged errors.
    pub reasons: Vec<String>,
    /// The warnings logged.
    pub warnings: Vec<String>,
    /// The `telemetry_end` lines (one per metrics endpoint).
    pub telemetry: Vec<Value>,
    pub timeline: Option<Timeline>,
    pub accuracy: Option<Accuracy>,
}

/// Constraint keys and what a false one means.
const CONSTRAINTS: [(&str, &str); 4] = [
    (
        "result_min_duration_met",
        "the minimum duration was not met",
    ),
    (
        "result_min_queries_met",
        "the minimum query count was not met",
    ),
    (
        "result_perf_constraints_met",
        "the latency bound was not met",
    ),
    ("early_stopping_met", "early stopping was not satisfied"),
];

impl RunRecord {
    /// Reads the run in `dir` (a folder with mlperf_log_detail.txt).
    pub fn read(dir: &Path) -> Result<Self, ReportError> {
        let mut lines = MllogLines::default();
        lines.read(&dir.join(DETAIL), true)?;
        // The client's own lines of a run the official LoadGen logged (client_log.rs).
        lines.read(&dir.join(client_log::FILE), false)?;
        let MllogLines {
            values,
            errors,
            warnings,
            telemetry,
        } = lines;
        let detail_path = dir.join(DETAIL);
        if values.is_empty() {
            return Err(ReportError::Parse {
                path: detail_path,
                line: 1,
                problem: "no :::MLLOG lines".to_string(),
            });
        }
        let info = values
            .get(run_info::KEY)
            .and_then(|v| serde_json::from_value::<RunInfo>(v.clone()).ok());
        let mut reasons: Vec<String> = CONSTRAINTS
            .iter()
            .filter(|(key, _)| values.get(*key) == Some(&Value::Bool(false)))
            .map(|(_, why)| why.to_string())
            .collect();
        reasons.extend(errors);
        let timeline = match std::fs::read(dir.join(TIMELINE)) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|e| ReportError::Parse {
                    path: dir.join(TIMELINE),
                    line: e.line(),
                    problem: e.to_string(),
                })?,
            ),
            Err(_) => None,
        };
        let accuracy = std::fs::read_to_string(dir.join(ACCURACY_TXT))
            .ok()
            .and_then(|text| parse_accuracy(&text));
        Ok(Self {
            dir: dir.to_path_buf(),
            info,
            values,
            reasons,
            warnings,
            telemetry,
            timeline,
            accuracy,
        })
    }

    fn text(&self, key: &str) -> String {
        match self.values.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(Value::as_f64)
    }

    pub fn scenario(&self) -> String {
        self.text("effective_scenario")
    }

    pub fn mode(&self) -> String {
        self.text("effective_test_mode")
    }

    /// `VALID` or `INVALID`; `None` for accuracy-only runs.
    pub fn validity(&self) -> Option<String> {
        self.values
            .get("result_validity")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    pub fn date(&self) -> String {
        self.text("test_datetime")
    }

    /// A short name: the served model and device, else the SUT name, and the folder.
    pub fn label(&self) -> String {
        let who = match &self.info {
            Some(info) => info.label(),
            None => self.text("sut_name"),
        };
        format!("{who} · {}", self.scenario())
    }

    /// The headline metric the submission checker reads, with its key and unit.
    pub fn metric(&self) -> Option<(&'static str, f64, &'static str)> {
        let scenario: loadgen::TestScenario = self.scenario().parse().ok()?;
        let (key, unit) = loadgen::runner::metric_key(scenario);
        Some((key, self.number(key)?, unit))
    }

    /// Samples per second, as the scenario measures it.
    pub fn throughput(&self) -> Option<f64> {
        match self.scenario().as_str() {
            "SingleStream" => self.number("result_qps_with_loadgen_overhead"),
            "MultiStream" => {
                let spq = self.number("effective_samples_per_query")?;
                let mean = self.number("result_mean_query_latency_ns")?;
                (mean > 0.0).then(|| spq * 1e9 / mean)
            }
            "Server" => self.number("result_completed_samples_per_sec"),
            "Offline" => self.number("result_samples_per_second"),
            _ => None,
        }
    }

    /// The scenario's latency figure (ns) and what it is; Offline has none.
    pub fn latency(&self) -> Option<(f64, &'static str)> {
        match self.scenario().as_str() {
            "SingleStream" => self
                .number("early_stopping_latency_ss")
                .map(|l| (l, "p90 (early stopping)")),
            "MultiStream" => self
                .number("early_stopping_latency_ms")
                .map(|l| (l, "p99 per query (early stopping)")),
            "Server" => self
                .number("result_99.00_percentile_latency_ns")
                .map(|l| (l, "p99")),
            _ => None,
        }
    }

    /// The values whose keys start with `prefix`, as text.
    pub fn values_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.values
            .keys()
            .filter(|k| k.starts_with(prefix))
            .map(|k| (k.clone(), self.text(k)))
            .collect()
    }

    /// The key that pairs a performance run with the accuracy run of the same model and device.
    pub fn system_key(&self) -> Option<(String, String, String)> {
        self.info.as_ref().map(|i| {
            (
                i.model.clone(),
                i.served.backend.clone(),
                i.served.device.clone(),
            )
        })
    }
}

/// The `:::MLLOG` lines of one or more detail-format logs: the first value of each key, and the
/// error, warning and telemetry lines.
#[derive(Default)]
struct MllogLines {
    values: BTreeMap<String, Value>,
    errors: Vec<String>,
    warnings: Vec<String>,
    telemetry: Vec<Value>,
}

impl MllogLines {
    /// Adds the lines of `path`; a missing file is an error only when `required`.
    fn read(&mut self, path: &Path, required: bool) -> Result<(), ReportError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ReportError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        for (n, line) in text.lines().enumerate() {
            let Some(json) = line.strip_prefix(":::MLLOG ") else {
                continue;
            };
            let entry: Value = serde_json::from_str(json).map_err(|e| ReportError::Parse {
                path: path.to_path_buf(),
                line: n + 1,
                problem: e.to_string(),
            })?;
            let (Some(key), Some(value)) = (entry["key"].as_str(), entry.get("value")) else {
                continue;
            };
            let text = || match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if entry["metadata"]["is_error"] == Value::Bool(true) {
                self.errors.push(format!("{key}: {}", text()));
            } else if entry["metadata"]["is_warning"] == Value::Bool(true) {
                self.warnings.push(format!("{key}: {}", text()));
            }
            if key == "telemetry_end" {
                self.telemetry.push(value.clone());
            }
            self.values
                .entry(key.to_string())
                .or_insert_with(|| value.clone());
        }
        Ok(())
    }
}

/// The first `accuracy=` or `mAP=` figure of accuracy.txt.
pub fn parse_accuracy(text: &str) -> Option<Accuracy> {
    for metric in ["accuracy", "mAP"] {
        let needle = format!("{metric}=");
        if let Some(start) = text.find(&needle) {
            let rest = &text[start + needle.len()..];
            let number: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            if let Ok(percent) = number.parse() {
                return Some(Accuracy {
                    metric: metric.to_string(),
                    percent,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_lines_of_both_kinds_parse() {
        assert_eq!(
            parse_accuracy("accuracy=98.200%, good=982, total=1000\nhash=ab\n"),
            Some(Accuracy {
                metric: "accuracy".into(),
                percent: 98.2
            })
        );
        assert_eq!(
            parse_accuracy("mAP=22.912%\n").map(|a| a.percent),
            Some(22.912)
        );
        assert_eq!(parse_accuracy("nothing"), None);
    }

    #[test]
    fn a_detail_log_gives_its_values_reasons_and_metric() {
        let dir = tempfile::tempdir().unwrap();
        let line = |key: &str, value: &str, error: bool| {
            format!(
                ":::MLLOG {{\"key\": \"{key}\", \"value\": {value}, \"time_ms\": 1.0, \
                 \"namespace\": \"mlperf::logging\", \"event_type\": \"POINT_IN_TIME\", \
                 \"metadata\": {{\"is_error\": {error}, \"is_warning\": false, \"file\": \"x\", \
                 \"line_no\": 1, \"pid\": 1, \"tid\": 1}}}}\n"
            )
        };
        let text = [
            line("effective_scenario", "\"Server\"", false),
            line("result_validity", "\"INVALID\"", false),
            line("result_perf_constraints_met", "false", false),
            line("result_completed_samples_per_sec", "512.5", false),
            line("result_99.00_percentile_latency_ns", "20000000", false),
            line("error_runtime", "\"boom\"", true),
            line("result_validity", "\"VALID\"", false),
        ]
        .concat();
        std::fs::write(dir.path().join(DETAIL), text).unwrap();
        let run = RunRecord::read(dir.path()).unwrap();
        assert_eq!(
            run.validity().as_deref(),
            Some("INVALID"),
            "first value wins"
        );
        assert_eq!(
            run.reasons,
            vec!["the latency bound was not met", "error_runtime: boom"]
        );
        assert_eq!(run.throughput(), Some(512.5));
        assert_eq!(run.latency(), Some((20_000_000.0, "p99")));
        assert!(run.timeline.is_none() && run.accuracy.is_none() && run.info.is_none());
    }

    #[test]
    fn a_folder_without_a_detail_log_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = RunRecord::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains(DETAIL), "{err}");
    }
}
