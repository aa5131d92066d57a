//! The DNA backend beyond the conformance cases: the quantized digits-cnn deployments that run
//! on the DNA IP's software models (InterpreterHw, Simulator) against the original ONNX model in
//! ONNX Runtime, the Simulator's own metrics, and the clear errors at the hardware boundary
//! (no board, a board library the vendor runtime aborts without, a missing runtime library).
//! The deployments are compiled by scripts/setup_dna.sh.

mod common;

use std::path::Path;

use common::{dna_environment, f32_tensor, f32_values, load_backend, load_backend_with, repo_root};
use inference_server::backend::library::LibraryPaths;
use inference_server::backend::{BackendError, BatchSupport};
use inference_server::model_config::ModelConfig;

/// The quantized deployments' config: what digits-cnn's ONNX model calls its output.
fn config(target: &str, device: &str, board: &str) -> String {
    format!(
        "backend = \"dna\"\ndevice = \"{device}\"\n[dna]\ntarget = \"{target}\"\nboard = \"{board}\"\n\
         outputs = [\"logits\"]\n"
    )
}

/// 32 digit-like inputs in [0, 1]: strokes of varying brightness on an 8×8 grid.
fn inputs() -> Vec<Vec<f32>> {
    (0..32)
        .map(|n| {
            (0..64)
                .map(|i| {
                    let (row, col) = (i / 8, i % 8);
                    let stroke = (row + n) % 4 == 0 || (col * (n + 1)) % 5 == 0;
                    if stroke {
                        0.25 + 0.75 * ((n + i) % 4) as f32 / 3.0
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

#[test]
fn quantized_software_targets_match_the_onnx_model_within_the_quantization_tolerance() {
    let (deployments, libraries) = dna_environment();
    let onnx = repo_root().join("models/repository/digits-cnn/1/model.onnx");
    let mut reference = load_backend("backend = \"onnxruntime\"\ndevice = \"cpu\"\n", &onnx, 8)
        .expect("ONNX Runtime loads digits-cnn");
    for (name, target) in [
        ("digits-interpreterhw", "InterpreterHw"),
        ("digits-simulator", "Simulator"),
    ] {
        let mut dna = load_backend_with(
            &config(target, "cpu", "sakura1"),
            &deployments.join(name).join("deploy.so"),
            8,
            &libraries,
        )
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
        assert_eq!(dna.signature().batch, BatchSupport::Fixed(1), "{name}");
        assert_eq!(dna.signature().inputs[0].dims, [1, 8, 8]);
        let (mut agree, mut worst) = (0, 0.0f32);
        for x in inputs() {
            let run = |backend: &mut Box<dyn inference_server::backend::Backend>| {
                let out = backend
                    .infer(vec![f32_tensor("input", &[1, 1, 8, 8], &x)])
                    .expect("runs");
                assert_eq!(out[0].name, "logits");
                f32_values(&out[0])
            };
            let (expected, actual) = (run(&mut reference), run(&mut dna));
            let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
            let error = expected
                .iter()
                .zip(&actual)
                .fold(0.0f32, |m, (e, a)| m.max((e - a).abs()));
            worst = worst.max(error / scale);
            agree += usize::from(argmax(&expected) == argmax(&actual));
        }
        // int8 weights and activations: a few per cent of the logits' range, the same class.
        assert!(
            worst < 0.08,
            "{name}: worst error {worst} of the logits' range"
        );
        assert!(
            agree >= 30,
            "{name}: the same class for {agree} of 32 inputs"
        );
        if target == "Simulator" {
            let figures = dna.runtime_metrics();
            let cycles = figures.iter().find(|(k, _)| k == "total_sim_cycles");
            assert!(cycles.is_some_and(|(_, v)| *v > 0.0), "{figures:?}");
        }
    }
}

#[test]
fn the_ip_target_without_a_board_is_device_unavailable_with_the_reason() {
    let (deployments, libraries) = dna_environment();
    let ip = deployments.join("digits-ip/deploy.so");
    // Sakura-1: no /dev/sakura_pcie_0, refused before any vendor code runs.
    let err = load_backend_with(&config("IP", "dna:0", "sakura1"), &ip, 1, &libraries)
        .err()
        .expect("no board here");
    match err {
        BackendError::DeviceUnavailable { device, reason } => {
            assert_eq!(device, "dna:0");
            assert!(reason.contains("/dev/sakura_pcie_0"), "{reason}");
        }
        other => panic!("expected DeviceUnavailable, got {other}"),
    }
    // Xilinx U50: the vendor runtime aborts without its board library; the worker dies, the
    // instance reports why, and this process goes on.
    let err = load_backend_with(&config("IP", "dna:0", "xilinx-u50"), &ip, 1, &libraries)
        .err()
        .expect("no board here");
    match err {
        BackendError::DeviceUnavailable { reason, .. } => {
            assert!(
                reason.contains("the DNA worker died while loading"),
                "{reason}"
            );
            assert!(reason.contains("SIGABRT"), "{reason}");
            assert!(reason.contains("libxrt_coreutil"), "{reason}");
        }
        other => panic!("expected DeviceUnavailable, got {other}"),
    }
}

#[test]
fn mismatched_targets_devices_and_libraries_are_clear_errors() {
    let (deployments, libraries) = dna_environment();
    let simulator = deployments.join("digits-simulator/deploy.so");
    let err = load_backend_with(
        &config("Simulator", "dna:0", "xilinx-u50"),
        &simulator,
        1,
        &libraries,
    )
    .err()
    .expect("a software target on a board");
    assert!(err.to_string().contains("runs on the host"), "{err}");
    let err = load_backend_with(&config("IP", "cpu", "sakura1"), &simulator, 1, &libraries)
        .err()
        .expect("the IP target on the CPU");
    assert!(err.to_string().contains("runs on a DNA board"), "{err}");
    let err = load_backend_with(
        &format!("{}batch = 4\n", config("Simulator", "cpu", "sakura1")),
        &simulator,
        8,
        &libraries,
    )
    .err()
    .expect("a batch it was not compiled for");
    assert!(err.to_string().contains("compiled for batch 1"), "{err}");

    let mut missing = LibraryPaths::default();
    missing.insert(
        "mera",
        Path::new("/nonexistent/libmeratvm.so").to_path_buf(),
    );
    let err = load_backend_with(
        &config("Simulator", "cpu", "sakura1"),
        &simulator,
        1,
        &missing,
    )
    .err()
    .expect("no library there");
    assert!(
        matches!(&err, BackendError::LibraryUnavailable(m) if m.contains("/nonexistent/libmeratvm.so")),
        "{err}"
    );
    let err = ModelConfig::parse(Path::new("m/config.toml"), "backend = \"dna\"\n")
        .err()
        .map(|e| format!("{e:?}"))
        .expect("a config without [dna] is refused");
    assert!(err.contains("needs a [dna] table with its target"), "{err}");
}
