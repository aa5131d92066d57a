//! What Triton's and KServe's own tools meet first, through the real binary: HTTP/REST (JSON and
//! binary tensors, the same validation and statuses as gRPC), gRPC compression, complete and
//! consistent statistics, system shared memory, health Watch on an unknown service, reflection v1
//! and v1alpha, and a non-empty message on every refusal.

mod common;
mod service_support;

use std::time::Duration;

use futures::StreamExt;
use inference_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use inference_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use inference_proto::inference::{
    infer_parameter::ParameterChoice, CudaSharedMemoryRegisterRequest, InferParameter,
    LogSettingsRequest, ModelInferRequest, ModelStatisticsRequest, RepositoryModelLoadRequest,
    SystemSharedMemoryRegisterRequest, SystemSharedMemoryStatusRequest,
    SystemSharedMemoryUnregisterRequest, TraceSettingRequest,
};
use serde_json::json;
use service_support::{f32_bytes, f32_values, http, Repo, Server};
use tonic::codec::CompressionEncoding;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn affine_repo() -> Repo {
    Repo::new().model(
        "affine",
        "affine.onnx",
        "max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 100\n",
    )
}

fn request(x: [f32; 4]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "affine".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![f32_bytes(&x)],
        ..Default::default()
    }
}

#[tokio::test]
async fn http_rest_serves_health_metadata_config_stats_and_inference() {
    let repo = affine_repo();
    let server = Server::start(repo.path(), &[]).await;
    let addr = server.http_addr.expect("HTTP address");

    assert_eq!(
        http(addr, "GET", "/v2/health/live", &[], b"").await.status,
        200
    );
    assert_eq!(
        http(addr, "GET", "/v2/health/ready", &[], b"").await.status,
        200
    );
    assert_eq!(
        http(addr, "GET", "/v2/models/affine/ready", &[], b"")
            .await
            .status,
        200
    );
    let meta = http(addr, "GET", "/v2", &[], b"").await.json();
    assert_eq!(meta["name"], "inference-server");
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("statistics")));
    let model = http(addr, "GET", "/v2/models/affine", &[], b"")
        .await
        .json();
    assert_eq!(
        model["inputs"][0],
        json!({ "name": "x", "datatype": "FP32", "shape": [-1, 4] })
    );
    assert_eq!(model["platform"], "onnxruntime_onnx");
    let config = http(addr, "GET", "/v2/models/affine/versions/1/config", &[], b"")
        .await
        .json();
    assert_eq!(config["max_batch_size"], 8);
    assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(config["instance_group"][0]["kind"], "KIND_CPU");
    assert!(config["dynamic_batching"].is_object());

    // JSON in, JSON out.
    let body = json!({
        "id": "r1",
        "inputs": [{ "name": "x", "datatype": "FP32", "shape": [2, 4], "data": [[0, 1, 2, 3], [4, 5, 6, 7]] }],
    });
    let answer = http(
        addr,
        "POST",
        "/v2/models/affine/infer",
        &[],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let out = answer.json();
    assert_eq!(out["id"], "r1");
    assert_eq!(out["outputs"][0]["name"], "y");
    assert_eq!(out["outputs"][0]["shape"], json!([2, 4]));
    assert_eq!(
        out["outputs"][0]["data"],
        json!([1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0])
    );
    assert_eq!(out["parameters"]["device"], "cpu");

    // Binary in, binary out (Triton's binary tensor data extension).
    let header = json!({
        "inputs": [{ "name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": { "binary_data_size": 16 } }],
        "outputs": [{ "name": "y", "parameters": { "binary_data": true } }],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
    let length = header.len().to_string();
    let answer = http(
        addr,
        "POST",
        "/v2/models/affine/infer",
        &[
            ("Inference-Header-Content-Length", &length),
            ("Content-Type", "application/octet-stream"),
        ],
        &body,
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let json_length: usize = answer
        .header("inference-header-content-length")
        .expect("binary response")
        .parse()
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&answer.body[..json_length]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 16);
    assert_eq!(
        f32_values(&answer.body[json_length..]),
        [3.0, 5.0, 7.0, 9.0]
    );

    // The same statuses as gRPC, with the reason in {"error": ...}.
    for (path, body, status, needle) in [
        (
            "/v2/models/nope/infer",
            json!({"inputs": []}),
            404,
            "unknown model 'nope'",
        ),
        (
            "/v2/models/affine/infer",
            json!({"inputs": [{ "name": "x", "datatype": "FP32", "shape": [1, 5], "data": [0, 0, 0, 0, 0] }]}),
            400,
            "shape",
        ),
        (
            "/v2/models/affine/infer",
            json!({"inputs": [{ "name": "x", "datatype": "INT32", "shape": [1, 4], "data": [0, 0, 0, 0] }]}),
            400,
            "datatype",
        ),
    ] {
        let answer = http(addr, "POST", path, &[], body.to_string().as_bytes()).await;
        assert_eq!(answer.status, status, "{path}");
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(needle), "{error}");
    }
    let answer = http(addr, "POST", "/v2/models/affine/infer", &[], b"{oops").await;
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(http(addr, "GET", "/metrics", &[], b"").await.status, 404);

    // Statistics as numbers, with equal compute counts.
    let stats = http(addr, "GET", "/v2/models/affine/stats", &[], b"")
        .await
        .json();
    let s = &stats["model_stats"][0]["inference_stats"];
    assert_eq!(s["success"]["count"], 2);
    for key in ["compute_input", "compute_infer", "compute_output"] {
        assert_eq!(s[key]["count"], 2, "{key}");
    }
    let repository = http(addr, "POST", "/v2/repository/index", &[], b"{}")
        .await
        .json();
    assert_eq!(repository[0]["state"], "READY");
}

#[tokio::test]
async fn statistics_are_complete_and_add_up() {
    let repo = affine_repo();
    let server = Server::start(repo.path(), &[]).await;
    let mut client = server.client().await;
    for i in 0..6 {
        client
            .model_infer(request([i as f32; 4]))
            .await
            .expect("served");
    }
    let stats = client
        .model_statistics(ModelStatisticsRequest {
            name: "affine".into(),
            version: String::new(),
        })
        .await
        .expect("statistics")
        .into_inner()
        .model_stats
        .remove(0);
    assert_eq!(
        stats.version, "1",
        "a numeric version (perf_analyzer parses it)"
    );
    let s = stats.inference_stats.expect("inference stats");
    let (input, infer, output) = (
        s.compute_input.expect("input"),
        s.compute_infer.expect("infer"),
        s.compute_output.expect("output"),
    );
    let success = s.success.expect("success");
    let queue = s.queue.expect("queue");
    assert_eq!(
        [input.count, infer.count, output.count, queue.count],
        [6; 4]
    );
    assert!(input.ns > 0 && infer.ns > 0 && output.ns > 0);
    assert!(
        queue.ns + input.ns + infer.ns + output.ns <= success.ns,
        "the parts fit in the whole: {queue:?} {input:?} {infer:?} {output:?} ≤ {success:?}"
    );
    for batch in &stats.batch_stats {
        let c = |d: Option<inference_proto::inference::StatisticDuration>| d.expect("set").count;
        assert_eq!(c(batch.compute_input), c(batch.compute_infer));
        assert_eq!(c(batch.compute_output), c(batch.compute_infer));
    }
    assert!(stats.last_inference > 0 && stats.inference_count == 6);
    // The same counts as the Prometheus counters.
    let metrics = server.metrics().await;
    let success = metrics
        .lines()
        .find(|l| {
            l.starts_with("inference_requests_total{")
                && l.contains("model=\"affine\"")
                && l.contains("outcome=\"success\"")
        })
        .unwrap_or_else(|| panic!("no success counter in\n{metrics}"));
    assert!(success.ends_with(" 6"), "{success}");
}

#[tokio::test]
async fn gzip_zstd_and_deflate_requests_are_accepted_and_answers_compressed() {
    let repo = affine_repo();
    let server = Server::start(repo.path(), &[]).await;
    for encoding in [
        CompressionEncoding::Gzip,
        CompressionEncoding::Zstd,
        CompressionEncoding::Deflate,
    ] {
        let mut client = GrpcInferenceServiceClient::new(server.channel().await.expect("channel"))
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let answer = client
            .model_infer(request([1.0; 4]))
            .await
            .unwrap_or_else(|s| panic!("{encoding:?}: {s}"));
        assert_eq!(
            f32_values(&answer.get_ref().raw_output_contents[0]),
            [3.0; 4]
        );
        assert_eq!(
            answer
                .metadata()
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok()),
            Some(encoding.to_string().as_str()).map(|e| e.trim_matches('"')),
            "{encoding:?} answer is compressed"
        );
    }
}

