//! The backend conformance suite: the same cases for every runtime, each a function taking the
//! [`Subject`] under test. `tests/backend_conformance.rs` runs them for ONNX Runtime, OpenVINO
//! and the fake runtime; a new backend adds one `conformance!` line there.
//!
//! The models are the tiny ONNX (and TFLite) files of `scripts/make_test_models.py`
//! (`y = 2x + 1`, fixed batch, unbatched, two inputs and outputs), or, for a runtime that reads
//! neither, what its [`Subject::model`] writes. Outputs must equal the analytic reference within
//! [`TOLERANCE`]. A runtime whose models have static shapes (TFLite) skips the dynamic-batch cases.
#![allow(dead_code)] // each case is used by the subjects that support it

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use inference_server::backend::{zero_inputs, Backend, BackendError, BatchSupport};
use inference_server::scheduler::{BatchingConfig, InferError, InferenceRequest, ModelScheduler};
use inference_server::tensor::Tensor;

use inference_server::backend::library::LibraryPaths;

use crate::common::{f32_tensor, f32_values, load_backend_with, model, repo_root};

/// Largest relative difference allowed between a backend's output and the reference.
pub const TOLERANCE: f32 = 1e-5;

/// A runtime and device under test.
pub struct Subject {
    /// The config.toml text that selects it (backend, device, the runtime's table).
    pub config: &'static str,
    /// A device of this runtime that is not on this machine.
    pub absent_device: Option<&'static str>,
    /// Writes (or finds) the named test model and returns its path.
    pub model: fn(&str) -> PathBuf,
    /// The runtime libraries to use, as the server config would name them.
    pub libraries: fn() -> LibraryPaths,
}

/// The generated ONNX test model `name`.onnx.
pub fn onnx_model(name: &str) -> PathBuf {
    model(&format!("{name}.onnx"))
}

/// The generated TFLite test model `name`.tflite (static shapes: `affine` is `[1, 4]`).
pub fn tflite_model(name: &str) -> PathBuf {
    model(&format!("{name}.tflite"))
}

/// The libraries each runtime finds by itself.
pub fn searched_libraries() -> LibraryPaths {
    LibraryPaths::default()
}

impl Subject {
    fn load(&self, name: &str, max_batch_size: usize) -> Box<dyn Backend> {
        self.try_load(self.config, name, max_batch_size)
            .unwrap_or_else(|e| panic!("{name} does not load: {e}"))
    }

    fn try_load(
        &self,
        config: &str,
        name: &str,
        max_batch_size: usize,
    ) -> Result<Box<dyn Backend>, BackendError> {
        load_backend_with(
            config,
            &(self.model)(name),
            max_batch_size,
            &(self.libraries)(),
        )
    }
}

fn assert_close(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        let scale = e.abs().max(1.0);
        assert!(
            (a - e).abs() <= TOLERANCE * scale,
            "{actual:?} vs {expected:?}"
        );
    }
}

fn affine(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| v * 2.0 + 1.0).collect()
}

fn rows(samples: usize) -> Vec<f32> {
    (0..samples * 4).map(|i| i as f32 * 0.25 - 3.0).collect()
}

/// Batch 1 equals the reference; the signature is the model's.
pub fn batch_of_one(subject: &Subject) {
    let mut backend = subject.load("affine", 8);
    assert_eq!(backend.signature().batch, BatchSupport::Dynamic { max: 8 });
    assert_eq!(backend.signature().inputs[0].dims, [4]);
    let x = rows(1);
    let out = backend
        .infer(vec![f32_tensor("x", &[1, 4], &x)])
        .expect("runs");
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].name.as_str(), out[0].shape.as_slice()),
        ("y", &[1i64, 4][..])
    );
    assert_close(&f32_values(&out[0]), &affine(&x));
}

/// A full batch equals the reference, row by row.
pub fn full_batch(subject: &Subject) {
    let mut backend = subject.load("affine", 8);
    let x = rows(8);
    let out = backend
        .infer(vec![f32_tensor("x", &[8, 4], &x)])
        .expect("runs");
    assert_eq!(out[0].shape, [8, 4]);
    assert_close(&f32_values(&out[0]), &affine(&x));
}

/// A model compiled for batch 2 is `Fixed(2)`: the scheduler pads a 1-sample request and splits
/// a 3-sample one, and every request gets its own rows back.
pub fn padded_and_split_batches(subject: &Subject) {
    let backend = subject.load("affine_fixed2", 8);
    assert_eq!(backend.signature().batch, BatchSupport::Fixed(2));
    let scheduler = ModelScheduler::start(
        "fixed",
        "test",
        BatchingConfig {
            max_batch_size: 8,
            ..BatchingConfig::default()
        },
        vec![backend],
    );
    for samples in [1usize, 3, 2] {
        let x = rows(samples);
        let request =
            InferenceRequest::new(vec![f32_tensor("x", &[samples as i64, 4], &x)], samples);
        let response = scheduler
            .submit(request)
            .expect("queued")
            .blocking_recv()
            .expect("answered")
            .expect("runs");
        assert_eq!(response.outputs[0].shape, [samples as i64, 4]);
        assert_close(&f32_values(&response.outputs[0]), &affine(&x));
        assert_eq!(response.timings.batch_size, 2, "ran as batches of 2");
    }
    scheduler.shutdown(Duration::from_secs(5));
}

