//! The KServe v2 REST wire format: inference requests and responses as JSON, with Triton's binary
//! tensor data extension (`Inference-Header-Content-Length`: a JSON header, then the raw tensors),
//! converted to and from the gRPC messages so both protocols share one code path; and the JSON of
//! the other answers (metadata, config, statistics, index, shared-memory status). Pure functions.

use std::collections::HashMap;

use half::{bf16, f16};
use inference_proto::inference::infer_parameter::ParameterChoice;
use inference_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use inference_proto::inference::{
    model_config, model_version_policy, DataType as ConfigType, InferParameter, ModelConfig,
    ModelInferRequest, ModelInferResponse, ModelStatistics, StatisticDuration,
};
use inference_proto::DataType;
use serde_json::{json, Map, Value};

/// Request parameter asking for every output as binary data.
pub const BINARY_DATA_OUTPUT: &str = "binary_data_output";
/// Tensor parameter: this tensor's data is binary, `binary_data_size` bytes after the header.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";
/// Requested-output parameter: send this output as binary data.
pub const BINARY_DATA: &str = "binary_data";

/// A request the REST layer cannot turn into an inference; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest(message.into())
}

/// Which outputs of a response go back as binary data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputPlan {
    /// Every output binary (`binary_data_output`).
    pub all_binary: bool,
    /// Outputs asked for by name with `binary_data`.
    pub binary: Vec<String>,
}

impl OutputPlan {
    fn is_binary(&self, name: &str) -> bool {
        self.all_binary || self.binary.iter().any(|b| b == name)
    }
}

/// Decodes a REST inference request for `model`/`version`: `header_length` is the
/// `Inference-Header-Content-Length` (the whole body is JSON without it).
pub fn decode_infer(
    model: &str,
    version: &str,
    body: &[u8],
    header_length: Option<usize>,
) -> Result<(ModelInferRequest, OutputPlan), BadRequest> {
    let json_length = header_length.unwrap_or(body.len());
    if json_length > body.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length is {json_length} but the body has {} bytes",
            body.len()
        )));
    }
    let (header, mut binary) = body.split_at(json_length);
    let header: Value = serde_json::from_slice(header)
        .map_err(|e| bad(format!("the request is not valid JSON: {e}")))?;
    let object = header
        .as_object()
        .ok_or_else(|| bad("the request must be a JSON object"))?;
    let mut parameters = match object.get("parameters") {
        Some(p) => parameters_from_json(p, "parameters")?,
        None => HashMap::new(),
    };
    let all_binary = matches!(
        parameters
            .remove(BINARY_DATA_OUTPUT)
            .and_then(|p| p.parameter_choice),
        Some(ParameterChoice::BoolParam(true))
    );
    let id = match object.get("id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(id)) => id.clone(),
        Some(other) => other.to_string(),
    };
    let inputs_json = object
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the request needs an \"inputs\" array"))?;
    let mut inputs = Vec::with_capacity(inputs_json.len());
    let mut raw = Vec::with_capacity(inputs_json.len());
    let mut in_shared_memory = 0;
    for (i, input) in inputs_json.iter().enumerate() {
        let (tensor, data) = decode_input(input, i, &mut binary)?;
        match data {
            Some(bytes) => raw.push(bytes),
            None => in_shared_memory += 1,
        }
        inputs.push(tensor);
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data are left after the inputs' binary_data_size",
            binary.len()
        )));
    }
    if in_shared_memory == inputs.len() {
        raw.clear();
    }
    let mut plan = OutputPlan {
        all_binary,
        binary: Vec::new(),
    };
    let outputs = match object.get("outputs") {
        None => Vec::new(),
        Some(Value::Array(outputs)) => outputs
            .iter()
            .enumerate()
            .map(|(i, o)| decode_output(o, i, &mut plan))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("\"outputs\" must be an array")),
    };
    Ok((
        ModelInferRequest {
            model_name: model.to_string(),
            model_version: version.to_string(),
            id,
            parameters,
            inputs,
            outputs,
            raw_input_contents: raw,
        },
        plan,
    ))
}

