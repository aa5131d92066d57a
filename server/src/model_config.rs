//! A model's `config.toml`: what the operator states about one model (backend, device, batching,
//! instances, optional tensor declarations). Anything left out is read from the model file.
//! Unknown keys are refused so typos surface with the file, key and line named.

use std::path::{Path, PathBuf};

use inference_proto::DataType;
use serde::Deserialize;

use crate::backend::{BackendKind, Device};
use crate::config::TomlErrorAt;

/// File name of a model's configuration inside its folder.
pub const CONFIG_FILE_NAME: &str = "config.toml";

/// Triton's platform string for models of `kind` (reported by ModelMetadata and ModelConfig).
pub fn platform(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::OnnxRuntime => "onnxruntime_onnx",
    }
}

/// File name of the model inside each version folder for `kind`.
pub fn model_file_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::OnnxRuntime => "model.onnx",
    }
}

/// `[dynamic_batching]`: how requests are grouped into batches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicBatchingConfig {
    /// How long the oldest queued request may wait for a fuller batch, µs.
    #[serde(default)]
    pub max_queue_delay_us: u64,
    /// Batch sizes dispatched as soon as they are reached.
    #[serde(default)]
    pub preferred_batch_sizes: Vec<usize>,
    /// Most requests waiting in the queue; further ones get RESOURCE_EXHAUSTED.
    pub max_queue_size: Option<usize>,
    /// Most input bytes waiting in the queue.
    pub max_queue_bytes: Option<usize>,
}

/// One `[[input]]` or `[[output]]` declaration, checked against the model file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorDeclaration {
    pub name: String,
    /// KServe datatype name (`FP32`, `INT64`, ...); read from the model when absent.
    pub datatype: Option<String>,
    /// Dimensions without the batch dimension; -1 for a dynamic one. Read from the model when absent.
    pub dims: Option<Vec<i64>>,
}

/// A model's `config.toml` as written.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfigFile {
    /// Runtime name (`onnxruntime`) [default: onnxruntime].
    pub backend: Option<String>,
    /// Device string (`cpu`, `cuda:0`, `tensorrt:0`, ...) [default: cpu].
    pub device: Option<String>,
    /// Largest batch (dimension 0) a request or executed batch may have; 0 = the model has no
    /// batch dimension. Read from the model when absent.
    pub max_batch_size: Option<usize>,
    /// Model instances (one OS thread each) [default: 1].
    pub instances: Option<usize>,
    /// Threads ONNX Runtime may use inside one operator.
    pub intra_op_threads: Option<usize>,
    /// Idle intra-op threads spin-wait for work: lower latency under back-to-back load, a busy
    /// core per thread otherwise [default: false].
    pub intra_op_spinning: Option<bool>,
    /// Versions to serve; by default the highest numbered folder.
    pub versions: Option<Vec<u64>>,
    pub dynamic_batching: Option<DynamicBatchingConfig>,
    #[serde(default)]
    pub input: Vec<TensorDeclaration>,
    #[serde(default)]
    pub output: Vec<TensorDeclaration>,
}

/// One mistake in a model's config file, naming the file and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {field}: {message}", file.display())]
pub struct ModelConfigError {
    pub file: PathBuf,
    pub field: String,
    pub message: String,
}

/// A config file that was read, parsed and checked for internal consistency.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub file: PathBuf,
    pub raw: ModelConfigFile,
    pub backend: BackendKind,
    pub device: Device,
    pub instances: usize,
    pub inputs: Vec<DeclaredTensor>,
    pub outputs: Vec<DeclaredTensor>,
}

/// A tensor declaration with its datatype parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTensor {
    pub name: String,
    pub datatype: Option<DataType>,
    pub dims: Option<Vec<i64>>,
}

