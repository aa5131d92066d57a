//! `loadgen-client package`: lays out runs as an MLPerf Inference submission (the v6.1 tree the
//! official submission checker reads), truncating the accuracy logs as the official
//! `truncate_accuracy_log.py` does.
//!
//! ```text
//! OUT/<division>/<submitter>/systems/<system>.json
//! OUT/<division>/<submitter>/src/README.md
//! OUT/<division>/<submitter>/results/<system>/<benchmark>/<scenario>/
//!     performance/run_1/mlperf_log_{detail,summary}.txt
//!     accuracy/{accuracy.txt, mlperf_log_accuracy.json, mlperf_log_{detail,summary}.txt}
//!     measurements.json  README.md  user.conf
//! ```
//!
//! Only the open division: the closed one needs the official LoadGen and the TEST01/TEST04
//! compliance runs, which this client does not make.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::report::RunRecord;
use crate::system::SystemDescription;

/// Accuracy logs at least this large are truncated (official `MAX_ACCURACY_LOG_SIZE`).
const MAX_ACCURACY_LOG_SIZE: u64 = 10 * 1024;
/// What a truncated log keeps of its start and of its end (official `VIEWABLE_SIZE`).
const VIEWABLE_SIZE: usize = 4096;

/// The official files a run folder must have, and those copied into each part.
const PERFORMANCE_FILES: [&str; 2] = ["mlperf_log_detail.txt", "mlperf_log_summary.txt"];
const ACCURACY_LOG: &str = "mlperf_log_accuracy.json";
const ACCURACY_TXT: &str = "accuracy.txt";

/// Why a package could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Run(#[from] crate::report::ReportError),
    #[error("{dir}: {problem}")]
    Unusable { dir: PathBuf, problem: String },
    #[error("{benchmark} {scenario}: {problem}")]
    Incomplete {
        benchmark: String,
        scenario: String,
        problem: String,
    },
    #[error("{0} exists; package writes a new tree (remove it or pick another --out)")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--system-json {path}: {problem}")]
    SystemJson { path: PathBuf, problem: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the submission is and who makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub submitter: String,
    /// The system's name: its description's file name and results folder.
    pub system: String,
    /// `available`, `preview` or `rdi`.
    pub status: String,
    /// Fields of the system description given by the submitter, over the captured ones.
    pub system_fields: Map<String, Value>,
    /// Fields of measurements.json given by the submitter, over the defaults.
    pub measurement_fields: Map<String, Value>,
}

/// One scenario's runs.
struct ScenarioRuns<'a> {
    performance: &'a RunRecord,
    accuracy: &'a RunRecord,
}

/// The division this packager writes.
pub const DIVISION: &str = "open";

/// Writes the submission tree of `runs` under `out`; returns the scenario folders written.
pub fn package(
    runs: &[RunRecord],
    submission: &Submission,
    out: &Path,
) -> Result<Vec<PathBuf>, PackageError> {
    let grouped = group(runs)?;
    if out.exists() && std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(PackageError::Exists(out.to_path_buf()));
    }
    let root = out.join(DIVISION).join(&submission.submitter);
    let scenarios: Vec<&str> = grouped.keys().map(|(_, s)| s.as_str()).collect();
    let first = grouped.values().next().map(|r| r.performance);
    let system = system_description(submission, first, &scenarios);
    write(
        &root
            .join("systems")
            .join(format!("{}.json", submission.system)),
        &serde_json::to_string_pretty(&system).unwrap_or_default(),
    )?;
    write(&root.join("src").join("README.md"), &source_readme())?;
    let mut written = Vec::new();
    for ((benchmark, scenario), runs) in &grouped {
        let dir = root
            .join("results")
            .join(&submission.system)
            .join(benchmark)
            .join(scenario);
        let run_1 = dir.join("performance").join("run_1");
        copy_files(&runs.performance.dir, &run_1, &PERFORMANCE_FILES)?;
        let accuracy = dir.join("accuracy");
        copy_files(&runs.accuracy.dir, &accuracy, &PERFORMANCE_FILES)?;
        truncate_accuracy_log(
            &runs.accuracy.dir.join(ACCURACY_LOG),
            &runs.accuracy.dir.join(ACCURACY_TXT),
            &accuracy,
        )?;
        let info = runs.performance.info.clone().unwrap_or_default();
        let measurements = measurements(submission, &info);
        write(
            &dir.join("measurements.json"),
            &serde_json::to_string_pretty(&measurements).unwrap_or_default(),
        )?;
        write(&dir.join("README.md"), &scenario_readme(scenario, runs))?;
        let user_conf = if info.user_conf.trim().is_empty() {
            "# The run had no user.conf: mlperf.conf (6.0.17) and the command line in README.md.\n"
                .to_string()
        } else {
            info.user_conf.clone()
        };
        write(&dir.join("user.conf"), &user_conf)?;
        written.push(dir);
    }
    Ok(written)
}

