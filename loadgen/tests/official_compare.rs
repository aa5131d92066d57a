//! Runs the real official LoadGen 6.0.17 (through `tests/tools/official-loadgen-probe.py`) with
//! settings that are not in the stored references and checks that every seed-derived value this
//! crate computes is the same: loaded sets, generated query counts and durations, the sample index
//! of every issued sample, and which samples reach the accuracy log.
//!
//! The Python interpreter is `$LOADGEN_PYTHON`, else `<repo>/.venv/bin/python`; when neither
//! exists the tests print why and pass without comparing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use loadgen::schedule::{
    accuracy_log_offset, accuracy_log_probability, generate_loadable_sets, generate_queries,
    should_log_accuracy, PassKind, QueryPlan, SequenceGen,
};
use loadgen::settings::{EffectiveSettings, TestMode, TestScenario};

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LOADGEN_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    venv.exists().then_some(venv)
}

/// Runs the probe; `None` (after printing the reason) when no interpreter is available.
fn probe(
    scenario: TestScenario,
    mode: TestMode,
    conf: &[&str],
    env: &[(&str, &str)],
) -> Option<tempfile::TempDir> {
    let Some(python) = python() else {
        python_unavailable(
            "no Python venv with mlcommons-loadgen (set LOADGEN_PYTHON or create .venv)",
        );
        return None;
    };
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let script = probe_script();
    let status = Command::new(python)
        .arg(&script)
        .arg(out.path())
        .arg(scenario.as_str())
        .arg(mode.as_str())
        .args(conf)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the probe: {e}"));
    assert!(
        status.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    Some(out)
}

struct Ours {
    settings: EffectiveSettings,
    sets: Vec<Vec<usize>>,
    plans: Vec<QueryPlan>,
}

/// Computes what this crate plans for the probe's user.conf and QSL (accuracy sets first, then
/// the performance set, with one sequence generator, like `StartTest`).
fn ours(
    out: &Path,
    model: &str,
    scenario: TestScenario,
    mode: TestMode,
    total: u64,
    perf: u64,
) -> Ours {
    let requested = probe_settings(&out.join("user.conf"), model, scenario, mode);
    let (settings, _) = EffectiveSettings::new(&requested, perf, total);
    let mut seq = SequenceGen::new();
    let mut sets = Vec::new();
    let mut plans = Vec::new();
    if matches!(mode, TestMode::AccuracyOnly | TestMode::SubmissionRun) {
        for set in generate_loadable_sets(&settings, total, settings.accuracy_sample_count) {
            plans.push(
                generate_queries(&settings, PassKind::Accuracy, &set, &mut seq)
                    .unwrap_or_else(|e| panic!("{e}")),
            );
            sets.push(set.samples);
        }
    }
    if matches!(mode, TestMode::PerformanceOnly | TestMode::SubmissionRun) {
        let set = generate_loadable_sets(&settings, total, settings.performance_sample_count)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no performance set"));
        plans.push(
            generate_queries(&settings, PassKind::Performance, &set, &mut seq)
                .unwrap_or_else(|e| panic!("{e}")),
        );
        sets.push(set.samples);
    }
    Ours {
        settings,
        sets,
        plans,
    }
}

/// Runs the probe, then plans the same test with this crate for the probe's model and QSL, read
/// from `env` like the probe does (`PROBE_MODEL` resnet50, `PROBE_TOTAL` 5000, `PROBE_PERF` 1024
/// unless set); `None` when the probe is skipped.
fn probe_and_plan(
    scenario: TestScenario,
    mode: TestMode,
    conf: &[&str],
    env: &[(&str, &str)],
) -> Option<(tempfile::TempDir, Ours)> {
    let out = probe(scenario, mode, conf, env)?;
    let var = |key: &str, default: &'static str| {
        env.iter()
            .find(|(k, _)| *k == key)
            .map_or(default, |(_, v)| *v)
            .to_string()
    };
    let count = |key: &str, default| {
        var(key, default)
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    let o = ours(
        out.path(),
        &var("PROBE_MODEL", "resnet50"),
        scenario,
        mode,
        count("PROBE_TOTAL", "5000"),
        count("PROBE_PERF", "1024"),
    );
    Some((out, o))
}

/// `sample_seq -> sample_idx` of every traced sample.
fn traced_samples(out: &Path) -> BTreeMap<u64, u64> {
    let text = std::fs::read_to_string(out.join("mlperf_log_trace.json")).unwrap_or_default();
    let number_after = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    text.lines()
        .filter(|l| l.contains("\"name\":\"Sample\"") && l.contains("\"ph\":\"b\""))
        .filter_map(|l| {
            Some((
                number_after(l, "\"sample_seq\":")?,
                number_after(l, "\"sample_idx\":")?,
            ))
        })
        .collect()
}

fn planned_samples(o: &Ours) -> BTreeMap<u64, u64> {
    o.plans
        .iter()
        .flat_map(|p| p.queries.iter())
        .flat_map(|q| q.samples.iter())
        .map(|s| (s.seq_id, s.index as u64))
        .collect()
}

fn compare_generation(out: &Path, o: &Ours) {
    let detail = read_detail(&out.join("mlperf_log_detail.txt"));
    let sets: Vec<Vec<usize>> = values(&detail, "loaded_qsl_set")
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap_or_default())
        .collect();
    assert_eq!(sets, o.sets, "loaded_qsl_set");
    let generated: [(&str, Vec<serde_json::Value>); 3] = [
        (
            "generated_query_count",
            o.plans.iter().map(|p| p.queries.len().into()).collect(),
        ),
        (
            "generated_query_duration",
            o.plans.iter().map(|p| p.duration_ns.into()).collect(),
        ),
        (
            "generated_samples_per_query",
            o.plans.iter().map(|p| p.samples_per_query.into()).collect(),
        ),
    ];
    for (key, ours) in generated {
        assert_eq!(values(&detail, key), ours, "{key}");
    }
    for e in detail.iter().filter(|e| e.key.starts_with("effective_")) {
        let ours = match e.key.as_str() {
            "effective_samples_per_query" => serde_json::json!(o.settings.samples_per_query),
            "effective_min_query_count" => serde_json::json!(o.settings.min_query_count),
            "effective_min_sample_count" => serde_json::json!(o.settings.min_sample_count),
            "effective_performance_sample_count" => {
                serde_json::json!(o.settings.performance_sample_count)
            }
            "effective_accuracy_sample_count" => {
                serde_json::json!(o.settings.accuracy_sample_count)
            }
            "effective_target_duration_ms" => serde_json::json!(o.settings.target_duration_ms),
            _ => continue,
        };
        assert_eq!(ours, e.value, "{}", e.key);
    }
    let traced = traced_samples(out);
    let planned = planned_samples(o);
    assert!(!traced.is_empty(), "the official trace has samples");
    for (seq, idx) in &traced {
        assert_eq!(planned.get(seq), Some(idx), "sample {seq}");
    }
}

