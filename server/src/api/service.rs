//! The `inference.GRPCInferenceService` implementation: looks models up in the repository,
//! validates and converts with [`super::infer`], submits to the model's scheduler and answers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use inference_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use inference_proto::inference::model_metadata_response::TensorMetadata;
use inference_proto::inference::repository_index_response::ModelIndex;
use inference_proto::inference::{
    model_config, model_instance_group, model_version_policy, CudaSharedMemoryRegisterRequest,
    CudaSharedMemoryRegisterResponse, CudaSharedMemoryStatusRequest,
    CudaSharedMemoryStatusResponse, CudaSharedMemoryUnregisterRequest,
    CudaSharedMemoryUnregisterResponse, LogSettingsRequest, LogSettingsResponse, ModelConfig,
    ModelConfigRequest, ModelConfigResponse, ModelDynamicBatching, ModelInferRequest,
    ModelInferResponse, ModelInput, ModelInstanceGroup, ModelMetadataRequest,
    ModelMetadataResponse, ModelOutput, ModelParameter, ModelQueuePolicy, ModelReadyRequest,
    ModelReadyResponse, ModelStatisticsRequest, ModelStatisticsResponse, ModelStreamInferResponse,
    ModelVersionPolicy, RepositoryIndexRequest, RepositoryIndexResponse,
    RepositoryModelLoadRequest, RepositoryModelLoadResponse, RepositoryModelUnloadRequest,
    RepositoryModelUnloadResponse, ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest,
    ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
    SystemSharedMemoryRegisterRequest, SystemSharedMemoryRegisterResponse,
    SystemSharedMemoryStatusRequest, SystemSharedMemoryStatusResponse,
    SystemSharedMemoryUnregisterRequest, SystemSharedMemoryUnregisterResponse, TraceSettingRequest,
    TraceSettingResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::clip;
use super::health::Health;
use super::infer::{self, InferTarget, ResponseTimings};
use super::shared_memory::SharedMemory;
use crate::backend::runtime::DeviceKind;
use crate::backend::TensorSpec;
use crate::metrics::{self, ModelMetrics, Outcome};
use crate::repository::{LookupError, Repository, RepositoryError, ServedModel};
use crate::scheduler::{InferError, InferenceRequest};
use crate::statistics::SuccessRecord;

/// Server name reported by ServerMetadata.
pub const SERVER_NAME: &str = "inference-server";

/// Protocol extensions this server implements (ServerMetadata `extensions`).
pub const EXTENSIONS: [&str; 5] = [
    "model_repository",
    "model_configuration",
    "statistics",
    "system_shared_memory",
    "binary_tensor_data",
];

/// Responses a stream may buffer before its reader catches up.
const STREAM_BUFFER: usize = 64;
/// Requests of one ModelStreamInfer stream in flight at most: past it the stream stops reading
/// requests until the client reads answers (a client that never reads holds this many, and the
/// answers in [`STREAM_BUFFER`], no more).
const STREAM_IN_FLIGHT: usize = 32;

/// Whether the server takes new requests: false while loading and once draining.
#[derive(Debug, Default)]
pub struct ServerState {
    accepting: AtomicBool,
}

impl ServerState {
    /// Marks the server as taking (or no longer taking) requests.
    pub fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::SeqCst);
    }

    /// Whether the server takes requests.
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }
}

/// Settings of the service itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceOptions {
    /// Whether RepositoryModelLoad/Unload are allowed.
    pub allow_model_control: bool,
    /// Time queued requests get when a model is unloaded.
    pub unload_grace: Duration,
    /// Whether clients may register system shared-memory regions.
    pub allow_shared_memory: bool,
    /// Largest request, in bytes (inputs read from shared memory included).
    pub max_request_bytes: usize,
}

/// The KServe v2 service; cheap to clone.
#[derive(Debug, Clone)]
pub struct InferenceService {
    repository: Arc<Repository>,
    health: Health,
    state: Arc<ServerState>,
    shared_memory: Arc<SharedMemory>,
    options: ServiceOptions,
}

