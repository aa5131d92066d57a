//! Checks a `ModelInferRequest` against a model's signature and converts it into raw tensors, and
//! turns a model's output tensors back into a `ModelInferResponse`. Pure functions: no I/O.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use inference_proto::inference::infer_parameter::ParameterChoice;
use inference_proto::inference::model_infer_request::InferInputTensor;
use inference_proto::inference::model_infer_response::InferOutputTensor;
use inference_proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
};
use inference_proto::DataType;

use crate::backend::{ModelSignature, TensorSpec};
use crate::tensor::Tensor;

/// Request parameter (Triton's) holding a per-request timeout in microseconds.
pub const TIMEOUT_PARAMETER: &str = "timeout";

/// Response parameter: µs the request waited in the batch queue.
pub const QUEUE_TIME_PARAMETER: &str = "queue_time_us";
/// Response parameter: µs the backend spent on the batch this request ran in.
pub const COMPUTE_TIME_PARAMETER: &str = "compute_time_us";
/// Prefix of the runtime's own figures in the response parameters (`runtime_total_sim_cycles`).
pub const RUNTIME_PARAMETER_PREFIX: &str = "runtime_";
/// Response parameter: µs from the server receiving the request to sending the answer.
pub const SERVER_TIME_PARAMETER: &str = "server_time_us";
/// Response parameter: samples in the batch that was executed (after batching, padding, splitting).
pub const BATCH_SIZE_PARAMETER: &str = "batch_size";
/// Response parameter: device the batch ran on, e.g. `cpu` or `cuda:0`.
pub const DEVICE_PARAMETER: &str = "device";
/// Response parameter: µs spent decoding and checking the request and gathering its batch.
pub const COMPUTE_INPUT_TIME_PARAMETER: &str = "compute_input_time_us";
/// Response parameter: µs spent splitting the batch's outputs back to this request.
pub const COMPUTE_OUTPUT_TIME_PARAMETER: &str = "compute_output_time_us";

/// What a model accepts, as the validator needs it.
#[derive(Debug, Clone, Copy)]
pub struct InferTarget<'a> {
    pub signature: &'a ModelSignature,
    /// Largest batch a request may carry; 0 when the model has no batch dimension.
    pub max_batch_size: usize,
}

/// A request that passed validation: inputs in signature order as raw tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedRequest {
    pub id: String,
    pub inputs: Vec<Tensor>,
    /// Samples along dimension 0 (1 for a model without a batch dimension).
    pub batch_size: usize,
    /// Indices into the signature's outputs, in the order the client asked for them.
    pub outputs: Vec<usize>,
    /// The `timeout` request parameter, if given.
    pub timeout: Option<Duration>,
}