#[test]
fn server_300_qps_with_accuracy_log_sampling() {
    let conf = [
        "resnet50.Server.target_qps = 300",
        "resnet50.Server.min_duration = 2000",
        "*.*.accuracy_log_rng_seed = 720381539243781796",
        "*.*.accuracy_log_sampling_target = 64",
    ];
    let Some((out, o)) =
        probe_and_plan(TestScenario::Server, TestMode::PerformanceOnly, &conf, &[])
    else {
        return;
    };
    compare_generation(out.path(), &o);
    let offset = accuracy_log_offset(o.settings.accuracy_log_rng_seed);
    let probability = accuracy_log_probability(&o.settings);
    let expected: BTreeSet<(u64, u64)> = o.plans[0]
        .queries
        .iter()
        .flat_map(|q| q.samples.iter())
        .filter(|s| {
            should_log_accuracy(
                PassKind::Performance,
                s.accuracy_log_val,
                offset,
                probability,
            )
        })
        .map(|s| (s.seq_id, s.index as u64))
        .collect();
    let logged: BTreeSet<(u64, u64)> =
        accuracy_entries(&out.path().join("mlperf_log_accuracy.json"))
            .into_iter()
            .collect();
    assert!(!expected.is_empty());
    assert_eq!(logged, expected, "accuracy-log sampling");
}