impl InferenceService {
    /// A service over `repository`, reporting readiness from `state`.
    pub fn new(
        repository: Arc<Repository>,
        health: Health,
        state: Arc<ServerState>,
        options: ServiceOptions,
    ) -> Self {
        InferenceService {
            repository,
            health,
            state,
            shared_memory: Arc::new(SharedMemory::new(options.allow_shared_memory)),
            options,
        }
    }

    fn model(&self, name: &str, version: &str) -> Result<Arc<ServedModel>, Status> {
        self.repository.get(name, version).map_err(|err| match err {
            LookupError::NotReady { .. } | LookupError::VersionUnavailable { .. } => {
                Status::unavailable(err.to_string())
            }
            LookupError::UnknownModel { .. } | LookupError::UnknownVersion { .. } => {
                Status::not_found(err.to_string())
            }
        })
    }

    /// Runs one inference request end to end.
    pub async fn infer(
        &self,
        mut request: ModelInferRequest,
        grpc_timeout: Option<Duration>,
    ) -> Result<ModelInferResponse, Status> {
        let received = Instant::now();
        if !self.state.is_accepting() {
            return Err(Status::unavailable(
                "server is not accepting requests (starting up or shutting down)",
            ));
        }
        let model_version = request.model_version.clone();
        let model = match self.model(&request.model_name, &request.model_version) {
            Ok(model) => model,
            Err(status) => {
                if status.code() == tonic::Code::Unavailable {
                    metrics::record_request(&request.model_name, Outcome::Rejected);
                }
                return Err(status);
            }
        };
        let _inflight = Inflight::start(&model.metrics);
        let fail = |outcome: Outcome, status: Status| {
            model.metrics.record_request(outcome);
            model.stats.record_failure(received.elapsed());
            status
        };
        let target = InferTarget {
            signature: &model.signature,
            max_batch_size: model.max_batch_size,
        };
        let decode_started = Instant::now();
        let shm_outputs = self
            .shared_memory
            .resolve(&mut request, self.options.max_request_bytes)
            .map_err(|err| fail(Outcome::Invalid, err.into()))?;
        let validated = infer::validate(request, target)
            .map_err(|err| fail(Outcome::Invalid, Status::invalid_argument(err.to_string())))?;
        let decode = decode_started.elapsed();
        let deadline = [grpc_timeout, validated.timeout]
            .into_iter()
            .flatten()
            .min()
            .map(|timeout| received + timeout);
        let mut submitted = InferenceRequest {
            inputs: validated.inputs,
            batch_size: validated.batch_size,
            arrived: received,
            deadline,
        };
        let mut serving = Arc::clone(&model);
        let abandoned = Abandoned {
            model: &model,
            received,
            deadline,
            answered: false,
        };
        let answer = loop {
            match serving.scheduler.submit(submitted) {
                Ok(receiver) => {
                    let dropped = || {
                        Err(InferError::Backend(
                            "the model's scheduler dropped the request without an answer"
                                .to_string(),
                        ))
                    };
                    // Answered at its deadline even while it waits in the queue or runs: the
                    // scheduler drops it unrun if it has not started.
                    break match deadline {
                        Some(deadline) => {
                            match tokio::time::timeout_at(deadline.into(), receiver).await {
                                Ok(answer) => answer.unwrap_or_else(|_| dropped()),
                                Err(_) => Err(InferError::Expired),
                            }
                        }
                        None => receiver.await.unwrap_or_else(|_| dropped()),
                    };
                }
                // A reload swapped this version out between the look-up and the queue: the
                // request goes to the version serving now, if there is a newer one.
                Err(InferError::Replaced(request)) => match self.model(&model.name, &model_version)
                {
                    Ok(next) if self.state.is_accepting() && !Arc::ptr_eq(&next, &serving) => {
                        submitted = *request;
                        serving = next;
                    }
                    _ => break Err(InferError::ShuttingDown),
                },
                Err(err) => break Err(err),
            }
        };
        abandoned.answered();
        // The version that ran it (a reload may have replaced the one looked up first).
        let model = serving;
        let response = match answer {
            Ok(response) => response,
            Err(err) => {
                let (outcome, status) = infer_error_status(err);
                return Err(fail(outcome, status));
            }
        };
        let timings = ResponseTimings {
            queue: response.timings.queue,
            compute_input: decode + response.timings.gather,
            compute: response.timings.compute,
            compute_output: response.timings.scatter,
            server: received.elapsed(),
            batch_size: response.timings.batch_size,
            device: response.timings.device,
            runtime_metrics: response.timings.runtime_metrics,
        };
        let encode_started = Instant::now();
        let mut answer = infer::build_response(
            &model.name,
            &model.version_label(),
            &validated.outputs,
            validated.id,
            response.outputs,
            &timings,
        );
        self.shared_memory
            .write_outputs(&mut answer, &shm_outputs)
            .map_err(|err| fail(Outcome::Invalid, err.into()))?;
        model.stats.record_success(SuccessRecord {
            samples: validated.batch_size,
            total: received.elapsed(),
            queue: timings.queue,
            compute_input: timings.compute_input,
            compute: timings.compute,
            compute_output: timings.compute_output + encode_started.elapsed(),
            executed_batch: timings.batch_size,
        });
        model.metrics.record_request(Outcome::Success);
        model.metrics.record_timings(
            &timings.device,
            timings.server,
            timings.queue,
            timings.compute,
        );
        Ok(answer)
    }

