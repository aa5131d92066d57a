//! The system under test over the network: KServe v2 `ModelInfer` with `raw_input_contents`,
//! over several HTTP/2 connections per endpoint and several endpoints, round-robin. The SUT owns
//! its tokio runtime; `issue_query` spawns and returns at once. Every sample completes exactly
//! once, with an error set when its request failed. A request the server refuses as overloaded
//! (`RESOURCE_EXHAUSTED`) is retried a bounded number of times with exponential back-off, and
//! every retry is counted ([`RetryStats`], reported after the summary and in the detail log).
//! `https://` endpoints use TLS, and a bearer token goes with every RPC ([`Security`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inference_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use inference_proto::inference::infer_parameter::ParameterChoice;
use inference_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use inference_proto::inference::model_metadata_response::TensorMetadata;
use inference_proto::inference::{
    InferParameter, ModelConfigRequest, ModelInferRequest, ModelInferResponse,
    ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest, ServerReadyRequest,
};
use inference_proto::DataType;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::dataset::SampleStore;
use crate::postprocess::{self, OutputTensor};
use crate::profile::{PostProcess, Profile};
use crate::security::{is_https, BearerToken, Security};
use crate::whole_body::WholeBody;
use loadgen::observer::{Observation, RunObserver};
use loadgen::sut::{QuerySample, ResponseSink, SampleResponse, ServerTiming, Sut};

type Client = GrpcInferenceServiceClient<InterceptedService<WholeBody<Channel>, BearerToken>>;

/// How the SUT reaches the server and sizes its requests.
#[derive(Debug, Clone)]
pub struct GrpcSutConfig {
    /// Server URLs, e.g. `http://127.0.0.1:8001` (`http://` is added when no scheme is given).
    pub endpoints: Vec<String>,
    /// HTTP/2 connections opened to each endpoint.
    pub connections_per_endpoint: usize,
    /// Threads of the async runtime that sends the requests and reads the answers.
    pub network_threads: usize,
    /// Served model name.
    pub model: String,
    /// Largest number of samples sent in one request; larger queries are split.
    pub max_batch: usize,
    /// Requests in flight at once per connection; more wait on the client.
    pub in_flight_per_connection: usize,
    /// Input bytes in flight at once per endpoint (a request larger than the whole budget
    /// still goes, alone), so a server's bounded queue is not flooded.
    pub in_flight_bytes_per_endpoint: usize,
    /// Deadline of one request; retries of a refused request (see `retries`) also stop when
    /// the next one would start after it.
    pub request_timeout: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// How many times a request the server refuses as overloaded (`RESOURCE_EXHAUSTED`) is sent
    /// again, after [`FIRST_BACKOFF`] doubling up to [`MAX_BACKOFF`]; then its samples fail with
    /// the server's status.
    pub retries: u32,
    /// TLS for `https://` endpoints and the bearer token.
    pub security: Security,
}

/// Why the SUT could not start.
#[derive(Debug, thiserror::Error)]
pub enum GrpcSutError {
    #[error("no --endpoint given")]
    NoEndpoint,
    #[error(
        "invalid endpoint '{endpoint}': {reason} (expected a URL such as http://127.0.0.1:8001)"
    )]
    BadEndpoint { endpoint: String, reason: String },
    #[error("cannot connect to {endpoint}: {reason}; is the inference server running and listening there?{hint}",
        hint = if is_https(endpoint) { "" } else { " (a server that uses TLS needs an https:// endpoint)" })]
    Unreachable { endpoint: String, reason: String },
    #[error(
        "cannot open a TLS connection to {endpoint}: {reason}; check that the server serves TLS \
         there, that --tls-ca holds the CA that signed its certificate (default: the system's \
         roots), that the certificate names the endpoint's host (or --tls-server-name) and, if \
         the server asks for a client certificate, --tls-cert and --tls-key"
    )]
    TlsHandshake { endpoint: String, reason: String },
    #[error("{endpoint}: {error}")]
    Security {
        endpoint: String,
        error: crate::security::SecurityError,
    },
    #[error("{endpoint}: TLS options were given for a plaintext endpoint; use https://{rest}, or drop --tls-ca/--tls-cert/--tls-key/--tls-server-name",
        rest = endpoint.split_once("://").map_or(endpoint.as_str(), |(_, r)| r))]
    TlsOnPlaintext { endpoint: String },
    #[error("{endpoint}: {call} was refused: {reason}; the server wants a valid bearer token (--token or LOADGEN_TOKEN)")]
    Unauthenticated {
        endpoint: String,
        call: &'static str,
        reason: String,
    },
    #[error("{endpoint}: {call} failed: {reason}")]
    Rpc {
        endpoint: String,
        call: &'static str,
        reason: String,
    },
    #[error("{endpoint}: the server is not ready; wait until it has loaded its models")]
    ServerNotReady { endpoint: String },
    #[error("{endpoint}: model '{model}' is not available ({reason}); check --model against the server's model repository")]
    ModelUnavailable {
        endpoint: String,
        model: String,
        reason: String,
    },
    #[error("{endpoint}: model '{model}' does not match profile '{profile}': {problem}; choose the matching --profile or --model")]
    Mismatch {
        endpoint: String,
        model: String,
        profile: String,
        problem: String,
    },
    #[error("cannot start the client's async runtime: {0}")]
    Runtime(std::io::Error),
}