/// One input: its tensor, and its raw bytes (`None` when it is in shared memory).
fn decode_input(
    input: &Value,
    index: usize,
    binary: &mut &[u8],
) -> Result<(InferInputTensor, Option<Vec<u8>>), BadRequest> {
    let at = format!("inputs[{index}]");
    let name = input
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{at} needs a \"name\"")))?
        .to_string();
    let datatype_text = input
        .get("datatype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("input '{name}' needs a \"datatype\"")))?;
    let shape: Vec<i64> = input
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("input '{name}' needs a \"shape\" array")))?
        .iter()
        .map(|d| d.as_i64().filter(|d| *d >= 0))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            bad(format!(
                "input '{name}': shape must be non-negative integers"
            ))
        })?;
    let mut parameters = match input.get("parameters") {
        Some(p) => parameters_from_json(p, &format!("input '{name}' parameters"))?,
        None => HashMap::new(),
    };
    let binary_size = parameters.remove(BINARY_DATA_SIZE);
    let tensor = InferInputTensor {
        name: name.clone(),
        datatype: datatype_text.to_string(),
        shape: shape.clone(),
        parameters,
        contents: None,
    };
    if tensor
        .parameters
        .contains_key(super::super::shared_memory::REGION_PARAMETER)
    {
        return Ok((tensor, None));
    }
    let bytes = match binary_size {
        Some(size) => {
            let size = match size.parameter_choice {
                Some(ParameterChoice::Int64Param(n)) if n >= 0 => n as usize,
                Some(ParameterChoice::Uint64Param(n)) => n as usize,
                _ => {
                    return Err(bad(format!(
                        "input '{name}': binary_data_size must be a byte count"
                    )))
                }
            };
            if size > binary.len() {
                return Err(bad(format!(
                    "input '{name}' has binary_data_size {size} but only {} binary bytes are left",
                    binary.len()
                )));
            }
            let (data, rest) = binary.split_at(size);
            *binary = rest;
            data.to_vec()
        }
        None => {
            let datatype: DataType =
                datatype_text
                    .parse()
                    .map_err(|e: inference_proto::UnknownDataType| {
                        bad(format!("input '{name}': {e}"))
                    })?;
            let data = input.get("data").ok_or_else(|| {
                bad(format!(
                    "input '{name}' has no \"data\" and no binary_data_size"
                ))
            })?;
            let mut values = Vec::new();
            flatten(data, &mut values);
            let expected = shape
                .iter()
                .try_fold(1usize, |acc, d| acc.checked_mul(*d as usize));
            if expected != Some(values.len()) {
                return Err(bad(format!(
                    "input '{name}' has {} values in \"data\" but shape {shape:?} needs {}",
                    values.len(),
                    expected.map_or("more than can be counted".into(), |n| n.to_string())
                )));
            }
            encode_values(&name, datatype, &values)?
        }
    };
    Ok((tensor, Some(bytes)))
}

fn decode_output(
    output: &Value,
    index: usize,
    plan: &mut OutputPlan,
) -> Result<InferRequestedOutputTensor, BadRequest> {
    let name = output
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("outputs[{index}] needs a \"name\"")))?
        .to_string();
    let mut parameters = match output.get("parameters") {
        Some(p) => parameters_from_json(p, &format!("output '{name}' parameters"))?,
        None => HashMap::new(),
    };
    if let Some(p) = parameters.remove(BINARY_DATA) {
        if matches!(p.parameter_choice, Some(ParameterChoice::BoolParam(true))) {
            plan.binary.push(name.clone());
        }
    }
    if parameters.contains_key("classification") {
        return Err(bad(format!(
            "output '{name}': the classification extension is not supported; ask for the raw output"
        )));
    }
    Ok(InferRequestedOutputTensor { name, parameters })
}

/// Nested JSON arrays, flattened in row-major order.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

