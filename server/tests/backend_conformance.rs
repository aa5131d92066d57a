//! Every backend passes the same conformance cases (`tests/conformance/mod.rs`): ONNX Runtime,
//! OpenVINO and LiteRT with their real libraries (from the repository's `.venv` wheels) on the
//! CPU, TensorFlow Lite's classic C API with the library scripts/make_tflite_fixtures.sh builds
//! from TensorFlow Lite 1.15.5, MERA's Interpreter (the DNA backend, with the deployments
//! scripts/setup_dna.sh compiles), and the fake runtime the repository and service tests use.

mod common;
mod conformance;

use std::path::PathBuf;
use std::sync::OnceLock;

use conformance::{onnx_model, searched_libraries, tflite_model, Subject};
use inference_server::backend::library::LibraryPaths;

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
    libraries: searched_libraries,
};

const OPENVINO: Subject = Subject {
    config: "backend = \"openvino\"\ndevice = \"CPU\"\n[openvino]\ninference_threads = 1\n",
    absent_device: Some("GPU.3"),
    model: onnx_model,
    libraries: searched_libraries,
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
    libraries: searched_libraries,
};

/// The TFLite test libraries made by scripts/make_tflite_fixtures.sh: TensorFlow Lite 1.15.5's
/// classic C API and the fake libedgetpu (which, with no FAKE_EDGETPU_DEVICES, sees no Edge TPU).
fn tflite_fixtures() -> LibraryPaths {
    let dir = common::repo_root().join("target/tflite-fixtures");
    assert!(
        dir.join("libtensorflowlite_c.so").is_file(),
        "{} is missing; run scripts/make_tflite_fixtures.sh",
        dir.display()
    );
    let mut libraries = LibraryPaths::default();
    libraries.insert("tflite", dir.clone());
    libraries.insert("edgetpu", dir);
    libraries
}

/// LiteRT is the default on the CPU (and an Edge TPU device takes the classic path).
const LITERT: Subject = Subject {
    config: "backend = \"tflite\"\ndevice = \"cpu\"\n[tflite]\nthreads = 1\n",
    absent_device: Some("edgetpu:pci:7"),
    model: tflite_model,
    libraries: tflite_fixtures,
};

const TFLITE_CLASSIC: Subject = Subject {
    config:
        "backend = \"tflite\"\ndevice = \"cpu\"\n[tflite]\nruntime = \"classic\"\nthreads = 1\n",
    absent_device: Some("edgetpu:usb:3"),
    model: tflite_model,
    libraries: tflite_fixtures,
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

// TFLite models have static shapes: no dynamic-batch cases. LiteRT lists a signature's outputs
// by name (`product` before `sum`), so the output-order case is the classic API's.
conformance!(
    litert,
    LITERT,
    [
        padded_and_split_batches,
        unbatched,
        wrong_input_is_invalid_input,
        warm_up_runs,
        absent_device_is_device_unavailable,
    ]
);

conformance!(
    tflite_classic,
    TFLITE_CLASSIC,
    [
        padded_and_split_batches,
        unbatched,
        several_inputs_and_outputs,
        wrong_input_is_invalid_input,
        warm_up_runs,
        absent_device_is_device_unavailable,
    ]
);

/// A MERA software target's deployments of the test models, compiled by scripts/setup_dna.sh
/// with static shapes (`affine` as [1, 4], `two_io` as [2, 3]), and its conformance modules. The
/// graphs are fp32, which MERA keeps on the host (it offloads quantized graphs: `dna_backend.rs`
/// tests those). The graph keeps no output names, so the `two_io` case's config names them. MERA
/// compiles static shapes: no dynamic-batch cases.
macro_rules! dna_conformance {
    ($($folder:literal, $target:literal => $module:ident);+ $(;)?) => {$(
        mod $module {
            use super::*;

            const SUBJECT: Subject = Subject {
                config: concat!("backend = \"dna\"\ndevice = \"cpu\"\n[dna]\ntarget = \"", $target, "\"\n"),
                absent_device: Some("dna:3"),
                model: |name| common::dna_environment().0.join($folder).join(name).join("deploy.so"),
                libraries: || common::dna_environment().1,
            };
            const NAMED: Subject = Subject {
                config: concat!("backend = \"dna\"\ndevice = \"cpu\"\n[dna]\ntarget = \"", $target,
                                "\"\noutputs = [\"sum\", \"product\"]\n"),
                absent_device: None,
                ..SUBJECT
            };

            conformance!(
                cases,
                SUBJECT,
                [
                    padded_and_split_batches,
                    unbatched,
                    wrong_input_is_invalid_input,
                    warm_up_runs,
                    absent_device_is_device_unavailable,
                ]
            );
            conformance!(named_outputs, NAMED, [several_inputs_and_outputs]);
        }
    )+};
}

dna_conformance!(
    "interpreter", "Interpreter" => dna_interpreter;
    "interpreterhw", "InterpreterHw" => dna_interpreterhw;
    "simulator", "Simulator" => dna_simulator;
);

#[test]
fn litert_missing_library_is_a_clear_error() {
    conformance::missing_library_is_a_clear_error("litert", "model.tflite", tflite_model("affine"));
}

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
