//! The `loadgen-client` binary: exit codes and messages on bad input, and complete runs
//! against the in-process null SUT.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::Digest;

/// Runs the client in `cwd`, recording its runs in a results store there.
fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen-client"))
        .args(args)
        .current_dir(cwd)
        .env("LOADGEN_RESULTS_DB", cwd.join("results.sqlite"))
        .output()
        .expect("the binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that the run exited with `code` and printed `needle`.
fn assert_exit(out: &Output, code: i32, needle: &str) {
    let text = text(out);
    assert_eq!(out.status.code(), Some(code), "{text}");
    assert!(text.contains(needle), "{text}");
}

/// Writes an 8×8 gray PNG per label (pixel value = index) and `val_map.txt` into `dir/data`.
fn digits_dataset(dir: &Path, labels: &[u32]) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut list = String::new();
    for (i, label) in labels.iter().enumerate() {
        let name = format!("img{i}.png");
        image::GrayImage::from_pixel(8, 8, image::Luma([i as u8]))
            .save(data.join(&name))
            .unwrap();
        list.push_str(&format!("{name} {label}\n"));
    }
    std::fs::write(data.join("val_map.txt"), list).unwrap();
    data
}

/// One detail-log line: its value and whether it is an error.
struct Entry {
    value: Value,
    is_error: bool,
}

/// The detail log as the submission checker reads it: line 1 must be a marker line, every
/// marker line must be JSON, and the first occurrence of a key wins. Also returns the keys of
/// the error lines in order.
fn read_detail(path: &Path) -> (HashMap<String, Entry>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.starts_with(":::MLLOG"), "line 1 of {}", path.display());
    let mut entries = HashMap::new();
    let mut errors = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(":::MLLOG")) {
        let json: Value =
            serde_json::from_str(&line[8..]).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let key = json["key"].as_str().expect("a key").to_string();
        let is_error = json["metadata"]["is_error"] == Value::Bool(true);
        if is_error {
            errors.push(key.clone());
        }
        entries.entry(key).or_insert(Entry {
            value: json["value"].clone(),
            is_error,
        });
    }
    (entries, errors)
}

/// Runs the null SUT on a 5-image digits data set in `dir` with `args` added, expects success
/// and returns the detail log.
fn null_run(dir: &Path, args: &[&str]) -> (HashMap<String, Entry>, Vec<String>) {
    let out_dir = null_run_into(dir, "out", args);
    read_detail(&out_dir.join("mlperf_log_detail.txt"))
}

