//! The KServe v2 gRPC contract, against the real binary over loopback with real ONNX models:
//! health, metadata, config, inference (raw and typed), every refusal, broken models next to good
//! ones, statistics, repository index, model control refusal, streaming and reflection.

mod common;
mod service_support;

use std::collections::HashMap;
use std::time::Duration;

use inference_proto::inference::infer_parameter::ParameterChoice;
use inference_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use inference_proto::inference::{
    InferParameter, InferTensorContents, ModelConfigRequest, ModelInferRequest, ModelInferResponse,
    ModelMetadataRequest, ModelReadyRequest, ModelStatisticsRequest, RepositoryIndexRequest,
    RepositoryModelLoadRequest, RepositoryModelUnloadRequest, ServerLiveRequest,
    ServerMetadataRequest, ServerReadyRequest,
};
use inference_server::api::health::LIVE_SERVICE;
use service_support::{f32_bytes, f32_values, Repo, Server};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const AFFINE_CONFIG: &str = "max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 200\npreferred_batch_sizes = [4, 8]\nmax_queue_size = 64\n";

/// affine (batching), two_io (two inputs/outputs, defaults), identity (every datatype),
/// unbatched, and three broken models.
fn repository() -> Repo {
    Repo::new()
        .model("affine", "affine.onnx", AFFINE_CONFIG)
        .model("two_io", "two_io.onnx", "")
        .model("identity", "identity_types.onnx", "max_batch_size = 4\n")
        .model("typed", "typed_identity.onnx", "max_batch_size = 4\n")
        .model("ragged", "affine_ragged.onnx", "max_batch_size = 2\n")
        .model("pinned", "affine.onnx", "versions = [1, 2]\n")
        .version("pinned", 2, "affine.onnx")
        .version("pinned", 3, "affine.onnx")
        .model("unbatched", "unbatched.onnx", "max_batch_size = 0\n")
        .model(
            "typo",
            "affine.onnx",
            "max_batch_size = 8\nmax_queue_delay_us = 5\n",
        )
        .model("corrupt", "affine.onnx", "max_batch_size = 8\n")
        .file("corrupt/1/model.onnx", b"this is not an onnx file")
        .file("noversion/config.toml", b"")
}

/// The little-endian bytes of `values`, concatenated: their raw tensor contents.
macro_rules! le_bytes {
    [$($value:expr),* $(,)?] => {
        [$($value),*].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
    };
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

fn affine_request(batch: usize) -> ModelInferRequest {
    let values: Vec<f32> = (0..batch * 4).map(|v| v as f32).collect();
    ModelInferRequest {
        model_name: "affine".into(),
        id: format!("req-{batch}"),
        inputs: vec![input("x", "FP32", &[batch as i64, 4])],
        raw_input_contents: vec![f32_bytes(&values)],
        ..Default::default()
    }
}

/// `affine_request(batch)` sent to `model`, another model made from affine.onnx.
fn affine_request_to(model: &str, batch: usize) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        ..affine_request(batch)
    }
}

fn load_request(model: &str) -> RepositoryModelLoadRequest {
    RepositoryModelLoadRequest {
        model_name: model.into(),
        ..Default::default()
    }
}

fn unload_request(model: &str) -> RepositoryModelUnloadRequest {
    RepositoryModelUnloadRequest {
        model_name: model.into(),
        ..Default::default()
    }
}

fn int64_param(response: &ModelInferResponse, name: &str) -> i64 {
    match response
        .parameters
        .get(name)
        .and_then(|p| p.parameter_choice.clone())
    {
        Some(ParameterChoice::Int64Param(v)) => v,
        other => panic!("parameter {name}: {other:?}"),
    }
}

