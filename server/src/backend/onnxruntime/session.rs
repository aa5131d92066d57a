//! One ONNX Runtime instance: an `ort` session (`Session::run` takes `&mut self`, so one session
//! per instance thread) on the CPU or on an NVIDIA GPU through the CUDA or TensorRT execution
//! provider.
//!
//! **Batch dimension.** With `max_batch_size` 0 the model is [`BatchSupport::Unbatched`] and its
//! dims are reported in full. Otherwise dimension 0 of the inputs decides:
//! - dynamic (symbolic or -1) in every input → [`BatchSupport::Dynamic`] with the configured max;
//! - the same fixed number N in every input → [`BatchSupport::Fixed`]`(N)`: the model was exported
//!   for exactly N samples, the scheduler pads or splits to N;
//! - anything else (rank-0 inputs or outputs, inputs that disagree) cannot batch: the model is
//!   served [`BatchSupport::Unbatched`] and a warning says why.
//!
//! In the batched cases dims exclude dimension 0. Other symbolic dims are reported as -1.
//!
//! **Errors** are classified by ONNX Runtime's error code, never by message: a provider failure
//! or device reset is [`BackendError::DeviceUnavailable`], an invalid argument at run time is
//! [`BackendError::InvalidInput`]. CUDA and TensorRT need a library built with those providers
//! (the `onnxruntime-gpu` wheel); without one, loading fails with that message: there is no
//! silent fall-back to the CPU.

use std::borrow::Cow;

use inference_proto::DataType;
use ort::ep::{ExecutionProvider, TensorRT, CPU, CUDA};
use ort::error::ErrorCode;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Outlet, TensorElementType, ValueType};

use super::environment::{self, OrtLibrary};
use super::{OrtDevice, OrtSettings};
use crate::backend::runtime::LoadRequest;
use crate::backend::{Backend, BackendError, ModelSignature, TensorSpec};
use crate::tensor::Tensor;

/// One loaded ONNX model instance.
pub struct OnnxRuntimeBackend {
    session: Session,
    signature: ModelSignature,
    device: OrtDevice,
    label: String,
}

impl std::fmt::Debug for OnnxRuntimeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxRuntimeBackend")
            .field("signature", &self.signature)
            .field("device", &self.label)
            .finish_non_exhaustive()
    }
}

