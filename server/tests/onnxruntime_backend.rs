//! The ONNX Runtime backend against the real library (found by the discovery code: the repo's
//! `.venv` onnxruntime wheel): what the conformance suite does not cover — the library itself,
//! every datatype, corrupt models, GPU devices on a CPU-only build, and the devices listing.

mod common;

use common::{f32_tensor, f32_values, load_backend, model};
use inference_proto::DataType;
use inference_server::backend::devices::{list_devices, DeviceStatus};
use inference_server::backend::library::LibraryPaths;
use inference_server::backend::onnxruntime::{environment, OrtSettings};
use inference_server::backend::BackendError;
use inference_server::tensor::Tensor;

const CPU: &str = "backend = \"onnxruntime\"\n";

#[test]
fn library_is_found_and_reports_its_version() {
    let runtime =
        environment::load(None).expect("ONNX Runtime should be found (pip install onnxruntime)");
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
fn fixed_and_ragged_batch_signatures() {
    let fixed = load_backend(CPU, &model("affine_fixed2.onnx"), 8).unwrap();
    assert_eq!(fixed.signature().inputs[0].dims, [4]);
    let ragged = load_backend(CPU, &model("affine_ragged.onnx"), 4).unwrap();
    assert_eq!(
        ragged.signature().batch,
        inference_server::backend::BatchSupport::Dynamic { max: 4 }
    );
    assert_eq!(ragged.signature().inputs[0].dims, [-1]);
    let mut unbatched = load_backend(CPU, &model("affine.onnx"), 0).unwrap();
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
    let mut backend = load_backend(CPU, &model("identity_types.onnx"), 4).unwrap();
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
fn short_data_and_shapes_the_model_rejects_are_invalid_input() {
    let mut backend = load_backend(CPU, &model("affine.onnx"), 8).unwrap();
    let short = Tensor {
        data: vec![0; 7],
        ..f32_tensor("x", &[1, 4], &[0.0; 4])
    };
    let err = backend.infer(vec![short]).unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidInput(m) if m.contains("7 bytes")),
        "{err}"
    );
    // A shape the model rejects (5 columns) is ONNX Runtime's INVALID_ARGUMENT.
    let wide = f32_tensor("x", &[1, 5], &[0.0; 5]);
    let err = backend.infer(vec![wide]).unwrap_err();
    assert!(matches!(err, BackendError::InvalidInput(_)), "{err}");
}

#[test]
fn corrupt_or_missing_model_is_invalid_model_with_path() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"\x08\x07this is not a protobuf model\xff\xfe").unwrap();
    match load_backend(CPU, &corrupt, 0) {
        Err(BackendError::InvalidModel { path, reason }) => {
            assert_eq!(path, corrupt.display().to_string());
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("expected InvalidModel, got {other}"),
        Ok(_) => panic!("a corrupt model loaded"),
    }
    let missing = dir.path().join("missing.onnx");
    let err = load_backend(CPU, &missing, 0).err().unwrap();
    assert!(
        matches!(&err, BackendError::InvalidModel { reason, .. } if reason == "no such file"),
        "{err}"
    );
}

#[test]
fn gpu_devices_fail_clearly_on_a_cpu_only_library() {
    let runtime = environment::load(None).unwrap();
    for (device, provider) in [
        ("cuda:0", "CUDAExecutionProvider"),
        ("tensorrt:0", "TensorrtExecutionProvider"),
    ] {
        let load = load_backend(
            &format!("backend = \"onnxruntime\"\ndevice = \"{device}\"\n"),
            &model("affine.onnx"),
            8,
        );
        if runtime.has_provider(provider) {
            continue; // a GPU build: registration is tried for real instead
        }
        match load {
            Err(BackendError::DeviceUnavailable {
                device: label,
                reason,
            }) => {
                assert_eq!(label, device);
                assert!(
                    reason.contains(provider) && reason.contains("onnxruntime-gpu"),
                    "{reason}"
                );
            }
            Err(other) => panic!("expected DeviceUnavailable for {device}, got {other}"),
            Ok(_) => panic!("{device} loaded on a CPU-only library"),
        }
    }
}