/// `max_batch_size = 0`: no batch dimension, dims reported in full.
pub fn unbatched(subject: &Subject) {
    let mut backend = subject.load("unbatched", 0);
    assert_eq!(backend.signature().batch, BatchSupport::Unbatched);
    assert_eq!(backend.signature().inputs[0].dims, [3]);
    let x = [0.5, -1.0, 4.0];
    let out = backend
        .infer(vec![f32_tensor("v", &[3], &x)])
        .expect("runs");
    assert_close(&f32_values(&out[0]), &affine(&x));
}

/// Two inputs and two outputs come back in signature order.
pub fn several_inputs_and_outputs(subject: &Subject) {
    let mut backend = subject.load("two_io", 4);
    let names: Vec<&str> = backend
        .signature()
        .outputs
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(names, ["sum", "product"]);
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [0.5, -1.0, 2.0, 0.0, 1.0, 3.0];
    let out = backend
        .infer(vec![
            f32_tensor("a", &[2, 3], &a),
            f32_tensor("b", &[2, 3], &b),
        ])
        .expect("runs");
    let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let product: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    assert_close(&f32_values(&out[0]), &sum);
    assert_close(&f32_values(&out[1]), &product);
}

/// Wrong inputs are [`BackendError::InvalidInput`], never a panic, and the instance keeps
/// working; through the scheduler, a wrong shape is refused before it reaches the backend.
pub fn wrong_input_is_invalid_input(subject: &Subject) {
    let mut backend = subject.load("affine", 8);
    let wrong_type = Tensor {
        datatype: inference_proto::DataType::Int32,
        ..f32_tensor("x", &[1, 4], &[0.0; 4])
    };
    for inputs in [vec![wrong_type], vec![]] {
        let err = backend.infer(inputs).unwrap_err();
        assert!(matches!(err, BackendError::InvalidInput(_)), "{err}");
    }
    let out = backend
        .infer(vec![f32_tensor("x", &[1, 4], &[1.0; 4])])
        .expect("still works");
    assert_close(&f32_values(&out[0]), &[3.0; 4]);

    let scheduler = ModelScheduler::start("m", "test", BatchingConfig::default(), vec![backend]);
    let wide = InferenceRequest::new(vec![f32_tensor("x", &[1, 5], &[0.0; 5])], 1);
    assert!(matches!(
        scheduler.submit(wide),
        Err(InferError::Invalid(_))
    ));
    scheduler.shutdown(Duration::from_secs(5));
}

/// Warm-up runs on zero inputs of the instance's own shapes, for dynamic and fixed batches.
pub fn warm_up_runs(subject: &Subject) {
    for (name, batch) in [("affine", 8), ("affine_fixed2", 8), ("unbatched", 0)] {
        let mut backend = subject.load(name, batch);
        backend.warm_up(3).unwrap_or_else(|e| panic!("{name}: {e}"));
        let zeros = zero_inputs(backend.signature());
        let out = backend.infer(zeros).expect("runs");
        assert!(
            f32_values(&out[0])
                .iter()
                .all(|v| (*v - 1.0).abs() < TOLERANCE),
            "{name}"
        );
    }
}

/// A device of this runtime that the box does not have is [`BackendError::DeviceUnavailable`],
/// naming the device and why.
pub fn absent_device_is_device_unavailable(subject: &Subject) {
    let Some(device) = subject.absent_device else {
        return;
    };
    // The device line goes first: the runtime's table may follow the generic keys.
    let device_line = format!("device = \"{device}\"");
    let config = std::iter::once(device_line.as_str())
        .chain(subject.config.lines().filter(|l| !l.starts_with("device")))
        .collect::<Vec<_>>()
        .join("\n");
    match subject.try_load(&config, "affine", 8) {
        Err(BackendError::DeviceUnavailable {
            device: named,
            reason,
        }) => {
            assert_eq!(named.to_ascii_lowercase(), device.to_ascii_lowercase());
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("expected DeviceUnavailable for {device}, got {other}"),
        Ok(_) => panic!("{device} loaded, but this machine should not have it"),
    }
}

/// A library path that does not exist stops `--check-repository` with a message naming it
/// (in a process of its own: a runtime's library is loaded once per process).
pub fn missing_library_is_a_clear_error(runtime: &str, model_file: &str, source: PathBuf) {
    let repo = tempfile::tempdir().expect("temp dir");
    let version = repo.path().join("m/1");
    std::fs::create_dir_all(&version).expect("version folder");
    std::fs::copy(source, version.join(model_file)).expect("model copied");
    std::fs::write(
        repo.path().join("m/config.toml"),
        format!("backend = \"{runtime}\"\n"),
    )
    .expect("config written");
    let missing = "/nonexistent/runtime/lib.so";
    let output = Command::new(env!("CARGO_BIN_EXE_inference-server"))
        .arg("--check-repository")
        .arg(repo.path())
        .arg("--runtime-library")
        .arg(format!("{runtime}={missing}"))
        .current_dir(repo_root())
        .output()
        .expect("the server runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("runtime library unavailable") && stderr.contains(missing),
        "{stderr}"
    );
}