/// The runs by (benchmark, scenario): exactly one VALID performance run and one scored accuracy
/// run each.
fn group(runs: &[RunRecord]) -> Result<BTreeMap<(String, String), ScenarioRuns<'_>>, PackageError> {
    let mut performance: BTreeMap<(String, String), &RunRecord> = BTreeMap::new();
    let mut accuracy: BTreeMap<(String, String), &RunRecord> = BTreeMap::new();
    for run in runs {
        let unusable = |problem: String| PackageError::Unusable {
            dir: run.dir.clone(),
            problem,
        };
        let info = run.info.as_ref().ok_or_else(|| {
            unusable("no client_run line in its detail log: not a run of this client".into())
        })?;
        let key = (info.mlperf_model.clone(), run.scenario());
        let (kind, map) = match run.mode().as_str() {
            "PerformanceOnly" => {
                if run.validity().as_deref() != Some("VALID") {
                    return Err(unusable(format!(
                        "the performance run is not VALID ({}); a submission needs VALID runs",
                        run.reasons.join("; ")
                    )));
                }
                ("performance", &mut performance)
            }
            "AccuracyOnly" => {
                if !run.dir.join(ACCURACY_TXT).is_file() {
                    return Err(unusable(
                        "the accuracy run has no accuracy.txt (a dataset with labels scores it)"
                            .into(),
                    ));
                }
                ("accuracy", &mut accuracy)
            }
            other => {
                return Err(unusable(format!(
                    "mode {other}: package takes PerformanceOnly and AccuracyOnly runs"
                )))
            }
        };
        if let Some(earlier) = map.insert(key.clone(), run) {
            return Err(PackageError::Incomplete {
                benchmark: key.0,
                scenario: key.1,
                problem: format!(
                    "two {kind} runs ({} and {}); give one",
                    earlier.dir.display(),
                    run.dir.display()
                ),
            });
        }
    }
    let incomplete =
        |(benchmark, scenario): &(String, String), problem: &str| PackageError::Incomplete {
            benchmark: benchmark.clone(),
            scenario: scenario.clone(),
            problem: problem.to_string(),
        };
    for key in accuracy.keys() {
        if !performance.contains_key(key) {
            return Err(incomplete(key, "an accuracy run but no performance run"));
        }
    }
    if performance.is_empty() {
        return Err(PackageError::Unusable {
            dir: PathBuf::from("."),
            problem: "no runs given".into(),
        });
    }
    performance
        .into_iter()
        .map(|(key, performance)| {
            let accuracy = *accuracy.get(&key).ok_or_else(|| {
                incomplete(
                    &key,
                    "a performance run but no accuracy run (run the scenario with --accuracy)",
                )
            })?;
            Ok((
                key,
                ScenarioRuns {
                    performance,
                    accuracy,
                },
            ))
        })
        .collect()
}

fn write(path: &Path, text: &str) -> Result<(), PackageError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(path, text).map_err(io(path))
}

fn copy_files(from: &Path, to: &Path, names: &[&str]) -> Result<(), PackageError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for name in names {
        let source = from.join(name);
        std::fs::copy(&source, to.join(name)).map_err(io(&source))?;
    }
    Ok(())
}

/// Copies the accuracy log and accuracy.txt into `to` as `truncate_accuracy_log.py` leaves them:
/// a log of 10 KiB or more keeps its first and last 4096 characters around `\n\n...\n\n`, and
/// accuracy.txt carries `hash=<sha256 of the whole log>` (added when it lacks it).
pub fn truncate_accuracy_log(
    log: &Path,
    accuracy_txt: &Path,
    to: &Path,
) -> Result<(), PackageError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    let bytes = std::fs::read(log).map_err(io(log))?;
    let mut text = std::fs::read_to_string(accuracy_txt).map_err(io(accuracy_txt))?;
    let hash = format!("{:x}", Sha256::digest(&bytes));
    let has_hash = text
        .lines()
        .any(|line| line.strip_prefix("hash=") == Some(hash.as_str()));
    let kept = if has_hash && (bytes.len() as u64) < MAX_ACCURACY_LOG_SIZE {
        bytes
    } else {
        if !has_hash {
            text.push_str(&format!("\nhash={hash}\n"));
        }
        truncated(&bytes)
    };
    std::fs::write(to.join(ACCURACY_LOG), kept).map_err(io(to))?;
    std::fs::write(to.join(ACCURACY_TXT), text).map_err(io(to))
}