/// JSON values as raw little-endian bytes of `datatype`, each checked for range.
fn encode_values(name: &str, datatype: DataType, values: &[&Value]) -> Result<Vec<u8>, BadRequest> {
    let wrong = |i: usize, v: &Value| {
        bad(format!(
            "input '{name}': element {i} = {} is not a valid {datatype}",
            super::super::clip(&v.to_string())
        ))
    };
    let mut out = Vec::with_capacity(values.len() * datatype.element_size().unwrap_or(8));
    for (i, v) in values.iter().enumerate() {
        let int = || v.as_i64().ok_or_else(|| wrong(i, v));
        let uint = || v.as_u64().ok_or_else(|| wrong(i, v));
        let float = || v.as_f64().ok_or_else(|| wrong(i, v));
        macro_rules! push_int {
            ($ty:ty, $get:expr) => {{
                let n = $get()?;
                let n = <$ty>::try_from(n).map_err(|_| wrong(i, v))?;
                out.extend_from_slice(&n.to_le_bytes());
            }};
        }
        match datatype {
            DataType::Bool => out.push(u8::from(v.as_bool().ok_or_else(|| wrong(i, v))?)),
            DataType::Uint8 => push_int!(u8, uint),
            DataType::Uint16 => push_int!(u16, uint),
            DataType::Uint32 => push_int!(u32, uint),
            DataType::Uint64 => push_int!(u64, uint),
            DataType::Int8 => push_int!(i8, int),
            DataType::Int16 => push_int!(i16, int),
            DataType::Int32 => push_int!(i32, int),
            DataType::Int64 => push_int!(i64, int),
            DataType::Fp16 => out.extend_from_slice(&f16::from_f64(float()?).to_le_bytes()),
            DataType::Bf16 => out.extend_from_slice(&bf16::from_f64(float()?).to_le_bytes()),
            DataType::Fp32 => out.extend_from_slice(&(float()? as f32).to_le_bytes()),
            DataType::Fp64 => out.extend_from_slice(&float()?.to_le_bytes()),
            DataType::Bytes => {
                let text = v.as_str().ok_or_else(|| wrong(i, v))?;
                let len = u32::try_from(text.len()).map_err(|_| wrong(i, v))?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    Ok(out)
}

/// Raw little-endian bytes of `datatype` as JSON values (`None` when they do not divide evenly).
fn decode_values(datatype: DataType, bytes: &[u8]) -> Option<Vec<Value>> {
    macro_rules! numbers {
        ($ty:ty, $n:literal, $to:expr) => {{
            if bytes.len() % $n != 0 {
                return None;
            }
            bytes
                .chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    $to(<$ty>::from_le_bytes(a))
                })
                .collect()
        }};
    }
    Some(match datatype {
        DataType::Bool => bytes.iter().map(|b| Value::Bool(*b != 0)).collect(),
        DataType::Uint8 => bytes.iter().map(|b| json!(b)).collect(),
        DataType::Int8 => bytes.iter().map(|b| json!(*b as i8)).collect(),
        DataType::Uint16 => numbers!(u16, 2, |v| json!(v)),
        DataType::Int16 => numbers!(i16, 2, |v| json!(v)),
        DataType::Uint32 => numbers!(u32, 4, |v| json!(v)),
        DataType::Int32 => numbers!(i32, 4, |v| json!(v)),
        DataType::Uint64 => numbers!(u64, 8, |v| json!(v)),
        DataType::Int64 => numbers!(i64, 8, |v| json!(v)),
        DataType::Fp16 => numbers!(u16, 2, |v| json!(f16::from_bits(v).to_f32())),
        DataType::Bf16 => numbers!(u16, 2, |v| json!(bf16::from_bits(v).to_f32())),
        DataType::Fp32 => numbers!(f32, 4, |v: f32| json!(v)),
        DataType::Fp64 => numbers!(f64, 8, |v: f64| json!(v)),
        DataType::Bytes => {
            let mut values = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                let (len, tail) = rest.split_at_checked(4)?;
                let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
                let (text, tail) = tail.split_at_checked(len)?;
                values.push(Value::String(String::from_utf8_lossy(text).into_owned()));
                rest = tail;
            }
            values
        }
    })
}

/// An inference response: the JSON header and the binary tail (empty when every output is JSON).
pub fn encode_infer(response: ModelInferResponse, plan: &OutputPlan) -> (Vec<u8>, Vec<u8>) {
    let mut binary = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut raw = response.raw_output_contents.into_iter();
    for output in response.outputs {
        let bytes = raw.next().unwrap_or_default();
        let mut entry = Map::new();
        entry.insert("name".into(), json!(output.name));
        entry.insert("datatype".into(), json!(output.datatype));
        entry.insert("shape".into(), json!(output.shape));
        // An output written to shared memory carries neither data nor parameters.
        let in_shared_memory = output
            .parameters
            .contains_key(super::super::shared_memory::REGION_PARAMETER);
        if !in_shared_memory {
            let datatype = output.datatype.parse::<DataType>().ok();
            match datatype
                .filter(|_| !plan.is_binary(&output.name))
                .and_then(|dt| decode_values(dt, &bytes))
            {
                Some(values) => {
                    entry.insert("data".into(), Value::Array(values));
                }
                None => {
                    entry.insert(
                        "parameters".into(),
                        json!({ BINARY_DATA_SIZE: bytes.len() }),
                    );
                    binary.extend_from_slice(&bytes);
                }
            }
        }
        outputs.push(Value::Object(entry));
    }
    let header = json!({
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "parameters": parameters_to_json(&response.parameters),
        "outputs": outputs,
    });
    (header.to_string().into_bytes(), binary)
}