impl ModelConfig {
    /// Reads `path` and returns every problem found in it (not just the first).
    pub fn load(path: &Path) -> Result<Self, Vec<ModelConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            vec![error(
                path,
                "(file)",
                format!("cannot read: {err}; every model folder needs a {CONFIG_FILE_NAME}"),
            )]
        })?;
        Self::parse(path, &text)
    }

    /// Parses config text that was read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Vec<ModelConfigError>> {
        let raw: ModelConfigFile = toml::from_str(text).map_err(|err| {
            let at = TomlErrorAt::locate(text, &err);
            let message = match at.line {
                Some(line) => format!("{} (line {line})", at.message),
                None => at.message,
            };
            vec![ModelConfigError {
                file: path.to_path_buf(),
                field: at.key.unwrap_or_else(|| "(syntax)".to_string()),
                message,
            }]
        })?;
        let mut errors = Vec::new();
        let instances = raw.instances.unwrap_or(1);
        if instances == 0 {
            errors.push(error(path, "instances", "must be at least 1".to_string()));
        }
        if raw.intra_op_threads == Some(0) {
            errors.push(error(
                path,
                "intra_op_threads",
                "must be at least 1 (leave it out to let the runtime choose)".to_string(),
            ));
        }
        if let Some(versions) = &raw.versions {
            if versions.is_empty() {
                errors.push(error(
                    path,
                    "versions",
                    "is empty; list version folders to serve, or leave it out to serve the highest"
                        .to_string(),
                ));
            }
        }
        if let Some(batching) = &raw.dynamic_batching {
            check_batching(path, raw.max_batch_size, batching, &mut errors);
        }
        let inputs = declared(path, "input", &raw.input, &mut errors);
        let outputs = declared(path, "output", &raw.output, &mut errors);
        let backend = match raw.backend.as_deref().map(str::parse::<BackendKind>) {
            None => Some(BackendKind::OnnxRuntime),
            Some(Ok(kind)) => Some(kind),
            Some(Err(err)) => {
                errors.push(error(path, "backend", err.to_string()));
                None
            }
        };
        let device = match raw.device.as_deref().map(str::parse::<Device>) {
            None => Some(Device::Cpu),
            Some(Ok(device)) => Some(device),
            Some(Err(err)) => {
                errors.push(error(path, "device", err.to_string()));
                None
            }
        };
        match (backend, device) {
            (Some(backend), Some(device)) if errors.is_empty() => Ok(ModelConfig {
                file: path.to_path_buf(),
                raw,
                backend,
                device,
                instances,
                inputs,
                outputs,
            }),
            _ => Err(errors),
        }
    }

    /// Builds an error about `field` of this config file.
    pub fn error(&self, field: &str, message: String) -> ModelConfigError {
        error(&self.file, field, message)
    }
}

fn error(path: &Path, field: &str, message: String) -> ModelConfigError {
    ModelConfigError {
        file: path.to_path_buf(),
        field: field.to_string(),
        message,
    }
}

fn check_batching(
    path: &Path,
    max_batch_size: Option<usize>,
    batching: &DynamicBatchingConfig,
    errors: &mut Vec<ModelConfigError>,
) {
    if max_batch_size == Some(0) {
        errors.push(error(
            path,
            "dynamic_batching",
            "needs max_batch_size > 0; remove [dynamic_batching] for a model without a batch dimension"
                .to_string(),
        ));
    }
    for (i, &size) in batching.preferred_batch_sizes.iter().enumerate() {
        let field = format!("dynamic_batching.preferred_batch_sizes[{i}]");
        if size == 0 {
            errors.push(error(path, &field, "must be at least 1".to_string()));
        } else if let Some(max) = max_batch_size.filter(|&max| size > max) {
            errors.push(error(
                path,
                &field,
                format!("{size} is larger than max_batch_size = {max}"),
            ));
        }
    }
    if batching.max_queue_size == Some(0) {
        errors.push(error(
            path,
            "dynamic_batching.max_queue_size",
            "must be at least 1 request".to_string(),
        ));
    }
    if batching.max_queue_bytes == Some(0) {
        errors.push(error(
            path,
            "dynamic_batching.max_queue_bytes",
            "must be at least 1 byte (leave it out for no byte limit)".to_string(),
        ));
    }
}