/// As [`null_run`], into `dir/<name>`; returns that folder.
fn null_run_into(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let data = digits_dataset(dir, &[0, 1, 2, 3, 4]);
    let out_dir = dir.join(name);
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut all = vec![
        "--endpoint",
        "null",
        "--profile",
        "digits-cnn",
        "--dataset-path",
        data.to_str().unwrap(),
        "--output-dir",
        out_dir.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = run(&all, dir);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    out_dir
}

/// Asserts `key = expected` for each pair.
fn assert_keys(log: &HashMap<String, Entry>, expected: &[(&str, Value)], case: &str) {
    for (key, want) in expected {
        let got = log
            .get(*key)
            .map(|e| &e.value)
            .unwrap_or_else(|| panic!("{case}: no {key}"));
        // Doubles are logged in %g form (`1e+07`), so numbers compare by value.
        let same = match (got.as_u64(), want.as_u64()) {
            (Some(a), Some(b)) => a == b,
            _ => match (got.as_f64(), want.as_f64()) {
                (Some(a), Some(b)) => a == b,
                _ => got == want,
            },
        };
        assert!(same, "{case}: {key} is {got}, expected {want}");
    }
}

/// Writes `text` to `dir/user.conf` and returns that path.
fn write_user_conf(dir: &Path, text: &str) -> String {
    let user = dir.join("user.conf");
    std::fs::write(&user, text).unwrap();
    user.to_str().unwrap().to_string()
}

const OFFICIAL_QSL_SEED: u64 = 2_085_463_073_848_966_840;

#[test]
fn mlperf_conf_applies_without_user_conf() {
    let dir = tempfile::tempdir().unwrap();
    let (log, errors) = null_run(dir.path(), &["--accuracy"]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_keys(
        &log,
        &[
            ("requested_test_mode", "AccuracyOnly".into()),
            (
                "requested_single_stream_expected_latency_ns",
                10_000_000.into(),
            ),
            (
                "requested_single_stream_target_latency_percentile",
                0.9.into(),
            ),
            ("requested_min_duration_ms", 600_000.into()),
            ("requested_performance_sample_count_override", 1024.into()),
            ("requested_qsl_rng_seed", OFFICIAL_QSL_SEED.into()),
            ("effective_target_qps", 100.into()),
            ("effective_min_duration_ms", 600_000.into()),
            ("effective_performance_sample_count", 1024.into()),
            ("qsl_reported_performance_count", 5.into()),
        ],
        "mlperf.conf",
    );
}

/// user.conf for the Server precedence tests; its seed line must be ignored.
const SERVER_USER_CONF: &str = "*.Server.target_qps = 2000\n*.Server.target_latency = 50\n\
resnet50.*.min_duration = 1234\n*.*.performance_sample_count_override = 3\n\
*.*.qsl_rng_seed = 5\n";

#[test]
fn user_conf_overrides_mlperf_conf() {
    let dir = tempfile::tempdir().unwrap();
    let user = write_user_conf(dir.path(), SERVER_USER_CONF);
    let args = ["--scenario", "Server", "--accuracy", "--user-conf", &user];
    let (log, errors) = null_run(dir.path(), &args);
    assert!(errors.is_empty(), "{errors:?}");
    assert_keys(
        &log,
        &[
            ("requested_server_target_qps", 2000.into()),
            ("effective_target_qps", 2000.into()),
            ("requested_server_target_latency_ns", 50_000_000.into()),
            ("effective_target_latency_ns", 50_000_000.into()),
            ("requested_server_target_latency_percentile", 0.99.into()),
            ("requested_min_duration_ms", 1234.into()),
            ("effective_min_duration_ms", 1234.into()),
            ("requested_performance_sample_count_override", 3.into()),
            ("effective_performance_sample_count", 3.into()),
            ("requested_qsl_rng_seed", OFFICIAL_QSL_SEED.into()),
            ("effective_qsl_rng_seed", OFFICIAL_QSL_SEED.into()),
        ],
        "user.conf",
    );
}

#[test]
fn command_line_overrides_user_conf() {
    let dir = tempfile::tempdir().unwrap();
    let user = write_user_conf(
        dir.path(),
        &format!("{SERVER_USER_CONF}*.MultiStream.samples_per_query = 4\n"),
    );
    let user = user.as_str();
    let args = [
        "--scenario",
        "Server",
        "--accuracy",
        "--user-conf",
        user,
        "--qps",
        "3000",
        "--max-latency",
        "0.02",
        "--time",
        "2.5",
        "--performance-sample-count",
        "4",
    ];
    let (log, _) = null_run(dir.path(), &args);
    assert_keys(
        &log,
        &[
            ("requested_server_target_qps", 3000.into()),
            ("effective_target_qps", 3000.into()),
            ("requested_server_target_latency_ns", 20_000_000.into()),
            ("effective_target_latency_ns", 20_000_000.into()),
            ("requested_min_duration_ms", 2500.into()),
            ("effective_min_duration_ms", 2500.into()),
            ("requested_performance_sample_count_override", 4.into()),
            ("effective_performance_sample_count", 4.into()),
            ("qsl_reported_performance_count", 4.into()),
        ],
        "command line, Server",
    );

    let args = [
        "--scenario",
        "MultiStream",
        "--accuracy",
        "--user-conf",
        user,
        "--samples-per-query",
        "2",
        "--max-latency",
        "0.03",
    ];
    let (log, _) = null_run(dir.path(), &args);
    assert_keys(
        &log,
        &[
            ("requested_multi_stream_samples_per_query", 2.into()),
            ("effective_samples_per_query", 2.into()),
            (
                "requested_multi_stream_expected_latency_ns",
                30_000_000.into(),
            ),
        ],
        "command line, MultiStream",
    );
}

#[test]
fn mode_comes_from_user_conf_unless_given() {
    let dir = tempfile::tempdir().unwrap();
    let user = write_user_conf(dir.path(), "*.*.mode = 1\n*.*.min_query_count = 10\n");
    let user = user.as_str();
    let (log, _) = null_run(dir.path(), &["--user-conf", user]);
    assert_keys(
        &log,
        &[
            ("requested_test_mode", "AccuracyOnly".into()),
            ("effective_test_mode", "AccuracyOnly".into()),
        ],
        "user.conf mode",
    );
    let args = [
        "--user-conf",
        user,
        "--mode",
        "PerformanceOnly",
        "--time",
        "0",
    ];
    let (log, _) = null_run(dir.path(), &args);
    assert_keys(
        &log,
        &[
            ("requested_test_mode", "PerformanceOnly".into()),
            ("effective_test_mode", "PerformanceOnly".into()),
            ("effective_min_query_count", 10.into()),
            ("effective_min_duration_ms", 0.into()),
        ],
        "--mode over user.conf",
    );
}

#[test]
fn invalid_user_conf_is_logged_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let user = write_user_conf(
        dir.path(),
        "*.SingleStream.target_latency = 1\n*.*.min_duration = 321 # note\n",
    );
    let (log, errors) = null_run(dir.path(), &["--accuracy", "--user-conf", &user]);
    assert_eq!(
        errors,
        ["error_invalid_config"],
        "exactly the official error"
    );
    assert!(log["error_invalid_config"].is_error);
    assert_eq!(
        log["error_invalid_config"].value,
        "value needs to be integer or double, line=2"
    );
    assert_keys(
        &log,
        &[
            (
                "requested_single_stream_expected_latency_ns",
                10_000_000.into(),
            ),
            ("requested_min_duration_ms", 600_000.into()),
            ("requested_qsl_rng_seed", OFFICIAL_QSL_SEED.into()),
        ],
        "nothing applied from the invalid file",
    );
    let summary = std::fs::read_to_string(dir.path().join("out/mlperf_log_summary.txt")).unwrap();
    assert!(
        summary.contains("1 ERROR encountered. See detailed log."),
        "{summary}"
    );
}

#[test]
fn replaced_mlperf_conf_is_the_base_and_user_conf_cannot_set_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.conf");
    std::fs::write(
        &rules,
        "*.*.qsl_rng_seed = 7\n*.SingleStream.target_latency = 4\n*.*.min_duration = 100\n",
    )
    .unwrap();
    let user = write_user_conf(dir.path(), "*.*.qsl_rng_seed = 5\n*.*.min_duration = 200\n");
    let args = [
        "--accuracy",
        "--mlperf-conf",
        rules.to_str().unwrap(),
        "--user-conf",
        &user,
    ];
    let (log, errors) = null_run(dir.path(), &args);
    assert!(errors.is_empty(), "{errors:?}");
    assert_keys(
        &log,
        &[
            ("requested_qsl_rng_seed", 7.into()),
            ("requested_sample_index_rng_seed", 0.into()),
            (
                "requested_single_stream_expected_latency_ns",
                4_000_000.into(),
            ),
            ("requested_min_duration_ms", 200.into()),
            // The embedded mlperf.conf's 1024 for resnet50 is not applied.
            ("requested_performance_sample_count_override", 0.into()),
            ("effective_performance_sample_count", 5.into()),
        ],
        "--mlperf-conf",
    );
}

