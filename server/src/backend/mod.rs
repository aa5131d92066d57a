//! The backend boundary. Each runtime (ONNX Runtime, OpenVINO, ...) is one module that implements
//! two small traits and is listed once in [`registry::RUNTIMES`]:
//!
//! - [`runtime::Runtime`]: what the runtime is (name, aliases, Triton platform, the model files
//!   it takes in a version folder, its device names), how it reads its own `[<name>]` table of a
//!   model's `config.toml`, how it probes the box for `inference-server devices`, and how it
//!   loads an instance;
//! - [`Backend`]: one loaded model instance, run on its own OS thread: its signature (what it
//!   accepts and how it batches), inference, warm-up and a health check.
//!
//! Generic code (repository, model config, server settings, scheduler, API) names no runtime.
//! [`library`] finds native runtime libraries at run time (nothing is linked at build time) and
//! [`devices`] holds the probing helpers and the `inference-server devices` report.

/// Fills a struct of C function pointers from a library opened with `libloading`: each
/// `field = "symbol"` pair, in `unsafe` code whose caller vouches for the signatures. A missing
/// symbol returns `Err(String)` from the enclosing function, naming it and adding `$hint`.
macro_rules! bind_functions {
    ($lib:expr, $functions:ident, $hint:expr, $($field:ident = $name:literal),+ $(,)?) => {
        $functions {
            $($field: *$lib
                .get(concat!($name, "\0").as_bytes())
                .map_err(|e| format!("the library lacks {} ({e}); {}", $name, $hint))?,)+
        }
    };
}

pub mod devices;
pub mod dna;
#[cfg(feature = "test-backend")]
pub mod fake;
pub mod library;
pub mod nvml;
pub mod onnxruntime;
pub mod openvino;
pub mod registry;
pub mod runtime;
pub mod tflite;

use std::collections::BTreeMap;

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

/// How a quantized tensor's integers map to real values: `real = scale × (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantization {
    pub scale: f32,
    pub zero_point: i64,
}

/// What a loaded instance exposes and accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub batch: BatchSupport,
    /// The quantization of the quantized inputs and outputs, by name (reported in ModelConfig so
    /// that clients can quantize and dequantize).
    pub quantization: BTreeMap<String, Quantization>,
}

impl ModelSignature {
    /// The signature of a model whose inputs and outputs have full dims (dimension 0 included):
    /// [`batch_support`] decides how it batches, and batched dims lose dimension 0.
    pub fn from_full_dims(
        inputs: Vec<TensorSpec>,
        outputs: Vec<TensorSpec>,
        max_batch_size: usize,
    ) -> Result<Self, String> {
        if inputs.is_empty() || outputs.is_empty() {
            return Err("the model needs at least one input and one output".into());
        }
        let batch = batch_support(&inputs, &outputs, max_batch_size);
        let strip = |specs: Vec<TensorSpec>| -> Vec<TensorSpec> {
            if batch == BatchSupport::Unbatched {
                return specs;
            }
            specs
                .into_iter()
                .map(|s| TensorSpec {
                    dims: s.dims[1..].to_vec(),
                    ..s
                })
                .collect()
        };
        Ok(ModelSignature {
            inputs: strip(inputs),
            outputs: strip(outputs),
            batch,
            quantization: BTreeMap::new(),
        })
    }
}

/// How a model with these full dims batches, given the configured `max_batch_size`:
/// - 0 → [`BatchSupport::Unbatched`] (Triton's convention: no batch dimension);
/// - dimension 0 dynamic (-1) in every input → [`BatchSupport::Dynamic`] up to the max;
/// - the same fixed N in every input → [`BatchSupport::Fixed`]`(N)` (compiled for N samples);
/// - anything else (scalars, inputs that disagree) → unbatched, with a warning saying why.
pub fn batch_support(
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    max_batch_size: usize,
) -> BatchSupport {
    if max_batch_size == 0 {
        return BatchSupport::Unbatched;
    }
    let unbatched = |why: String| {
        tracing::warn!("model cannot batch ({why}); serving it unbatched, one request per run");
        BatchSupport::Unbatched
    };
    if let Some(t) = inputs.iter().chain(outputs).find(|t| t.dims.is_empty()) {
        return unbatched(format!("'{}' is a scalar", t.name));
    }
    let first: Vec<i64> = inputs.iter().map(|t| t.dims[0]).collect();
    if first.iter().all(|d| *d == -1) {
        BatchSupport::Dynamic {
            max: max_batch_size,
        }
    } else if first[0] > 0 && first.iter().all(|d| *d == first[0]) {
        match usize::try_from(first[0]) {
            Ok(n) => BatchSupport::Fixed(n),
            Err(_) => unbatched("batch dimension out of range".into()),
        }
    } else {
        unbatched(format!("inputs disagree on dimension 0: {first:?}"))
    }
}