#[test]
fn multistream_short_run() {
    let conf = [
        "resnet50.MultiStream.target_latency = 1",
        "resnet50.MultiStream.min_duration = 500",
        "resnet50.MultiStream.min_query_count = 100",
    ];
    let Some((out, o)) = probe_and_plan(
        TestScenario::MultiStream,
        TestMode::PerformanceOnly,
        &conf,
        &[],
    ) else {
        return;
    };
    compare_generation(out.path(), &o);
}

#[test]
fn offline_accuracy_small_qsl() {
    let env = [("PROBE_TOTAL", "100"), ("PROBE_PERF", "30")];
    let conf = ["*.*.performance_sample_count_override = 30"];
    let Some((out, o)) = probe_and_plan(TestScenario::Offline, TestMode::AccuracyOnly, &conf, &env)
    else {
        return;
    };
    assert_eq!(o.sets.len(), 4);
    compare_generation(out.path(), &o);
    let logged: BTreeMap<u64, u64> = accuracy_entries(&out.path().join("mlperf_log_accuracy.json"))
        .into_iter()
        .collect();
    assert_eq!(
        logged,
        planned_samples(&o),
        "accuracy log covers every planned sample"
    );
}

#[test]
fn single_stream_issue_unique_small_qsl() {
    let env = [("PROBE_TOTAL", "200"), ("PROBE_PERF", "50")];
    let conf = [
        "*.*.performance_sample_count_override = 50",
        "*.*.performance_issue_unique = 1",
        "resnet50.SingleStream.target_latency = 1",
        "resnet50.SingleStream.min_duration = 100",
        "resnet50.SingleStream.min_query_count = 10",
    ];
    let Some((out, o)) = probe_and_plan(
        TestScenario::SingleStream,
        TestMode::PerformanceOnly,
        &conf,
        &env,
    ) else {
        return;
    };
    assert_eq!(o.plans[0].queries.len(), 50);
    compare_generation(out.path(), &o);
}

/// An INVALID run (SingleStream runs out of generated queries): the summary layout, the detail
/// key sequence and the validity keys must match the official LoadGen's.
#[test]
fn ran_out_of_queries_invalid_layout() {
    let conf = ["resnet50.SingleStream.min_duration = 3000"];
    let Some(out) = probe(
        TestScenario::SingleStream,
        TestMode::PerformanceOnly,
        &conf,
        &[],
    ) else {
        return;
    };
    let settings = probe_settings(
        &out.path().join("user.conf"),
        "resnet50",
        TestScenario::SingleStream,
        TestMode::PerformanceOnly,
    );
    let ours_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let outcome = run_ours(&settings, ours_dir.path(), 5000, 1024);
    assert_eq!(outcome.valid(), Some(false));
    let theirs_summary =
        std::fs::read_to_string(out.path().join("mlperf_log_summary.txt")).unwrap_or_default();
    let mask = |s: &str| s.lines().map(mask_digits).collect::<Vec<_>>();
    assert_eq!(mask(&outcome.summary_text), mask(&theirs_summary));
    let ours = read_detail(&outcome.paths.detail);
    let theirs = read_detail(&out.path().join("mlperf_log_detail.txt"));
    let keys = |v: &[Entry]| v.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(&theirs));
    assert_same_line_layout(
        &outcome.paths.detail,
        &out.path().join("mlperf_log_detail.txt"),
    );
    for key in [
        "error_runtime",
        "result_validity",
        "result_min_duration_met",
        "result_min_queries_met",
        "early_stopping_met",
        "result_invalid_reason",
        "result_query_count",
        "early_stopping_latency_ms",
        "num_errors",
    ] {
        assert_eq!(values(&ours, key), values(&theirs, key), "{key}");
    }
}