#[test]
fn unreadable_config_files_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for option in ["--user-conf", "--mlperf-conf"] {
        let out = run(
            &[
                "--endpoint",
                "null",
                "--profile",
                "digits-cnn",
                "--dataset",
                "synthetic",
                option,
                "missing.conf",
            ],
            dir.path(),
        );
        assert_exit(&out, 2, &format!("{option}: can't open file missing.conf"));
        assert!(!dir.path().join("output").exists(), "nothing ran");
    }
}

#[test]
fn bad_input_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["--profile", "resnet51"], dir.path());
    assert_exit(&out, 2, "efficientnet-lite0-onnxruntime");

    let out = run(&["--dataset", "imagenet"], dir.path());
    assert_exit(&out, 2, "--dataset-path is required");

    let out = run(&["--dataset-path", "/nonexistent"], dir.path());
    assert_exit(&out, 1, "/nonexistent/val_map.txt");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let args = [
        "--profile",
        "digits-cnn",
        "--dataset",
        "synthetic",
        "--count",
        "8",
        "--endpoint",
        &endpoint,
    ];
    let out = run(&args, dir.path());
    assert_exit(&out, 1, &format!("cannot connect to {endpoint}"));
    assert!(
        !dir.path().join("output/mlperf_log_summary.txt").exists(),
        "fails before the test starts"
    );
}