/// Why a request cannot run; every message says what was wrong and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("request mixes raw_input_contents with typed contents (input '{input}' has contents); send every input either raw or typed")]
    MixedContents { input: String },
    #[error("request has {raw} raw_input_contents entries but {inputs} inputs; send one raw entry per input, in input order")]
    RawCount { raw: usize, inputs: usize },
    #[error("unknown input '{name}'; the model's inputs are {expected}")]
    UnknownInput { name: String, expected: String },
    #[error("input '{name}' is given twice")]
    DuplicateInput { name: String },
    #[error("missing input '{name}' ({datatype}, shape {shape})")]
    MissingInput {
        name: String,
        datatype: DataType,
        shape: String,
    },
    #[error("input '{name}' has datatype '{got}' but the model expects {expected}")]
    Datatype {
        name: String,
        got: String,
        expected: DataType,
    },
    #[error("input '{name}' has shape {got:?} but the model expects {expected}")]
    Shape {
        name: String,
        got: Vec<i64>,
        expected: String,
    },
    #[error("input '{name}' has batch size {batch} but this model accepts 1 to {max}")]
    BatchSize {
        name: String,
        batch: i64,
        max: usize,
    },
    #[error("input '{name}' has batch size {batch} but input '{first}' has {first_batch}; all inputs need the same dimension 0")]
    BatchMismatch {
        name: String,
        batch: i64,
        first: String,
        first_batch: i64,
    },
    #[error("input '{name}' has {got} bytes but shape {shape:?} of {datatype} needs {expected}")]
    ByteLength {
        name: String,
        got: usize,
        expected: usize,
        shape: Vec<i64>,
        datatype: DataType,
    },
    #[error("input '{name}' has {got} elements in contents but shape {shape:?} needs {expected}")]
    ElementCount {
        name: String,
        got: usize,
        expected: usize,
        shape: Vec<i64>,
    },
    #[error("input '{name}' is {datatype}: put its values in contents.{field}")]
    ContentsField {
        name: String,
        datatype: DataType,
        field: &'static str,
    },
    #[error("input '{name}' is {datatype}, which has no typed contents field; send it in raw_input_contents")]
    RawOnly { name: String, datatype: DataType },
    #[error("input '{name}': element {index} = {value} does not fit in {datatype}")]
    OutOfRange {
        name: String,
        index: usize,
        value: i128,
        datatype: DataType,
    },
    #[error("input '{name}' has no data; send it in contents or raw_input_contents")]
    NoData { name: String },
    #[error("input '{name}' BYTES data is malformed: {reason}")]
    BytesEncoding { name: String, reason: String },
    #[error("shape of input '{name}' is too large")]
    TooLarge { name: String },
    #[error("unknown requested output '{name}'; the model's outputs are {expected}")]
    UnknownOutput { name: String, expected: String },
    #[error("output '{name}' is requested twice")]
    DuplicateOutput { name: String },
    #[error("request parameter '{name}': {reason}")]
    Parameter { name: String, reason: String },
}

/// Validates `request` for `target` and converts its inputs to raw tensors in signature order.
pub fn validate(
    request: ModelInferRequest,
    target: InferTarget<'_>,
) -> Result<ValidatedRequest, InvalidRequest> {
    let ModelInferRequest {
        id,
        parameters,
        inputs,
        outputs,
        raw_input_contents,
        ..
    } = request;
    let timeout = timeout_parameter(&parameters)?;
    let use_raw = !raw_input_contents.is_empty();
    if use_raw {
        if let Some(typed) = inputs.iter().find(|i| has_contents(i)) {
            return Err(InvalidRequest::MixedContents {
                input: typed.name.clone(),
            });
        }
        if raw_input_contents.len() != inputs.len() {
            return Err(InvalidRequest::RawCount {
                raw: raw_input_contents.len(),
                inputs: inputs.len(),
            });
        }
    }
    let signature = target.signature;
    let batched = target.max_batch_size > 0;
    let mut slots: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    let mut batch: Option<(String, i64)> = None;
    let mut raw_iter = raw_input_contents.into_iter();
    for input in inputs {
        let raw = raw_iter.next();
        let Some(index) = signature.inputs.iter().position(|s| s.name == input.name) else {
            return Err(InvalidRequest::UnknownInput {
                name: input.name,
                expected: names(&signature.inputs),
            });
        };
        if slots[index].is_some() {
            return Err(InvalidRequest::DuplicateInput { name: input.name });
        }
        let spec = &signature.inputs[index];
        check_datatype(&input, spec)?;
        check_shape(&input, spec, target.max_batch_size)?;
        if batched {
            let this = input.shape[0];
            match &batch {
                Some((first, first_batch)) if *first_batch != this => {
                    return Err(InvalidRequest::BatchMismatch {
                        name: input.name,
                        batch: this,
                        first: first.clone(),
                        first_batch: *first_batch,
                    });
                }
                Some(_) => {}
                None => batch = Some((input.name.clone(), this)),
            }
        }
        let elements = element_count(&input)?;
        let data = match raw {
            Some(bytes) => check_raw(&input, spec.datatype, elements, bytes)?,
            None => typed_to_raw(&input, spec.datatype, elements)?,
        };
        slots[index] = Some(Tensor {
            name: input.name,
            datatype: spec.datatype,
            shape: input.shape,
            data,
        });
    }
    let mut tensors = Vec::with_capacity(slots.len());
    for (slot, spec) in slots.into_iter().zip(&signature.inputs) {
        match slot {
            Some(tensor) => tensors.push(tensor),
            None => {
                return Err(InvalidRequest::MissingInput {
                    name: spec.name.clone(),
                    datatype: spec.datatype,
                    shape: expected_shape(spec, target.max_batch_size),
                })
            }
        }
    }
    let outputs = requested_outputs(
        outputs.into_iter().map(|o| o.name).collect(),
        &signature.outputs,
    )?;
    let batch_size = batch.map_or(1, |(_, b)| usize::try_from(b).unwrap_or(1));
    Ok(ValidatedRequest {
        id,
        inputs: tensors,
        batch_size,
        outputs,
        timeout,
    })
}