/// What the SUT sends and how it reads the answers.
#[derive(Debug)]
struct Shared {
    clients: Vec<Client>,
    next: AtomicUsize,
    store: Arc<SampleStore>,
    model: String,
    profile: Profile,
    /// The outputs read, in the order the profile's post-processing takes them.
    outputs: Vec<String>,
    max_batch: usize,
    /// Request slots.
    requests: Semaphore,
    /// Input budget in KiB.
    kibibytes: Semaphore,
    kibibytes_total: u32,
    retry_window: Duration,
    max_retries: u32,
    retry_stats: Arc<RetryStats>,
}

/// Pause before the first retry of an overloaded request; each further one waits twice as long.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause between retries of an overloaded request.
pub const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// [`Sut`] over KServe v2 gRPC.
pub struct GrpcSut {
    runtime: Runtime,
    shared: Arc<Shared>,
    name: String,
    served: ServedModel,
}

/// What the (first) server's ModelConfig says about the model it serves; empty fields where a
/// server does not say.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServedModel {
    /// The runtime (Triton's `backend`, e.g. onnxruntime, tflite, openvino).
    pub backend: String,
    pub platform: String,
    /// The devices its instances run on (this server's `device` parameter, e.g. `cpu`,
    /// `edgetpu:0`; for other servers, the instance groups' kinds).
    pub device: String,
    pub max_batch_size: i32,
}

impl GrpcSut {
    /// Connects every connection, checks that the server and model are ready and that the model's
    /// metadata matches `profile`; fails before any timing starts.
    pub fn connect(
        config: &GrpcSutConfig,
        profile: &Profile,
        store: Arc<SampleStore>,
    ) -> Result<Self, GrpcSutError> {
        if config.endpoints.is_empty() {
            return Err(GrpcSutError::NoEndpoint);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.network_threads.max(1))
            .enable_all()
            .thread_name("grpc-sut")
            .build()
            .map_err(GrpcSutError::Runtime)?;
        let (
            clients,
            Checked {
                batch_cap,
                outputs,
                served,
            },
        ) = runtime.block_on(open_all(config, profile))?;
        let connections = clients.len();
        let kib_total = (config.in_flight_bytes_per_endpoint / 1024)
            .saturating_mul(config.endpoints.len())
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let shared = Shared {
            clients,
            next: AtomicUsize::new(0),
            store,
            model: config.model.clone(),
            profile: profile.clone(),
            outputs,
            max_batch: config.max_batch.min(batch_cap).max(1),
            requests: Semaphore::new(connections * config.in_flight_per_connection.max(1)),
            kibibytes: Semaphore::new(kib_total),
            kibibytes_total: u32::try_from(kib_total).unwrap_or(u32::MAX),
            retry_window: config.request_timeout,
            max_retries: config.retries,
            retry_stats: Arc::new(RetryStats::new(config.retries)),
        };
        Ok(Self {
            runtime,
            shared: Arc::new(shared),
            name: format!(
                "Network SUT: KServe v2 gRPC model '{}' at {}",
                config.model,
                config.endpoints.join(", ")
            ),
            served,
        })
    }

    /// The served model, as the first server describes it.
    pub fn served_model(&self) -> &ServedModel {
        &self.served
    }
}

impl GrpcSut {
    /// The retry counters; hand them to the runner as an observer to report them.
    pub fn retry_stats(&self) -> Arc<RetryStats> {
        Arc::clone(&self.shared.retry_stats)
    }
}