/// The official `truncate_file`: unchanged below 4096 bytes, else the first and last 4096.
fn truncated(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() < VIEWABLE_SIZE {
        return bytes.to_vec();
    }
    let mut out = bytes[..VIEWABLE_SIZE].to_vec();
    out.extend_from_slice(b"\n\n...\n\n");
    out.extend_from_slice(&bytes[bytes.len() - VIEWABLE_SIZE..]);
    out
}

/// Whether every endpoint is on this machine (then this machine is the system under test).
fn local_endpoints(endpoints: &[String]) -> bool {
    !endpoints.is_empty()
        && endpoints.iter().all(|e| {
            let host = e
                .trim_start_matches("http://")
                .trim_start_matches("https://");
            ["127.", "localhost", "[::1]", "null"]
                .iter()
                .any(|local| host.starts_with(local))
        })
}

/// Where the captured description has nothing to say.
const UNKNOWN: &str = "unknown (not captured; give it with --system-json)";

/// The system description: what this machine and the server say, then the submitter's fields.
fn system_description(
    submission: &Submission,
    run: Option<&RunRecord>,
    scenarios: &[&str],
) -> Value {
    let info = run.and_then(|r| r.info.clone()).unwrap_or_default();
    let host = local_endpoints(&info.endpoints).then(SystemDescription::of_this_machine);
    let remote = "unknown (the server is remote: give it with --system-json)";
    let host_field =
        |f: &dyn Fn(&SystemDescription) -> String| host.as_ref().map_or(remote.to_string(), f);
    let device = info.served.device.clone();
    let cpu_only = device.is_empty() || device.split(',').all(|d| d.trim() == "cpu");
    let system_type = if scenarios.contains(&"Server") {
        "datacenter,edge"
    } else {
        "edge"
    };
    let mut fields = json!({
        "division": DIVISION,
        "submitter": submission.submitter,
        "status": submission.status,
        "system_name": submission.system,
        "system_type": system_type,
        "system_type_detail": "edge device",
        "number_of_nodes": "1",
        "host_processor_model_name": host_field(&|h| h.cpu_model.clone()),
        "host_processors_per_node": "1",
        "host_processor_core_count": host_field(&|h| h.logical_cpus.to_string()),
        "host_processor_frequency": UNKNOWN,
        "host_processor_caches": UNKNOWN,
        "host_processor_interconnect": "N/A",
        "host_memory_capacity": host_field(&|h| format!("{:.1} GiB", h.memory_bytes as f64 / (1u64 << 30) as f64)),
        "host_memory_configuration": UNKNOWN,
        "host_storage_capacity": UNKNOWN,
        "host_storage_type": UNKNOWN,
        "host_networking": "loopback (client and server on one machine)",
        "host_network_card_count": "0",
        "host_networking_topology": "N/A",
        "accelerators_per_node": if cpu_only { "0" } else { "1" },
        "accelerator_model_name": if cpu_only { "N/A".to_string() } else { device.clone() },
        "accelerator_memory_capacity": if cpu_only { "N/A" } else { UNKNOWN },
        "accelerator_memory_configuration": if cpu_only { "N/A" } else { UNKNOWN },
        "accelerator_frequency": if cpu_only { "N/A" } else { UNKNOWN },
        "accelerator_host_interconnect": if cpu_only { "N/A" } else { UNKNOWN },
        "accelerator_interconnect": "N/A",
        "accelerator_interconnect_topology": "N/A",
        "accelerator_on-chip_memories": if cpu_only { "N/A" } else { UNKNOWN },
        "framework": format!(
            "inference-server ({}), {}",
            if info.served.backend.is_empty() { "unknown runtime" } else { &info.served.backend },
            info.client
        ),
        "operating_system": host_field(&|h| format!("{} (Linux {})", h.operating_system, h.kernel)),
        "other_software_stack": format!("loadgen-client's LoadGen (6.0.17 reproduced), {}", info.client),
        "cooling": UNKNOWN,
        "hw_notes": format!("device as the server names it: {}", if device.is_empty() { "unknown" } else { &device }),
        "sw_notes": "Measured with loadgen-client over KServe v2 gRPC (MLPerf network division SUT).",
    });
    if let (Value::Object(map), false) = (&mut fields, local_endpoints(&info.endpoints)) {
        map.insert("host_networking".into(), json!(remote));
    }
    if let Value::Object(map) = &mut fields {
        for (k, v) in &submission.system_fields {
            map.insert(k.clone(), v.clone());
        }
    }
    fields
}

