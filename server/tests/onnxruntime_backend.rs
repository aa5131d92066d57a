//! The ONNX Runtime backend against the real library (found by the discovery code: the repo's
//! `.venv` onnxruntime wheel) and the tiny models of `scripts/make_test_models.py`.

mod common;

use common::{f32_tensor, f32_values, model};
use inference_proto::DataType;
use inference_server::backend::devices::{list_devices, DeviceStatus};
use inference_server::backend::onnxruntime::OnnxRuntimeBackend;
use inference_server::backend::{
    library, load_instances, Backend, BackendError, BackendKind, BatchSupport, Device, LoadSpec,
    TensorSpec,
};
use inference_server::tensor::Tensor;

fn spec(name: &str, max_batch_size: usize) -> LoadSpec {
    LoadSpec {
        max_batch_size,
        ..LoadSpec::new(model(name))
    }
}

#[test]
fn library_is_found_and_reports_its_version() {
    let runtime =
        library::onnxruntime(None).expect("ONNX Runtime should be found (pip install onnxruntime)");
    assert!(runtime.library.path.exists());
    assert!(
        runtime.version.starts_with("1."),
        "version {}",
        runtime.version
    );
    assert!(
        runtime.has_provider("CPUExecutionProvider"),
        "{:?}",
        runtime.providers
    );
}

#[test]
fn dynamic_batch_model_signature_and_inference() {
    let mut backend = OnnxRuntimeBackend::load(&spec("affine.onnx", 8)).unwrap();
    let sig = backend.signature().clone();
    assert_eq!(sig.batch, BatchSupport::Dynamic { max: 8 });
    assert_eq!(
        sig.inputs,
        [TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            dims: vec![4]
        }]
    );
    assert_eq!(
        sig.outputs,
        [TensorSpec {
            name: "y".into(),
            datatype: DataType::Fp32,
            dims: vec![4]
        }]
    );
    assert_eq!(backend.device(), "cpu");

    let x: Vec<f32> = (0..12).map(|i| i as f32 - 3.5).collect();
    let out = backend.infer(vec![f32_tensor("x", &[3, 4], &x)]).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].name.as_str(), out[0].shape.as_slice()),
        ("y", &[3i64, 4][..])
    );
    let expected: Vec<f32> = x.iter().map(|v| v * 2.0 + 1.0).collect();
    assert_eq!(f32_values(&out[0]), expected);
}

#[test]
fn fixed_batch_ragged_and_unbatched_signatures() {
    let fixed = OnnxRuntimeBackend::load(&spec("affine_fixed2.onnx", 8)).unwrap();
    assert_eq!(fixed.signature().batch, BatchSupport::Fixed(2));
    assert_eq!(fixed.signature().inputs[0].dims, [4]);

    let ragged = OnnxRuntimeBackend::load(&spec("affine_ragged.onnx", 4)).unwrap();
    assert_eq!(ragged.signature().batch, BatchSupport::Dynamic { max: 4 });
    assert_eq!(ragged.signature().inputs[0].dims, [-1]);

    let mut unbatched = OnnxRuntimeBackend::load(&spec("affine.onnx", 0)).unwrap();
    assert_eq!(unbatched.signature().batch, BatchSupport::Unbatched);
    assert_eq!(unbatched.signature().inputs[0].dims, [-1, 4]);
    let out = unbatched
        .infer(vec![f32_tensor("x", &[1, 4], &[0.0, 1.0, 2.0, 3.0])])
        .unwrap();
    assert_eq!(f32_values(&out[0]), [1.0, 3.0, 5.0, 7.0]);
}

