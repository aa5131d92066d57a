//! The KServe v2 HTTP/REST protocol on its own port (`--http-addr`), Triton's paths included:
//! health, metadata, config, statistics, repository, inference (JSON and the binary tensor data
//! extension) and system shared memory. Every handler calls the same [`InferenceService`] methods
//! the gRPC protocol uses, so validation, scheduling and statuses are one code path; gRPC
//! statuses become HTTP codes and `{"error": "..."}` bodies.

pub mod codec;

use std::future::Future;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use inference_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use inference_proto::inference::{
    CudaSharedMemoryRegisterRequest, CudaSharedMemoryStatusRequest,
    CudaSharedMemoryUnregisterRequest, LogSettingsRequest, ModelConfigRequest,
    ModelMetadataRequest, ModelReadyRequest, ModelStatisticsRequest, RepositoryIndexRequest,
    RepositoryModelLoadRequest, RepositoryModelUnloadRequest, ServerLiveRequest,
    ServerMetadataRequest, ServerReadyRequest, SystemSharedMemoryRegisterRequest,
    SystemSharedMemoryStatusRequest, SystemSharedMemoryUnregisterRequest, TraceSettingRequest,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tonic::{Code, Request, Status};

use super::transport::{self, Policy};
use super::InferenceService;

/// The header giving the JSON part's length in a binary-data request or response.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A gRPC status as an HTTP answer.
struct Failure(Status);

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure(status)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let code = match self.0.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, json_body(json!({ "error": self.0.message() }))).into_response()
    }
}

fn json_body(value: Value) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        value.to_string(),
    )
        .into_response()
}

type Answer = Result<Response, Failure>;

/// 200 when `ok`, 400 otherwise: KServe's health and readiness answers.
fn boolean(ok: bool) -> Response {
    if ok {
        StatusCode::OK.into_response()
    } else {
        StatusCode::BAD_REQUEST.into_response()
    }
}

/// The routes, over `service`; bodies larger than `max_body` are refused (413).
pub fn router(service: InferenceService, max_body: usize) -> Router {
    let model = |tail: &str| {
        [
            format!("/v2/models/{{model}}{tail}"),
            format!("/v2/models/{{model}}/versions/{{version}}{tail}"),
        ]
    };
    let mut router = Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/stats", get(all_statistics))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(load))
        .route("/v2/repository/models/{model}/unload", post(unload))
        .route("/v2/systemsharedmemory/status", get(shm_status_all))
        .route(
            "/v2/systemsharedmemory/region/{name}/status",
            get(shm_status),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/register",
            post(shm_register),
        )
        .route(
            "/v2/systemsharedmemory/unregister",
            post(shm_unregister_all),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/unregister",
            post(shm_unregister),
        )
        .route("/v2/cudasharedmemory/status", get(cuda_status))
        .route(
            "/v2/cudasharedmemory/region/{name}/status",
            get(cuda_status),
        )
        .route(
            "/v2/cudasharedmemory/region/{name}/register",
            post(cuda_register),
        )
        .route("/v2/cudasharedmemory/unregister", post(cuda_unregister_all))
        .route(
            "/v2/cudasharedmemory/region/{name}/unregister",
            post(cuda_unregister),
        )
        .route("/v2/trace/setting", get(trace).post(trace))
        .route("/v2/logging", get(logging).post(logging));
    for path in model("") {
        router = router.route(&path, get(model_metadata));
    }
    for path in model("/ready") {
        router = router.route(&path, get(model_ready));
    }
    for path in model("/config") {
        router = router.route(&path, get(model_config));
    }
    for path in model("/stats") {
        router = router.route(&path, get(model_statistics));
    }
    for path in model("/infer") {
        router = router.route(&path, post(infer));
    }
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(service)
}

/// Serves the REST protocol on `listener` under `policy` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: InferenceService,
    max_body: usize,
    policy: Policy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    transport::serve(
        listener,
        "http",
        router(service, max_body),
        policy,
        shutdown,
    )
    .await;
}