/// Server-side timings reported with each answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseTimings {
    pub queue: Duration,
    /// Decoding and checking the request, and gathering its batch.
    pub compute_input: Duration,
    pub compute: Duration,
    /// Splitting the batch's outputs (the response encoding comes after).
    pub compute_output: Duration,
    pub server: Duration,
    pub batch_size: usize,
    pub device: String,
    /// The runtime's own figures (`runtime_<name>` parameters).
    pub runtime_metrics: Vec<(String, f64)>,
}

/// Builds the answer: the requested outputs (all of them when none was named) as
/// `raw_output_contents`, with the timings as response parameters.
pub fn build_response(
    model_name: &str,
    model_version: &str,
    validated_outputs: &[usize],
    id: String,
    outputs: Vec<Tensor>,
    timings: &ResponseTimings,
) -> ModelInferResponse {
    let mut slots: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
    let mut response = ModelInferResponse {
        model_name: model_name.to_string(),
        model_version: model_version.to_string(),
        id,
        parameters: timing_parameters(timings),
        outputs: Vec::with_capacity(validated_outputs.len()),
        raw_output_contents: Vec::with_capacity(validated_outputs.len()),
    };
    for &index in validated_outputs {
        if let Some(tensor) = slots.get_mut(index).and_then(Option::take) {
            response.outputs.push(InferOutputTensor {
                name: tensor.name,
                datatype: tensor.datatype.as_str().to_string(),
                shape: tensor.shape,
                parameters: HashMap::new(),
                contents: None,
            });
            response.raw_output_contents.push(tensor.data);
        }
    }
    response
}

fn timing_parameters(timings: &ResponseTimings) -> HashMap<String, InferParameter> {
    let micros = |d: Duration| int64(i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let mut parameters = HashMap::from([
        (QUEUE_TIME_PARAMETER.to_string(), micros(timings.queue)),
        (COMPUTE_TIME_PARAMETER.to_string(), micros(timings.compute)),
        (
            COMPUTE_INPUT_TIME_PARAMETER.to_string(),
            micros(timings.compute_input),
        ),
        (
            COMPUTE_OUTPUT_TIME_PARAMETER.to_string(),
            micros(timings.compute_output),
        ),
        (SERVER_TIME_PARAMETER.to_string(), micros(timings.server)),
        (
            BATCH_SIZE_PARAMETER.to_string(),
            int64(i64::try_from(timings.batch_size).unwrap_or(i64::MAX)),
        ),
        (
            DEVICE_PARAMETER.to_string(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(timings.device.clone())),
            },
        ),
    ]);
    for (name, value) in &timings.runtime_metrics {
        parameters.insert(
            format!("{RUNTIME_PARAMETER_PREFIX}{name}"),
            InferParameter {
                parameter_choice: Some(ParameterChoice::DoubleParam(*value)),
            },
        );
    }
    parameters
}

fn int64(value: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(value)),
    }
}