impl Sut for GrpcSut {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn issue_query(&self, samples: Vec<QuerySample>, sink: ResponseSink) {
        let shared = Arc::clone(&self.shared);
        self.runtime.spawn(async move {
            if samples.len() <= shared.max_batch {
                shared.run_request(samples, sink).await;
                return;
            }
            for chunk in samples.chunks(shared.max_batch) {
                let (shared, sink, chunk) = (Arc::clone(&shared), sink.clone(), chunk.to_vec());
                tokio::spawn(async move { shared.run_request(chunk, sink).await });
            }
        });
    }
}

impl Shared {
    /// Sends one request for `samples` and completes all of them, successfully or with an error.
    async fn run_request(&self, samples: Vec<QuerySample>, sink: ResponseSink) {
        let responses = match self.infer(&samples).await {
            Ok(responses) => responses,
            Err(message) => samples
                .iter()
                .map(|s| SampleResponse {
                    id: s.id,
                    error: Some(message.clone()),
                    ..SampleResponse::default()
                })
                .collect(),
        };
        sink.complete(responses);
    }

    async fn infer(&self, samples: &[QuerySample]) -> Result<Vec<SampleResponse>, String> {
        // Wait for a slot and input budget before building the request, so a large Offline
        // query neither copies every sample at once nor floods the server.
        let closed = |_| "the client is shutting down".to_string();
        let _slot = self.requests.acquire().await.map_err(closed)?;
        let kib = (samples.len() * self.profile.sample_bytes()).div_ceil(1024);
        let kib = u32::try_from(kib)
            .unwrap_or(u32::MAX)
            .clamp(1, self.kibibytes_total);
        let _budget = self.kibibytes.acquire_many(kib).await.map_err(closed)?;
        let deadline = tokio::time::Instant::now() + self.retry_window;
        let mut backoff = FIRST_BACKOFF;
        let mut retries = 0u32;
        let response = loop {
            let request = self.request(samples)?;
            let at = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
            let mut client = self.clients[at].clone();
            match client.model_infer(request).await {
                Ok(response) => break response.into_inner(),
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    if retries < self.max_retries
                        && tokio::time::Instant::now() + backoff < deadline
                    {
                        retries += 1;
                        self.retry_stats.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    self.retry_stats.given_up.fetch_add(1, Ordering::Relaxed);
                    return Err(format!(
                        "ModelInfer failed: {}: {} (refused after {retries} {})",
                        status.code(),
                        status.message(),
                        if retries == 1 { "retry" } else { "retries" }
                    ));
                }
                Err(status) => {
                    return Err(format!(
                        "ModelInfer failed: {}: {}",
                        status.code(),
                        status.message()
                    ))
                }
            }
        };
        let indices: Vec<usize> = samples.iter().map(|s| s.index).collect();
        let payloads = response_payloads(
            &response,
            &self.outputs,
            self.profile.post_process,
            &indices,
        )?;
        let timing = server_timing(&response.parameters);
        Ok(samples
            .iter()
            .zip(payloads)
            .map(|(s, data)| SampleResponse {
                id: s.id,
                data,
                server_timing: timing,
                error: None,
            })
            .collect())
    }

    fn request(&self, samples: &[QuerySample]) -> Result<ModelInferRequest, String> {
        let profile = &self.profile;
        let mut raw = Vec::with_capacity(samples.len() * profile.sample_bytes());
        for sample in samples {
            let bytes = self
                .store
                .get(sample.index)
                .ok_or_else(|| format!("sample {} was not loaded by the QSL", sample.index))?;
            raw.extend_from_slice(&bytes);
        }
        let mut shape = vec![samples.len() as i64];
        shape.extend(profile.sample_shape());
        Ok(ModelInferRequest {
            model_name: self.model.clone(),
            inputs: vec![InferInputTensor {
                name: profile.input.to_string(),
                datatype: profile.input_type.data_type().to_string(),
                shape,
                ..InferInputTensor::default()
            }],
            outputs: self
                .outputs
                .iter()
                .map(|name| InferRequestedOutputTensor {
                    name: name.clone(),
                    ..InferRequestedOutputTensor::default()
                })
                .collect(),
            raw_input_contents: vec![raw],
            ..ModelInferRequest::default()
        })
    }
}