#[tokio::test]
async fn the_server_is_ready_once_every_required_model_can_serve() {
    let repo = Repo::new()
        .model("affine", "affine.onnx", AFFINE_CONFIG)
        .model(
            "extra",
            "affine.onnx",
            "required = false\nmax_batch_size = 8\n",
        )
        .file("extra/1/model.onnx", b"not a model, and not required")
        .model(
            "typo",
            "affine.onnx",
            "required = false\nmax_batch_sizes = 8\n",
        );
    let server = Server::start(repo.path(), &[]).await;
    let mut client = server.client().await;
    let ready = client
        .server_ready(ServerReadyRequest {})
        .await
        .expect("ready");
    assert!(ready.into_inner().ready, "{}", server.log());
    let mut health = HealthClient::new(server.channel().await.expect("channel"));
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(overall, ServingStatus::Serving as i32);
    assert!(server.log().contains("server ready"), "{}", server.log());
}

#[tokio::test]
async fn health_metadata_and_config() {
    let repo = repository();
    let server = Server::start(repo.path(), &[]).await;
    let mut client = server.client().await;

    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .expect("live")
            .into_inner()
            .live
    );
    let metadata = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .expect("server metadata")
        .into_inner();
    assert_eq!(metadata.name, "inference-server");
    for extension in ["statistics", "model_repository", "model_configuration"] {
        assert!(
            metadata.extensions.iter().any(|e| e == extension),
            "{extension}"
        );
    }

    // Three required models cannot serve (typo, corrupt, noversion): not ready, though live.
    let ready = client
        .server_ready(ServerReadyRequest {})
        .await
        .expect("ready")
        .into_inner()
        .ready;
    assert!(!ready, "ServerReady while required models are broken");
    assert!(
        server.log().contains("server not ready") && server.log().contains("corrupt:"),
        "{}",
        server.log()
    );
    let mut health = HealthClient::new(server.channel().await.expect("channel"));
    for (service, expected) in [
        ("", ServingStatus::NotServing),
        (LIVE_SERVICE, ServingStatus::Serving),
        ("affine", ServingStatus::Serving),
        ("typo", ServingStatus::NotServing),
        ("corrupt", ServingStatus::NotServing),
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, expected as i32, "service '{service}'");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "affine".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch
        .message()
        .await
        .expect("watch message")
        .expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: "affine".into(),
            version: String::new(),
        })
        .await
        .expect("model metadata")
        .into_inner();
    assert_eq!(metadata.platform, "onnxruntime_onnx");
    assert_eq!(metadata.versions, vec!["1"]);
    assert_eq!(metadata.inputs[0].name, "x");
    assert_eq!(metadata.inputs[0].datatype, "FP32");
    assert_eq!(metadata.inputs[0].shape, vec![-1, 4]);
    assert_eq!(metadata.outputs[0].shape, vec![-1, 4]);
    let unbatched = client
        .model_metadata(ModelMetadataRequest {
            name: "unbatched".into(),
            version: "1".into(),
        })
        .await
        .expect("unbatched metadata")
        .into_inner();
    assert_eq!(unbatched.inputs[0].shape, vec![3]);

    let config = client
        .model_config(ModelConfigRequest {
            name: "affine".into(),
            version: String::new(),
        })
        .await
        .expect("model config")
        .into_inner()
        .config
        .expect("config");
    assert_eq!(config.name, "affine");
    assert_eq!(config.platform, "onnxruntime_onnx");
    assert_eq!(config.backend, "onnxruntime");
    assert_eq!(config.max_batch_size, 8);
    assert_eq!(config.input[0].dims, vec![4]);
    assert_eq!(
        config.input[0].data_type,
        inference_proto::inference::DataType::TypeFp32 as i32
    );
    assert_eq!(config.instance_group[0].count, 1);
    match config.scheduling_choice {
        Some(inference_proto::inference::model_config::SchedulingChoice::DynamicBatching(b)) => {
            assert_eq!(b.preferred_batch_size, vec![4, 8]);
            assert_eq!(b.max_queue_delay_microseconds, 200);
        }
        other => panic!("dynamic batching missing: {other:?}"),
    }
    let defaults = client
        .model_config(ModelConfigRequest {
            name: "two_io".into(),
            version: String::new(),
        })
        .await
        .expect("two_io config")
        .into_inner()
        .config
        .expect("config");
    assert_eq!(
        defaults.max_batch_size, 4,
        "default max_batch_size for a batching model"
    );
    assert_eq!(defaults.input.len(), 2);
}

