//! A model's `config.toml`: what the operator states about one model (backend, where its
//! instances run, batching, warm-up, optional tensor declarations) and, in a table named after
//! the backend (`[onnxruntime]`, `[openvino]`, ...), that runtime's own settings, which the
//! runtime reads itself. Anything left out is read from the model file. Unknown keys, in the
//! generic part and in the runtime's table, are refused with the file, key and line named.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use inference_proto::DataType;
use serde::Deserialize;

use crate::backend::registry;
use crate::backend::runtime::{ConfigTable, DeviceInfo, ModelRuntime, Runtime};
use crate::config::TomlErrorAt;

/// File name of a model's configuration inside its folder.
pub const CONFIG_FILE_NAME: &str = "config.toml";

/// Warm-up runs on zero inputs each instance does before the model reports READY, by default.
pub const DEFAULT_WARMUP_RUNS: usize = 1;

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

/// One `[[instance_group]]`: `count` instances on `device` (the runtime's own device name).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceGroupFile {
    /// Device name [default: the backend's default device].
    pub device: Option<String>,
    /// Instances on it, one OS thread each [default: 1].
    pub count: Option<usize>,
}

/// The generic part of a model's `config.toml` as written.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfigFile {
    /// Runtime name or alias [default: the first runtime of the build, onnxruntime].
    pub backend: Option<String>,
    /// Shorthand for one instance group: its device.
    pub device: Option<String>,
    /// Shorthand for one instance group: its instance count.
    pub instances: Option<usize>,
    /// Instances by device, Triton style; excludes `device` and `instances`.
    #[serde(default)]
    pub instance_group: Vec<InstanceGroupFile>,
    /// Largest batch (dimension 0) a request or executed batch may have; 0 = the model has no
    /// batch dimension. Read from the model when absent.
    pub max_batch_size: Option<usize>,
    /// Versions to serve; by default the highest numbered folder.
    pub versions: Option<Vec<u64>>,
    /// Runs on zero inputs per instance before the model serves [default: 1; 0 = none].
    pub warmup_runs: Option<usize>,
    /// Whether the server is ready only while this model is [default: true]; `false` lets a
    /// best-effort model fail or lose its device without taking the server out of readiness.
    pub required: Option<bool>,
    /// The p99 end-to-end latency the model should meet, milliseconds; exported as
    /// `inference_latency_objective_seconds` for the alert that watches it.
    pub latency_objective_ms: Option<f64>,
    pub dynamic_batching: Option<DynamicBatchingConfig>,
    #[serde(default)]
    pub input: Vec<TensorDeclaration>,
    #[serde(default)]
    pub output: Vec<TensorDeclaration>,
}