/// Three samples of each datatype's raw bytes: 3 elements × element size, distinct values.
fn sample_bytes(datatype: DataType) -> Vec<u8> {
    match datatype {
        DataType::Bool => vec![1, 0, 1, 0, 0, 1],
        DataType::Fp16 => [1.5f32, -2.0, 0.25, 8.0, 0.0, -0.5]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
            .collect(),
        DataType::Bf16 => [1.5f32, -2.0, 0.25, 8.0, 0.0, -0.5]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect(),
        DataType::Fp32 => [1.5f32, -2.0, 0.25, 8.0, 0.0, -0.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Fp64 => [1.5f64, -2.0, 0.25, 8.0, 0.0, -0.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => {
            let size = other.element_size().unwrap();
            (0..6 * size).map(|i| (i * 37 + 11) as u8).collect()
        }
    }
}

#[test]
fn every_supported_datatype_round_trips_through_identity() {
    let mut backend = OnnxRuntimeBackend::load(&spec("identity_types.onnx", 4)).unwrap();
    let sig = backend.signature().clone();
    assert_eq!(sig.inputs.len(), 13);
    let inputs: Vec<Tensor> = sig
        .inputs
        .iter()
        .map(|s| Tensor {
            name: s.name.clone(),
            datatype: s.datatype,
            shape: vec![2, 3],
            data: sample_bytes(s.datatype),
        })
        .collect();
    let outputs = backend.infer(inputs.clone()).unwrap();
    for (input, output) in inputs.iter().zip(&outputs) {
        assert_eq!(output.datatype, input.datatype, "{}", output.name);
        assert_eq!(output.shape, [2, 3], "{}", output.name);
        assert_eq!(output.data, input.data, "{} changed its bytes", output.name);
    }
    let names: Vec<&str> = sig.inputs.iter().map(|s| s.datatype.as_str()).collect();
    for wanted in [
        "BOOL", "UINT8", "INT8", "INT16", "UINT16", "INT32", "INT64", "FP16", "FP32", "FP64",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
}

#[test]
fn wrong_inputs_are_errors_not_panics() {
    let mut backend = OnnxRuntimeBackend::load(&spec("affine.onnx", 8)).unwrap();
    let short = Tensor {
        data: vec![0; 7],
        ..f32_tensor("x", &[1, 4], &[0.0; 4])
    };
    let err = backend.infer(vec![short]).unwrap_err();
    assert!(
        matches!(&err, BackendError::Inference(m) if m.contains("7 bytes")),
        "{err}"
    );
    let wrong_type = Tensor {
        datatype: DataType::Int32,
        ..f32_tensor("x", &[1, 4], &[0.0; 4])
    };
    assert!(matches!(
        backend.infer(vec![wrong_type]),
        Err(BackendError::Inference(_))
    ));
    assert!(matches!(
        backend.infer(vec![]),
        Err(BackendError::Inference(_))
    ));
    // A shape the model rejects (5 columns) is ONNX Runtime's error, returned as such.
    let wide = f32_tensor("x", &[1, 5], &[0.0; 5]);
    assert!(matches!(
        backend.infer(vec![wide]),
        Err(BackendError::Inference(_))
    ));
}

#[test]
fn corrupt_or_missing_model_is_invalid_model_with_path() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"\x08\x07this is not a protobuf model\xff\xfe").unwrap();
    match OnnxRuntimeBackend::load(&LoadSpec::new(&corrupt)) {
        Err(BackendError::InvalidModel { path, reason }) => {
            assert_eq!(path, corrupt.display().to_string());
            assert!(!reason.is_empty());
        }
        other => panic!("expected InvalidModel, got {other:?}"),
    }
    let missing = dir.path().join("missing.onnx");
    let err = OnnxRuntimeBackend::load(&LoadSpec::new(&missing)).unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidModel { reason, .. } if reason == "no such file"),
        "{err}"
    );
}

#[test]
fn gpu_devices_fail_clearly_on_a_cpu_only_library() {
    let runtime = library::onnxruntime(None).unwrap();
    for (device, provider) in [
        (Device::Cuda(0), "CUDAExecutionProvider"),
        (Device::TensorRt(0), "TensorrtExecutionProvider"),
    ] {
        let load = OnnxRuntimeBackend::load(&LoadSpec {
            device: device.clone(),
            ..spec("affine.onnx", 8)
        });
        if runtime.has_provider(provider) {
            continue; // a GPU build: registration is tried for real instead
        }
        match load {
            Err(BackendError::DeviceUnavailable {
                device: label,
                reason,
            }) => {
                assert_eq!(label, device.to_string());
                assert!(
                    reason.contains(provider) && reason.contains("onnxruntime-gpu"),
                    "{reason}"
                );
            }
            other => panic!("expected DeviceUnavailable for {device}, got {other:?}"),
        }
    }
    let err = OnnxRuntimeBackend::load(&LoadSpec {
        device: Device::EdgeTpu(0),
        ..spec("affine.onnx", 8)
    })
    .unwrap_err();
    assert!(
        matches!(&err, BackendError::DeviceUnavailable { reason, .. } if reason.contains("own backend")),
        "{err}"
    );
}

#[test]
fn load_instances_loads_independent_sessions() {
    let spec = LoadSpec {
        instances: 2,
        ..spec("affine.onnx", 4)
    };
    assert_eq!(
        spec.effective_intra_op_threads(),
        (std::thread::available_parallelism().unwrap().get() / 2).max(1)
    );
    let mut instances = load_instances(BackendKind::OnnxRuntime, &spec, 2).unwrap();
    assert_eq!(instances.len(), 2);
    for instance in &mut instances {
        let out = instance
            .infer(vec![f32_tensor("x", &[1, 4], &[1.0; 4])])
            .unwrap();
        assert_eq!(f32_values(&out[0]), [3.0; 4]);
    }
    assert_eq!(
        "ort".parse::<BackendKind>().unwrap(),
        BackendKind::OnnxRuntime
    );
    assert!("tensorflow".parse::<BackendKind>().is_err());
}

#[test]
fn devices_listing_reports_cpu_available_and_accelerators_with_reasons() {
    let reports = list_devices(None);
    let cpu = reports
        .iter()
        .find(|r| r.backend == "onnxruntime" && r.device == "cpu")
        .unwrap();
    assert!(
        matches!(&cpu.status, DeviceStatus::Available { library_version, .. } if library_version.starts_with("1.")),
        "{cpu}"
    );
    let runtime = library::onnxruntime(None).unwrap();
    let cuda = reports.iter().find(|r| r.device == "cuda:0").unwrap();
    if !runtime.has_provider("CUDAExecutionProvider") {
        assert!(
            cuda.status
                .to_string()
                .contains("built without CUDAExecutionProvider"),
            "{cuda}"
        );
    }
    for r in &reports {
        println!("{r}");
        assert!(!r.status.to_string().is_empty());
    }
}