/// Why a backend failed to load or to run. The variant, never the message, decides what happens
/// next: the API maps [`BackendError::InvalidInput`] to INVALID_ARGUMENT, takes the instance out
/// of service on [`BackendError::DeviceUnavailable`] (UNAVAILABLE) and answers INTERNAL otherwise.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// The runtime's library is missing or unusable (load time).
    #[error("runtime library unavailable: {0}")]
    LibraryUnavailable(String),
    /// The device is absent, gone or failed (load or run time).
    #[error("device '{device}' unavailable: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    /// The model file cannot be used (load time).
    #[error("cannot load model '{path}': {reason}")]
    InvalidModel { path: String, reason: String },
    /// This request's inputs are wrong (run time).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Anything else that failed while running.
    #[error("inference failed: {0}")]
    Internal(String),
}

/// One loaded model instance. Backends are synchronous and never run on the async runtime: each
/// instance lives on its own scheduler thread, which is the only caller of these methods.
pub trait Backend: Send {
    /// The instance's inputs, outputs and batching capability.
    fn signature(&self) -> &ModelSignature;

    /// The device label reported to clients and metrics, e.g. `cpu` or `GPU.0`.
    fn device(&self) -> &str;

    /// Runs one batch. Inputs are in signature order with dimension 0 the batch (when batched);
    /// outputs come back in signature order.
    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError>;

    /// Runs the model `runs` times on all-zero inputs before it serves (first runs compile
    /// kernels, allocate arenas, upload weights). The default builds the inputs from the
    /// signature: the instance's batch (1 for a dynamic one) and 1 for each dynamic dimension.
    fn warm_up(&mut self, runs: usize) -> Result<(), BackendError> {
        if runs == 0 {
            return Ok(());
        }
        let inputs = zero_inputs(self.signature());
        for _ in 0..runs {
            self.infer(inputs.clone())?;
        }
        Ok(())
    }

    /// Whether the device is still there and usable; polled by the scheduler while the instance
    /// is idle or out of service. [`BackendError::DeviceUnavailable`] takes it out of service, a
    /// later `Ok` puts it back. The default (a device that cannot vanish, like the CPU) is `Ok`.
    fn health(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    /// The runtime's own figures for the last run (DNA: simulated cycles, clock), sent as
    /// response parameters `runtime_<name>` and exported to Prometheus. The default is none.
    fn runtime_metrics(&self) -> &[(String, f64)] {
        &[]
    }
}

/// All-zero inputs of one run of a model with `signature` (see [`Backend::warm_up`]).
pub fn zero_inputs(signature: &ModelSignature) -> Vec<Tensor> {
    let batch: Option<i64> = match signature.batch {
        BatchSupport::Dynamic { .. } => Some(1),
        BatchSupport::Fixed(n) => Some(i64::try_from(n).unwrap_or(1)),
        BatchSupport::Unbatched => None,
    };
    signature
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<i64> = batch
                .into_iter()
                .chain(spec.dims.iter().map(|&d| if d < 0 { 1 } else { d }))
                .collect();
            let elements: usize = shape.iter().map(|&d| d.max(0) as usize).product();
            let data = match spec.datatype.element_size() {
                Some(size) => vec![0u8; elements * size],
                // BYTES: every element an empty string (a 4-byte zero length).
                None => vec![0u8; elements * 4],
            };
            Tensor {
                name: spec.name.clone(),
                datatype: spec.datatype,
                shape,
                data,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_support_follows_dimension_zero() {
        let dynamic = [spec("a", &[-1, 3]), spec("b", &[-1])];
        let out = [spec("y", &[-1, 3])];
        assert_eq!(
            batch_support(&dynamic, &out, 8),
            BatchSupport::Dynamic { max: 8 }
        );
        assert_eq!(batch_support(&dynamic, &out, 0), BatchSupport::Unbatched);
        assert_eq!(
            batch_support(&[spec("a", &[1, 3, 224, 224])], &out, 8),
            BatchSupport::Fixed(1)
        );
        assert_eq!(
            batch_support(&[spec("a", &[4, 3]), spec("b", &[4])], &out, 8),
            BatchSupport::Fixed(4)
        );
        assert_eq!(
            batch_support(&[spec("a", &[4, 3]), spec("b", &[-1])], &out, 8),
            BatchSupport::Unbatched
        );
        assert_eq!(
            batch_support(&[spec("a", &[])], &out, 8),
            BatchSupport::Unbatched
        );
        assert_eq!(
            batch_support(&dynamic, &[spec("s", &[])], 8),
            BatchSupport::Unbatched
        );
    }

    fn spec(name: &str, dims: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            dims: dims.to_vec(),
        }
    }

    #[test]
    fn zero_inputs_follow_batch_support_and_dynamic_dims() {
        let spec = |dims: &[i64]| TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            dims: dims.to_vec(),
        };
        let signature = |batch| ModelSignature {
            inputs: vec![spec(&[3, -1])],
            outputs: vec![],
            batch,
            quantization: BTreeMap::new(),
        };
        let shapes = |batch| {
            zero_inputs(&signature(batch))
                .into_iter()
                .map(|t| (t.shape.clone(), t.data.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shapes(BatchSupport::Dynamic { max: 8 }),
            [(vec![1, 3, 1], 12)]
        );
        assert_eq!(shapes(BatchSupport::Fixed(4)), [(vec![4, 3, 1], 48)]);
        assert_eq!(shapes(BatchSupport::Unbatched), [(vec![3, 1], 12)]);
    }
}