    /// ServerReady: taking requests, and every required model can serve.
    pub fn is_ready(&self) -> bool {
        self.state.is_accepting() && self.repository.unready_required().is_empty()
    }

    fn require_model_control(&self) -> Result<(), Status> {
        if self.options.allow_model_control {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "model control is disabled: start the server with --allow-model-control \
                 (or INFERENCE_SERVER_ALLOW_MODEL_CONTROL=true) to load and unload models",
            ))
        }
    }
}

/// Counts a request whose client went away before its answer: `expired` when that was at (or
/// just before, the client's clock running ahead of ours) its deadline, else `cancelled`.
struct Abandoned<'a> {
    model: &'a ServedModel,
    received: Instant,
    deadline: Option<Instant>,
    answered: bool,
}

/// How early before its deadline a client giving up still counts as the deadline passing: the
/// client's timer started before the request reached the server.
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

impl Abandoned<'_> {
    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let expired = self
            .deadline
            .is_some_and(|d| Instant::now() + DEADLINE_SLACK >= d);
        let outcome = if expired {
            Outcome::Expired
        } else {
            Outcome::Cancelled
        };
        self.model.metrics.record_request(outcome);
        self.model.stats.record_failure(self.received.elapsed());
    }
}

/// Keeps the in-flight gauge right however a request ends (including a dropped future).
struct Inflight<'a> {
    metrics: &'a ModelMetrics,
}

impl<'a> Inflight<'a> {
    fn start(metrics: &'a ModelMetrics) -> Self {
        metrics.add_inflight(1.0);
        Inflight { metrics }
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.metrics.add_inflight(-1.0);
    }
}

/// The gRPC status and metric outcome of a scheduler error.
fn infer_error_status(err: InferError) -> (Outcome, Status) {
    let message = err.to_string();
    match err {
        InferError::QueueFull { .. } => (Outcome::Rejected, Status::resource_exhausted(message)),
        InferError::Invalid(_) => (Outcome::Invalid, Status::invalid_argument(message)),
        InferError::Expired => (Outcome::Expired, Status::deadline_exceeded(message)),
        InferError::Cancelled => (Outcome::Cancelled, Status::cancelled(message)),
        InferError::ShuttingDown | InferError::Replaced(_) => {
            (Outcome::Rejected, Status::unavailable(message))
        }
        InferError::Unavailable(_) => (Outcome::Unavailable, Status::unavailable(message)),
        InferError::Backend(_) => (Outcome::BackendError, Status::internal(message)),
    }
}