#[tokio::test]
async fn every_refusal_has_a_message_and_shared_memory_is_off_by_default() {
    let repo = affine_repo();
    let server = Server::start(repo.path(), &[]).await;
    let mut client = server.client().await;
    let mut messages = Vec::new();
    let status = client
        .system_shared_memory_register(SystemSharedMemoryRegisterRequest {
            name: "r".into(),
            key: "/r".into(),
            offset: 0,
            byte_size: 16,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    messages.push(status.message().to_string());
    let status = client
        .cuda_shared_memory_register(CudaSharedMemoryRegisterRequest::default())
        .await
        .unwrap_err();
    messages.push(status.message().to_string());
    let status = client
        .trace_setting(TraceSettingRequest::default())
        .await
        .unwrap_err();
    messages.push(status.message().to_string());
    let status = client
        .log_settings(LogSettingsRequest::default())
        .await
        .unwrap_err();
    messages.push(status.message().to_string());
    let status = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "affine".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    messages.push(status.message().to_string());
    for message in &messages {
        assert!(message.len() > 20, "an empty or terse message: '{message}'");
    }
    assert!(
        messages[0].contains("--allow-shared-memory"),
        "{}",
        messages[0]
    );
}

/// A POSIX shared-memory object in /dev/shm, removed on drop.
struct ShmObject(std::path::PathBuf);

impl Drop for ShmObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn region_params(
    region: &str,
    size: i64,
    offset: i64,
) -> std::collections::HashMap<String, InferParameter> {
    let p = |c| InferParameter {
        parameter_choice: Some(c),
    };
    [
        (
            "shared_memory_region",
            p(ParameterChoice::StringParam(region.into())),
        ),
        (
            "shared_memory_byte_size",
            p(ParameterChoice::Int64Param(size)),
        ),
        (
            "shared_memory_offset",
            p(ParameterChoice::Int64Param(offset)),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test]
async fn system_shared_memory_carries_inputs_and_outputs() {
    let repo = affine_repo();
    let server = Server::start(repo.path(), &["--allow-shared-memory"]).await;
    let mut client = server.client().await;
    let name = format!("inference-server-shm-test-{}", std::process::id());
    let object = ShmObject(std::path::PathBuf::from("/dev/shm").join(&name));
    let mut bytes = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    bytes.resize(64, 0);
    std::fs::write(&object.0, &bytes).expect("/dev/shm is writable");
    client
        .system_shared_memory_register(SystemSharedMemoryRegisterRequest {
            name: "io".into(),
            key: format!("/{name}"),
            offset: 0,
            byte_size: 64,
        })
        .await
        .expect("registers");
    let status = client
        .system_shared_memory_status(SystemSharedMemoryStatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.regions["io"].byte_size, 64);

    let request = ModelInferRequest {
        model_name: "affine".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            parameters: region_params("io", 16, 0),
            ..Default::default()
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: "y".into(),
            parameters: region_params("io", 16, 32),
        }],
        ..Default::default()
    };
    let answer = client
        .model_infer(request.clone())
        .await
        .expect("served")
        .into_inner();
    assert_eq!(
        answer.raw_output_contents,
        [Vec::<u8>::new()],
        "one empty entry per output"
    );
    let written = std::fs::read(&object.0).expect("read back");
    assert_eq!(f32_values(&written[32..48]), [3.0, 5.0, 7.0, 9.0]);

    // Out of the region: refused with the reason.
    let mut outside = request;
    outside.inputs[0].parameters = region_params("io", 16, 56);
    let status = client.model_infer(outside).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("do not fit"), "{status}");

    client
        .system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest::default())
        .await
        .expect("unregisters all");
}

