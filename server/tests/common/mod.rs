//! Helpers shared by the integration tests: the tiny ONNX models of `scripts/make_test_models.py`
//! and tensor conversions.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use inference_proto::DataType;
use inference_server::backend::library::LibraryPaths;
use inference_server::backend::runtime::{LoadRequest, ModelFiles};
use inference_server::backend::{Backend, BackendError};
use inference_server::model_config::ModelConfig;
use inference_server::tensor::Tensor;

/// The repository root (the server crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent")
        .to_path_buf()
}

/// The folder holding every test model (`affine.onnx`, `identity_types.onnx`, `two_io.onnx`,
/// `unbatched.onnx`, ...), generated once per test binary with the repo's venv
/// (`.venv/bin/python`, else `python3`).
pub fn models_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("test-models-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        let venv = repo_root().join(".venv/bin/python");
        let python = if venv.exists() { venv } else { PathBuf::from("python3") };
        let output = Command::new(&python)
            .arg(repo_root().join("scripts/make_test_models.py"))
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        assert!(
            output.status.success(),
            "make_test_models.py failed (needs numpy, onnx and flatbuffers: pip install -r scripts/requirements.txt):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        dir
    })
    .path()
}

/// Path of one generated model.
pub fn model(name: &str) -> PathBuf {
    models_dir().join(name)
}

/// An FP32 tensor.
pub fn f32_tensor(name: &str, shape: &[i64], values: &[f32]) -> Tensor {
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape: shape.to_vec(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// The FP32 values of a tensor.
pub fn f32_values(tensor: &Tensor) -> Vec<f32> {
    assert_eq!(tensor.datatype, DataType::Fp32);
    tensor
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The files of a model at `path` (its companions, such as IR weights, found beside it by name).
pub fn files_of(path: &Path) -> ModelFiles {
    let mut files = vec![path.to_path_buf()];
    let weights = path.with_extension("bin");
    if path.extension().is_some_and(|e| e == "xml") && weights.exists() {
        files.push(weights);
    }
    ModelFiles {
        dir: path.parent().expect("has a folder").to_path_buf(),
        model: path.to_path_buf(),
        files,
    }
}

/// Loads one instance of the model at `path` as the repository would: `config` is a model's
/// config.toml text (backend, device, the runtime's table), its first instance group is used.
pub fn load_backend(
    config: &str,
    path: &Path,
    max_batch_size: usize,
) -> Result<Box<dyn Backend>, BackendError> {
    load_backend_with(config, path, max_batch_size, &LibraryPaths::default())
}

/// [`load_backend`] with runtime libraries named, as the server config would.
pub fn load_backend_with(
    config: &str,
    path: &Path,
    max_batch_size: usize,
    libraries: &LibraryPaths,
) -> Result<Box<dyn Backend>, BackendError> {
    let parsed = ModelConfig::parse(Path::new("test/config.toml"), config)
        .unwrap_or_else(|e| panic!("test config does not parse: {e:?}"));
    let group = &parsed.instance_groups[0];
    let files = files_of(path);
    parsed.settings.load(&LoadRequest {
        model: &files,
        device: &group.device,
        max_batch_size,
        instances_on_device: group.count,
        libraries,
    })
}

/// The DNA backend's test set-up, made by scripts/setup_dna.sh: points the backend at this
/// build's inference-server for its workers, at the private loader and library path the MERA
/// libraries need here, and returns the compiled deployments' folder and the MERA library.
pub fn dna_environment() -> (PathBuf, LibraryPaths) {
    let root = repo_root();
    let deployments = root.join("target/dna/deployments");
    let libdir = root.join("target/dna/sysroot/usr/lib/x86_64-linux-gnu");
    let mera = root.join(".venv-dna/lib/python3.10/site-packages/tvm/libmeratvm.so");
    assert!(
        deployments.join("interpreter/affine/deploy.so").is_file() && mera.is_file(),
        "the DNA test deployments or MERA are missing; run scripts/setup_dna.sh"
    );
    static SET: OnceLock<()> = OnceLock::new();
    SET.get_or_init(|| {
        use inference_server::backend::dna;
        let library_path =
            std::env::join_paths([libdir.clone(), root.join(".venv-dna/lib")]).expect("paths join");
        std::env::set_var(
            dna::WORKER_PROGRAM_ENV,
            env!("CARGO_BIN_EXE_inference-server"),
        );
        std::env::set_var(dna::LOADER_ENV, libdir.join("ld-linux-x86-64.so.2"));
        std::env::set_var(dna::LIBRARY_PATH_ENV, library_path);
    });
    let mut libraries = LibraryPaths::default();
    libraries.insert("mera", mera);
    (deployments, libraries)
}