/// The payload of each sample (QSL `indices`, in order) from a response: `outputs` by name,
/// post-processed the profile's way.
pub fn response_payloads(
    response: &ModelInferResponse,
    outputs: &[String],
    post_process: PostProcess,
    indices: &[usize],
) -> Result<Vec<Vec<u8>>, String> {
    let mut tensors = Vec::with_capacity(outputs.len());
    for name in outputs {
        let at = response
            .outputs
            .iter()
            .position(|o| o.name == *name)
            .ok_or_else(|| format!("response has no output '{name}'"))?;
        let raw = response
            .raw_output_contents
            .get(at)
            .ok_or_else(|| format!("output '{name}' came without raw_output_contents"))?;
        let datatype = response.outputs[at]
            .datatype
            .parse::<DataType>()
            .map_err(|e| format!("output '{name}': {e}"))?;
        tensors.push(OutputTensor { datatype, raw });
    }
    postprocess::payloads(post_process, &tensors, indices)
        .map_err(|e| format!("cannot read the response: {e}"))
}

/// Reads the server's timing parameters (`queue_time_us`/`_ns`, `compute_time_us`/`_ns`,
/// `batch_size`); `None` when the server sent neither time.
pub fn server_timing(parameters: &HashMap<String, InferParameter>) -> Option<ServerTiming> {
    let int = |name: &str| -> Option<u64> {
        match parameters.get(name)?.parameter_choice.as_ref()? {
            ParameterChoice::Int64Param(v) => u64::try_from(*v).ok(),
            ParameterChoice::Uint64Param(v) => Some(*v),
            ParameterChoice::DoubleParam(v) if *v >= 0.0 => Some(*v as u64),
            _ => None,
        }
    };
    let nanos = |stem: &str| {
        int(&format!("{stem}_ns"))
            .or_else(|| int(&format!("{stem}_us")).map(|us| us.saturating_mul(1000)))
    };
    let (queue, compute) = (nanos("queue_time"), nanos("compute_time"));
    if queue.is_none() && compute.is_none() {
        return None;
    }
    Some(ServerTiming {
        queue_ns: queue.unwrap_or(0),
        compute_ns: compute.unwrap_or(0),
        batch_size: int("batch_size").map_or(0, |b| u32::try_from(b).unwrap_or(u32::MAX)),
    })
}

/// `error: cause: cause …`, since transport errors say little at the top level.
fn chain(error: &dyn std::error::Error) -> String {
    causes(error.to_string(), error.source())
}