async fn not_found() -> Response {
    Failure(Status::not_found(
        "no such endpoint: the KServe v2 REST paths start with /v2 (e.g. /v2/health/ready, /v2/models/<name>/infer)",
    ))
    .into_response()
}

/// The `{model}` and optional `{version}` of a path.
fn model_path(params: &std::collections::HashMap<String, String>) -> (String, String) {
    (
        params.get("model").cloned().unwrap_or_default(),
        params.get("version").cloned().unwrap_or_default(),
    )
}

type Params = Path<std::collections::HashMap<String, String>>;

async fn live(State(service): State<InferenceService>) -> Answer {
    let answer = service
        .server_live(Request::new(ServerLiveRequest {}))
        .await?;
    Ok(boolean(answer.get_ref().live))
}

async fn ready(State(service): State<InferenceService>) -> Answer {
    let answer = service
        .server_ready(Request::new(ServerReadyRequest {}))
        .await?;
    Ok(boolean(answer.get_ref().ready))
}

async fn server_metadata(State(service): State<InferenceService>) -> Answer {
    let m = service
        .server_metadata(Request::new(ServerMetadataRequest {}))
        .await?
        .into_inner();
    Ok(json_body(json!({
        "name": m.name,
        "version": m.version,
        "extensions": m.extensions,
    })))
}

async fn model_metadata(State(service): State<InferenceService>, Path(params): Params) -> Answer {
    let (name, version) = model_path(&params);
    let m = service
        .model_metadata(Request::new(ModelMetadataRequest { name, version }))
        .await?
        .into_inner();
    let tensors = |ts: &[inference_proto::inference::model_metadata_response::TensorMetadata]| {
        ts.iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }))
            .collect::<Vec<_>>()
    };
    Ok(json_body(json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
    })))
}

async fn model_ready(State(service): State<InferenceService>, Path(params): Params) -> Answer {
    let (name, version) = model_path(&params);
    let answer = service
        .model_ready(Request::new(ModelReadyRequest { name, version }))
        .await?;
    Ok(boolean(answer.get_ref().ready))
}

async fn model_config(State(service): State<InferenceService>, Path(params): Params) -> Answer {
    let (name, version) = model_path(&params);
    let config = service
        .model_config(Request::new(ModelConfigRequest { name, version }))
        .await?
        .into_inner()
        .config
        .unwrap_or_default();
    Ok(json_body(codec::config_json(&config)))
}

async fn statistics(service: &InferenceService, name: String, version: String) -> Answer {
    let stats = service
        .model_statistics(Request::new(ModelStatisticsRequest { name, version }))
        .await?
        .into_inner();
    Ok(json_body(json!({
        "model_stats": stats.model_stats.iter().map(codec::statistics_json).collect::<Vec<_>>(),
    })))
}

async fn model_statistics(State(service): State<InferenceService>, Path(params): Params) -> Answer {
    let (name, version) = model_path(&params);
    statistics(&service, name, version).await
}

async fn all_statistics(State(service): State<InferenceService>) -> Answer {
    statistics(&service, String::new(), String::new()).await
}

/// The JSON body of a POST, or an empty object for an empty body.
fn json_request(body: &[u8]) -> Result<Value, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| {
        Failure(Status::invalid_argument(format!(
            "the body is not valid JSON: {e}"
        )))
    })
}

async fn repository_index(State(service): State<InferenceService>, body: Bytes) -> Answer {
    let ready = json_request(&body)?
        .get("ready")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let index = service
        .repository_index(Request::new(RepositoryIndexRequest {
            repository_name: String::new(),
            ready,
        }))
        .await?
        .into_inner();
    Ok(json_body(Value::Array(
        index
            .models
            .iter()
            .map(|m| json!({ "name": m.name, "version": m.version, "state": m.state, "reason": m.reason }))
            .collect(),
    )))
}