/// Request parameters from a JSON object (bool, integer, float or string values).
fn parameters_from_json(
    value: &Value,
    what: &str,
) -> Result<HashMap<String, InferParameter>, BadRequest> {
    let object = value
        .as_object()
        .ok_or_else(|| bad(format!("{what} must be a JSON object")))?;
    object
        .iter()
        .map(|(key, v)| {
            let choice = match v {
                Value::Bool(b) => ParameterChoice::BoolParam(*b),
                Value::String(s) => ParameterChoice::StringParam(s.clone()),
                Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => ParameterChoice::Int64Param(i),
                    (None, Some(u), _) => ParameterChoice::Uint64Param(u),
                    (_, _, Some(f)) => ParameterChoice::DoubleParam(f),
                    _ => return Err(bad(format!("{what}: '{key}' is not a number"))),
                },
                _ => {
                    return Err(bad(format!(
                        "{what}: '{key}' must be a bool, number or string"
                    )))
                }
            };
            Ok((
                key.clone(),
                InferParameter {
                    parameter_choice: Some(choice),
                },
            ))
        })
        .collect()
}

fn parameters_to_json(parameters: &HashMap<String, InferParameter>) -> Value {
    let mut out = Map::new();
    for (key, p) in parameters {
        let value = match &p.parameter_choice {
            Some(ParameterChoice::BoolParam(b)) => json!(b),
            Some(ParameterChoice::Int64Param(i)) => json!(i),
            Some(ParameterChoice::Uint64Param(u)) => json!(u),
            Some(ParameterChoice::DoubleParam(f)) => json!(f),
            Some(ParameterChoice::StringParam(s)) => json!(s),
            None => Value::Null,
        };
        out.insert(key.clone(), value);
    }
    Value::Object(out)
}

fn duration(d: &Option<StatisticDuration>) -> Value {
    let d = d.unwrap_or_default();
    json!({ "count": d.count, "ns": d.ns })
}

/// `ModelStatistics` as Triton's REST answer has it (numbers, not strings).
pub fn statistics_json(stats: &ModelStatistics) -> Value {
    let infer = stats.inference_stats.unwrap_or_default();
    json!({
        "name": stats.name,
        "version": stats.version,
        "last_inference": stats.last_inference,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": duration(&infer.success),
            "fail": duration(&infer.fail),
            "queue": duration(&infer.queue),
            "compute_input": duration(&infer.compute_input),
            "compute_infer": duration(&infer.compute_infer),
            "compute_output": duration(&infer.compute_output),
            "cache_hit": duration(&infer.cache_hit),
            "cache_miss": duration(&infer.cache_miss),
        },
        "batch_stats": stats.batch_stats.iter().map(|b| json!({
            "batch_size": b.batch_size,
            "compute_input": duration(&b.compute_input),
            "compute_infer": duration(&b.compute_infer),
            "compute_output": duration(&b.compute_output),
        })).collect::<Vec<_>>(),
        "memory_usage": stats.memory_usage.iter().map(|m| json!({
            "type": m.r#type, "id": m.id, "byte_size": m.byte_size,
        })).collect::<Vec<_>>(),
    })
}

fn type_name(value: i32) -> &'static str {
    ConfigType::try_from(value).map_or("TYPE_INVALID", |t| t.as_str_name())
}