/// `text` followed by each cause that adds something (layers often repeat their source's text).
fn causes(mut text: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

fn url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// The endpoint with TLS when it is `https://` (refusing TLS options on a plaintext one).
fn target(
    endpoint: &str,
    security: &Security,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<Endpoint, GrpcSutError> {
    let bad = |e: tonic::transport::Error| GrpcSutError::BadEndpoint {
        endpoint: endpoint.to_string(),
        reason: chain(&e),
    };
    let mut target = Endpoint::from_shared(url(endpoint))
        .map_err(bad)?
        .connect_timeout(connect_timeout)
        .timeout(request_timeout);
    if is_https(endpoint) {
        let tls = security.tls.clone().unwrap_or_default();
        let config = tls
            .client_config()
            .map_err(|error| GrpcSutError::Security {
                endpoint: endpoint.to_string(),
                error,
            })?;
        target = target
            .tls_config(config)
            .map_err(|e| GrpcSutError::TlsHandshake {
                endpoint: endpoint.to_string(),
                reason: chain(&e),
            })?;
    } else if security.tls.is_some() {
        return Err(GrpcSutError::TlsOnPlaintext {
            endpoint: endpoint.to_string(),
        });
    }
    Ok(target)
}

/// Opens one connection; TLS failures are told apart from an absent server.
async fn connect(
    target: &Endpoint,
    endpoint: &str,
    auth: &BearerToken,
) -> Result<Client, GrpcSutError> {
    let channel = target.connect().await.map_err(|e| {
        let reason = chain(&e);
        if is_https(endpoint) && looks_like_tls_failure(&reason) {
            GrpcSutError::TlsHandshake {
                endpoint: endpoint.to_string(),
                reason,
            }
        } else {
            GrpcSutError::Unreachable {
                endpoint: endpoint.to_string(),
                reason,
            }
        }
    })?;
    Ok(
        GrpcInferenceServiceClient::with_interceptor(WholeBody::new(channel), auth.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
    )
}

/// Whether a connection error came from the TLS layer rather than from TCP.
fn looks_like_tls_failure(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    let tcp = [
        "connection refused",
        "timed out",
        "no route to host",
        "unreachable",
    ];
    if tcp.iter().any(|t| reason.contains(t)) {
        return false;
    }
    [
        "certificate",
        "tls",
        "handshake",
        "alert",
        "corrupt message",
        "peer",
        "invalid dns",
    ]
    .iter()
    .any(|t| reason.contains(t))
}

/// The bearer-token interceptor of these settings.
fn auth(endpoint: &str, security: &Security) -> Result<BearerToken, GrpcSutError> {
    BearerToken::new(security.token.as_deref()).map_err(|error| GrpcSutError::Security {
        endpoint: endpoint.to_string(),
        error,
    })
}

/// Opens all connections (interleaved across endpoints so round-robin alternates endpoints)
/// and checks every endpoint; returns the clients and the largest batch the model accepts.
/// What the start-up checks found out about the model.
struct Checked {
    /// The batch limit (the model's max_batch_size, or what a fixed batch dimension implies;
    /// `usize::MAX` when neither bounds it).
    batch_cap: usize,
    /// The outputs to read.
    outputs: Vec<String>,
    served: ServedModel,
}

async fn open_all(
    config: &GrpcSutConfig,
    profile: &Profile,
) -> Result<(Vec<Client>, Checked), GrpcSutError> {
    let mut per_endpoint = Vec::with_capacity(config.endpoints.len());
    let mut batch_cap = usize::MAX;
    let mut outputs = Vec::new();
    let mut served = None;
    for endpoint in &config.endpoints {
        let target = target(
            endpoint,
            &config.security,
            config.connect_timeout,
            config.request_timeout,
        )?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20));
        let auth = auth(endpoint, &config.security)?;
        let mut clients = Vec::with_capacity(config.connections_per_endpoint);
        for _ in 0..config.connections_per_endpoint.max(1) {
            clients.push(connect(&target, endpoint, &auth).await?);
        }
        let checked = check(&mut clients[0], endpoint, &config.model, profile).await?;
        batch_cap = batch_cap.min(checked.batch_cap);
        outputs = checked.outputs;
        served.get_or_insert(checked.served);
        per_endpoint.push(clients);
    }
    let mut all = Vec::new();
    for i in 0..config.connections_per_endpoint.max(1) {
        all.extend(per_endpoint.iter().filter_map(|c| c.get(i).cloned()));
    }
    let checked = Checked {
        batch_cap,
        outputs,
        served: served.unwrap_or_default(),
    };
    Ok((all, checked))
}

/// ServerReady, ModelReady and ModelMetadata against the profile, then ModelConfig where the
/// server has it.
async fn check(
    client: &mut Client,
    endpoint: &str,
    model: &str,
    profile: &Profile,
) -> Result<Checked, GrpcSutError> {
    let rpc = |call: &'static str| move |status: tonic::Status| refused(endpoint, call, &status);
    let ready = client
        .server_ready(ServerReadyRequest {})
        .await
        .map_err(rpc("ServerReady"))?
        .into_inner()
        .ready;
    if !ready {
        return Err(GrpcSutError::ServerNotReady {
            endpoint: endpoint.to_string(),
        });
    }
    let unavailable = |reason: String| GrpcSutError::ModelUnavailable {
        endpoint: endpoint.to_string(),
        model: model.to_string(),
        reason,
    };
    let model_ready = client
        .model_ready(ModelReadyRequest {
            name: model.to_string(),
            version: String::new(),
        })
        .await
        .map_err(|s| match refused(endpoint, "ModelReady", &s) {
            e @ GrpcSutError::Unauthenticated { .. } => e,
            _ => unavailable(format!("{}: {}", s.code(), s.message())),
        })?
        .into_inner()
        .ready;
    if !model_ready {
        return Err(unavailable("the server reports it not ready".into()));
    }
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: model.to_string(),
            version: String::new(),
        })
        .await
        .map_err(rpc("ModelMetadata"))?
        .into_inner();
    let (shape_cap, outputs) =
        match_profile(&metadata, profile).map_err(|problem| GrpcSutError::Mismatch {
            endpoint: endpoint.to_string(),
            model: model.to_string(),
            profile: profile.name.to_string(),
            problem,
        })?;
    // A dynamic batch dimension is still bounded by the model's max_batch_size (Triton's
    // ModelConfig); servers without ModelConfig leave it to the shape.
    let config = client
        .model_config(ModelConfigRequest {
            name: model.to_string(),
            version: String::new(),
        })
        .await
        .ok()
        .and_then(|answer| answer.into_inner().config);
    let config_cap = config
        .as_ref()
        .and_then(|config| usize::try_from(config.max_batch_size).ok())
        .filter(|max| *max > 0)
        .unwrap_or(usize::MAX);
    Ok(Checked {
        batch_cap: shape_cap.min(config_cap),
        outputs,
        served: config.map(served_model).unwrap_or_default(),
    })
}