fn declared(
    path: &Path,
    section: &str,
    tensors: &[TensorDeclaration],
    errors: &mut Vec<ModelConfigError>,
) -> Vec<DeclaredTensor> {
    let mut out = Vec::with_capacity(tensors.len());
    for (i, tensor) in tensors.iter().enumerate() {
        if tensor.name.is_empty() {
            errors.push(error(
                path,
                &format!("{section}[{i}].name"),
                "is empty".to_string(),
            ));
        }
        if tensors[..i].iter().any(|t| t.name == tensor.name) {
            errors.push(error(
                path,
                &format!("{section}[{i}].name"),
                format!("'{}' is declared twice", tensor.name),
            ));
        }
        let datatype = match tensor.datatype.as_deref().map(str::parse::<DataType>) {
            Some(Ok(dt)) => Some(dt),
            Some(Err(err)) => {
                errors.push(error(
                    path,
                    &format!("{section}[{i}].datatype"),
                    err.to_string(),
                ));
                None
            }
            None => None,
        };
        if let Some(dims) = &tensor.dims {
            if let Some(bad) = dims.iter().find(|&&d| d == 0 || d < -1) {
                errors.push(error(
                    path,
                    &format!("{section}[{i}].dims"),
                    format!(
                        "{bad} is not a dimension; use a positive size or -1 for a dynamic one"
                    ),
                ));
            }
        }
        out.push(DeclaredTensor {
            name: tensor.name.clone(),
            datatype,
            dims: tensor.dims.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, Vec<ModelConfigError>> {
        ModelConfig::parse(Path::new("/repo/m/config.toml"), text)
    }

    #[test]
    fn full_example_parses() {
        let config = parse(
            r#"
backend = "onnxruntime"
device = "cuda:0"
max_batch_size = 8
instances = 2
intra_op_threads = 2
versions = [1, 2]
[dynamic_batching]
max_queue_delay_us = 500
preferred_batch_sizes = [4, 8]
max_queue_size = 256
max_queue_bytes = 67108864
[[input]]
name = "x"
datatype = "FP32"
dims = [3, -1]
"#,
        )
        .expect("valid config");
        assert_eq!(config.device, Device::Cuda(0));
        assert_eq!(config.instances, 2);
        assert_eq!(
            config.raw.dynamic_batching.map(|b| b.max_queue_delay_us),
            Some(500)
        );
        assert_eq!(config.inputs[0].datatype, Some(DataType::Fp32));
        assert_eq!(config.raw.versions, Some(vec![1, 2]));
    }

    #[test]
    fn empty_config_takes_defaults() {
        let config = parse("").expect("empty is valid");
        assert_eq!(config.device, Device::Cpu);
        assert_eq!(config.instances, 1);
        assert_eq!(config.backend, BackendKind::OnnxRuntime);
        assert_eq!(config.raw.max_batch_size, None);
    }

    #[test]
    fn typos_name_the_file_table_and_key() {
        let errors = parse("max_batch_size = 4\n[dynamic_batching]\nmax_queue_delay = 5\n")
            .expect_err("typo");
        let text = errors[0].to_string();
        assert!(text.contains("/repo/m/config.toml"), "{text}");
        assert_eq!(errors[0].field, "dynamic_batching.max_queue_delay");
        assert!(text.contains("line 3"), "{text}");
        let errors = parse("max_batch_size = \"8\"\n").expect_err("wrong type");
        assert_eq!(errors[0].field, "max_batch_size");
        assert!(errors[0].message.contains("string"), "{}", errors[0]);
        let errors = parse("backend = \"tensorflow\"\ndevice = \"tpu\"\n").expect_err("unknown");
        assert_eq!(errors[0].field, "backend");
        assert!(
            errors[0].to_string().contains("onnxruntime"),
            "{}",
            errors[0]
        );
        assert_eq!(errors[1].field, "device");
        assert!(errors[1].to_string().contains("cuda"), "{}", errors[1]);
    }

    #[test]
    fn every_inconsistency_is_reported() {
        let errors = parse(
            r#"
max_batch_size = 4
instances = 0
[dynamic_batching]
preferred_batch_sizes = [2, 16]
max_queue_size = 0
[[input]]
name = "x"
datatype = "FLOAT"
dims = [0]
"#,
        )
        .expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "instances",
                "dynamic_batching.preferred_batch_sizes[1]",
                "dynamic_batching.max_queue_size",
                "input[0].datatype",
                "input[0].dims"
            ]
        );
    }

    #[test]
    fn the_example_model_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/model-config.toml");
        let config = ModelConfig::load(&path).expect("examples/model-config.toml parses");
        assert_eq!(config.raw.max_batch_size, Some(8));
        assert_eq!(config.inputs[0].dims, Some(vec![3, 224, 224]));
    }
}