#[tokio::test]
async fn inference_with_raw_and_typed_contents() {
    let repo = repository();
    let server = Server::start(repo.path(), &[]).await;
    let mut client = server.client().await;

    let response = client
        .model_infer(affine_request(3))
        .await
        .expect("affine infer")
        .into_inner();
    assert_eq!(response.id, "req-3");
    assert_eq!(response.model_name, "affine");
    assert_eq!(response.model_version, "1");
    assert_eq!(response.outputs[0].name, "y");
    assert_eq!(response.outputs[0].datatype, "FP32");
    assert_eq!(response.outputs[0].shape, vec![3, 4]);
    let expected: Vec<f32> = (0..12).map(|v| v as f32 * 2.0 + 1.0).collect();
    assert_eq!(f32_values(&response.raw_output_contents[0]), expected);
    assert!(response.outputs[0].contents.is_none());
    assert!(int64_param(&response, "batch_size") >= 3);
    // A Duration in µs is never negative: check it lies within the server time instead.
    assert!(int64_param(&response, "queue_time_us") <= int64_param(&response, "server_time_us"));
    assert!(int64_param(&response, "compute_time_us") > 0);
    assert!(int64_param(&response, "server_time_us") >= int64_param(&response, "compute_time_us"));
    assert_eq!(
        response.parameters["device"].parameter_choice,
        Some(ParameterChoice::StringParam("cpu".into()))
    );

    // Typed contents on a two-input model, asking for one output only.
    let mut a = input("a", "FP32", &[2, 3]);
    a.contents = Some(InferTensorContents {
        fp32_contents: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        ..Default::default()
    });
    let mut b = input("b", "FP32", &[2, 3]);
    b.contents = Some(InferTensorContents {
        fp32_contents: vec![2.0; 6],
        ..Default::default()
    });
    let response = client
        .model_infer(ModelInferRequest {
            model_name: "two_io".into(),
            inputs: vec![b, a],
            outputs: vec![InferRequestedOutputTensor {
                name: "product".into(),
                parameters: HashMap::new(),
            }],
            ..Default::default()
        })
        .await
        .expect("two_io infer")
        .into_inner();
    assert_eq!(response.outputs.len(), 1);
    assert_eq!(response.outputs[0].name, "product");
    assert_eq!(
        f32_values(&response.raw_output_contents[0]),
        vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    );

    // Every typed contents field round-trips through the identity model as raw bytes.
    let typed: Vec<(&str, InferTensorContents, Vec<u8>)> = vec![
        (
            "bool",
            InferTensorContents {
                bool_contents: vec![true, false, true],
                ..Default::default()
            },
            vec![1, 0, 1],
        ),
        (
            "uint8",
            InferTensorContents {
                uint_contents: vec![0, 7, 255],
                ..Default::default()
            },
            vec![0, 7, 255],
        ),
        (
            "int8",
            InferTensorContents {
                int_contents: vec![-128, 0, 127],
                ..Default::default()
            },
            vec![0x80, 0, 0x7f],
        ),
        (
            "int16",
            InferTensorContents {
                int_contents: vec![-2, 1, 300],
                ..Default::default()
            },
            le_bytes![-2i16, 1, 300],
        ),
        (
            "uint16",
            InferTensorContents {
                uint_contents: vec![65535, 1, 2],
                ..Default::default()
            },
            le_bytes![65535u16, 1, 2],
        ),
        (
            "int32",
            InferTensorContents {
                int_contents: vec![-5, 6, 7],
                ..Default::default()
            },
            le_bytes![-5i32, 6, 7],
        ),
        (
            "uint32",
            InferTensorContents {
                uint_contents: vec![u32::MAX, 0, 9],
                ..Default::default()
            },
            le_bytes![u32::MAX, 0, 9],
        ),
        (
            "int64",
            InferTensorContents {
                int64_contents: vec![i64::MIN, -1, 1 << 40],
                ..Default::default()
            },
            le_bytes![i64::MIN, -1, 1 << 40],
        ),
        (
            "uint64",
            InferTensorContents {
                uint64_contents: vec![u64::MAX, 3, 4],
                ..Default::default()
            },
            le_bytes![u64::MAX, 3, 4],
        ),
        (
            "fp32",
            InferTensorContents {
                fp32_contents: vec![0.5, -1.0, 3.25],
                ..Default::default()
            },
            f32_bytes(&[0.5, -1.0, 3.25]),
        ),
        (
            "fp64",
            InferTensorContents {
                fp64_contents: vec![0.1, -2.0, 1e300],
                ..Default::default()
            },
            le_bytes![0.1f64, -2.0, 1e300],
        ),
    ];
    let mut inputs = Vec::new();
    for (suffix, contents, _) in &typed {
        let mut tensor = input(&format!("in_{suffix}"), &suffix.to_uppercase(), &[1, 3]);
        tensor.contents = Some(contents.clone());
        inputs.push(tensor);
    }
    let response = client
        .model_infer(ModelInferRequest {
            model_name: "typed".into(),
            inputs,
            ..Default::default()
        })
        .await
        .expect("typed contents of every datatype")
        .into_inner();
    assert_eq!(
        response.outputs.len(),
        typed.len(),
        "all outputs when none is requested"
    );
    for (suffix, _, expected) in &typed {
        let index = response
            .outputs
            .iter()
            .position(|o| o.name == format!("out_{suffix}"))
            .unwrap_or_else(|| panic!("out_{suffix} missing"));
        assert_eq!(response.outputs[index].datatype, suffix.to_uppercase());
        assert_eq!(&response.raw_output_contents[index], expected, "{suffix}");
    }

    // FP16 and BF16 travel raw only; every input of the identity model is sent raw.
    let identity_types = [
        ("bool", 1),
        ("uint8", 1),
        ("int8", 1),
        ("uint16", 2),
        ("int16", 2),
        ("uint32", 4),
        ("int32", 4),
        ("uint64", 8),
        ("int64", 8),
        ("fp16", 2),
        ("bf16", 2),
        ("fp32", 4),
        ("fp64", 8),
    ];
    let half: Vec<u8> = [1.0f32, -2.0, 0.5]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let brain: Vec<u8> = [1.0f32, -2.0, 0.5]
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let mut request = ModelInferRequest {
        model_name: "identity".into(),
        outputs: ["out_fp16", "out_bf16"]
            .iter()
            .map(|name| InferRequestedOutputTensor {
                name: name.to_string(),
                parameters: HashMap::new(),
            })
            .collect(),
        ..Default::default()
    };
    for (suffix, size) in identity_types {
        request.inputs.push(input(
            &format!("in_{suffix}"),
            &suffix.to_uppercase(),
            &[1, 3],
        ));
        request.raw_input_contents.push(match suffix {
            "fp16" => half.clone(),
            "bf16" => brain.clone(),
            _ => vec![0; 3 * size],
        });
    }
    let response = client
        .model_infer(request)
        .await
        .expect("fp16 and bf16 raw")
        .into_inner();
    assert_eq!(response.raw_output_contents, vec![half, brain]);

    // Messages far above gRPC's 4 MiB default pass (64 MiB default limit): 6.4 MB in and out.
    let length = 800_000;
    let values: Vec<f32> = (0..2 * length).map(|v| (v % 1000) as f32).collect();
    let response = client
        .model_infer(ModelInferRequest {
            model_name: "ragged".into(),
            inputs: vec![input("x", "FP32", &[2, length as i64])],
            raw_input_contents: vec![f32_bytes(&values)],
            ..Default::default()
        })
        .await
        .expect("large request")
        .into_inner();
    assert_eq!(response.outputs[0].shape, vec![2, length as i64]);
    let output = f32_values(&response.raw_output_contents[0]);
    assert_eq!(output[length + 7], values[length + 7] * 2.0 + 1.0);

    // A model without a batch dimension takes its exact shape.
    let response = client
        .model_infer(ModelInferRequest {
            model_name: "unbatched".into(),
            inputs: vec![input("v", "FP32", &[3])],
            raw_input_contents: vec![f32_bytes(&[1.0, 2.0, 3.0])],
            ..Default::default()
        })
        .await
        .expect("unbatched infer")
        .into_inner();
    assert_eq!(
        f32_values(&response.raw_output_contents[0]),
        vec![3.0, 5.0, 7.0]
    );
}