/// `ModelConfig` in Triton's JSON form (protobuf field names, enum names).
pub fn config_json(config: &ModelConfig) -> Value {
    let mut out = json!({
        "name": config.name,
        "platform": config.platform,
        "backend": config.backend,
        "max_batch_size": config.max_batch_size,
        "input": config.input.iter().map(|i| json!({
            "name": i.name,
            "data_type": type_name(i.data_type),
            "format": inference_proto::inference::model_input::Format::try_from(i.format)
                .map_or("FORMAT_NONE", |f| f.as_str_name()),
            "dims": i.dims,
        })).collect::<Vec<_>>(),
        "output": config.output.iter().map(|o| json!({
            "name": o.name,
            "data_type": type_name(o.data_type),
            "dims": o.dims,
        })).collect::<Vec<_>>(),
        "instance_group": config.instance_group.iter().map(|g| json!({
            "name": g.name,
            "kind": inference_proto::inference::model_instance_group::Kind::try_from(g.kind)
                .map_or("KIND_AUTO", |k| k.as_str_name()),
            "count": g.count,
            "gpus": g.gpus,
        })).collect::<Vec<_>>(),
        "default_model_filename": config.default_model_filename,
        "parameters": config.parameters.iter()
            .map(|(k, v)| (k.clone(), json!({ "string_value": v.string_value })))
            .collect::<Map<_, _>>(),
    });
    if let Some(policy) = config
        .version_policy
        .as_ref()
        .and_then(|p| p.policy_choice.as_ref())
    {
        out["version_policy"] = match policy {
            model_version_policy::PolicyChoice::Latest(l) => {
                json!({ "latest": { "num_versions": l.num_versions } })
            }
            model_version_policy::PolicyChoice::All(_) => json!({ "all": {} }),
            model_version_policy::PolicyChoice::Specific(s) => {
                json!({ "specific": { "versions": s.versions } })
            }
        };
    }
    if let Some(model_config::SchedulingChoice::DynamicBatching(b)) = &config.scheduling_choice {
        let mut batching = json!({
            "preferred_batch_size": b.preferred_batch_size,
            "max_queue_delay_microseconds": b.max_queue_delay_microseconds,
        });
        if let Some(policy) = &b.default_queue_policy {
            batching["default_queue_policy"] = json!({ "max_queue_size": policy.max_queue_size });
        }
        out["dynamic_batching"] = batching;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_proto::inference::model_infer_response::InferOutputTensor;

    #[test]
    fn json_data_becomes_raw_bytes_and_binary_data_is_cut_by_size() {
        let header = br#"{"id":"7","inputs":[
            {"name":"a","datatype":"FP32","shape":[2,2],"data":[[1.5,2],[3,4]]},
            {"name":"b","datatype":"UINT8","shape":[3],"parameters":{"binary_data_size":3}},
            {"name":"c","datatype":"BYTES","shape":[1],"data":["hi"]}],
            "outputs":[{"name":"y","parameters":{"binary_data":true}}],
            "parameters":{"timeout":5000}}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&[7, 8, 9]);
        let (request, plan) = decode_infer("m", "1", &body, Some(header.len())).expect("decodes");
        assert_eq!(request.id, "7");
        assert_eq!(request.raw_input_contents[0].len(), 16);
        assert_eq!(request.raw_input_contents[1], [7, 8, 9]);
        assert_eq!(request.raw_input_contents[2], [2, 0, 0, 0, b'h', b'i']);
        assert!(request.parameters.contains_key("timeout"));
        assert_eq!(plan.binary, ["y"]);
    }

    #[test]
    fn every_mistake_names_the_tensor_and_the_fix() {
        for (body, needle) in [
            (
                r#"{"inputs":[{"name":"a","datatype":"INT8","shape":[1],"data":[300]}]}"#,
                "element 0 = 300 is not a valid INT8",
            ),
            (
                r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[3],"data":[1,2]}]}"#,
                "has 2 values in \"data\" but shape [3] needs 3",
            ),
            (
                r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1]}]}"#,
                "no \"data\" and no binary_data_size",
            ),
            (
                r#"{"inputs":[{"name":"a","datatype":"FLOAT","shape":[1],"data":[1]}]}"#,
                "unknown datatype 'FLOAT'",
            ),
            (r#"{"inputs":"x"}"#, "needs an \"inputs\" array"),
            (
                r#"{"inputs":[{"datatype":"FP32","shape":[1],"data":[1]}]}"#,
                "inputs[0] needs a \"name\"",
            ),
            (r#"not json"#, "not valid JSON"),
        ] {
            let err = decode_infer("m", "", body.as_bytes(), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let err = decode_infer("m", "", b"{}", Some(10))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Inference-Header-Content-Length is 10"),
            "{err}"
        );
    }

    #[test]
    fn outputs_come_back_as_json_or_binary_as_asked() {
        let response = ModelInferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: "7".into(),
            outputs: vec![
                InferOutputTensor {
                    name: "y".into(),
                    datatype: "FP32".into(),
                    shape: vec![2],
                    ..Default::default()
                },
                InferOutputTensor {
                    name: "z".into(),
                    datatype: "INT64".into(),
                    shape: vec![1],
                    ..Default::default()
                },
            ],
            raw_output_contents: vec![
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                5i64.to_le_bytes().to_vec(),
            ],
            ..Default::default()
        };
        let plan = OutputPlan {
            all_binary: false,
            binary: vec!["y".into()],
        };
        let (header, binary) = encode_infer(response, &plan);
        let header: Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["outputs"][0]["parameters"][BINARY_DATA_SIZE], 8);
        assert_eq!(header["outputs"][1]["data"], json!([5]));
        assert_eq!(binary.len(), 8);
        assert_eq!(header["id"], "7");
    }
}