#[test]
fn help_lists_the_options_users_know() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["--help"], dir.path());
    assert!(out.status.success());
    let help = text(&out);
    for option in [
        "--scenario",
        "--mode",
        "--accuracy",
        "--endpoint",
        "--model",
        "--dataset-path",
        "--dataset-list",
        "--count",
        "--profile",
        "--mlperf-model",
        "--mlperf-conf",
        "--user-conf",
        "--qps",
        "--max-latency",
        "--time",
        "--samples-per-query",
        "--max-batchsize",
        "--threads",
        "--performance-sample-count",
        "--cache",
        "--output-dir",
        "--trace",
        "--retries",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
        "--tls-server-name",
        "--token",
        "LOADGEN_TOKEN",
        "mobilenet_coral",
        "--results-db",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
    // The subcommands, as lines of the Commands list ("runs" alone is in other sentences).
    for command in ["calibrate", "report", "runs"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help lists no {command} command"
        );
    }
    let help = text(&run(&["calibrate", "--help"], dir.path()));
    for option in [
        "--all-scenarios",
        "--write",
        "--probe-time",
        "--margin",
        "--scenario",
    ] {
        assert!(help.contains(option), "calibrate --help lacks {option}");
    }
}

#[test]
fn every_run_is_recorded_and_runs_lists_filters_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    null_run(dir.path(), &["--scenario", "Offline"]);
    null_run(dir.path(), &["--time", "0.2"]);
    let out = run(&["runs"], dir.path());
    assert_exit(&out, 0, "2 run(s) in ");
    let listing = text(&out);
    let out_dir = dir.path().join("out");
    for needle in [
        "Offline",
        "SingleStream",
        "PerformanceOnly",
        "digits-cnn",
        out_dir.to_str().unwrap(),
    ] {
        assert!(listing.contains(needle), "{needle} in\n{listing}");
    }
    assert_exit(
        &run(&["runs", "--scenario", "Offline"], dir.path()),
        0,
        "1 run(s) in ",
    );
    let page = dir.path().join("report.html");
    let out = run(
        &["runs", "--last", "1", "--report", page.to_str().unwrap()],
        dir.path(),
    );
    assert_exit(&out, 0, "(1 run)");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("<svg") && html.contains("SingleStream"),
        "{html}"
    );
    let off = Command::new(env!("CARGO_BIN_EXE_loadgen-client"))
        .args(["runs", "--results-db", "off"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_exit(&off, 2, "the results store is off");
}

#[test]
fn calibrate_and_report_refuse_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["calibrate", "--margin", "1.5"],
            "--margin must be a fraction",
        ),
        (
            &["calibrate", "--probe-time", "0"],
            "--probe-time must be a positive",
        ),
        (&["calibrate", "--accuracy"], "drop --mode and --accuracy"),
        (&["report"], "RUN_DIR"),
        (
            &["--scenario", "Server", "calibrate"],
            "cannot be used with",
        ),
    ];
    for (args, needle) in cases {
        assert_exit(&run(args, dir.path()), 2, needle);
    }
}