#[tokio::test]
async fn malformed_requests_are_refused_with_what_was_expected() {
    let repo = repository();
    let server = Server::start(repo.path(), &[]).await;
    let mut client = server.client().await;

    type Mutation = Box<dyn Fn(&mut ModelInferRequest)>;
    let cases: Vec<(&str, Mutation, Code, &str)> = vec![
        (
            "unknown model",
            Box::new(|r| r.model_name = "nope".into()),
            Code::NotFound,
            "unknown model 'nope'",
        ),
        (
            "unknown version",
            Box::new(|r| r.model_version = "7".into()),
            Code::NotFound,
            "no version '7'",
        ),
        (
            "model not ready",
            Box::new(|r| r.model_name = "typo".into()),
            Code::Unavailable,
            "max_queue_delay_us",
        ),
        (
            "wrong input name",
            Box::new(|r| r.inputs[0].name = "X".into()),
            Code::InvalidArgument,
            "unknown input 'X'; the model's inputs are 'x'",
        ),
        (
            "missing input",
            Box::new(|r| {
                r.inputs.clear();
                r.raw_input_contents.clear();
            }),
            Code::InvalidArgument,
            "missing input 'x' (FP32, shape [1..=8, 4])",
        ),
        (
            "duplicate input",
            Box::new(|r| {
                r.inputs.push(r.inputs[0].clone());
                r.raw_input_contents.push(r.raw_input_contents[0].clone());
            }),
            Code::InvalidArgument,
            "input 'x' is given twice",
        ),
        (
            "wrong datatype",
            Box::new(|r| r.inputs[0].datatype = "FP64".into()),
            Code::InvalidArgument,
            "datatype 'FP64' but the model expects FP32",
        ),
        (
            "wrong rank",
            Box::new(|r| r.inputs[0].shape = vec![8]),
            Code::InvalidArgument,
            "shape [8] but the model expects [1..=8, 4]",
        ),
        (
            "wrong fixed dim",
            Box::new(|r| r.inputs[0].shape = vec![4, 2]),
            Code::InvalidArgument,
            "shape [4, 2]",
        ),
        (
            "batch too large",
            Box::new(|r| {
                r.inputs[0].shape = vec![9, 4];
                r.raw_input_contents[0] = vec![0; 9 * 16];
            }),
            Code::InvalidArgument,
            "batch size 9 but this model accepts 1 to 8",
        ),
        (
            "byte length",
            Box::new(|r| r.raw_input_contents[0].truncate(10)),
            Code::InvalidArgument,
            "has 10 bytes but shape [2, 4] of FP32 needs 32",
        ),
        (
            "mixed typed and raw",
            Box::new(|r| {
                r.inputs[0].contents = Some(InferTensorContents {
                    fp32_contents: vec![0.0; 8],
                    ..Default::default()
                })
            }),
            Code::InvalidArgument,
            "mixes raw_input_contents with typed contents",
        ),
        (
            "typed count",
            Box::new(|r| {
                r.raw_input_contents.clear();
                r.inputs[0].contents = Some(InferTensorContents {
                    fp32_contents: vec![0.0; 7],
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "7 elements in contents but shape [2, 4] needs 8",
        ),
        (
            "unknown output",
            Box::new(|r| {
                r.outputs.push(InferRequestedOutputTensor {
                    name: "z".into(),
                    parameters: HashMap::new(),
                })
            }),
            Code::InvalidArgument,
            "unknown requested output 'z'; the model's outputs are 'y'",
        ),
        (
            "bad timeout parameter",
            Box::new(|r| {
                r.parameters.insert(
                    "timeout".into(),
                    InferParameter {
                        parameter_choice: Some(ParameterChoice::Int64Param(-5)),
                    },
                );
            }),
            Code::InvalidArgument,
            "request parameter 'timeout'",
        ),
    ];
    for (label, mutate, code, message) in cases {
        let mut request = affine_request(2);
        mutate(&mut request);
        let status = client.model_infer(request).await.expect_err(label);
        assert_eq!(status.code(), code, "{label}: {}", status.message());
        assert!(
            status.message().contains(message),
            "{label}: got '{}', wanted '{message}'",
            status.message()
        );
    }

    // The server is still healthy after all of that.
    client
        .model_infer(affine_request(1))
        .await
        .expect("valid request still served");
}

#[tokio::test]
async fn broken_models_are_unavailable_with_reasons_while_good_ones_serve() {
    let repo = repository();
    let server = Server::start(repo.path(), &[]).await;
    let mut client = server.client().await;

    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner()
        .models;
    let row = |name: &str| {
        index
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} missing from {index:?}"))
            .clone()
    };
    assert_eq!(row("affine").state, "READY");
    assert_eq!(row("affine").version, "1");
    let typo = row("typo");
    assert_eq!(typo.state, "UNAVAILABLE");
    assert!(typo.reason.contains("typo/config.toml"), "{}", typo.reason);
    assert!(
        typo.reason.contains("max_queue_delay_us"),
        "{}",
        typo.reason
    );
    let corrupt = row("corrupt");
    assert_eq!(corrupt.state, "UNAVAILABLE");
    assert!(
        corrupt.reason.contains("corrupt/1/model.onnx"),
        "{}",
        corrupt.reason
    );
    let noversion = row("noversion");
    assert!(
        noversion.reason.contains("no numeric version folder"),
        "{}",
        noversion.reason
    );

    let ready_only = client
        .repository_index(RepositoryIndexRequest {
            repository_name: String::new(),
            ready: true,
        })
        .await
        .expect("ready index")
        .into_inner()
        .models;
    assert!(ready_only.iter().all(|m| m.state == "READY"));
    assert_eq!(ready_only.len(), 8, "{ready_only:?}");

    for (name, ready) in [("affine", true), ("typo", false), ("corrupt", false)] {
        let answer = client
            .model_ready(ModelReadyRequest {
                name: name.into(),
                version: String::new(),
            })
            .await
            .expect("model ready")
            .into_inner()
            .ready;
        assert_eq!(answer, ready, "{name}");
    }
    let status = client
        .model_ready(ModelReadyRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .expect_err("unknown model");
    assert_eq!(status.code(), Code::NotFound);
    client
        .model_infer(affine_request(2))
        .await
        .expect("good model serves");

    // Pinned versions: 1 and 2 are served, 3 is not; an empty version means the highest.
    let pinned: Vec<&str> = index
        .iter()
        .filter(|m| m.name == "pinned")
        .map(|m| m.version.as_str())
        .collect();
    assert_eq!(pinned, ["1", "2"]);
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: "pinned".into(),
            version: "1".into(),
        })
        .await
        .expect("pinned metadata")
        .into_inner();
    assert_eq!(metadata.versions, ["1", "2"]);
    for (version, answered) in [("", "2"), ("1", "1"), ("2", "2")] {
        let mut request = affine_request_to("pinned", 1);
        request.model_version = version.into();
        let response = client.model_infer(request).await.expect("pinned infer");
        assert_eq!(
            response.into_inner().model_version,
            answered,
            "asked '{version}'"
        );
    }
    let mut request = affine_request_to("pinned", 1);
    request.model_version = "3".into();
    let status = client.model_infer(request).await.expect_err("version 3");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("served: 1, 2"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn statistics_streaming_timeouts_and_model_control_refusal() {
    let repo = repository().model(
        "slow",
        "affine.onnx",
        "max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 400000\npreferred_batch_sizes = [8]\n",
    );
    let server = Server::start(repo.path(), &[]).await;
    let mut client = server.client().await;

    // Four concurrent 2-sample requests reach the preferred batch of 8 together.
    let calls = (0..4).map(|_| {
        let mut client = client.clone();
        async move { client.model_infer(affine_request_to("slow", 2)).await }
    });
    for result in futures::future::join_all(calls).await {
        let response = result.expect("batched infer").into_inner();
        assert_eq!(int64_param(&response, "batch_size"), 8);
    }
    let stats = client
        .model_statistics(ModelStatisticsRequest {
            name: "slow".into(),
            version: String::new(),
        })
        .await
        .expect("statistics")
        .into_inner()
        .model_stats;
    assert_eq!(stats.len(), 1);
    let slow = &stats[0];
    assert_eq!(slow.inference_count, 8);
    assert_eq!(slow.execution_count, 1);
    let inference = slow.inference_stats.expect("inference stats");
    assert_eq!(inference.success.expect("success").count, 4);
    assert!(inference.compute_infer.expect("compute").ns > 0);
    assert_eq!(slow.batch_stats.len(), 1);
    assert_eq!(slow.batch_stats[0].batch_size, 8);
    assert_eq!(slow.batch_stats[0].compute_infer.expect("batch").count, 1);
    assert!(slow.last_inference > 0);

    // The gRPC deadline (grpc-timeout header) ends the call long before the 400 ms batch delay.
    let mut request = tonic::Request::new(affine_request_to("slow", 1));
    request.set_timeout(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let status = client.model_infer(request).await.expect_err("deadline");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );

    // Triton's `timeout` parameter: the request expires in the queue before the batch fills.
    let mut request = affine_request_to("slow", 1);
    request.parameters.insert(
        "timeout".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(50_000)),
        },
    );
    let status = client.model_infer(request).await.expect_err("expired");
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
    let stats = client
        .model_statistics(ModelStatisticsRequest {
            name: "slow".into(),
            version: "1".into(),
        })
        .await
        .expect("statistics")
        .into_inner()
        .model_stats;
    assert_eq!(
        stats[0]
            .inference_stats
            .expect("stats")
            .fail
            .expect("fail")
            .count,
        2,
        "both deadlines count as failures"
    );
    let all = client
        .model_statistics(ModelStatisticsRequest::default())
        .await
        .expect("all statistics")
        .into_inner()
        .model_stats;
    assert_eq!(all.len(), 9, "one entry per served model version");
    let status = client
        .model_statistics(ModelStatisticsRequest {
            name: "typo".into(),
            version: String::new(),
        })
        .await
        .expect_err("not ready");
    assert_eq!(status.code(), Code::Unavailable);

    // Streaming: answers carry ids; errors come back in error_message.
    let mut bad = affine_request(1);
    bad.id = "bad".into();
    bad.inputs[0].datatype = "INT8".into();
    let outbound = tokio_stream::iter(vec![affine_request(1), bad, affine_request(2)]);
    let mut inbound = client
        .model_stream_infer(outbound)
        .await
        .expect("stream")
        .into_inner();
    let mut seen = HashMap::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("stream answer in time")
        .expect("stream message")
    {
        let response = message.infer_response.expect("response");
        seen.insert(
            response.id.clone(),
            (message.error_message, response.raw_output_contents.len()),
        );
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen["req-1"], (String::new(), 1));
    assert_eq!(seen["req-2"], (String::new(), 1));
    assert!(
        seen["bad"].0.contains("datatype 'INT8'"),
        "{:?}",
        seen["bad"]
    );

    // Model control is off by default.
    let status = client
        .repository_model_unload(unload_request("affine"))
        .await
        .expect_err("unload refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("--allow-model-control"),
        "{}",
        status.message()
    );
    let status = client
        .repository_model_load(load_request("affine"))
        .await
        .expect_err("load refused");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn model_control_loads_fixes_and_unloads() {
    let repo = repository();
    let server = Server::start(repo.path(), &["--allow-model-control"]).await;
    let mut client = server.client().await;
    let mut health = HealthClient::new(server.channel().await.expect("channel"));
    let model_health = |name: &'static str| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .expect("health")
                .into_inner()
                .status
        }
    };

    // Loading a still-broken model reports why and leaves it unavailable.
    let status = client
        .repository_model_load(load_request("typo"))
        .await
        .expect_err("still broken");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("max_queue_delay_us"),
        "{}",
        status.message()
    );

    // Fix the config, load again: it serves.
    std::fs::write(repo.path().join("typo/config.toml"), "max_batch_size = 8\n").expect("fix");
    client
        .repository_model_load(load_request("typo"))
        .await
        .expect("load fixed model");
    client
        .model_infer(affine_request_to("typo", 1))
        .await
        .expect("fixed model serves");
    assert_eq!(model_health("typo").await, ServingStatus::Serving as i32);

    client
        .repository_model_unload(unload_request("affine"))
        .await
        .expect("unload");
    let status = client
        .model_infer(affine_request(1))
        .await
        .expect_err("unloaded");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        model_health("affine").await,
        ServingStatus::NotServing as i32
    );
    // A model folder added after startup is listed, and loads on request.
    std::fs::create_dir_all(repo.path().join("late/1")).expect("late folder");
    std::fs::copy(
        common::model("affine.onnx"),
        repo.path().join("late/1/model.onnx"),
    )
    .expect("copy model");
    std::fs::write(repo.path().join("late/config.toml"), "").expect("late config");
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner()
        .models;
    let late = index
        .iter()
        .find(|m| m.name == "late")
        .expect("late listed");
    assert_eq!(late.state, "UNAVAILABLE");
    assert!(late.reason.contains("not loaded"), "{}", late.reason);
    client
        .repository_model_load(load_request("late"))
        .await
        .expect("load late model");
    client
        .model_infer(affine_request_to("late", 1))
        .await
        .expect("late model serves");

    let status = client
        .repository_model_load(load_request("missing"))
        .await
        .expect_err("no such folder");
    assert_eq!(status.code(), Code::NotFound);
    drop(health.clone());
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("overall health");
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let repo = Repo::new();
    let server = Server::start(repo.path(), &[]).await;
    let mut reflection = ServerReflectionClient::new(server.channel().await.expect("channel"));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["inference.GRPCInferenceService", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
}

#[tokio::test]
async fn max_message_size_is_enforced() {
    let repo = Repo::new().model("ragged", "affine_ragged.onnx", "max_batch_size = 1\n");
    let server = Server::start(repo.path(), &["--max-message-size", "1000000"]).await;
    let mut client = server.client().await;
    let request = |length: usize| ModelInferRequest {
        model_name: "ragged".into(),
        inputs: vec![input("x", "FP32", &[1, length as i64])],
        raw_input_contents: vec![f32_bytes(&vec![1.0; length])],
        ..Default::default()
    };
    client
        .model_infer(request(100_000))
        .await
        .expect("400 kB fits");
    let status = client
        .model_infer(request(300_000))
        .await
        .expect_err("1.2 MB is too large");
    // Refused from the message's length prefix, before it is buffered.
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status
            .message()
            .contains("over the server's limit of 1000000 bytes"),
        "{status}"
    );
    // A message just over the limit, and the server keeps serving.
    let just_over = request(250_000 - 5);
    let status = client
        .model_infer(just_over)
        .await
        .expect_err("over by a few bytes");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    client
        .model_infer(request(100_000))
        .await
        .expect("still serving");
}
