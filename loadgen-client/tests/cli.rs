//! The `loadgen-client` binary: exit codes and messages on bad input, and complete runs
//! against the in-process null SUT.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen-client"))
        .args(args)
        .current_dir(cwd)
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

#[test]
fn bad_input_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["--profile", "resnet51"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("efficientnet-lite0-onnxruntime"),
        "{}",
        text(&out)
    );

    let out = run(&["--dataset", "imagenet"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("--dataset-path is required"),
        "{}",
        text(&out)
    );

    let out = run(&["--dataset-path", "/nonexistent"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("/nonexistent/val_map.txt"),
        "{}",
        text(&out)
    );

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
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains(&format!("cannot connect to {endpoint}")),
        "{}",
        text(&out)
    );
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
        "mobilenet_coral",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
}

#[test]
fn accuracy_run_against_the_null_sut_writes_scored_accuracy_txt() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The null SUT answers float32(index): labels equal to the index for 3 of 5 samples.
    let labels = [0, 1, 7, 3, 9];
    let mut list = String::new();
    for (i, label) in labels.iter().enumerate() {
        let name = format!("img{i}.png");
        image::GrayImage::from_pixel(8, 8, image::Luma([i as u8]))
            .save(data.join(&name))
            .unwrap();
        list.push_str(&format!("{name} {label}\n"));
    }
    std::fs::write(data.join("val_map.txt"), list).unwrap();
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