fn timeout_parameter(
    parameters: &HashMap<String, InferParameter>,
) -> Result<Option<Duration>, InvalidRequest> {
    let Some(parameter) = parameters.get(TIMEOUT_PARAMETER) else {
        return Ok(None);
    };
    let bad = |reason: String| InvalidRequest::Parameter {
        name: TIMEOUT_PARAMETER.to_string(),
        reason,
    };
    let micros = match parameter.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => {
            u64::try_from(v).map_err(|_| bad(format!("{v} is negative; give microseconds >= 0")))?
        }
        Some(ParameterChoice::Uint64Param(v)) => v,
        _ => {
            return Err(bad(
                "must be an int64 or uint64 number of microseconds".to_string()
            ))
        }
    };
    // Triton treats 0 as "no timeout".
    Ok((micros > 0).then(|| Duration::from_micros(micros)))
}

fn has_contents(input: &InferInputTensor) -> bool {
    input.contents.as_ref().is_some_and(|c| {
        !(c.bool_contents.is_empty()
            && c.int_contents.is_empty()
            && c.int64_contents.is_empty()
            && c.uint_contents.is_empty()
            && c.uint64_contents.is_empty()
            && c.fp32_contents.is_empty()
            && c.fp64_contents.is_empty()
            && c.bytes_contents.is_empty())
    })
}

fn names(specs: &[TensorSpec]) -> String {
    let quoted: Vec<String> = specs.iter().map(|s| format!("'{}'", s.name)).collect();
    quoted.join(", ")
}

fn check_datatype(input: &InferInputTensor, spec: &TensorSpec) -> Result<(), InvalidRequest> {
    match input.datatype.parse::<DataType>() {
        Ok(dt) if dt == spec.datatype => Ok(()),
        _ => Err(InvalidRequest::Datatype {
            name: input.name.clone(),
            got: input.datatype.clone(),
            expected: spec.datatype,
        }),
    }
}

/// The shape a client must send, e.g. `[1..=8, 3, -1]` (-1: any size).
fn expected_shape(spec: &TensorSpec, max_batch_size: usize) -> String {
    let mut text = String::from("[");
    if max_batch_size > 0 {
        let _ = write!(text, "1..={max_batch_size}");
        if !spec.dims.is_empty() {
            text.push_str(", ");
        }
    }
    let dims: Vec<String> = spec.dims.iter().map(i64::to_string).collect();
    text.push_str(&dims.join(", "));
    text.push(']');
    if spec.dims.contains(&-1) {
        text.push_str(" (-1: any size)");
    }
    text
}

fn check_shape(
    input: &InferInputTensor,
    spec: &TensorSpec,
    max_batch_size: usize,
) -> Result<(), InvalidRequest> {
    let shape_error = || InvalidRequest::Shape {
        name: input.name.clone(),
        got: input.shape.clone(),
        expected: expected_shape(spec, max_batch_size),
    };
    let batched = max_batch_size > 0;
    let rank = spec.dims.len() + usize::from(batched);
    if input.shape.len() != rank {
        return Err(shape_error());
    }
    let sample_dims = if batched {
        let batch = input.shape[0];
        if batch < 1 || usize::try_from(batch).map_or(true, |b| b > max_batch_size) {
            return Err(InvalidRequest::BatchSize {
                name: input.name.clone(),
                batch,
                max: max_batch_size,
            });
        }
        &input.shape[1..]
    } else {
        &input.shape[..]
    };
    let fits = sample_dims
        .iter()
        .zip(&spec.dims)
        .all(|(&got, &want)| got >= 0 && (want < 0 || got == want));
    if fits {
        Ok(())
    } else {
        Err(shape_error())
    }
}

fn element_count(input: &InferInputTensor) -> Result<usize, InvalidRequest> {
    input.shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| InvalidRequest::TooLarge {
                name: input.name.clone(),
            })
    })
}

