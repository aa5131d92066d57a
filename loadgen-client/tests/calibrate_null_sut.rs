//! Calibration through the real LoadGen against an in-process SUT with a known service time
//! (one worker, 1 ms per sample): the user.conf it writes makes a full run VALID where the
//! settings of mlperf.conf alone are INVALID.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use loadgen::config::{ConfType, ConfigSession};
use loadgen::null_sut::{MemoryQsl, NullSut};
use loadgen::runner::{start_test, LoadgenError, RunOptions};
use loadgen::settings::{LogSettings, TestScenario, TestSettings};
use loadgen::sut::{Qsl, Sut};
use loadgen_client::calibrate::{merge_user_conf, CalibrationPlan, Calibrator, LoadgenProbes};

/// Short full runs: the rules' minimum counts and durations scaled down, as a user.conf. Server's
/// is longer and its bound 100 ms, so that early stopping survives a stall of this shared machine
/// (with 15 ms, one stall of 20 ms puts enough of a short run's queries over the bound).
const SHORT_RUN: &str = "*.*.min_duration = 2000\n*.*.min_query_count = 100\n\
                         *.Server.min_duration = 4000\n*.Server.target_latency = 100\n";

fn qsl() -> Arc<dyn Qsl> {
    Arc::new(MemoryQsl::new("memory", 1024, 1024))
}

fn sut() -> Arc<dyn Sut> {
    Arc::new(NullSut::delayed(
        "1 ms per sample",
        Duration::from_millis(1),
        1,
    ))
}

/// mlperf.conf for resnet50, then `user_conf`.
fn settings(scenario: TestScenario, user_conf: &str) -> TestSettings {
    let mut settings = TestSettings {
        scenario,
        ..TestSettings::default()
    };
    ConfigSession::new()
        .apply_text(
            &mut settings,
            user_conf,
            "resnet50",
            scenario.as_str(),
            ConfType::UserConf,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    settings
}

/// A full performance run; returns whether it is VALID and its summary's first lines.
fn full_run(settings: &TestSettings, dir: &std::path::Path) -> (bool, String) {
    let log = LogSettings {
        outdir: dir.to_path_buf(),
        ..LogSettings::default()
    };
    let options = RunOptions {
        audit_config: dir.join("audit.config"),
        ..RunOptions::default()
    };
    let outcome = start_test(sut(), qsl(), settings, &log, &options).unwrap();
    let head: String = outcome
        .summary_text
        .lines()
        .take(16)
        .collect::<Vec<_>>()
        .join("\n");
    (outcome.valid() == Some(true), head)
}

#[test]
fn a_run_after_calibration_is_valid_where_the_rules_defaults_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let probes = LoadgenProbes::new(
        |_| Ok::<_, LoadgenError>(sut()),
        qsl(),
        dir.path().join("calibration"),
        "calibrate test".to_string(),
        Arc::new(AtomicBool::new(false)),
    );
    let plan = CalibrationPlan {
        probe_time: Duration::from_secs(1),
        // Wide: the other tests share the machine's two cores, and a sleep of 1 ms takes longer
        // when they are busy.
        margin: 0.3,
        tolerance: 0.05,
    };
    let mut calibrator = Calibrator::new(probes, plan);
    let scenarios = [
        TestScenario::SingleStream,
        TestScenario::Offline,
        TestScenario::Server,
    ];
    let calibrated: Vec<_> = scenarios
        .iter()
        .map(|&s| calibrator.calibrate(&settings(s, SHORT_RUN)).unwrap())
        .collect();
    let [single, offline, server] = &calibrated[..] else {
        unreachable!()
    };
    // 1 ms of sleep per sample: the latency about 1 ms, the throughput a little below 1000.
    assert!(
        (0.6..1.5).contains(&single.value),
        "SingleStream expected latency {} ms",
        single.value
    );
    assert!(
        (600.0..1400.0).contains(&offline.value),
        "Offline expected QPS {}",
        offline.value
    );
    assert!(
        (100.0..1000.0).contains(&server.value),
        "Server target QPS {}",
        server.value
    );
    let probe_logs = std::fs::read_dir(dir.path().join("calibration"))
        .unwrap()
        .count();
    assert!(probe_logs >= 5, "one log folder per probe: {probe_logs}");

    let user_conf = merge_user_conf(SHORT_RUN, "resnet50", "test", &calibrated);
    println!("{user_conf}");
    for scenario in scenarios {
        // Server at mlperf.conf's 1 QPS is valid, only far below what the system can do.
        if scenario != TestScenario::Server {
            let (valid, summary) = full_run(
                &settings(scenario, SHORT_RUN),
                &dir.path().join(format!("{}-defaults", scenario.as_str())),
            );
            assert!(!valid, "{scenario:?} with the rules' defaults:\n{summary}");
        }
        let (valid, summary) = full_run(
            &settings(scenario, &user_conf),
            &dir.path().join(scenario.as_str()),
        );
        assert!(
            valid,
            "{scenario:?} after calibration:\n{user_conf}\n{summary}"
        );
    }
}
