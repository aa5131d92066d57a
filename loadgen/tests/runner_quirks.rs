//! Runner behaviours the reference runs do not cover: duplicate completions, audit.config,
//! config errors logged before the test, and Server query coalescing.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::*;
use loadgen::config::{ConfType, ConfigSession};
use loadgen::null_sut::{payload, MemoryQsl};
use loadgen::runner::{start_test, RunOptions, TestOutcome};
use loadgen::settings::{LogSettings, TestMode, TestScenario, TestSettings};
use loadgen::sut::{QuerySample, ResponseSink, SampleResponse, Sut};

/// Records every issue_query call; answers each sample `repeat` times, optionally after
/// sleeping in the first call.
struct Recorder {
    calls: Mutex<Vec<Vec<QuerySample>>>,
    repeat: usize,
    first_call_sleep: Duration,
}

impl Recorder {
    fn new(repeat: usize, first_call_sleep: Duration) -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            repeat,
            first_call_sleep,
        }
    }

    fn calls(&self) -> Vec<Vec<QuerySample>> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Sut for Recorder {
    fn name(&self) -> String {
        "recorder".to_string()
    }

    fn issue_query(&self, samples: Vec<QuerySample>, sink: ResponseSink) {
        let first = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            calls.push(samples.clone());
            calls.len() == 1
        };
        if first {
            std::thread::sleep(self.first_call_sleep);
        }
        for _ in 0..self.repeat {
            sink.complete(
                samples
                    .iter()
                    .map(|s| SampleResponse {
                        id: s.id,
                        data: payload(s.index),
                        ..SampleResponse::default()
                    })
                    .collect(),
            );
        }
    }
}

fn run(
    sut: Arc<Recorder>,
    settings: &TestSettings,
    dir: &Path,
    options: RunOptions,
) -> TestOutcome {
    start_test(
        sut,
        Arc::new(MemoryQsl::new("q", 200, 50)),
        settings,
        &LogSettings {
            outdir: dir.to_path_buf(),
            ..LogSettings::default()
        },
        &options,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn no_audit(dir: &Path) -> RunOptions {
    RunOptions {
        audit_config: dir.join("no-audit.config"),
        ..RunOptions::default()
    }
}

#[test]
fn duplicate_completions_are_runtime_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = TestSettings {
        mode: TestMode::AccuracyOnly,
        ..TestSettings::default()
    };
    let sut = Arc::new(Recorder::new(2, Duration::ZERO));
    let outcome = run(sut, &settings, dir.path(), no_audit(dir.path()));
    let detail = read_detail(&outcome.paths.detail);
    let dupes = detail
        .iter()
        .filter(|e| e.is_error && e.value == "Attempted to complete a sample twice.")
        .count();
    assert_eq!(dupes, 200);
    assert_eq!(outcome.errors, 200);
    assert_eq!(outcome.accuracy_entries, 200);
}

#[test]
fn audit_config_overrides_settings() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let audit = dir.path().join("audit.config");
    std::fs::write(
        &audit,
        "*.*.mode = 2\n*.*.performance_issue_same = 1\n*.*.performance_issue_same_index = 3\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let settings = TestSettings {
        mode: TestMode::AccuracyOnly,
        min_duration_ms: 20,
        qsl_rng_seed: 7,
        ..TestSettings::default()
    };
    let sut = Arc::new(Recorder::new(1, Duration::ZERO));
    let outcome = run(
        sut.clone(),
        &settings,
        dir.path(),
        RunOptions {
            audit_config: audit,
            ..RunOptions::default()
        },
    );
    let detail = read_detail(&outcome.paths.detail);
    let warning = detail
        .iter()
        .position(|e| e.key == "warning_generic_message")
        .unwrap_or(usize::MAX);
    let requested = detail
        .iter()
        .position(|e| e.key == "requested_scenario")
        .unwrap_or(0);
    assert!(warning < requested);
    assert_eq!(first(&detail, "effective_test_mode"), "PerformanceOnly");
    assert_eq!(first(&detail, "effective_performance_issue_same"), true);
    let loaded: Vec<usize> =
        serde_json::from_value(first(&detail, "loaded_qsl_set")).unwrap_or_default();
    let calls = sut.calls();
    assert!(!calls.is_empty());
    assert!(calls.iter().flatten().all(|s| s.index == loaded[3]));
    assert!(outcome
        .summary_text
        .contains("1 warning encountered. See detailed log."));
}

#[test]
fn invalid_user_conf_is_logged_first() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let conf = dir.path().join("user.conf");
    std::fs::write(&conf, "resnet50.SingleStream.target_latency = 1 # x\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut settings = TestSettings::default();
    let mut session = ConfigSession::new();
    assert!(session
        .apply_file(
            &mut settings,
            &conf,
            "resnet50",
            "SingleStream",
            ConfType::UserConf
        )
        .is_err());
    settings.mode = TestMode::AccuracyOnly;
    let sut = Arc::new(Recorder::new(1, Duration::ZERO));
    let outcome = run(
        sut,
        &settings,
        dir.path(),
        RunOptions {
            audit_config: dir.path().join("none"),
            pre_test_diagnostics: session.diagnostics,
            ..RunOptions::default()
        },
    );
    let text = std::fs::read_to_string(&outcome.paths.detail).unwrap_or_default();
    let line1 = text.lines().next().unwrap_or_default();
    assert!(line1.starts_with(":::MLLOG {\"key\": \"error_invalid_config\", \"value\": \"value needs to be integer or double, line=1\", \"time_ms\": 184467440737"));
    assert!(outcome
        .summary_text
        .ends_with("\n1 ERROR encountered. See detailed log.\n"));
    // Nothing from the invalid file applied, the embedded mlperf.conf did.
    let detail = read_detail(&outcome.paths.detail);
    assert_eq!(
        first(&detail, "requested_single_stream_expected_latency_ns"),
        1e7
    );
}