fn check_raw(
    input: &InferInputTensor,
    datatype: DataType,
    elements: usize,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, InvalidRequest> {
    match datatype.element_size() {
        Some(size) => {
            let expected = elements
                .checked_mul(size)
                .ok_or_else(|| InvalidRequest::TooLarge {
                    name: input.name.clone(),
                })?;
            if bytes.len() != expected {
                return Err(InvalidRequest::ByteLength {
                    name: input.name.clone(),
                    got: bytes.len(),
                    expected,
                    shape: input.shape.clone(),
                    datatype,
                });
            }
        }
        None => check_bytes_elements(&input.name, &bytes, elements)?,
    }
    Ok(bytes)
}

/// Checks that BYTES raw data is exactly `elements` length-prefixed strings.
fn check_bytes_elements(name: &str, bytes: &[u8], elements: usize) -> Result<(), InvalidRequest> {
    let malformed = |reason: String| InvalidRequest::BytesEncoding {
        name: name.to_string(),
        reason,
    };
    let mut rest = bytes;
    let mut count = 0usize;
    while !rest.is_empty() {
        let Some((prefix, tail)) = rest.split_first_chunk::<4>() else {
            return Err(malformed(format!(
                "element {count} has a truncated 4-byte length prefix"
            )));
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        if tail.len() < len {
            return Err(malformed(format!(
                "element {count} declares {len} bytes but only {} remain",
                tail.len()
            )));
        }
        rest = &tail[len..];
        count += 1;
    }
    if count != elements {
        return Err(malformed(format!(
            "holds {count} length-prefixed elements but the shape needs {elements}"
        )));
    }
    Ok(())
}

fn typed_to_raw(
    input: &InferInputTensor,
    datatype: DataType,
    elements: usize,
) -> Result<Vec<u8>, InvalidRequest> {
    let empty = InferTensorContents::default();
    let contents = input.contents.as_ref().unwrap_or(&empty);
    if !has_contents(input) && elements > 0 {
        return Err(InvalidRequest::NoData {
            name: input.name.clone(),
        });
    }
    let name = &input.name;
    let wrong_field = |field: &'static str| InvalidRequest::ContentsField {
        name: name.clone(),
        datatype,
        field,
    };
    let count = |got: usize| {
        if got == elements {
            Ok(())
        } else {
            Err(InvalidRequest::ElementCount {
                name: name.clone(),
                got,
                expected: elements,
                shape: input.shape.clone(),
            })
        }
    };
    let only = |field: &'static str, len: usize| -> Result<(), InvalidRequest> {
        let total = contents.bool_contents.len()
            + contents.int_contents.len()
            + contents.int64_contents.len()
            + contents.uint_contents.len()
            + contents.uint64_contents.len()
            + contents.fp32_contents.len()
            + contents.fp64_contents.len()
            + contents.bytes_contents.len();
        if total != len {
            return Err(wrong_field(field));
        }
        count(len)
    };
    let range = |index: usize, value: i128| InvalidRequest::OutOfRange {
        name: name.clone(),
        index,
        value,
        datatype,
    };
    match datatype {
        DataType::Bool => {
            only("bool_contents", contents.bool_contents.len())?;
            Ok(contents
                .bool_contents
                .iter()
                .map(|&b| u8::from(b))
                .collect())
        }
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => {
            only("uint_contents", contents.uint_contents.len())?;
            let mut out = Vec::with_capacity(elements * 4);
            for (i, &v) in contents.uint_contents.iter().enumerate() {
                match datatype {
                    DataType::Uint8 => {
                        out.push(u8::try_from(v).map_err(|_| range(i, v.into()))?);
                    }
                    DataType::Uint16 => out.extend_from_slice(
                        &u16::try_from(v)
                            .map_err(|_| range(i, v.into()))?
                            .to_le_bytes(),
                    ),
                    _ => out.extend_from_slice(&v.to_le_bytes()),
                }
            }
            Ok(out)
        }
        DataType::Int8 | DataType::Int16 | DataType::Int32 => {
            only("int_contents", contents.int_contents.len())?;
            let mut out = Vec::with_capacity(elements * 4);
            for (i, &v) in contents.int_contents.iter().enumerate() {
                match datatype {
                    DataType::Int8 => out.extend_from_slice(
                        &i8::try_from(v)
                            .map_err(|_| range(i, v.into()))?
                            .to_le_bytes(),
                    ),
                    DataType::Int16 => out.extend_from_slice(
                        &i16::try_from(v)
                            .map_err(|_| range(i, v.into()))?
                            .to_le_bytes(),
                    ),
                    _ => out.extend_from_slice(&v.to_le_bytes()),
                }
            }
            Ok(out)
        }
        DataType::Int64 => {
            only("int64_contents", contents.int64_contents.len())?;
            Ok(le_bytes(&contents.int64_contents, |v| v.to_le_bytes()))
        }
        DataType::Uint64 => {
            only("uint64_contents", contents.uint64_contents.len())?;
            Ok(le_bytes(&contents.uint64_contents, |v| v.to_le_bytes()))
        }
        DataType::Fp32 => {
            only("fp32_contents", contents.fp32_contents.len())?;
            Ok(le_bytes(&contents.fp32_contents, |v| v.to_le_bytes()))
        }
        DataType::Fp64 => {
            only("fp64_contents", contents.fp64_contents.len())?;
            Ok(le_bytes(&contents.fp64_contents, |v| v.to_le_bytes()))
        }
        DataType::Bytes => {
            only("bytes_contents", contents.bytes_contents.len())?;
            let mut out = Vec::new();
            for (i, element) in contents.bytes_contents.iter().enumerate() {
                let len =
                    u32::try_from(element.len()).map_err(|_| range(i, element.len() as i128))?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(element);
            }
            Ok(out)
        }
        DataType::Fp16 | DataType::Bf16 => Err(InvalidRequest::RawOnly {
            name: name.clone(),
            datatype,
        }),
    }
}