#[test]
fn gpu_options_with_every_option_set_still_fail_clearly_and_misplaced_ones_are_refused() {
    let runtime = environment::load(None).unwrap();
    let options = "[onnxruntime]\ngpu_mem_limit_mb = 512\ntensorrt_fp16 = true\n\
                   tensorrt_workspace_mb = 256\ntensorrt_engine_cache = \"/tmp/trt-cache\"\n";
    let load = |device: &str| {
        load_backend(
            &format!("backend = \"onnxruntime\"\ndevice = \"{device}\"\n{options}"),
            &model("affine.onnx"),
            8,
        )
    };
    for (device, option) in [("cpu", "gpu_mem_limit_mb"), ("cuda:0", "tensorrt_fp16")] {
        match load(device) {
            Err(BackendError::InvalidModel { reason, .. }) => {
                assert!(
                    reason.contains(&format!("onnxruntime.{option} applies to")),
                    "{reason}"
                );
            }
            Err(other) => panic!("{device}: expected InvalidModel, got {other}"),
            Ok(_) => panic!("{device}: {option} should be refused"),
        }
    }
    if !runtime.has_provider("TensorrtExecutionProvider") {
        let err = load("tensorrt:0").err().expect("a CPU-only library");
        assert!(
            matches!(err, BackendError::DeviceUnavailable { .. }),
            "{err}"
        );
    }
}

#[test]
fn intra_op_threads_are_shared_among_a_devices_instances() {
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(
        OrtSettings::default().effective_intra_op_threads(2),
        (cores / 2).max(1)
    );
    let config = "backend = \"onnxruntime\"\ninstances = 2\n";
    for _ in 0..2 {
        let mut instance = load_backend(config, &model("affine.onnx"), 4).unwrap();
        let out = instance
            .infer(vec![f32_tensor("x", &[1, 4], &[1.0; 4])])
            .unwrap();
        assert_eq!(f32_values(&out[0]), [3.0; 4]);
    }
}

#[test]
fn devices_listing_reports_cpu_available_and_accelerators_with_reasons() {
    let reports = list_devices(&LibraryPaths::default());
    let cpu = reports
        .iter()
        .find(|r| r.backend == "onnxruntime" && r.device == "cpu")
        .unwrap();
    assert!(
        matches!(&cpu.status, DeviceStatus::Available { library_version, .. } if library_version.starts_with("1.")),
        "{cpu}"
    );
    let runtime = environment::load(None).unwrap();
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

/// Builds tests/fixtures/fake-nvml (NVML's C ABI, two GPUs) into `dir` as libnvidia-ml.so.1.
fn fake_nvml(dir: &std::path::Path) {
    let source = common::repo_root().join("tests/fixtures/fake-nvml/fake_nvml.c");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(dir.join("libnvidia-ml.so.1"))
        .arg(&source)
        .status()
        .expect("cc runs (the C compiler scripts/setup.sh installs)");
    assert!(status.success(), "cc {}", source.display());
}

#[test]
fn devices_listing_names_each_gpu_nvml_reports_and_says_why_without_nvml() {
    use inference_server::backend::devices::ProbeEnv;
    use inference_server::backend::onnxruntime::OnnxRuntime;
    use inference_server::backend::runtime::Runtime;

    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let env = ProbeEnv {
        root: tmp.path().to_path_buf(),
        lib_dirs: vec![lib.clone()],
    };
    let probe = || OnnxRuntime.probe(&env, &LibraryPaths::default());
    let lines: Vec<String> = probe().iter().map(ToString::to_string).collect();
    let devices: Vec<String> = probe().into_iter().map(|r| r.device).collect();
    assert_eq!(devices, ["cpu", "cuda:0", "tensorrt:0"], "{lines:?}");
    assert!(
        lines[0].contains("providers: ") && lines[0].contains("CPUExecutionProvider"),
        "{lines:?}"
    );

    fake_nvml(&lib);
    let reports = probe();
    let devices: Vec<&str> = reports.iter().map(|r| r.device.as_str()).collect();
    assert_eq!(
        devices,
        ["cpu", "cuda:0", "tensorrt:0", "cuda:1", "tensorrt:1"]
    );
    let runtime = environment::load(None).unwrap();
    if !runtime.has_provider("CUDAExecutionProvider") {
        // A CPU-only library: the GPU is named in the reason.
        let cuda0 = reports[1].status.to_string();
        assert!(
            cuda0.contains("NVIDIA H200, 143771 MiB, driver 570.86.15"),
            "{cuda0}"
        );
        assert!(
            cuda0.contains("built without CUDAExecutionProvider"),
            "{cuda0}"
        );
        let cuda1 = reports[3].status.to_string();
        assert!(cuda1.contains("NVIDIA L4, 23034 MiB"), "{cuda1}");
    }
}