fn served_model(config: inference_proto::inference::ModelConfig) -> ServedModel {
    let device = match config.parameters.get("device") {
        Some(p) if !p.string_value.is_empty() => p.string_value.clone(),
        _ => config
            .instance_group
            .iter()
            .map(|g| {
                g.kind()
                    .as_str_name()
                    .trim_start_matches("KIND_")
                    .to_lowercase()
            })
            .collect::<Vec<_>>()
            .join(","),
    };
    ServedModel {
        backend: config.backend,
        platform: config.platform,
        device,
        max_batch_size: config.max_batch_size,
    }
}

/// The error of a start-up RPC the server answered with `status`.
fn refused(endpoint: &str, call: &'static str, status: &tonic::Status) -> GrpcSutError {
    // The status's sources hold what the transport saw (e.g. a TLS alert).
    let mut reason = causes(
        format!("{}: {}", status.code(), status.message()),
        std::error::Error::source(status),
    );
    let transport = matches!(
        status.code(),
        tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::Cancelled
    );
    if !is_https(endpoint) && transport {
        // What plaintext HTTP/2 to a TLS port looks like ("h2 protocol error", "transport
        // error", ...).
        reason.push_str(" (if the server uses TLS, it needs an https:// endpoint)");
    } else if transport {
        // A TLS 1.3 server that rejects the client's certificate (or its absence) says so only
        // once the client reads.
        reason.push_str(
            " (if the server requires a client certificate, pass --tls-cert and --tls-key)",
        );
    }
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            GrpcSutError::Unauthenticated {
                endpoint: endpoint.to_string(),
                call,
                reason,
            }
        }
        _ => GrpcSutError::Rpc {
            endpoint: endpoint.to_string(),
            call,
            reason,
        },
    }
}