impl OnnxRuntimeBackend {
    /// Loads one instance: finds and initialises ONNX Runtime (once per process), registers the
    /// device's execution provider, and reads the model's signature.
    pub fn load(request: &LoadRequest<'_>, settings: &OrtSettings) -> Result<Self, BackendError> {
        let model_path = &request.model.model;
        let path_label = model_path.display().to_string();
        let invalid = |reason: String| BackendError::InvalidModel {
            path: path_label.clone(),
            reason,
        };
        if !model_path.is_file() {
            return Err(invalid("no such file".into()));
        }
        let device = OrtDevice::parse(&request.device.name).map_err(|reason| {
            BackendError::DeviceUnavailable {
                device: request.device.name.clone(),
                reason,
            }
        })?;
        let label = device.to_string();
        if let Some((option, devices)) = settings.misplaced_option(device) {
            return Err(invalid(format!(
                "onnxruntime.{option} applies to {devices}, and this instance runs on {label}"
            )));
        }
        let runtime = environment::load(request.libraries.get(super::LIBRARY))?;
        let unavailable = |reason: String| BackendError::DeviceUnavailable {
            device: label.clone(),
            reason,
        };
        let setup = |e: ort::Error<SessionBuilder>| {
            BackendError::LibraryUnavailable(format!("ONNX Runtime session options rejected: {e}"))
        };

        let threads = settings.effective_intra_op_threads(request.instances_on_device);
        let mut builder = Session::builder(&runtime.environment)
            .map_err(|e| {
                BackendError::LibraryUnavailable(format!("ONNX Runtime session setup failed: {e}"))
            })?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(setup)?
            .with_intra_threads(threads)
            .map_err(setup)?
            .with_intra_op_spinning(settings.intra_op_spinning)
            .map_err(setup)?
            .with_inter_threads(1)
            .map_err(setup)?
            .with_memory_pattern(settings.uses_cpu_arena())
            .map_err(setup)?;
        CPU::default()
            .with_arena_allocator(settings.uses_cpu_arena())
            .register(&mut builder)
            .map_err(|e| {
                BackendError::LibraryUnavailable(format!(
                    "ONNX Runtime CPU arena setting rejected: {e}"
                ))
            })?;

        let cuda = |id: i32| {
            let cuda = CUDA::default().with_device_id(id);
            match settings.gpu_mem_limit_mb {
                Some(mb) => cuda.with_memory_limit(mb.saturating_mul(1 << 20)),
                None => cuda,
            }
            .build()
            .error_on_failure()
        };
        builder = match device {
            OrtDevice::Cpu => builder,
            OrtDevice::Cuda(id) => {
                require_provider::<CUDA>(&runtime, &unavailable)?;
                builder
                    .with_execution_providers([cuda(gpu_id(id)?)])
                    .map_err(|e| unavailable(e.to_string()))?
            }
            OrtDevice::TensorRt(id) => {
                require_provider::<TensorRT>(&runtime, &unavailable)?;
                require_provider::<CUDA>(&runtime, &unavailable)?;
                let id = gpu_id(id)?;
                let mut tensorrt = TensorRT::default()
                    .with_device_id(id)
                    .with_fp16(settings.tensorrt_fp16);
                if let Some(mb) = settings.tensorrt_workspace_mb {
                    tensorrt = tensorrt.with_max_workspace_size(mb.saturating_mul(1 << 20));
                }
                if let Some(dir) = &settings.tensorrt_engine_cache {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        invalid(format!(
                            "onnxruntime.tensorrt_engine_cache {}: {e}",
                            dir.display()
                        ))
                    })?;
                    tensorrt = tensorrt
                        .with_engine_cache(true)
                        .with_engine_cache_path(dir.display());
                }
                // CUDA takes the nodes TensorRT cannot run.
                let eps = [tensorrt.build().error_on_failure(), cuda(id)];
                builder
                    .with_execution_providers(eps)
                    .map_err(|e| unavailable(e.to_string()))?
            }
        };
        if device != OrtDevice::Cpu && !settings.allow_cpu_fallback {
            builder = builder
                .with_config_entry("session.disable_cpu_ep_fallback", "1")
                .map_err(setup)?;
        }

        let session = builder
            .commit_from_file(model_path)
            .map_err(|e| match e.code() {
                ErrorCode::ExecutionProviderFailure | ErrorCode::DeviceReset => {
                    unavailable(e.to_string())
                }
                _ => invalid(e.to_string()),
            })?;
        let signature = read_signature(session.inputs(), session.outputs(), request.max_batch_size)
            .map_err(invalid)?;
        tracing::debug!(model = %path_label, device = %label, threads, ?signature, "loaded ONNX model instance");
        Ok(OnnxRuntimeBackend {
            session,
            signature,
            device,
            label,
        })
    }
}

fn require_provider<E: ExecutionProvider>(
    runtime: &OrtLibrary,
    unavailable: &impl Fn(String) -> BackendError,
) -> Result<(), BackendError> {
    if E::is_available().unwrap_or(false) {
        return Ok(());
    }
    Err(unavailable(format!(
        "ONNX Runtime {} at {} was built without {} (a CPU-only build); install the onnxruntime-gpu wheel \
         and point the server at its libonnxruntime.so (ORT_DYLIB_PATH, or `library` under [onnxruntime] \
         in the server config)",
        runtime.version,
        runtime.library.path.display(),
        E::NAME
    )))
}

fn gpu_id(id: u32) -> Result<i32, BackendError> {
    i32::try_from(id).map_err(|_| BackendError::DeviceUnavailable {
        device: format!("cuda:{id}"),
        reason: "device index out of range".into(),
    })
}

/// What a failed run means, from ONNX Runtime's error code.
fn run_error(device: OrtDevice, error: &ort::Error) -> BackendError {
    match error.code() {
        ErrorCode::InvalidArgument => BackendError::InvalidInput(error.to_string()),
        ErrorCode::DeviceReset | ErrorCode::ExecutionProviderFailure => {
            BackendError::DeviceUnavailable {
                device: device.to_string(),
                reason: error.to_string(),
            }
        }
        _ => BackendError::Internal(error.to_string()),
    }
}