#[test]
fn a_schedule_larger_than_the_memory_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "--endpoint",
        "null",
        "--profile",
        "digits-cnn",
        "--dataset",
        "synthetic",
        "--count",
        "8",
        "--scenario",
        "Server",
    ];
    // 1e12 QPS: intervals of 1 ps truncate to 0 ns, so the generator would never end.
    let out = run(
        &[&base[..], &["--qps", "1e12", "--time", "600"]].concat(),
        dir.path(),
    );
    assert_exit(
        &out,
        2,
        "the Server schedule of these settings would need an unbounded amount of memory",
    );
    let all = text(&out);
    assert!(
        all.contains("lower target_qps, min_duration or min_query_count"),
        "{all}"
    );
    assert!(all.contains("--qps, --time"), "{all}");
    // 1e8 QPS over 600 s: 6.3e10 queries, terabytes.
    let out = run(
        &[&base[..], &["--qps", "1e8", "--time", "600"]].concat(),
        dir.path(),
    );
    assert_exit(&out, 2, "(6.31e10 queries, 6.31e10 samples)");
    // Offline: one query of 1.1 × 600 s × 1e12 samples.
    let offline = [
        "--endpoint",
        "null",
        "--profile",
        "digits-cnn",
        "--dataset",
        "synthetic",
        "--count",
        "8",
        "--scenario",
        "Offline",
        "--qps",
        "1e12",
        "--time",
        "600",
    ];
    let out = run(&offline, dir.path());
    assert_exit(
        &out,
        2,
        "the Offline schedule of these settings would need about",
    );
    assert!(!dir.path().join("output").exists(), "nothing ran");
}

#[test]
fn accuracy_run_against_the_null_sut_writes_scored_accuracy_txt() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    // The null SUT answers float32(index): labels equal to the index for 3 of 5 samples.
    let data = digits_dataset(dir.path(), &[0, 1, 7, 3, 9]);
    let args = [
        "--endpoint",
        "null",
        "--profile",
        "digits-cnn",
        "--dataset-path",
        data.to_str().unwrap(),
        "--accuracy",
        "--scenario",
        "Offline",
        "--output-dir",
        "out",
    ];
    let out = run(&args, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("accuracy=60.000%, good=3, total=5"),
        "{}",
        text(&out)
    );
    let log = std::fs::read(dir.path().join("out/mlperf_log_accuracy.json")).unwrap();
    let accuracy = std::fs::read_to_string(dir.path().join("out/accuracy.txt")).unwrap();
    assert_eq!(
        accuracy,
        format!(
            "accuracy=60.000%, good=3, total=5\nhash={:x}\n",
            Sha256::digest(&log)
        )
    );
}