async fn load(State(service): State<InferenceService>, Path(model): Path<String>) -> Answer {
    service
        .repository_model_load(Request::new(RepositoryModelLoadRequest {
            model_name: model,
            ..Default::default()
        }))
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn unload(State(service): State<InferenceService>, Path(model): Path<String>) -> Answer {
    service
        .repository_model_unload(Request::new(RepositoryModelUnloadRequest {
            model_name: model,
            ..Default::default()
        }))
        .await?;
    Ok(StatusCode::OK.into_response())
}

/// The client's deadline: Triton's `timeout` parameter is read from the body by the common path.
async fn infer(
    State(service): State<InferenceService>,
    Path(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let (name, version) = model_path(&params);
    let header_length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    Failure(Status::invalid_argument(
                        "Inference-Header-Content-Length must be a byte count",
                    ))
                })?,
        ),
    };
    let (request, plan) = codec::decode_infer(&name, &version, &body, header_length)
        .map_err(|e| Failure(Status::invalid_argument(e.to_string())))?;
    let response = service.infer(request, None::<Duration>).await?;
    let (header_json, binary) = codec::encode_infer(response, &plan);
    if binary.is_empty() {
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            header_json,
        )
            .into_response());
    }
    let length = header_json.len().to_string();
    let mut body = header_json;
    body.extend_from_slice(&binary);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(HEADER_LENGTH),
                HeaderValue::from_str(&length).unwrap_or(HeaderValue::from_static("0")),
            ),
        ],
        body,
    )
        .into_response())
}

async fn shm_status_all(State(service): State<InferenceService>) -> Answer {
    shm_status_of(&service, String::new()).await
}

async fn shm_status(State(service): State<InferenceService>, Path(name): Path<String>) -> Answer {
    shm_status_of(&service, name).await
}

async fn shm_status_of(service: &InferenceService, name: String) -> Answer {
    let status = service
        .system_shared_memory_status(Request::new(SystemSharedMemoryStatusRequest { name }))
        .await?
        .into_inner();
    Ok(json_body(Value::Array(
        status
            .regions
            .values()
            .map(|r| json!({ "name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size }))
            .collect(),
    )))
}

async fn shm_register(
    State(service): State<InferenceService>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer {
    let body = json_request(&body)?;
    let number = |key: &str| body.get(key).and_then(Value::as_u64).unwrap_or(0);
    service
        .system_shared_memory_register(Request::new(SystemSharedMemoryRegisterRequest {
            name,
            key: body
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            offset: number("offset"),
            byte_size: number("byte_size"),
        }))
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn shm_unregister_all(State(service): State<InferenceService>) -> Answer {
    shm_unregister_of(&service, String::new()).await
}

async fn shm_unregister(
    State(service): State<InferenceService>,
    Path(name): Path<String>,
) -> Answer {
    shm_unregister_of(&service, name).await
}

async fn shm_unregister_of(service: &InferenceService, name: String) -> Answer {
    service
        .system_shared_memory_unregister(Request::new(SystemSharedMemoryUnregisterRequest { name }))
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn cuda_status(State(service): State<InferenceService>) -> Answer {
    service
        .cuda_shared_memory_status(Request::new(CudaSharedMemoryStatusRequest::default()))
        .await?;
    Ok(json_body(json!([])))
}

async fn cuda_register(
    State(service): State<InferenceService>,
    Path(name): Path<String>,
) -> Answer {
    service
        .cuda_shared_memory_register(Request::new(CudaSharedMemoryRegisterRequest {
            name,
            ..Default::default()
        }))
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn cuda_unregister_all(State(service): State<InferenceService>) -> Answer {
    cuda_unregister_of(&service, String::new()).await
}

async fn cuda_unregister(
    State(service): State<InferenceService>,
    Path(name): Path<String>,
) -> Answer {
    cuda_unregister_of(&service, name).await
}

async fn cuda_unregister_of(service: &InferenceService, name: String) -> Answer {
    service
        .cuda_shared_memory_unregister(Request::new(CudaSharedMemoryUnregisterRequest { name }))
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn trace(State(service): State<InferenceService>) -> Answer {
    service
        .trace_setting(Request::new(TraceSettingRequest::default()))
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn logging(State(service): State<InferenceService>) -> Answer {
    service
        .log_settings(Request::new(LogSettingsRequest::default()))
        .await?;
    Ok(StatusCode::OK.into_response())
}