/// Compares the model's input and outputs with the profile; returns the batch limit and the
/// outputs to read (a profile that names none reads the model's only output).
fn match_profile(
    metadata: &ModelMetadataResponse,
    profile: &Profile,
) -> Result<(usize, Vec<String>), String> {
    let names = |tensors: &[TensorMetadata]| -> String {
        tensors
            .iter()
            .map(|t| format!("'{}' {} {:?}", t.name, t.datatype, t.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let input = metadata
        .inputs
        .iter()
        .find(|t| t.name == profile.input)
        .ok_or_else(|| {
            format!(
                "the profile sends input '{}', the model's inputs are {}",
                profile.input,
                names(&metadata.inputs)
            )
        })?;
    let wanted = profile.input_type.data_type();
    if !input.datatype.eq_ignore_ascii_case(wanted.as_str()) {
        return Err(format!(
            "input '{}' is {}, the profile sends {wanted}",
            input.name, input.datatype
        ));
    }
    let sample = profile.sample_shape();
    let shape_error = || {
        format!(
            "input '{}' has shape {:?}, the profile sends [N, {}]",
            input.name,
            input.shape,
            sample.map(|d| d.to_string()).join(", ")
        )
    };
    let Some((batch, rest)) = input.shape.split_first() else {
        return Err(shape_error());
    };
    if rest.len() != sample.len() || rest.iter().zip(sample).any(|(m, p)| *m != -1 && *m != p) {
        return Err(shape_error());
    }
    for name in profile.outputs {
        if !metadata.outputs.iter().any(|t| t.name == *name) {
            return Err(format!(
                "the profile reads output '{name}', the model's outputs are {}",
                names(&metadata.outputs)
            ));
        }
    }
    let outputs: Vec<String> = match (profile.outputs, metadata.outputs.as_slice()) {
        ([], [only]) => vec![only.name.clone()],
        ([], several) => {
            return Err(format!(
                "the profile reads the model's only output, but it has {}: {}",
                several.len(),
                names(several)
            ))
        }
        (named, _) => named.iter().map(|n| n.to_string()).collect(),
    };
    let cap = match usize::try_from(*batch) {
        Ok(0) => return Err(shape_error()),
        Ok(fixed) => fixed,
        Err(_) => usize::MAX,
    };
    Ok((cap, outputs))
}

/// The quantization (scale, zero point) the server reports for `model`'s `input` in ModelConfig's
/// parameters (`quantization.<input>.scale` / `.zero_point`), or `None` when it reports none or
/// does not implement ModelConfig (a Triton extension).
pub fn input_quantization(
    endpoint: &str,
    security: &Security,
    model: &str,
    input: &str,
    timeout: Duration,
) -> Result<Option<(f32, i32)>, GrpcSutError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(GrpcSutError::Runtime)?;
    runtime.block_on(async {
        let target = target(endpoint, security, timeout, timeout)?;
        let mut client = connect(&target, endpoint, &auth(endpoint, security)?).await?;
        let answer = client
            .model_config(ModelConfigRequest {
                name: model.to_string(),
                version: String::new(),
            })
            .await;
        let config = match answer {
            Ok(answer) => answer.into_inner().config.unwrap_or_default(),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                return Err(refused(endpoint, "ModelConfig", &status))
            }
            // Not a Triton-compatible server, or an unknown model (the SUT's checks say so).
            Err(_) => return Ok(None),
        };
        let parameter = |key: &str| {
            config
                .parameters
                .get(&format!("quantization.{input}.{key}"))
                .map(|p| p.string_value.trim().to_string())
        };
        let scale = parameter("scale").and_then(|s| s.parse::<f32>().ok());
        let zero_point = parameter("zero_point").and_then(|z| z.parse::<i32>().ok());
        Ok(scale
            .zip(zero_point)
            .filter(|(s, _)| *s > 0.0 && s.is_finite()))
    })
}

/// Retries of requests the server refused as overloaded, counted over a test (from the
/// observer's `started` on); reported as `client_retries` in the detail log (a warning when
/// there were any) and in a section after the summary.
#[derive(Debug)]
pub struct RetryStats {
    max_retries: u32,
    retries: AtomicU64,
    given_up: AtomicU64,
    /// The counters when the test started.
    baseline: Mutex<(u64, u64)>,
}

impl RetryStats {
    fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            retries: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
            baseline: Mutex::new((0, 0)),
        }
    }

    /// `(retries, requests that failed as refused)` since the test started.
    pub fn counts(&self) -> (u64, u64) {
        let (r0, g0) = *self.baseline.lock().unwrap_or_else(|p| p.into_inner());
        (
            self.retries.load(Ordering::Relaxed).saturating_sub(r0),
            self.given_up.load(Ordering::Relaxed).saturating_sub(g0),
        )
    }
}

impl RunObserver for RetryStats {
    fn started(&self) -> Vec<Observation> {
        *self.baseline.lock().unwrap_or_else(|p| p.into_inner()) = (
            self.retries.load(Ordering::Relaxed),
            self.given_up.load(Ordering::Relaxed),
        );
        Vec::new()
    }

    fn finished(&self) -> Vec<Observation> {
        let (retries, given_up) = self.counts();
        let value = serde_json::json!({
            "resource_exhausted_retries": retries,
            "requests_refused_after_retries": given_up,
            "max_retries_per_request": self.max_retries,
        });
        vec![Observation {
            key: "client_retries".into(),
            json: value.to_string(),
            warning: retries > 0 || given_up > 0,
        }]
    }

