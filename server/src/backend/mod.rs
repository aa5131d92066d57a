//! The backend contract: one synchronous model instance per OS thread. Each runtime (ONNX Runtime,
//! OpenVINO, TFLite/Edge TPU, DNA) is one file implementing [`Backend`] and declaring in its
//! [`ModelSignature`] what it supports, so the batcher can pad or split for it.

use inference_proto::DataType;

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
