//! The backend contract: one synchronous model instance per OS thread. Each runtime (ONNX Runtime,
//! OpenVINO, TFLite/Edge TPU, DNA) is one file implementing [`Backend`] and declaring in its
//! [`ModelSignature`] what it supports, so the batcher can pad or split for it.
//!
//! - [`library`] finds native runtime libraries at run time (nothing is linked at build time);
//! - [`devices`] parses [`Device`] strings and probes what the box has (`inference-server devices`);
//! - [`onnxruntime`] is the ONNX Runtime backend (CPU, CUDA, TensorRT).
//!
//! [`load_instances`] loads a model `count` times (one instance per scheduler thread).

pub mod devices;
pub mod library;
pub mod onnxruntime;

use std::path::PathBuf;
use std::str::FromStr;

use inference_proto::DataType;

pub use self::devices::{Device, DeviceParseError};
use crate::tensor::Tensor;

/// Name, element type and per-sample dimensions of one model input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    /// Dimensions *without* the batch dimension when the model batches; -1 marks a dynamic one.
    pub dims: Vec<i64>,
}

/// How a loaded model instance accepts batches along dimension 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSupport {
    /// Any batch from 1 to `max` samples.
    Dynamic { max: usize },
    /// Exactly this many samples per run (Edge TPU: 1; DNA: its compiled batch). The batcher pads
    /// smaller batches and splits larger ones.
    Fixed(usize),
    /// The model has no batch dimension; inputs go as they are, one request per run.
    Unbatched,
}

/// What a loaded instance exposes and accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub batch: BatchSupport,
}

/// Why a backend failed to load or to run.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("runtime library unavailable: {0}")]
    LibraryUnavailable(String),
    #[error("device '{device}' unavailable: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    #[error("cannot load model '{path}': {reason}")]
    InvalidModel { path: String, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// The runtimes this build can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// ONNX Runtime (`onnxruntime`, alias `ort`): devices `cpu`, `cuda:N`, `tensorrt:N`.
    OnnxRuntime,
}

/// A backend name that this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend '{0}' (this build has: onnxruntime)")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "onnxruntime" | "ort" | "onnx" => Ok(BackendKind::OnnxRuntime),
            _ => Err(UnknownBackend(s.to_string())),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendKind::OnnxRuntime => f.write_str("onnxruntime"),
        }
    }
}

/// Everything a backend needs to load one instance of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// The model file (`.onnx` for ONNX Runtime).
    pub model_path: PathBuf,
    pub device: Device,
    /// Largest batch (samples along dimension 0) the scheduler will send; 0 = the model does not
    /// batch (Triton's convention): inputs go as they are, one request per run.
    pub max_batch_size: usize,
    /// How many instances of this model will be loaded; used to split the CPU threads among them.
    pub instances: usize,
    /// Threads inside one operator, per instance; `None` = available cores / `instances` (min 1).
    pub intra_op_threads: Option<usize>,
    /// Let idle intra-op threads spin-wait for the next operator. Off by default: on a small box
    /// the spinning threads take the cores the gRPC runtime and the other instances need, and
    /// with requests that are not back to back they burn a core per thread for nothing.
    pub intra_op_spinning: bool,
    /// Explicit runtime library path (file or folder), before `ORT_DYLIB_PATH` and the usual search.
    pub library_path: Option<PathBuf>,
}

impl LoadSpec {
    /// A spec with the defaults: CPU, no batching, one instance, default threads, library search.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        LoadSpec {
            model_path: model_path.into(),
            device: Device::Cpu,
            max_batch_size: 0,
            instances: 1,
            intra_op_threads: None,
            intra_op_spinning: false,
            library_path: None,
        }
    }

    /// The intra-op thread count this spec gives each instance.
    pub fn effective_intra_op_threads(&self) -> usize {
        self.intra_op_threads.filter(|n| *n > 0).unwrap_or_else(|| {
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(4);
            (cores / self.instances.max(1)).max(1)
        })
    }
}

/// Loads `count` instances (at least one) of a model with the given backend, one per scheduler
/// thread; the first failure is returned.
pub fn load_instances(
    kind: BackendKind,
    spec: &LoadSpec,
    count: usize,
) -> Result<Vec<Box<dyn Backend>>, BackendError> {
    (0..count.max(1))
        .map(|_| match kind {
            BackendKind::OnnxRuntime => {
                onnxruntime::OnnxRuntimeBackend::load(spec).map(|b| Box::new(b) as Box<dyn Backend>)
            }
        })
        .collect()
}

/// One loaded model instance. Backends are synchronous and never run on the async runtime.
pub trait Backend: Send {
    /// The instance's inputs, outputs and batching capability.
    fn signature(&self) -> &ModelSignature;
    /// A short device label reported to clients and metrics, e.g. `cpu` or `cuda:0`.
    fn device(&self) -> &str;
    /// Runs one batch. Inputs are in signature order with dimension 0 the batch (when batched);
    /// outputs come back in signature order.
    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError>;
}