/// The client's deadline from the `grpc-timeout` header (`<digits><H|M|S|m|u|n>`).
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = text.len().checked_sub(1)?;
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// Shape as ModelMetadata reports it: -1 in front for the batch dimension of batching models.
fn metadata_tensor(spec: &TensorSpec, max_batch_size: usize) -> TensorMetadata {
    let mut shape = Vec::with_capacity(spec.dims.len() + 1);
    if max_batch_size > 0 {
        shape.push(-1);
    }
    shape.extend_from_slice(&spec.dims);
    TensorMetadata {
        name: spec.name.clone(),
        datatype: spec.datatype.as_str().to_string(),
        shape,
    }
}

/// The model's configuration in Triton's shape.
fn triton_config(model: &ServedModel) -> ModelConfig {
    let config = &model.config;
    let version_policy = match &config.raw.versions {
        Some(versions) => {
            model_version_policy::PolicyChoice::Specific(model_version_policy::Specific {
                versions: versions
                    .iter()
                    .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
                    .collect(),
            })
        }
        None => model_version_policy::PolicyChoice::Latest(model_version_policy::Latest {
            num_versions: 1,
        }),
    };
    let dynamic_batching = config.raw.dynamic_batching.as_ref().map(|batching| {
        model_config::SchedulingChoice::DynamicBatching(ModelDynamicBatching {
            preferred_batch_size: batching
                .preferred_batch_sizes
                .iter()
                .map(|&s| i32::try_from(s).unwrap_or(i32::MAX))
                .collect(),
            max_queue_delay_microseconds: batching.max_queue_delay_us,
            default_queue_policy: batching.max_queue_size.map(|size| ModelQueuePolicy {
                max_queue_size: u32::try_from(size).unwrap_or(u32::MAX),
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    ModelConfig {
        name: model.name.clone(),
        platform: config.runtime.platform().to_string(),
        backend: config.runtime.name().to_string(),
        version_policy: Some(ModelVersionPolicy {
            policy_choice: Some(version_policy),
        }),
        max_batch_size: i32::try_from(model.max_batch_size).unwrap_or(i32::MAX),
        input: model
            .signature
            .inputs
            .iter()
            .map(|spec| ModelInput {
                name: spec.name.clone(),
                data_type: spec.datatype.to_config_type() as i32,
                dims: spec.dims.clone(),
                ..Default::default()
            })
            .collect(),
        output: model
            .signature
            .outputs
            .iter()
            .map(|spec| ModelOutput {
                name: spec.name.clone(),
                data_type: spec.datatype.to_config_type() as i32,
                dims: spec.dims.clone(),
            })
            .collect(),
        instance_group: config
            .instance_groups
            .iter()
            .enumerate()
            .map(|(i, group)| {
                let (kind, gpus) = match group.device.kind {
                    DeviceKind::Cpu => (model_instance_group::Kind::Cpu, Vec::new()),
                    DeviceKind::Gpu(id) => (
                        model_instance_group::Kind::Gpu,
                        vec![i32::try_from(id).unwrap_or(i32::MAX)],
                    ),
                    DeviceKind::Accelerator => (model_instance_group::Kind::Model, Vec::new()),
                };
                ModelInstanceGroup {
                    name: format!("{}_{i}", model.name),
                    kind: kind as i32,
                    count: i32::try_from(group.count).unwrap_or(i32::MAX),
                    gpus,
                }
            })
            .collect(),
        default_model_filename: model.files.model_file_name(),
        scheduling_choice: dynamic_batching,
        parameters: model_parameters(model),
    }
}

/// ModelConfig's parameters: the devices, and each quantized tensor's `quantization.<name>.scale`
/// and `.zero_point` (real = scale × (q − zero_point)).
fn model_parameters(model: &ServedModel) -> HashMap<String, ModelParameter> {
    let text = |value: String| ModelParameter {
        string_value: value,
    };
    let devices = model
        .config
        .instance_groups
        .iter()
        .map(|g| g.device.name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut parameters = HashMap::from([("device".to_string(), text(devices))]);
    for (tensor, q) in &model.signature.quantization {
        parameters.insert(
            format!("quantization.{tensor}.scale"),
            text(q.scale.to_string()),
        );
        parameters.insert(
            format!("quantization.{tensor}.zero_point"),
            text(q.zero_point.to_string()),
        );
    }
    parameters
}

type InferStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready = match self.repository.get(&request.name, &request.version) {
            Ok(model) => self.state.is_accepting() && model.scheduler.in_service() > 0,
            Err(LookupError::NotReady { .. } | LookupError::VersionUnavailable { .. }) => false,
            Err(err) => return Err(Status::not_found(err.to_string())),
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let model = self.model(&request.name, &request.version)?;
        let versions = self
            .repository
            .versions(&model.name)
            .iter()
            .map(u64::to_string)
            .collect();
        let batch = model.max_batch_size;
        Ok(Response::new(ModelMetadataResponse {
            name: model.name.clone(),
            versions,
            platform: model.config.runtime.platform().to_string(),
            inputs: model
                .signature
                .inputs
                .iter()
                .map(|s| metadata_tensor(s, batch))
                .collect(),
            outputs: model
                .signature
                .outputs
                .iter()
                .map(|s| metadata_tensor(s, batch))
                .collect(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let timeout = grpc_timeout(request.metadata());
        self.infer(request.into_inner(), timeout)
            .await
            .map(Response::new)
    }

    type ModelStreamInferStream = InferStream;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let mut inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let service = self.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(STREAM_IN_FLIGHT));
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                let request = match message {
                    Ok(request) => request,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        break;
                    }
                };
                // Backpressure: a slot per request until its answer is in the stream's buffer.
                let slot = match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        metrics::record_stream_backpressure(&request.model_name);
                        match Arc::clone(&slots).acquire_owned().await {
                            Ok(slot) => slot,
                            Err(_) => break,
                        }
                    }
                };
                if sender.is_closed() {
                    break; // the client went away
                }
                // Each request runs on its own task so one stream's requests can share batches.
                let service = service.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let id = request.id.clone();
                    let answer = match service.infer(request, timeout).await {
                        Ok(response) => ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(response),
                        },
                        Err(status) => ModelStreamInferResponse {
                            error_message: status.message().to_string(),
                            infer_response: Some(ModelInferResponse {
                                id,
                                ..Default::default()
                            }),
                        },
                    };
                    let _ = sender.send(Ok(answer)).await;
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let request = request.into_inner();
        let model = self.model(&request.name, &request.version)?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(triton_config(&model)),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let request = request.into_inner();
        let models = if request.name.is_empty() {
            self.repository.served()
        } else if request.version.is_empty() {
            let served: Vec<Arc<ServedModel>> = self
                .repository
                .served()
                .into_iter()
                .filter(|m| m.name == request.name)
                .collect();
            if served.is_empty() {
                // Reports why: unknown model, or known but not ready.
                self.model(&request.name, "")?;
            }
            served
        } else {
            vec![self.model(&request.name, &request.version)?]
        };
        let model_stats = models
            .iter()
            .map(|m| m.stats.to_proto(&m.name, &m.version_label()))
            .collect();
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let only_ready = request.into_inner().ready;
        let models = self
            .repository
            .index()
            .into_iter()
            .filter(|entry| !only_ready || entry.state == crate::repository::ModelState::Ready)
            .map(|entry| ModelIndex {
                name: entry.name,
                version: entry.version,
                state: entry.state.index_label().to_string(),
                reason: entry.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        self.require_model_control()?;
        let name = request.into_inner().model_name;
        let result = self.repository.load(&name).await;
        self.health
            .sync_models(&self.repository, self.state.is_accepting())
            .await;
        result.map_err(repository_status)?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        self.require_model_control()?;
        let name = request.into_inner().model_name;
        let result = self
            .repository
            .unload(&name, self.options.unload_grace)
            .await;
        self.health
            .sync_models(&self.repository, self.state.is_accepting())
            .await;
        result.map_err(repository_status)?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        request: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        let regions = self.shared_memory.status(&request.into_inner().name)?;
        Ok(Response::new(SystemSharedMemoryStatusResponse { regions }))
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        let r = request.into_inner();
        self.shared_memory
            .register(&r.name, &r.key, r.offset, r.byte_size)?;
        Ok(Response::new(SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        self.shared_memory.unregister(&request.into_inner().name)?;
        Ok(Response::new(SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        _request: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        // No region can exist: registering one is refused.
        Ok(Response::new(CudaSharedMemoryStatusResponse::default()))
    }

    async fn cuda_shared_memory_register(
        &self,
        _request: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        Err(Status::unimplemented(CUDA_SHARED_MEMORY_UNSUPPORTED))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        request: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        let name = request.into_inner().name;
        if name.is_empty() {
            // Unregistering every region of none is done.
            return Ok(Response::new(CudaSharedMemoryUnregisterResponse {}));
        }
        Err(Status::not_found(format!(
            "no CUDA shared-memory region '{}': {CUDA_SHARED_MEMORY_UNSUPPORTED}",
            clip(&name)
        )))
    }

    async fn trace_setting(
        &self,
        _request: Request<TraceSettingRequest>,
    ) -> Result<Response<TraceSettingResponse>, Status> {
        Err(Status::unimplemented(
            "request tracing is not supported: every response carries its server timings as \
             parameters (queue_time_us, compute_time_us, ...), and the Prometheus metrics have them per model",
        ))
    }

    async fn log_settings(
        &self,
        _request: Request<LogSettingsRequest>,
    ) -> Result<Response<LogSettingsResponse>, Status> {
        Err(Status::unimplemented(
            "log settings cannot be changed at run time: start the server with --log-level and --log-format",
        ))
    }
}

/// Why CUDA shared memory is refused.
const CUDA_SHARED_MEMORY_UNSUPPORTED: &str =
    "CUDA shared memory is not supported by this server; use system shared memory (--allow-shared-memory) for clients on the same box";

fn repository_status(err: RepositoryError) -> Status {
    match err {
        RepositoryError::NoSuchModel { .. } | RepositoryError::NotLoaded { .. } => {
            Status::not_found(err.to_string())
        }
        RepositoryError::LoadFailed { .. } => Status::failed_precondition(err.to_string()),
        RepositoryError::Unreadable { .. } => Status::internal(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn grpc_timeout_header_units() {
        let mut metadata = MetadataMap::new();
        assert_eq!(grpc_timeout(&metadata), None);
        for (text, expected) in [
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("100u", Duration::from_micros(100)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("7n", Duration::from_nanos(7)),
        ] {
            metadata.insert("grpc-timeout", MetadataValue::from_static(text));
            assert_eq!(grpc_timeout(&metadata), Some(expected), "{text}");
        }
        for bad in ["", "S", "12x", "-1S"] {
            metadata.insert("grpc-timeout", MetadataValue::try_from(bad).expect("ascii"));
            assert_eq!(grpc_timeout(&metadata), None, "{bad}");
        }
    }

    #[test]
    fn scheduler_errors_map_to_grpc_codes() {
        let cases = [
            (
                InferError::Expired,
                tonic::Code::DeadlineExceeded,
                Outcome::Expired,
            ),
            (
                InferError::Cancelled,
                tonic::Code::Cancelled,
                Outcome::Cancelled,
            ),
            (
                InferError::ShuttingDown,
                tonic::Code::Unavailable,
                Outcome::Rejected,
            ),
            (
                InferError::Backend("boom".into()),
                tonic::Code::Internal,
                Outcome::BackendError,
            ),
            (
                InferError::Invalid("bad".into()),
                tonic::Code::InvalidArgument,
                Outcome::Invalid,
            ),
            (
                InferError::QueueFull {
                    model: "m".into(),
                    queued_requests: 1,
                    max_requests: 1,
                    queued_bytes: 0,
                    max_bytes: 10,
                },
                tonic::Code::ResourceExhausted,
                Outcome::Rejected,
            ),
        ];
        for (err, code, outcome) in cases {
            let (got_outcome, status) = infer_error_status(err);
            assert_eq!(status.code(), code);
            assert_eq!(got_outcome, outcome);
        }
    }
}