/// Instances of a model on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceGroup {
    pub device: DeviceInfo,
    pub count: usize,
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
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub file: PathBuf,
    pub raw: ModelConfigFile,
    pub runtime: &'static dyn Runtime,
    /// The runtime's settings from its table, which load the instances.
    pub settings: Arc<dyn ModelRuntime>,
    pub instance_groups: Vec<InstanceGroup>,
    pub warmup_runs: usize,
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
        let toml_error = |err: toml::de::Error| {
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
        };
        // The runtimes' tables come out first; the rest is the generic part.
        let mut root = toml::de::DeTable::parse(text).map_err(toml_error)?;
        let mut tables = Vec::new();
        for runtime in registry::runtimes() {
            if let Some(table) = root.get_mut().remove(runtime.name()) {
                tables.push((runtime, table));
            }
        }
        let raw =
            ModelConfigFile::deserialize(toml::de::Deserializer::from(root)).map_err(toml_error)?;

        let mut errors = Vec::new();
        let runtime = match raw.backend.as_deref().map(registry::find) {
            None => Some(registry::default_runtime()),
            Some(Ok(runtime)) => Some(runtime),
            Some(Err(err)) => {
                errors.push(error(path, "backend", err.to_string()));
                None
            }
        };
        let mut settings = None;
        if let Some(runtime) = runtime {
            let mut own = None;
            for (owner, table) in tables {
                if owner.name() == runtime.name() {
                    own = Some(table);
                } else {
                    errors.push(error(
                        path,
                        owner.name(),
                        format!(
                            "[{}] holds settings of the {} backend, but this model uses {}; remove the table or set backend = \"{}\"",
                            owner.name(),
                            owner.name(),
                            runtime.name(),
                            owner.name()
                        ),
                    ));
                }
            }
            match runtime.configure(own.map(ConfigTable::from)) {
                Ok(parsed) => settings = Some(Arc::from(parsed)),
                Err(err) => errors.extend(toml_error(err).into_iter().map(|mut e| {
                    if e.field == "(syntax)" {
                        e.field = runtime.name().to_string();
                    }
                    e
                })),
            }
        }
        let instance_groups = runtime
            .map(|runtime| instance_groups(path, &raw, runtime, &mut errors))
            .unwrap_or_default();
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
        if let Some(ms) = raw.latency_objective_ms {
            if !(ms.is_finite() && ms > 0.0) {
                errors.push(error(
                    path,
                    "latency_objective_ms",
                    format!("{ms} is not a positive number of milliseconds"),
                ));
            }
        }
        if let Some(batching) = &raw.dynamic_batching {
            check_batching(path, raw.max_batch_size, batching, &mut errors);
        }
        let inputs = declared(path, "input", &raw.input, &mut errors);
        let outputs = declared(path, "output", &raw.output, &mut errors);
        match (runtime, settings) {
            (Some(runtime), Some(settings)) if errors.is_empty() => Ok(ModelConfig {
                file: path.to_path_buf(),
                warmup_runs: raw.warmup_runs.unwrap_or(DEFAULT_WARMUP_RUNS),
                raw,
                runtime,
                settings,
                instance_groups,
                inputs,
                outputs,
            }),
            _ => Err(errors),
        }
    }

    /// Total instances over every group.
    pub fn instance_count(&self) -> usize {
        self.instance_groups.iter().map(|g| g.count).sum()
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

/// The instance groups, from `[[instance_group]]` or the `device`/`instances` shorthand.
fn instance_groups(
    path: &Path,
    raw: &ModelConfigFile,
    runtime: &dyn Runtime,
    errors: &mut Vec<ModelConfigError>,
) -> Vec<InstanceGroup> {
    let parse_device = |field: &str, name: Option<&str>, errors: &mut Vec<ModelConfigError>| {
        let name = name.unwrap_or(runtime.default_device());
        match runtime.parse_device(name) {
            Ok(device) => Some(device),
            Err(why) => {
                errors.push(error(
                    path,
                    field,
                    format!(
                        "{why} (the {} backend takes {})",
                        runtime.name(),
                        runtime.device_help()
                    ),
                ));
                None
            }
        }
    };
    if raw.instance_group.is_empty() {
        let device = parse_device("device", raw.device.as_deref(), errors);
        let count = raw.instances.unwrap_or(1);
        if count == 0 {
            errors.push(error(path, "instances", "must be at least 1".to_string()));
        }
        return device
            .map(|device| vec![InstanceGroup { device, count }])
            .unwrap_or_default();
    }
    let mut groups = Vec::new();
    for (i, group) in raw.instance_group.iter().enumerate() {
        let device = parse_device(
            &format!("instance_group[{i}].device"),
            group.device.as_deref(),
            errors,
        );
        let count = group.count.unwrap_or(1);
        if count == 0 {
            errors.push(error(
                path,
                &format!("instance_group[{i}].count"),
                "must be at least 1".to_string(),
            ));
        }
        if let Some(device) = device {
            groups.push(InstanceGroup { device, count });
        }
    }
    for (field, given) in [
        ("device", raw.device.is_some()),
        ("instances", raw.instances.is_some()),
    ] {
        if given {
            errors.push(error(
                path,
                field,
                "is shorthand for one instance group; with [[instance_group]] give each group's device and count there"
                    .to_string(),
            ));
        }
    }
    groups
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
    use crate::backend::runtime::DeviceKind;

    fn parse(text: &str) -> Result<ModelConfig, Vec<ModelConfigError>> {
        ModelConfig::parse(Path::new("/repo/m/config.toml"), text)
    }

    fn fields(errors: &[ModelConfigError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn full_example_parses() {
        let config = parse(
            r#"
backend = "onnxruntime"
device = "cuda:0"
max_batch_size = 8
instances = 2
versions = [1, 2]
warmup_runs = 3
[dynamic_batching]
max_queue_delay_us = 500
preferred_batch_sizes = [4, 8]
max_queue_size = 256
max_queue_bytes = 67108864
[[input]]
name = "x"
datatype = "FP32"
dims = [3, -1]
[onnxruntime]
intra_op_threads = 2
"#,
        )
        .expect("valid config");
        assert_eq!(config.runtime.name(), "onnxruntime");
        assert_eq!(config.instance_groups.len(), 1);
        assert_eq!(config.instance_groups[0].device.name, "cuda:0");
        assert_eq!(config.instance_groups[0].device.kind, DeviceKind::Gpu(0));
        assert_eq!(config.instance_count(), 2);
        assert_eq!(config.warmup_runs, 3);
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
        assert_eq!(config.runtime.name(), "onnxruntime");
        assert_eq!(config.instance_groups[0].device.name, "cpu");
        assert_eq!(config.instance_count(), 1);
        assert_eq!(config.warmup_runs, DEFAULT_WARMUP_RUNS);
        assert_eq!(config.raw.max_batch_size, None);
    }

    #[test]
    fn instance_groups_use_the_runtimes_device_names() {
        let config = parse(
            "backend = \"openvino\"\n[[instance_group]]\ndevice = \"cpu\"\ncount = 1\n[[instance_group]]\ndevice = \"GPU.0\"\ncount = 2\n",
        )
        .expect("valid");
        let groups: Vec<(&str, usize)> = config
            .instance_groups
            .iter()
            .map(|g| (g.device.name.as_str(), g.count))
            .collect();
        assert_eq!(groups, [("CPU", 1), ("GPU.0", 2)]);
        assert_eq!(config.instance_count(), 3);

        let errors = parse("device = \"cpu\"\n[[instance_group]]\ndevice = \"tpu\"\ncount = 0\n")
            .expect_err("invalid");
        assert_eq!(
            fields(&errors),
            [
                "instance_group[0].device",
                "instance_group[0].count",
                "device"
            ]
        );
        assert!(
            errors[0].message.contains("cpu, cuda[:N], tensorrt[:N]"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn runtime_tables_are_read_by_their_runtime_with_file_key_and_line() {
        let errors = parse("max_batch_size = 4\n[onnxruntime]\nintra_op_thread = 2\n")
            .expect_err("typo in the runtime table");
        assert_eq!(errors[0].field, "onnxruntime.intra_op_thread");
        assert!(errors[0].to_string().contains("line 3"), "{}", errors[0]);
        assert!(
            errors[0].to_string().contains("/repo/m/config.toml"),
            "{}",
            errors[0]
        );

        let errors = parse("[openvino]\nnum_streams = 1\n").expect_err("another backend's table");
        assert_eq!(fields(&errors), ["openvino"]);
        assert!(
            errors[0].message.contains("this model uses onnxruntime"),
            "{}",
            errors[0]
        );

        let errors = parse("intra_op_threads = 2\n").expect_err("old top-level key");
        assert_eq!(fields(&errors), ["intra_op_threads"]);
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
    }

    #[test]
    fn every_inconsistency_is_reported() {
        let errors = parse(
            r#"
max_batch_size = 4
instances = 0
latency_objective_ms = -5
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
        assert_eq!(
            fields(&errors),
            [
                "instances",
                "latency_objective_ms",
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