#[test]
fn submission_run_continues_sequence_ids() {
    let env = [("PROBE_TOTAL", "100"), ("PROBE_PERF", "30")];
    let conf = [
        "*.*.performance_sample_count_override = 30",
        "resnet50.SingleStream.target_latency = 1",
        "resnet50.SingleStream.min_duration = 200",
        "resnet50.SingleStream.min_query_count = 10",
    ];
    let Some((out, o)) = probe_and_plan(
        TestScenario::SingleStream,
        TestMode::SubmissionRun,
        &conf,
        &env,
    ) else {
        return;
    };
    assert_eq!(o.sets.len(), 5);
    compare_generation(out.path(), &o);
    let traced = traced_samples(out.path());
    assert!(
        traced.keys().any(|&seq| seq >= 100),
        "performance samples follow the accuracy ones"
    );

    // The whole test through this crate's runner: same key sequence, same accuracy log bytes.
    let settings = probe_settings(
        &out.path().join("user.conf"),
        "resnet50",
        TestScenario::SingleStream,
        TestMode::SubmissionRun,
    );
    let ours_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let outcome = run_ours(&settings, ours_dir.path(), 100, 30);
    assert_eq!(outcome.valid(), Some(true), "{}", outcome.summary_text);
    let keys = |p: &Path| {
        read_detail(p)
            .into_iter()
            .map(|e| e.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&outcome.paths.detail),
        keys(&out.path().join("mlperf_log_detail.txt"))
    );
    assert_same_line_layout(
        &outcome.paths.detail,
        &out.path().join("mlperf_log_detail.txt"),
    );
    assert_eq!(
        std::fs::read(&outcome.paths.accuracy).unwrap_or_default(),
        std::fs::read(out.path().join("mlperf_log_accuracy.json")).unwrap_or_default()
    );
}

/// Runs this crate's LoadGen with the probe's SUT model (1 ms per 8 samples).
fn run_ours(
    settings: &loadgen::settings::TestSettings,
    dir: &Path,
    total: usize,
    perf: usize,
) -> loadgen::runner::TestOutcome {
    use loadgen::null_sut::{MemoryQsl, NullSut};
    use loadgen::runner::{start_test, RunOptions};
    use loadgen::settings::LogSettings;
    use std::sync::Arc;
    use std::time::Duration;
    start_test(
        Arc::new(NullSut::delayed("PySUT", Duration::from_millis(1), 8)),
        Arc::new(MemoryQsl::new("PyQSL", total, perf)),
        settings,
        &LogSettings {
            outdir: dir.to_path_buf(),
            ..LogSettings::default()
        },
        &RunOptions {
            audit_config: dir.join("audit.config"),
            ..RunOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn equal_issue_server_and_offline() {
    let env = [
        ("PROBE_TOTAL", "50"),
        ("PROBE_PERF", "20"),
        ("PROBE_MODEL", "3d-unet"),
    ];
    let conf = [
        "3d-unet.Server.target_qps = 200",
        "3d-unet.Server.min_duration = 300",
    ];
    let Some((out, o)) =
        probe_and_plan(TestScenario::Server, TestMode::PerformanceOnly, &conf, &env)
    else {
        return;
    };
    assert!(o.settings.sample_concatenate_permutation);
    compare_generation(out.path(), &o);

    let conf = [
        "3d-unet.Offline.target_qps = 100",
        "3d-unet.Offline.min_duration = 300",
    ];
    let Some((out, o)) = probe_and_plan(
        TestScenario::Offline,
        TestMode::PerformanceOnly,
        &conf,
        &env,
    ) else {
        return;
    };
    assert_eq!(o.plans[0].samples_per_query % 20, 0);
    compare_generation(out.path(), &o);
}