fn measurements(submission: &Submission, info: &crate::run_info::RunInfo) -> Value {
    let mut fields = json!({
        "starting_weights_filename": info.model,
        "retraining": "no",
        "input_data_types": profile_input_type(&info.profile),
        "weight_data_types": "as served (the server does not report it; give it with --measurements-json)",
        "weight_transformations": "none known (give them with --measurements-json)",
    });
    if let Value::Object(map) = &mut fields {
        for (k, v) in &submission.measurement_fields {
            map.insert(k.clone(), v.clone());
        }
    }
    fields
}

/// The profile's input type in MLPerf's words.
fn profile_input_type(profile: &str) -> String {
    use crate::profile::InputType;
    match crate::profile::lookup(profile).map(|p| p.input_type) {
        Ok(InputType::F32) => "fp32",
        Ok(InputType::F16) => "fp16",
        Ok(InputType::U8 { .. }) => "uint8",
        Ok(InputType::I8 { .. }) => "int8",
        Err(_) => "unknown",
    }
    .to_string()
}

fn source_readme() -> String {
    format!(
        "# Source\n\nMeasured with loadgen-client {} (a LoadGen 6.0.17 reproduction driving a KServe v2 \
         gRPC server) and inference-server, from the same repository.\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn scenario_readme(scenario: &str, runs: &ScenarioRuns<'_>) -> String {
    let info = runs.performance.info.clone().unwrap_or_default();
    let command = |run: &RunRecord| {
        run.info
            .as_ref()
            .map(|i| i.command.join(" "))
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "(not recorded)".into())
    };
    format!(
        "# {} {scenario}\n\nServed by {} at {}; dataset {}; profile {}.\n\n\
         Performance run ({}):\n\n```\n{}\n```\n\nAccuracy run ({}):\n\n```\n{}\n```\n",
        info.mlperf_model,
        info.label(),
        info.endpoints.join(" "),
        info.dataset,
        info.profile,
        runs.performance.date(),
        command(runs.performance),
        runs.accuracy.date(),
        command(runs.accuracy),
    )
}

/// Reads a JSON object file (for --system-json and --measurements-json).
pub fn read_fields(path: &Path) -> Result<Map<String, Value>, PackageError> {
    let problem = |problem: String| PackageError::SystemJson {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
    match serde_json::from_str(&text).map_err(|e| problem(e.to_string()))? {
        Value::Object(map) => Ok(map),
        _ => Err(problem("must be a JSON object of fields".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_follows_the_official_rules() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(ACCURACY_LOG);
        let txt = dir.path().join(ACCURACY_TXT);
        let body: String = (0..2000)
            .map(|i| format!("{{\"seq_id\": {i}}},\n"))
            .collect();
        std::fs::write(&log, &body).unwrap();
        std::fs::write(&txt, "accuracy=98.444%, good=443, total=450\n").unwrap();
        let out = dir.path().join("out");
        truncate_accuracy_log(&log, &txt, &out).unwrap();
        let kept = std::fs::read(out.join(ACCURACY_LOG)).unwrap();
        assert_eq!(kept.len(), 2 * VIEWABLE_SIZE + 7);
        assert!(kept.starts_with(&body.as_bytes()[..VIEWABLE_SIZE]));
        assert!(kept.ends_with(&body.as_bytes()[body.len() - VIEWABLE_SIZE..]));
        let hash = format!("{:x}", Sha256::digest(body.as_bytes()));
        assert_eq!(
            std::fs::read_to_string(out.join(ACCURACY_TXT)).unwrap(),
            format!("accuracy=98.444%, good=443, total=450\n\nhash={hash}\n")
        );
        // A small log whose hash accuracy.txt already carries is left as it is.
        std::fs::write(&log, "[]").unwrap();
        let small_hash = format!("{:x}", Sha256::digest(b"[]"));
        std::fs::write(&txt, format!("accuracy=1.000%\nhash={small_hash}\n")).unwrap();
        let out = dir.path().join("small");
        truncate_accuracy_log(&log, &txt, &out).unwrap();
        assert_eq!(std::fs::read(out.join(ACCURACY_LOG)).unwrap(), b"[]");
        assert_eq!(
            std::fs::read_to_string(out.join(ACCURACY_TXT)).unwrap(),
            format!("accuracy=1.000%\nhash={small_hash}\n")
        );
    }

    #[test]
    fn loopback_endpoints_are_this_machine() {
        let local =
            |e: &[&str]| local_endpoints(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(local(&["http://127.0.0.1:8001", "localhost:8001"]));
        assert!(!local(&["http://10.0.0.7:8001"]));
        assert!(!local(&[]));
    }
}