#[test]
fn server_coalesces_late_queries() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = TestSettings {
        scenario: TestScenario::Server,
        server_target_qps: 1000.0,
        server_coalesce_queries: true,
        min_duration_ms: 200,
        ..TestSettings::default()
    };
    let sut = Arc::new(Recorder::new(1, Duration::from_millis(50)));
    let outcome = run(sut.clone(), &settings, dir.path(), no_audit(dir.path()));
    let detail = read_detail(&outcome.paths.detail);
    let generated = first(&detail, "generated_query_count")
        .as_u64()
        .unwrap_or(0);
    let calls = sut.calls();
    assert!(
        calls.iter().any(|c| c.len() > 1),
        "some queries were coalesced"
    );
    assert_eq!(calls.iter().map(Vec::len).sum::<usize>() as u64, generated);
    assert_eq!(first(&detail, "result_query_count"), generated);
    assert!(!detail.iter().any(|e| e.is_error));
}

#[test]
fn find_peak_performance_searches_server_qps() {
    use loadgen::null_sut::NullSut;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = TestSettings {
        scenario: TestScenario::Server,
        mode: TestMode::FindPeakPerformance,
        server_target_qps: 200.0,
        server_target_latency_ns: 100_000_000,
        server_find_peak_qps_decimals_of_precision: 0,
        min_duration_ms: 300,
        min_query_count: 1,
        ..TestSettings::default()
    };
    let outcome = start_test(
        Arc::new(NullSut::delayed("null", Duration::from_millis(1), 8)),
        Arc::new(MemoryQsl::new("q", 200, 50)),
        &settings,
        &LogSettings {
            outdir: dir.path().to_path_buf(),
            enable_trace: false,
            ..LogSettings::default()
        },
        &no_audit(dir.path()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let detail = read_detail(&outcome.paths.detail);
    let messages: Vec<String> = values(&detail, "generic_message")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(messages[0], "Starting FindPeakPerformance mode");
    assert_eq!(
        messages[1],
        "FindPeakPerformance: Check validity of the base settings field: 200.000000"
    );
    assert_eq!(
        messages[2],
        "FindBoundaries: Checking fields [200.000000, 400.000000)"
    );
    let last = messages.last().cloned().unwrap_or_default();
    let peak: f64 = last
        .strip_prefix("FindPeakPerformance: Found peak performance field: ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{last}"));
    assert!((400.0..3200.0).contains(&peak), "{peak}");
    let found = messages
        .iter()
        .find(|m| m.starts_with("FindPeakPerformance: Found boundaries: ["))
        .cloned()
        .unwrap_or_default();
    assert!(!found.is_empty());
    let s = outcome
        .performance
        .as_ref()
        .unwrap_or_else(|| panic!("no result"));
    assert_eq!(s.settings.target_qps, peak);
    assert!(s.perf_constraints_met);
    assert!(outcome
        .summary_text
        .contains("Mode     : FindPeakPerformance"));
}

#[test]
fn token_latency_models_are_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = TestSettings {
        use_token_latencies: true,
        ..TestSettings::default()
    };
    let err = start_test(
        Arc::new(Recorder::new(1, Duration::ZERO)),
        Arc::new(MemoryQsl::new("q", 10, 10)),
        &settings,
        &LogSettings {
            outdir: dir.path().to_path_buf(),
            ..LogSettings::default()
        },
        &no_audit(dir.path()),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("use_token_latencies is not supported"),
        "{err}"
    );
}

#[test]
fn a_stop_request_ends_the_run_early_with_complete_logs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = TestSettings {
        scenario: TestScenario::Server,
        server_target_qps: 500.0,
        min_duration_ms: 60_000,
        accuracy_log_probability: 1.0,
        ..TestSettings::default()
    };
    let options = no_audit(dir.path());
    let stop = options.stop.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let started = std::time::Instant::now();
    let sut = Arc::new(Recorder::new(1, Duration::ZERO));
    let outcome = run(sut.clone(), &settings, dir.path(), options);
    stopper.join().unwrap_or_else(|_| panic!("stopper thread"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped long before the 60 s minimum duration"
    );
    let detail = read_detail(&outcome.paths.detail);
    assert!(detail
        .iter()
        .any(|e| e.is_error && e.value.as_str().is_some_and(|v| v.contains("interrupted"))));
    let issued: usize = sut.calls().iter().map(Vec::len).sum();
    assert_eq!(first(&detail, "result_query_count"), issued as u64);
    assert_eq!(outcome.valid(), Some(false));
    let accuracy = std::fs::read_to_string(&outcome.paths.accuracy).unwrap_or_default();
    let entries: serde_json::Value =
        serde_json::from_str(&accuracy).unwrap_or_else(|e| panic!("accuracy log is JSON: {e}"));
    assert_eq!(entries.as_array().map(Vec::len), Some(issued));
}
