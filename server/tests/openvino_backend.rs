//! The OpenVINO backend against the real library (the repository's `.venv` openvino wheel) and the
//! real EfficientNet-Lite0 made by `scripts/setup_models.sh`: what the conformance suite does not
//! cover — the library and its devices, ONNX and IR giving ONNX Runtime's outputs, preprocessing
//! compiled into the model, a `.tflite` model, reshapes.

mod common;

use std::path::PathBuf;

use common::{f32_tensor, f32_values, load_backend, model, repo_root};
use inference_proto::DataType;
use inference_server::backend::openvino::environment;
use inference_server::backend::{BackendError, BatchSupport};
use inference_server::tensor::Tensor;

const OPENVINO: &str = "backend = \"openvino\"\n[openvino]\ninference_threads = 1\n";
const ORT: &str = "backend = \"onnxruntime\"\n[onnxruntime]\nintra_op_threads = 1\n";

/// A generated model file; the set-up makes them.
fn generated(relative: &str) -> PathBuf {
    let path = repo_root().join("models/generated").join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup_models.sh",
        path.display()
    );
    path
}

/// Deterministic values in [-1, 1).
fn noise(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.max(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as f32 / u32::MAX as f32 * 2.0 - 1.0
        })
        .collect()
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_wheel_is_found_and_binds_the_current_api() {
    let library = environment::load(None).expect("OpenVINO should be found (pip install openvino)");
    assert!(library.library.path.exists());
    let release = environment::release_of(&library.version).expect("a version");
    assert!(
        release >= environment::CURRENT_MINIMUM,
        "{}",
        library.version
    );
    assert!(matches!(library.binding, environment::Binding::Current(_)));
    let devices = library.available_devices().expect("devices");
    assert!(devices.iter().any(|d| d == "CPU"), "{devices:?}");
}

#[test]
fn efficientnet_from_onnx_and_from_ir_gives_onnx_runtimes_outputs() {
    let onnx = generated("efficientnet-lite0/1/model.onnx");
    let ir = generated("efficientnet-lite0-openvino/1/model.xml");
    let x = noise(2 * 3 * 224 * 224, 7);
    let input = || vec![f32_tensor("input", &[2, 3, 224, 224], &x)];
    let reference = f32_values(&load_backend(ORT, &onnx, 4).unwrap().infer(input()).unwrap()[0]);
    for path in [&onnx, &ir] {
        let mut backend = load_backend(OPENVINO, path, 4).unwrap();
        assert_eq!(backend.signature().batch, BatchSupport::Dynamic { max: 4 });
        assert_eq!(backend.signature().inputs[0].dims, [3, 224, 224]);
        let out = backend.infer(input()).unwrap();
        assert_eq!(out[0].shape, [2, 1000]);
        let difference = max_difference(&f32_values(&out[0]), &reference);
        // FP32 inference (not the CPU's bf16 default): the same logits to rounding.
        assert!(
            difference < 1e-3,
            "{} differs from ONNX Runtime by {difference}",
            path.display()
        );
    }
}

#[test]
fn preprocessing_compiled_into_the_model_takes_raw_pixels() {
    let onnx = generated("efficientnet-lite0/1/model.onnx");
    let config = format!(
        "{OPENVINO}[[openvino.preprocess]]\ndatatype = \"UINT8\"\nlayout = \"NHWC\"\nmodel_layout = \"NCHW\"\n\
         mean = [127.0, 127.0, 127.0]\nscale = [128.0, 128.0, 128.0]\n"
    );
    let mut raw = load_backend(&config, &onnx, 1).unwrap();
    let input = &raw.signature().inputs[0];
    assert_eq!(
        (input.datatype, input.dims.as_slice()),
        (DataType::Uint8, &[224i64, 224, 3][..])
    );

    // The same image as bytes (HWC) and as the model's own normalised CHW floats.
    let pixels: Vec<u8> = noise(224 * 224 * 3, 11)
        .iter()
        .map(|v| ((v + 1.0) * 127.5) as u8)
        .collect();
    let mut chw = vec![0f32; 3 * 224 * 224];
    for (i, p) in pixels.iter().enumerate() {
        let (pixel, channel) = (i / 3, i % 3);
        chw[channel * 224 * 224 + pixel] = (f32::from(*p) - 127.0) / 128.0;
    }
    let bytes = Tensor {
        name: input.name.clone(),
        datatype: DataType::Uint8,
        shape: vec![1, 224, 224, 3],
        data: pixels,
    };
    let from_bytes = f32_values(&raw.infer(vec![bytes]).unwrap()[0]);
    let reference = f32_values(
        &load_backend(ORT, &onnx, 1)
            .unwrap()
            .infer(vec![f32_tensor("input", &[1, 3, 224, 224], &chw)])
            .unwrap()[0],
    );
    let difference = max_difference(&from_bytes, &reference);
    assert!(
        difference < 1e-3,
        "preprocessed logits differ by {difference}"
    );
}

#[test]
fn a_tflite_model_is_read_with_its_quantized_types_and_fixed_batch() {
    let tflite = generated("efficientnet-lite0-uint8/1/model.tflite");
    let mut backend = load_backend(OPENVINO, &tflite, 1).unwrap();
    let signature = backend.signature().clone();
    assert_eq!(signature.batch, BatchSupport::Fixed(1));
    assert_eq!(signature.inputs[0].datatype, DataType::Uint8);
    assert_eq!(signature.inputs[0].dims, [224, 224, 3]);
    assert_eq!(signature.outputs[0].datatype, DataType::Uint8);
    assert_eq!(signature.outputs[0].dims, [1000]);
    backend.warm_up(1).unwrap();
}

#[test]
fn reshape_fixes_shapes_and_unknown_names_are_refused() {
    let config = format!("{OPENVINO}reshape = {{ x = [2, 4] }}\n");
    let mut fixed = load_backend(&config, &model("affine.onnx"), 8).unwrap();
    assert_eq!(fixed.signature().batch, BatchSupport::Fixed(2));
    let out = fixed
        .infer(vec![f32_tensor("x", &[2, 4], &[1.0; 8])])
        .unwrap();
    assert_eq!(f32_values(&out[0]), [3.0; 8]);

    let config = format!("{OPENVINO}reshape = {{ nope = [2, 4] }}\n");
    match load_backend(&config, &model("affine.onnx"), 8) {
        Err(BackendError::InvalidModel { reason, .. }) => {
            assert!(reason.contains("names input 'nope'"), "{reason}")
        }
        Err(other) => panic!("expected InvalidModel, got {other}"),
        Ok(_) => panic!("an unknown input name was accepted"),
    }
}

#[test]
fn the_ncs2_needs_the_2022_3_library_and_says_so() {
    let config = "backend = \"openvino\"\ndevice = \"MYRIAD\"\n";
    match load_backend(config, &model("affine.onnx"), 8) {
        Err(BackendError::DeviceUnavailable { device, reason }) => {
            assert_eq!(device, "MYRIAD");
            assert!(reason.contains("2022.3"), "{reason}");
        }
        Err(other) => panic!("expected DeviceUnavailable, got {other}"),
        Ok(_) => panic!("MYRIAD loaded on the current OpenVINO"),
    }
}