#[test]
fn accuracy_runs_on_unlabelled_data_write_the_log_and_say_how_to_score_it() {
    let dir = tempfile::tempdir().unwrap();
    let images = digits_dataset(dir.path(), &[0, 1, 2]);
    std::fs::remove_file(images.join("val_map.txt")).unwrap();
    let images = images.to_str().unwrap().to_string();
    let synthetic = ["--dataset", "synthetic", "--count", "6"];
    let folder = ["--dataset-path", images.as_str()];
    for (data, entries) in [(&synthetic[..], 6), (&folder[..], 3)] {
        let out_dir = dir.path().join("out");
        let _ = std::fs::remove_dir_all(&out_dir);
        let mut args = vec![
            "--endpoint",
            "null",
            "--profile",
            "digits-cnn",
            "--accuracy",
        ];
        args.extend_from_slice(data);
        args.extend_from_slice(&["--output-dir", "out"]);
        let out = run(&args, dir.path());
        assert_exit(
            &out,
            0,
            "accuracy.txt not written: the dataset has no labels",
        );
        let log: Value = serde_json::from_slice(
            &std::fs::read(out_dir.join("mlperf_log_accuracy.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(log.as_array().map(Vec::len), Some(entries), "{args:?}");
        assert!(!out_dir.join("accuracy.txt").exists());
        let (detail, _) = read_detail(&out_dir.join("mlperf_log_detail.txt"));
        let version = detail["loadgen_version"]
            .value
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            version.starts_with(&format!(
                "6.0.17 (reproduced by loadgen-client {}",
                env!("CARGO_PKG_VERSION")
            )),
            "{version}"
        );
    }
}

#[test]
fn coco_accuracy_run_reports_map() {
    let dir = tempfile::tempdir().unwrap();
    let coco = dir.path().join("coco");
    std::fs::create_dir_all(coco.join("val2017")).unwrap();
    std::fs::create_dir_all(coco.join("annotations")).unwrap();
    for name in ["a.jpg", "b.jpg"] {
        image::RgbImage::new(40, 30)
            .save(coco.join("val2017").join(name))
            .unwrap();
    }
    std::fs::write(
        coco.join("annotations/instances_val2017.json"),
        r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
                       {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                             "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0}],
            "categories": [{"id": 1}]}"#,
    )
    .unwrap();
    let args = [
        "--endpoint",
        "null",
        "--profile",
        "ssd-mobilenet-onnxruntime",
        "--dataset-path",
        coco.to_str().unwrap(),
        "--accuracy",
        "--output-dir",
        "out",
    ];
    let out = run(&args, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    // The null SUT answers 4 bytes per image: no detections, so nothing is found.
    let accuracy = std::fs::read_to_string(dir.path().join("out/accuracy.txt")).unwrap();
    assert!(accuracy.starts_with("mAP=0.000%\nhash="), "{accuracy}");
}

/// The system description fields the v6.1 submission checker requires to be non-empty.
const NON_EMPTY_SYSTEM_FIELDS: [&str; 26] = [
    "division",
    "submitter",
    "system_type",
    "status",
    "system_name",
    "number_of_nodes",
    "host_processor_model_name",
    "host_processors_per_node",
    "host_processor_core_count",
    "host_memory_capacity",
    "host_memory_configuration",
    "host_storage_capacity",
    "host_storage_type",
    "host_networking",
    "host_network_card_count",
    "host_networking_topology",
    "accelerators_per_node",
    "accelerator_model_name",
    "accelerator_memory_capacity",
    "accelerator_host_interconnect",
    "accelerator_memory_configuration",
    "accelerator_interconnect",
    "cooling",
    "framework",
    "operating_system",
    "other_software_stack",
];

#[test]
fn package_lays_out_a_submission_and_refuses_what_would_not_pass() {
    let dir = tempfile::tempdir().unwrap();
    let conf_text = "*.SingleStream.target_latency = 0.002\n*.*.min_duration = 300\n\
                     *.*.min_query_count = 100\n";
    let conf = write_user_conf(dir.path(), conf_text);
    let client = |name: &str, extra: &[&str]| null_run_into(dir.path(), name, extra);
    let perf = client("perf", &["--user-conf", &conf]);
    let acc = client("acc", &["--user-conf", &conf, "--accuracy"]);
    // mlperf.conf's 10 ms expected latency: the schedule runs out, INVALID.
    let invalid = client("invalid", &["--time", "0.5"]);
    let package = |runs: &[&Path], out: &str| {
        let out = dir.path().join(out);
        let mut args = vec!["package", "--submitter", "Org", "--system", "box"];
        args.extend(runs.iter().map(|p| p.to_str().unwrap()));
        args.extend(["--out", out.to_str().unwrap()]);
        (run(&args, dir.path()), out)
    };

    let (done, out) = package(&[&perf, &acc], "sub");
    assert_exit(&done, 0, "open division");
    let org = out.join("open/Org");
    let system: Value =
        serde_json::from_str(&std::fs::read_to_string(org.join("systems/box.json")).unwrap())
            .unwrap();
    for field in NON_EMPTY_SYSTEM_FIELDS {
        let value = &system[field];
        assert!(
            !value.is_null() && value.as_str() != Some(""),
            "{field}: {value}"
        );
    }
    assert_eq!(system["system_type"], "edge");
    assert_eq!(system["division"], "open");
    assert!(org.join("src/README.md").is_file());
    let scenario = org.join("results/box/resnet50/SingleStream");
    for file in [
        "performance/run_1/mlperf_log_detail.txt",
        "performance/run_1/mlperf_log_summary.txt",
        "accuracy/mlperf_log_detail.txt",
        "accuracy/mlperf_log_summary.txt",
        "accuracy/mlperf_log_accuracy.json",
    ] {
        assert!(scenario.join(file).is_file(), "{file}");
    }
    let original = std::fs::read(acc.join("mlperf_log_accuracy.json")).unwrap();
    let hash = format!("{:x}", sha2::Sha256::digest(&original));
    let accuracy = std::fs::read_to_string(scenario.join("accuracy/accuracy.txt")).unwrap();
    assert!(accuracy.starts_with("accuracy="), "{accuracy}");
    assert!(
        accuracy.lines().any(|l| l == format!("hash={hash}")),
        "{accuracy}"
    );
    assert_eq!(
        std::fs::read_to_string(scenario.join("user.conf")).unwrap(),
        conf_text
    );
    let measurements: Value =
        serde_json::from_str(&std::fs::read_to_string(scenario.join("measurements.json")).unwrap())
            .unwrap();
    for field in [
        "input_data_types",
        "retraining",
        "starting_weights_filename",
        "weight_data_types",
        "weight_transformations",
    ] {
        assert!(
            measurements[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}"
        );
    }
    let readme = std::fs::read_to_string(scenario.join("README.md")).unwrap();
    assert!(
        readme.contains("--endpoint null") && readme.contains("--accuracy"),
        "{readme}"
    );

    // The submitter's fields replace the captured ones.
    let system_json = dir.path().join("box.json");
    std::fs::write(&system_json, r#"{"cooling": "passive heat sink"}"#).unwrap();
    let measurements_json = dir.path().join("m.json");
    std::fs::write(&measurements_json, r#"{"weight_data_types": "fp32"}"#).unwrap();
    let given = dir.path().join("given");
    let done = run(
        &[
            "package",
            "--submitter",
            "Org",
            "--system",
            "box",
            perf.to_str().unwrap(),
            acc.to_str().unwrap(),
            "--system-json",
            system_json.to_str().unwrap(),
            "--measurements-json",
            measurements_json.to_str().unwrap(),
            "--out",
            given.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_exit(&done, 0, "open division");
    let read = |path: PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let given_org = given.join("open/Org");
    assert_eq!(
        read(given_org.join("systems/box.json"))["cooling"],
        "passive heat sink"
    );
    assert_eq!(
        read(given_org.join("results/box/resnet50/SingleStream/measurements.json"))
            ["weight_data_types"],
        "fp32"
    );

    let (done, _) = package(&[&perf, &acc], "sub");
    assert_exit(&done, 1, "exists");
    let (done, _) = package(&[&perf], "no-accuracy");
    assert_exit(&done, 1, "a performance run but no accuracy run");
    let (done, _) = package(&[&invalid, &acc], "invalid");
    assert_exit(&done, 1, "is not VALID");
    let (done, _) = package(&[&perf, &perf, &acc], "twice");
    assert_exit(&done, 1, "two performance runs");
}

#[test]
fn official_loadgen_errors_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let null = [
        "--loadgen",
        "official",
        "--endpoint",
        "null",
        "--dataset",
        "synthetic",
        "--profile",
        "digits-cnn",
    ];
    let missing = dir.path().join("missing.so");
    let missing = missing.to_str().unwrap();
    let out = run(
        &[&null[..], &["--official-library", missing]].concat(),
        dir.path(),
    );
    assert_exit(&out, 1, "scripts/build_official_loadgen.sh");
    assert!(text(&out).contains(missing), "{}", text(&out));

    let not_a_library = dir.path().join("libmlperf_loadgen_official.so");
    std::fs::write(&not_a_library, "not an ELF file").unwrap();
    let out = run(
        &[
            &null[..],
            &["--official-library", not_a_library.to_str().unwrap()],
        ]
        .concat(),
        dir.path(),
    );
    assert_exit(&out, 1, "cannot load the official LoadGen library");

    let rules = write_user_conf(dir.path(), "*.*.min_duration = 100\n");
    let out = run(
        &[&null[..], &["--mlperf-conf", &rules]].concat(),
        dir.path(),
    );
    assert_exit(
        &out,
        2,
        "--mlperf-conf cannot be used with --loadgen official",
    );

    let out = run(&[&["calibrate"], &null[..]].concat(), dir.path());
    assert_exit(&out, 2, "calibrate probes with the built-in LoadGen");
    assert!(!dir.path().join("output").exists(), "nothing ran");
}