/// Maps an ONNX element type to the protocol's; `None` for types the server cannot carry.
pub fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        _ => return None,
    })
}

/// Name, datatype and full dims (-1 for dynamic) of one model input or output.
fn outlet_spec(outlet: &Outlet) -> Result<TensorSpec, String> {
    match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let datatype = datatype_of(*ty).ok_or_else(|| {
                format!(
                    "'{}' has element type {ty}, which the server does not support",
                    outlet.name()
                )
            })?;
            let dims = shape.iter().map(|d| if *d < 0 { -1 } else { *d }).collect();
            Ok(TensorSpec {
                name: outlet.name().to_string(),
                datatype,
                dims,
            })
        }
        other => Err(format!(
            "'{}' is a {other}, not a tensor; only tensors are supported",
            outlet.name()
        )),
    }
}

/// Builds the signature and decides the batch support (see the module docs).
fn read_signature(
    inputs: &[Outlet],
    outputs: &[Outlet],
    max_batch_size: usize,
) -> Result<ModelSignature, String> {
    let inputs = inputs
        .iter()
        .map(outlet_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = outputs
        .iter()
        .map(outlet_spec)
        .collect::<Result<Vec<_>, _>>()?;
    ModelSignature::from_full_dims(inputs, outputs, max_batch_size)
}

fn le_array<const N: usize>(chunk: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(chunk);
    out
}

/// An ort value holding `tensor`'s elements (little-endian raw bytes).
fn to_value(tensor: Tensor) -> Result<DynValue, String> {
    let size = tensor.datatype.element_size().ok_or_else(|| {
        format!(
            "input '{}': datatype {} is not supported",
            tensor.name, tensor.datatype
        )
    })?;
    let elements = tensor
        .shape
        .iter()
        .try_fold(1usize, |acc, d| {
            usize::try_from(*d).ok().and_then(|d| acc.checked_mul(d))
        })
        .ok_or_else(|| format!("input '{}': invalid shape {:?}", tensor.name, tensor.shape))?;
    if elements.checked_mul(size) != Some(tensor.data.len()) {
        return Err(format!(
            "input '{}': {} bytes do not match shape {:?} of {}",
            tensor.name,
            tensor.data.len(),
            tensor.shape,
            tensor.datatype
        ));
    }
    let Tensor {
        name,
        datatype,
        shape,
        data,
    } = tensor;
    macro_rules! typed {
        ($ty:ty, $n:literal, $conv:expr) => {{
            let values: Vec<$ty> = data
                .chunks_exact($n)
                .map(|c| $conv(le_array::<$n>(c)))
                .collect();
            ort::value::Tensor::from_array((shape, values)).map(|v| v.into_dyn())
        }};
    }
    let value = match datatype {
        DataType::Bool => ort::value::Tensor::from_array((
            shape,
            data.iter().map(|b| *b != 0).collect::<Vec<_>>(),
        ))
        .map(|v| v.into_dyn()),
        DataType::Uint8 => ort::value::Tensor::from_array((shape, data)).map(|v| v.into_dyn()),
        DataType::Int8 => typed!(i8, 1, i8::from_le_bytes),
        DataType::Uint16 => typed!(u16, 2, u16::from_le_bytes),
        DataType::Int16 => typed!(i16, 2, i16::from_le_bytes),
        DataType::Uint32 => typed!(u32, 4, u32::from_le_bytes),
        DataType::Int32 => typed!(i32, 4, i32::from_le_bytes),
        DataType::Uint64 => typed!(u64, 8, u64::from_le_bytes),
        DataType::Int64 => typed!(i64, 8, i64::from_le_bytes),
        DataType::Fp16 => typed!(half::f16, 2, |b| half::f16::from_bits(u16::from_le_bytes(
            b
        ))),
        DataType::Bf16 => typed!(half::bf16, 2, |b| half::bf16::from_bits(
            u16::from_le_bytes(b)
        )),
        DataType::Fp32 => typed!(f32, 4, f32::from_le_bytes),
        DataType::Fp64 => typed!(f64, 8, f64::from_le_bytes),
        DataType::Bytes => return Err(format!("input '{name}': BYTES tensors are not supported")),
    };
    value.map_err(|e| format!("cannot build the input tensor: {e}"))
}

/// Copies an ort output into an owned tensor of little-endian raw bytes.
fn from_value(name: &str, value: &DynValue) -> Result<Tensor, String> {
    let ty = value
        .dtype()
        .tensor_type()
        .ok_or_else(|| format!("output '{name}' is not a tensor"))?;
    let datatype = datatype_of(ty)
        .ok_or_else(|| format!("output '{name}' has unsupported element type {ty}"))?;
    let extract_err = |e: ort::Error| format!("cannot read output '{name}': {e}");
    macro_rules! bytes {
        ($ty:ty, $to:expr) => {{
            let (shape, values) = value.try_extract_tensor::<$ty>().map_err(extract_err)?;
            (
                shape.to_vec(),
                values.iter().flat_map(|v| $to(*v)).collect::<Vec<u8>>(),
            )
        }};
    }
    let (shape, data) = match datatype {
        DataType::Bool => bytes!(bool, |v: bool| [u8::from(v)]),
        DataType::Uint8 => bytes!(u8, |v: u8| [v]),
        DataType::Int8 => bytes!(i8, i8::to_le_bytes),
        DataType::Uint16 => bytes!(u16, u16::to_le_bytes),
        DataType::Int16 => bytes!(i16, i16::to_le_bytes),
        DataType::Uint32 => bytes!(u32, u32::to_le_bytes),
        DataType::Int32 => bytes!(i32, i32::to_le_bytes),
        DataType::Uint64 => bytes!(u64, u64::to_le_bytes),
        DataType::Int64 => bytes!(i64, i64::to_le_bytes),
        DataType::Fp16 => bytes!(half::f16, |v: half::f16| v.to_bits().to_le_bytes()),
        DataType::Bf16 => bytes!(half::bf16, |v: half::bf16| v.to_bits().to_le_bytes()),
        DataType::Fp32 => bytes!(f32, f32::to_le_bytes),
        DataType::Fp64 => bytes!(f64, f64::to_le_bytes),
        DataType::Bytes => {
            return Err(format!(
                "output '{name}' is a string tensor, which is not supported"
            ))
        }
    };
    Ok(Tensor {
        name: name.to_string(),
        datatype,
        shape,
        data,
    })
}

impl Backend for OnnxRuntimeBackend {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn device(&self) -> &str {
        &self.label
    }

    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let specs = &self.signature.inputs;
        if inputs.len() != specs.len() {
            return Err(BackendError::InvalidInput(format!(
                "expected {} inputs, got {}",
                specs.len(),
                inputs.len()
            )));
        }
        let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (tensor, spec) in inputs.into_iter().zip(specs) {
            if tensor.datatype != spec.datatype {
                return Err(BackendError::InvalidInput(format!(
                    "input '{}' is {}, the model expects {}",
                    spec.name, tensor.datatype, spec.datatype
                )));
            }
            let value = to_value(tensor).map_err(BackendError::InvalidInput)?;
            feed.push((Cow::Owned(spec.name.clone()), value.into()));
        }
        let outputs = self
            .session
            .run(feed)
            .map_err(|e| run_error(self.device, &e))?;
        self.signature
            .outputs
            .iter()
            .map(|spec| {
                let value = outputs.get(&spec.name).ok_or_else(|| {
                    BackendError::Internal(format!("the model produced no output '{}'", spec.name))
                })?;
                from_value(&spec.name, value).map_err(BackendError::Internal)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_types_map_to_protocol_datatypes() {
        assert_eq!(
            datatype_of(TensorElementType::Float32),
            Some(DataType::Fp32)
        );
        assert_eq!(
            datatype_of(TensorElementType::Float16),
            Some(DataType::Fp16)
        );
        assert_eq!(datatype_of(TensorElementType::Bool), Some(DataType::Bool));
        assert_eq!(datatype_of(TensorElementType::String), None);
        assert_eq!(datatype_of(TensorElementType::Complex64), None);
    }
}