    fn summary(&self) -> Option<String> {
        let (retries, given_up) = self.counts();
        let rule = "================================================";
        Some(format!(
            "{rule}\nClient retries (loadgen-client; not LoadGen output)\n{rule}\n\
             retries: {retries} (RESOURCE_EXHAUSTED)\n\
             Requests refused after the last retry : {given_up}\n\
             Retry policy : up to {} per request (--retries), back-off {} ms doubling to {} ms\n",
            self.max_retries,
            FIRST_BACKOFF.as_millis(),
            MAX_BACKOFF.as_millis(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::lookup;

    fn tensor(name: &str, datatype: &str, shape: &[i64]) -> TensorMetadata {
        TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
        }
    }

    fn metadata(input: TensorMetadata) -> ModelMetadataResponse {
        ModelMetadataResponse {
            name: "efficientnet-lite0".into(),
            inputs: vec![input],
            outputs: vec![tensor("logits", "FP32", &[-1, 1000])],
            ..ModelMetadataResponse::default()
        }
    }

    #[test]
    fn metadata_must_match_the_profile() {
        let profile = lookup("efficientnet-lite0-onnxruntime").unwrap();
        let ok = metadata(tensor("input", "FP32", &[-1, 3, 224, 224]));
        let logits = vec!["logits".to_string()];
        assert_eq!(
            match_profile(&ok, profile),
            Ok((usize::MAX, logits.clone()))
        );
        let fixed = metadata(tensor("input", "FP32", &[1, 3, -1, -1]));
        assert_eq!(match_profile(&fixed, profile), Ok((1, logits)));
        let cases = [
            (
                tensor("images", "FP32", &[-1, 3, 224, 224]),
                "the model's inputs are 'images'",
            ),
            (
                tensor("input", "FP16", &[-1, 3, 224, 224]),
                "is FP16, the profile sends FP32",
            ),
            (
                tensor("input", "FP32", &[-1, 224, 224, 3]),
                "the profile sends [N, 3, 224, 224]",
            ),
            (
                tensor("input", "FP32", &[3, 224, 224]),
                "has shape [3, 224, 224]",
            ),
        ];
        for (input, expected) in cases {
            let err = match_profile(&metadata(input), profile).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        let mut no_logits = ok.clone();
        no_logits.outputs = vec![tensor("probs", "FP32", &[-1, 1000])];
        let err = match_profile(&no_logits, profile).unwrap_err();
        assert!(
            err.contains("output 'logits'") && err.contains("'probs'"),
            "{err}"
        );
    }

    #[test]
    fn a_profile_that_names_no_output_reads_the_models_only_one() {
        let coral = lookup("mobilenet_coral").unwrap();
        let mut v2 = metadata(tensor("input", "UINT8", &[-1, 224, 224, 3]));
        v2.outputs = vec![tensor(
            "MobilenetV2/Predictions/Softmax",
            "UINT8",
            &[-1, 1001],
        )];
        assert_eq!(
            match_profile(&v2, coral),
            Ok((
                usize::MAX,
                vec!["MobilenetV2/Predictions/Softmax".to_string()]
            ))
        );
        v2.outputs.push(tensor("extra", "UINT8", &[-1, 1]));
        let err = match_profile(&v2, coral).unwrap_err();
        assert!(err.contains("has 2"), "{err}");
    }

    #[test]
    fn timing_parameters_are_read_tolerantly() {
        let p = |choice| InferParameter {
            parameter_choice: Some(choice),
        };
        let mut params = HashMap::new();
        assert_eq!(server_timing(&params), None);
        params.insert(
            "queue_time_us".to_string(),
            p(ParameterChoice::Int64Param(12)),
        );
        params.insert(
            "compute_time_ns".to_string(),
            p(ParameterChoice::Uint64Param(3400)),
        );
        params.insert("batch_size".to_string(), p(ParameterChoice::Int64Param(8)));
        params.insert(
            "device".to_string(),
            p(ParameterChoice::StringParam("cpu".into())),
        );
        assert_eq!(
            server_timing(&params),
            Some(ServerTiming {
                queue_ns: 12_000,
                compute_ns: 3400,
                batch_size: 8
            })
        );
    }

    #[test]
    fn unreachable_endpoint_fails_before_timing_with_a_clear_error() {
        // Bind then drop a listener: the port is free and nothing answers on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = GrpcSutConfig {
            endpoints: vec![format!("127.0.0.1:{port}")],
            connections_per_endpoint: 2,
            network_threads: 1,
            model: "efficientnet-lite0".into(),
            max_batch: 8,
            in_flight_per_connection: 4,
            in_flight_bytes_per_endpoint: 1 << 20,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            retries: 3,
            security: Security::default(),
        };
        let profile = lookup("efficientnet-lite0-onnxruntime").unwrap();
        let err = GrpcSut::connect(&config, profile, Arc::default())
            .err()
            .expect("nothing listens there")
            .to_string();
        assert!(
            err.contains(&format!("cannot connect to 127.0.0.1:{port}"))
                && err.contains("is the inference server running"),
            "{err}"
        );
        let bad = GrpcSutConfig {
            endpoints: vec!["http://exa mple:1".into()],
            ..config.clone()
        };
        let err = GrpcSut::connect(&bad, profile, Arc::default())
            .err()
            .unwrap();
        assert!(matches!(err, GrpcSutError::BadEndpoint { .. }), "{err}");
        let none = GrpcSutConfig {
            endpoints: vec![],
            ..config
        };
        assert!(matches!(
            GrpcSut::connect(&none, profile, Arc::default())
                .err()
                .unwrap(),
            GrpcSutError::NoEndpoint
        ));
    }
}