fn le_bytes<T: Copy, const N: usize>(values: &[T], to_bytes: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_bytes(v)).collect()
}

fn requested_outputs(
    requested: Vec<String>,
    specs: &[TensorSpec],
) -> Result<Vec<usize>, InvalidRequest> {
    if requested.is_empty() {
        return Ok((0..specs.len()).collect());
    }
    let mut indices = Vec::with_capacity(requested.len());
    for name in requested {
        let Some(index) = specs.iter().position(|s| s.name == name) else {
            return Err(InvalidRequest::UnknownOutput {
                name,
                expected: names(specs),
            });
        };
        if indices.contains(&index) {
            return Err(InvalidRequest::DuplicateOutput { name });
        }
        indices.push(index);
    }
    Ok(indices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BatchSupport;
    use inference_proto::inference::model_infer_request::InferRequestedOutputTensor;

    fn spec(name: &str, datatype: DataType, dims: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.to_string(),
            datatype,
            dims: dims.to_vec(),
        }
    }

    fn signature() -> ModelSignature {
        ModelSignature {
            inputs: vec![
                spec("a", DataType::Fp32, &[3]),
                spec("b", DataType::Int8, &[-1]),
            ],
            outputs: vec![
                spec("sum", DataType::Fp32, &[3]),
                spec("prod", DataType::Fp32, &[3]),
            ],
            batch: BatchSupport::Dynamic { max: 4 },
            quantization: Default::default(),
        }
    }

    fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
        InferInputTensor {
            name: name.to_string(),
            datatype: datatype.to_string(),
            shape: shape.to_vec(),
            parameters: HashMap::new(),
            contents: None,
        }
    }

    fn raw_request() -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            id: "req-1".into(),
            inputs: vec![input("b", "INT8", &[2, 1]), input("a", "FP32", &[2, 3])],
            raw_input_contents: vec![vec![1, 2], vec![0; 24]],
            ..Default::default()
        }
    }

    fn run(request: ModelInferRequest) -> Result<ValidatedRequest, InvalidRequest> {
        let signature = signature();
        validate(
            request,
            InferTarget {
                signature: &signature,
                max_batch_size: 4,
            },
        )
    }

    #[test]
    fn raw_inputs_are_reordered_to_signature_order() {
        let ok = run(raw_request()).expect("valid");
        assert_eq!(ok.batch_size, 2);
        assert_eq!(ok.inputs[0].name, "a");
        assert_eq!(ok.inputs[0].data.len(), 24);
        assert_eq!(ok.inputs[1].data, vec![1, 2]);
        assert_eq!(ok.outputs, vec![0, 1]);
        assert_eq!(ok.id, "req-1");
    }

    #[test]
    fn typed_contents_become_little_endian_bytes() {
        let mut request = raw_request();
        request.raw_input_contents.clear();
        request.inputs[0].contents = Some(InferTensorContents {
            int_contents: vec![-1, 7],
            ..Default::default()
        });
        request.inputs[1].contents = Some(InferTensorContents {
            fp32_contents: vec![1.5, 0.0, 0.0, 0.0, 0.0, -2.0],
            ..Default::default()
        });
        let ok = run(request).expect("valid");
        assert_eq!(ok.inputs[1].data, vec![0xff, 7]);
        assert_eq!(&ok.inputs[0].data[..4], &1.5f32.to_le_bytes());
        assert_eq!(&ok.inputs[0].data[20..], &(-2.0f32).to_le_bytes());
    }

    #[test]
    fn typed_values_out_of_range_or_in_the_wrong_field_are_refused() {
        let mut request = raw_request();
        request.raw_input_contents.clear();
        request.inputs[0].contents = Some(InferTensorContents {
            int_contents: vec![1, 300],
            ..Default::default()
        });
        request.inputs[1].contents = Some(InferTensorContents {
            fp32_contents: vec![0.0; 6],
            ..Default::default()
        });
        let err = run(request.clone()).expect_err("300 is not INT8");
        assert!(
            matches!(err, InvalidRequest::OutOfRange { index: 1, .. }),
            "{err}"
        );
        request.inputs[0].contents = Some(InferTensorContents {
            int64_contents: vec![1, 3],
            ..Default::default()
        });
        let err = run(request).expect_err("wrong field");
        assert!(err.to_string().contains("contents.int_contents"), "{err}");
    }

    #[test]
    fn each_malformed_request_gets_its_own_message() {
        type Mutation = Box<dyn Fn(&mut ModelInferRequest)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|r| {
                    r.inputs[0].contents = Some(InferTensorContents {
                        int_contents: vec![1, 2],
                        ..Default::default()
                    })
                }),
                "mixes raw_input_contents",
            ),
            (
                Box::new(|r| {
                    r.raw_input_contents.pop();
                }),
                "1 raw_input_contents entries but 2 inputs",
            ),
            (
                Box::new(|r| r.inputs[0].name = "c".into()),
                "unknown input 'c'; the model's inputs are 'a', 'b'",
            ),
            (
                Box::new(|r| {
                    r.inputs[0] = r.inputs[1].clone();
                    r.raw_input_contents[0] = r.raw_input_contents[1].clone();
                }),
                "input 'a' is given twice",
            ),
            (
                Box::new(|r| {
                    r.inputs.pop();
                    r.raw_input_contents.pop();
                }),
                "missing input 'a' (FP32, shape [1..=4, 3])",
            ),
            (
                Box::new(|r| r.inputs[1].datatype = "FP64".into()),
                "has datatype 'FP64' but the model expects FP32",
            ),
            (
                Box::new(|r| r.inputs[1].shape = vec![2, 4]),
                "shape [2, 4] but the model expects [1..=4, 3]",
            ),
            (
                Box::new(|r| r.inputs[1].shape = vec![6]),
                "shape [6] but the model expects",
            ),
            (
                Box::new(|r| r.inputs[1].shape = vec![5, 3]),
                "batch size 5 but this model accepts 1 to 4",
            ),
            (Box::new(|r| r.inputs[1].shape = vec![0, 3]), "batch size 0"),
            (
                Box::new(|r| r.inputs[1].shape = vec![1, 3]),
                "batch size 1 but input 'b' has 2",
            ),
            (
                Box::new(|r| r.raw_input_contents[1].push(0)),
                "has 25 bytes but shape [2, 3] of FP32 needs 24",
            ),
            (
                Box::new(|r| r.inputs[0].shape = vec![2, -3]),
                "shape [2, -3]",
            ),
            (
                Box::new(|r| {
                    r.outputs.push(InferRequestedOutputTensor {
                        name: "mean".into(),
                        parameters: HashMap::new(),
                    })
                }),
                "unknown requested output 'mean'; the model's outputs are 'sum', 'prod'",
            ),
            (
                Box::new(|r| {
                    let text = ParameterChoice::StringParam("1s".into());
                    let parameter = InferParameter {
                        parameter_choice: Some(text),
                    };
                    r.parameters.insert(TIMEOUT_PARAMETER.into(), parameter);
                }),
                "request parameter 'timeout'",
            ),
        ];
        for (mutate, expected) in cases {
            let mut request = raw_request();
            mutate(&mut request);
            let err = run(request).expect_err(expected);
            assert!(
                err.to_string().contains(expected),
                "got '{err}', wanted '{expected}'"
            );
        }
    }

    #[test]
    fn requested_outputs_and_timeout_are_honoured() {
        let mut request = raw_request();
        request.outputs.push(InferRequestedOutputTensor {
            name: "prod".into(),
            parameters: HashMap::new(),
        });
        request.parameters.insert(
            TIMEOUT_PARAMETER.into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(1500)),
            },
        );
        let ok = run(request).expect("valid");
        assert_eq!(ok.outputs, vec![1]);
        assert_eq!(ok.timeout, Some(Duration::from_micros(1500)));
        let tensor = |name: &str| Tensor {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: vec![2, 3],
            data: vec![9; 24],
        };
        let timings = ResponseTimings {
            queue: Duration::from_micros(10),
            compute_input: Duration::from_micros(3),
            compute: Duration::from_micros(20),
            compute_output: Duration::from_micros(2),
            server: Duration::from_micros(40),
            batch_size: 8,
            device: "cpu".into(),
            runtime_metrics: vec![("total_sim_cycles".into(), 1068.0)],
        };
        let response = build_response(
            "m",
            "1",
            &ok.outputs,
            ok.id,
            vec![tensor("sum"), tensor("prod")],
            &timings,
        );
        assert_eq!(response.outputs.len(), 1);
        assert_eq!(response.outputs[0].name, "prod");
        assert_eq!(response.raw_output_contents, vec![vec![9; 24]]);
        assert_eq!(response.id, "req-1");
        assert_eq!(
            response.parameters[BATCH_SIZE_PARAMETER].parameter_choice,
            Some(ParameterChoice::Int64Param(8))
        );
        assert_eq!(
            response.parameters[COMPUTE_TIME_PARAMETER].parameter_choice,
            Some(ParameterChoice::Int64Param(20))
        );
        assert_eq!(
            response.parameters["runtime_total_sim_cycles"].parameter_choice,
            Some(ParameterChoice::DoubleParam(1068.0))
        );
    }

    #[test]
    fn bytes_and_half_precision_rules() {
        assert!(check_bytes_elements("s", &[1, 0, 0, 0, b'x', 0, 0, 0, 0], 2).is_ok());
        assert!(check_bytes_elements("s", &[5, 0, 0, 0, b'x'], 1).is_err());
        assert!(check_bytes_elements("s", &[1, 0], 1).is_err());
        let mut half = input("h", "FP16", &[1]);
        half.contents = Some(InferTensorContents {
            fp32_contents: vec![1.0],
            ..Default::default()
        });
        let err = typed_to_raw(&half, DataType::Fp16, 1).expect_err("fp16 typed");
        assert!(err.to_string().contains("raw_input_contents"), "{err}");
    }
}
