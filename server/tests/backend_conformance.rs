//! Every backend passes the same conformance cases (`tests/conformance/mod.rs`): ONNX Runtime
//! and OpenVINO with their real libraries (from the repository's `.venv` wheels) on the CPU, and
//! the fake runtime the repository and service tests use.

mod common;
mod conformance;

use std::path::PathBuf;
use std::sync::OnceLock;

use conformance::{onnx_model, Subject};

/// One module of tests per subject, one test per case.
macro_rules! conformance {
    ($module:ident, $subject:expr, [$($case:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $case() {
                    conformance::$case(&$subject);
                }
            )*
        }
    };
}

const ONNXRUNTIME: Subject = Subject {
    config: "backend = \"onnxruntime\"\ndevice = \"cpu\"\n[onnxruntime]\nintra_op_threads = 1\n",
    absent_device: Some("cuda:0"),
    model: onnx_model,
};

const OPENVINO: Subject = Subject {
    config: "backend = \"openvino\"\ndevice = \"CPU\"\n[openvino]\ninference_threads = 1\n",
    absent_device: Some("GPU.3"),
    model: onnx_model,
};

/// The fake runtime's versions of the test models (`model.fake` files, written once).
fn fake_model(name: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let models = [
            ("affine", "[-1, 4]"),
            ("affine_fixed2", "[2, 4]"),
            ("unbatched", "[3]"),
        ];
        for (model, dims) in models {
            let (input, output) = if model == "unbatched" {
                ("v", "w")
            } else {
                ("x", "y")
            };
            std::fs::write(
                dir.path().join(format!("{model}.fake")),
                format!(
                    "inputs = [{{ name = \"{input}\", datatype = \"FP32\", dims = {dims} }}]\n\
                     outputs = [{{ name = \"{output}\", datatype = \"FP32\", dims = {dims} }}]\n\
                     scale = 2.0\noffset = 1.0\n"
                ),
            )
            .expect("fake model written");
        }
        dir
    });
    dir.path().join(format!("{name}.fake"))
}

const FAKE: Subject = Subject {
    config: "backend = \"fake\"\ndevice = \"cpu\"\n",
    absent_device: Some("fake:9"),
    model: fake_model,
};

conformance!(
    onnxruntime,
    ONNXRUNTIME,
    [
        batch_of_one,
        full_batch,
        padded_and_split_batches,
        unbatched,
        several_inputs_and_outputs,
        wrong_input_is_invalid_input,
        warm_up_runs,
        absent_device_is_device_unavailable,
    ]
);

conformance!(
    openvino,
    OPENVINO,
    [
        batch_of_one,
        full_batch,
        padded_and_split_batches,
        unbatched,
        several_inputs_and_outputs,
        wrong_input_is_invalid_input,
        warm_up_runs,
        absent_device_is_device_unavailable,
    ]
);

conformance!(
    fake,
    FAKE,
    [
        batch_of_one,
        full_batch,
        padded_and_split_batches,
        unbatched,
        wrong_input_is_invalid_input,
        warm_up_runs,
        absent_device_is_device_unavailable,
    ]
);

#[test]
fn onnxruntime_missing_library_is_a_clear_error() {
    conformance::missing_library_is_a_clear_error(
        "onnxruntime",
        "model.onnx",
        onnx_model("affine"),
    );
}

#[test]
fn openvino_missing_library_is_a_clear_error() {
    conformance::missing_library_is_a_clear_error("openvino", "model.onnx", onnx_model("affine"));
}