#[tokio::test]
async fn health_watch_on_an_unknown_service_says_so_and_stays_open() {
    let repo = Repo::new().model("late", "affine.onnx", "");
    let server = Server::start(repo.path(), &["--allow-model-control"]).await;
    let mut client = server.client().await;
    client
        .repository_model_unload(inference_proto::inference::RepositoryModelUnloadRequest {
            model_name: "late".into(),
            ..Default::default()
        })
        .await
        .expect("unloads");
    let mut health = HealthClient::new(server.channel().await.expect("channel"));
    let unknown = health
        .check(HealthCheckRequest {
            service: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "nobody".into(),
        })
        .await
        .expect("watch opens")
        .into_inner();
    let first = watch.next().await.expect("a first status").expect("ok");
    assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);

    let mut late = health
        .watch(HealthCheckRequest {
            service: "late".into(),
        })
        .await
        .expect("watch opens")
        .into_inner();
    assert_eq!(
        late.next().await.expect("status").expect("ok").status,
        ServingStatus::NotServing as i32
    );
    client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "late".into(),
            ..Default::default()
        })
        .await
        .expect("loads");
    let next = tokio::time::timeout(Duration::from_secs(10), late.next())
        .await
        .expect("an update")
        .expect("status")
        .expect("ok");
    assert_eq!(next.status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn reflection_answers_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let repo = affine_repo();
    let server = Server::start(repo.path(), &[]).await;
    let channel = server.channel().await.expect("channel");

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = alpha
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let answer = answers.next().await.expect("an answer").expect("ok");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"inference.GRPCInferenceService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    let mut v1_client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "inference.GRPCInferenceService".into(),
            ),
        ),
    };
    let answer = v1_client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("v1 reflection")
        .into_inner()
        .next()
        .await
        .expect("an answer")
        .expect("ok");
    assert!(matches!(
        answer.message_response,
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}
