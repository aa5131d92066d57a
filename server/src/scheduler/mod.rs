//! Per-model scheduling: a bounded queue, the dynamic batcher and one OS thread per backend
//! instance (never a tokio worker thread). Instances may run on different devices (instance
//! groups); each pulls from the model's one queue with its own batch rules.
//!
//! ```text
//! submit() ──validate──▶ BoundedQueue ──policy::decide──▶ free instance thread ──▶ Backend::infer
//!    │ QueueFull / Invalid / ShuttingDown at once                    │ outputs split per request
//!    ▼                                                               ▼
//! oneshot::Receiver ◀───────────────── InferenceResponse { outputs, timings } or InferError
//! ```
//!
//! Each instance thread is its own batcher: when free it looks at the queue under the lock, asks
//! the pure [`policy::decide`] what to do with its rules, and either takes a batch, sleeps until
//! the decision's deadline, or sleeps until the queue changes. A submit wakes a sleeping instance
//! only when the new request changes what the policy decides for it ([`policy::Sleep::woken_by`]:
//! a batch is ready, or is due sooner); a request that merely joins a forming batch wakes no one.
//! Requests whose deadline passed, or whose receiver was dropped, are removed right before each
//! decision, so they never reach the device.
//!
//! **Instance health.** An idle instance asks its backend's [`Backend::health`] every
//! `health_interval`. A device that is gone ([`crate::backend::BackendError::DeviceUnavailable`],
//! from a run or from the health check, or an internal error after which the health check fails)
//! takes that instance out of service: its batch is answered UNAVAILABLE, the other instances
//! keep serving, and it is polled until its device is back. With no instance in service, new and
//! queued requests are answered UNAVAILABLE.
//!
//! Metrics: the scheduler records the batch size of every backend run
//! ([`crate::metrics::batch_size_histogram`]), backend errors, instance health, and the queue
//! depth ([`crate::metrics::queue_depth_gauge`]) whenever the queue changes. Every request outcome reaches the caller as the result of [`ModelScheduler::submit`]
//! or of its receiver, and the caller records it; a caller that drops the receiver (its client
//! went away) counts that itself.

mod batch;
pub mod policy;
mod queue;
mod worker;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use self::policy::{decide, BatchRules, Pending, Sleep};
use self::queue::{BoundedQueue, Entry};
use crate::backend::{Backend, BatchSupport, ModelSignature};
use crate::metrics;
use crate::tensor::Tensor;

/// How a model's requests are queued and batched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchingConfig {
    /// Most samples (dimension 0) in one batch; 0 = as many as the backend takes. Ignored for
    /// unbatched models; for `Fixed(n)` backends a batch is `n` samples.
    pub max_batch_size: usize,
    /// How long the oldest queued request may wait, from its arrival, for a batch to fill.
    /// 0 = send whatever is queued whenever an instance is free.
    pub max_queue_delay: Duration,
    /// Batch sizes dispatched at once when the queue reaches them.
    pub preferred_batch_sizes: Vec<usize>,
    /// Most requests waiting in the queue.
    pub max_queue_requests: usize,
    /// Most input bytes waiting in the queue.
    pub max_queue_bytes: usize,
    /// How often an idle or out-of-service instance asks its backend whether the device is there.
    pub health_interval: Duration,
}

/// Default [`BatchingConfig::health_interval`].
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

impl Default for BatchingConfig {
    /// Batches of up to 8, no waiting, at most 256 queued requests and 64 MiB of queued inputs.
    fn default() -> Self {
        BatchingConfig {
            max_batch_size: 8,
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: Vec::new(),
            max_queue_requests: 256,
            max_queue_bytes: 64 << 20,
            health_interval: DEFAULT_HEALTH_INTERVAL,
        }
    }
}

/// One inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceRequest {
    /// Inputs in signature order; for batched models dimension 0 is this request's sample count.
    pub inputs: Vec<Tensor>,
    /// Samples in this request (dimension 0 of every input); ignored for unbatched models.
    pub batch_size: usize,
    /// When the request arrived at the server; the batching delay counts from here.
    pub arrived: Instant,
    /// Past this instant the request is dropped before reaching the device ([`InferError::Expired`]).
    pub deadline: Option<Instant>,
}

impl InferenceRequest {
    /// A request arriving now, without a deadline.
    pub fn new(inputs: Vec<Tensor>, batch_size: usize) -> Self {
        InferenceRequest {
            inputs,
            batch_size,
            arrived: Instant::now(),
            deadline: None,
        }
    }
}

/// Where a request's time went on the server.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTimings {
    /// From arrival until its batch was taken by an instance.
    pub queue: Duration,
    /// Backend time of the batch it ran in (all runs, for split batches).
    pub compute: Duration,
    /// Gathering the batch's inputs (concatenating, cutting and padding), for the whole batch.
    pub gather: Duration,
    /// Splitting the batch's outputs back per request, for the whole batch.
    pub scatter: Duration,
    /// Samples in the executed batch (after padding for fixed-batch devices); 1 when unbatched.
    pub batch_size: usize,
    /// The instance's device label, e.g. `cpu`.
    pub device: String,
    /// The runtime's own figures for the batch's last run ([`crate::backend::Backend::runtime_metrics`]).
    pub runtime_metrics: Vec<(String, f64)>,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceResponse {
    /// Outputs in signature order, holding only this request's samples.
    pub outputs: Vec<Tensor>,
    pub timings: RequestTimings,
}

/// Why a request was not answered with outputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    /// The queue is at its request or byte limit (gRPC: RESOURCE_EXHAUSTED).
    #[error(
        "queue of model '{model}' is full ({queued_requests}/{max_requests} requests, \
         {queued_bytes}/{max_bytes} bytes); retry later or raise the model's queue limits"
    )]
    QueueFull {
        model: String,
        queued_requests: usize,
        max_requests: usize,
        queued_bytes: usize,
        max_bytes: usize,
    },
    /// The request does not match the model (gRPC: INVALID_ARGUMENT).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Its deadline passed before it was answered (gRPC: DEADLINE_EXCEEDED).
    #[error("the request's deadline passed before it could be answered")]
    Expired,
    /// Its client went away (gRPC: CANCELLED).
    #[error("request cancelled by the client")]
    Cancelled,
    /// The model is being unloaded or the server is stopping (gRPC: UNAVAILABLE).
    #[error("model is shutting down")]
    ShuttingDown,
    /// The scheduler stopped taking requests before this one was queued (the model version was
    /// replaced by a reload, or is being unloaded): the request comes back untouched, so the
    /// caller can send it to the version now serving. Otherwise as [`InferError::ShuttingDown`].
    #[error("model is shutting down")]
    Replaced(Box<InferenceRequest>),
    /// No instance can run it: its device is gone or failed (gRPC: UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// The backend failed on the batch (gRPC: INTERNAL).
    #[error("backend error: {0}")]
    Backend(String),
}

/// Where one instance stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// The device it runs on.
    pub device: String,
    /// Whether it takes batches.
    pub in_service: bool,
    /// Why not, when it is out of service.
    pub reason: String,
}

/// Whether the scheduler accepts work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// No new requests; queued ones still run, without waiting for batches to fill.
    Draining,
    /// Queued requests are answered `ShuttingDown`; threads exit after their current batch.
    Aborted,
}

struct State {
    queue: BoundedQueue,
    phase: Phase,
    /// Instance threads currently looking for work.
    idle: usize,
    /// Per instance, by index: what it sleeps on while it waits for work; `None` while it runs a
    /// batch, decides, or is out of service.
    sleeping: Vec<Option<Sleep>>,
    /// Instance threads not yet exited.
    live: usize,
    /// One per instance, by index.
    instances: Vec<InstanceStatus>,
}

impl State {
    fn in_service(&self) -> usize {
        self.instances.iter().filter(|i| i.in_service).count()
    }
}

/// What the submitting side and the instance threads share.
struct Shared {
    model: String,
    /// The runtime's name, for metrics.
    backend: &'static str,
    signature: ModelSignature,
    /// Each instance's batching rules, by index.
    rules: Vec<BatchRules>,
    /// Most samples one request may carry.
    max_request_samples: usize,
    /// The model's queue-depth series.
    queue_depth: ::metrics::Gauge,
    health_interval: Duration,
    state: Mutex<State>,
    /// Wakes instance threads: a request arrived, or the phase changed.
    work: Condvar,
    /// Wakes `shutdown`: an instance thread exited.
    exited: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether the queue changed what the policy decides for a sleeping instance, so the sleepers
/// must be woken (`shared.work.notify_all()`, best after the lock is released: a thread woken
/// while the lock is held would only block on it again).
fn decision_changed(shared: &Shared, state: &State) -> bool {
    let now = Instant::now();
    state
        .sleeping
        .iter()
        .zip(&shared.rules)
        .any(|(sleep, rules)| {
            sleep.is_some_and(|sleep| {
                sleep.woken_by(decide(state.queue.pending(), now, state.idle, rules))
            })
        })
}

/// Answers every queued request with `error`.
fn answer_queue(shared: &Shared, state: &mut State, error: &InferError) {
    let dropped = state.queue.take_all();
    if !dropped.is_empty() {
        shared.queue_depth.set(0.0);
    }
    for entry in dropped {
        let _ = entry.reply.send(Err(error.clone()));
    }
}

/// Answers every queued request with `ShuttingDown`.
fn abort_queue(shared: &Shared, state: &mut State) {
    answer_queue(shared, state, &InferError::ShuttingDown);
}

/// Why no instance of the model is in service, for UNAVAILABLE answers.
fn unavailable(shared: &Shared, state: &State) -> InferError {
    let reasons: Vec<String> = state
        .instances
        .iter()
        .map(|i| format!("{}: {}", i.device, i.reason))
        .collect();
    InferError::Unavailable(format!(
        "no instance of model '{}' is in service ({})",
        shared.model,
        reasons.join("; ")
    ))
}

/// The scheduler of one loaded model.
pub struct ModelScheduler {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for ModelScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelScheduler")
            .field("model", &self.shared.model)
            .field("backend", &self.shared.backend)
            .finish_non_exhaustive()
    }
}

/// Most samples one request may carry on an instance with these rules and batch support.
fn request_samples(config: &BatchingConfig, rules: &BatchRules, batch: BatchSupport) -> usize {
    match batch {
        BatchSupport::Unbatched => 1,
        BatchSupport::Dynamic { .. } => rules.max_samples,
        BatchSupport::Fixed(n) => config.max_batch_size.max(n),
    }
}

impl ModelScheduler {
    /// Starts one OS thread per instance. The instances may differ in device and batch support
    /// but not in inputs and outputs (the repository checks that); `backend` is the runtime's
    /// name, for metrics.
    ///
    /// # Panics
    /// If `instances` is empty: a model needs at least one loaded instance.
    pub fn start(
        model: &str,
        backend: &'static str,
        config: BatchingConfig,
        instances: Vec<Box<dyn Backend>>,
    ) -> Self {
        assert!(
            !instances.is_empty(),
            "ModelScheduler::start needs at least one backend instance"
        );
        let signature = instances[0].signature().clone();
        let rules: Vec<BatchRules> = instances
            .iter()
            .map(|i| BatchRules::new(&config, i.signature().batch))
            .collect();
        let max_request_samples = instances
            .iter()
            .zip(&rules)
            .map(|(i, r)| request_samples(&config, r, i.signature().batch))
            .max()
            .unwrap_or(1);
        let statuses = instances
            .iter()
            .map(|i| InstanceStatus {
                device: i.device().to_string(),
                in_service: true,
                reason: String::new(),
            })
            .collect();
        let sleeping = vec![None; instances.len()];
        let shared = Arc::new(Shared {
            model: model.to_string(),
            backend,
            signature,
            rules,
            max_request_samples,
            queue_depth: metrics::queue_depth_gauge(model),
            health_interval: config.health_interval,
            state: Mutex::new(State {
                queue: BoundedQueue::new(config.max_queue_requests, config.max_queue_bytes),
                phase: Phase::Running,
                idle: 0,
                sleeping,
                live: 0,
                instances: statuses,
            }),
            work: Condvar::new(),
            exited: Condvar::new(),
        });
        shared.queue_depth.set(0.0);
        metrics::set_queue_capacity(model, config.max_queue_requests);
        let mut threads = Vec::with_capacity(instances.len());
        for (index, backend_instance) in instances.into_iter().enumerate() {
            let thread_shared = Arc::clone(&shared);
            metrics::register_instance(
                metrics::RanOn {
                    model,
                    backend,
                    device: backend_instance.device(),
                },
                index,
            );
            shared.lock().live += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("infer-{index}-{model}"))
                .spawn(move || worker::run(thread_shared, index, backend_instance));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    let mut state = shared.lock();
                    state.live -= 1;
                    state.instances[index].in_service = false;
                    state.instances[index].reason = format!("cannot start its thread: {e}");
                    tracing::error!(model, index, error = %e, "cannot start an instance thread");
                }
            }
        }
        if threads.is_empty() {
            shared.lock().phase = Phase::Aborted;
        }
        tracing::info!(
            model,
            backend,
            instances = threads.len(),
            max_request_samples,
            "scheduler started"
        );
        ModelScheduler {
            shared,
            threads: Mutex::new(threads),
        }
    }

    /// Queues a request; the receiver gets its answer. Fails at once, without queueing, when the
    /// request does not match the model, the queue is full, or the model is shutting down.
    pub fn submit(
        &self,
        req: InferenceRequest,
    ) -> Result<oneshot::Receiver<Result<InferenceResponse, InferError>>, InferError> {
        let shared = &self.shared;
        let shape_key = batch::validate(
            &shared.signature,
            &req.inputs,
            req.batch_size,
            shared.max_request_samples,
        )
        .map_err(InferError::Invalid)?;
        let bytes: usize = req.inputs.iter().map(|t| t.data.len()).sum();
        let samples = if shared.signature.batch == BatchSupport::Unbatched {
            1
        } else {
            req.batch_size
        };
        let (reply, receiver) = oneshot::channel();
        let entry = Entry {
            pending: Pending {
                samples,
                arrived: req.arrived,
                shape_key,
            },
            request: req,
            bytes,
            reply,
        };

        let mut state = shared.lock();
        if state.phase != Phase::Running {
            return Err(InferError::Replaced(Box::new(entry.request)));
        }
        if state.in_service() == 0 {
            return Err(unavailable(shared, &state));
        }
        if !state.queue.could_ever_fit(bytes) {
            return Err(InferError::Invalid(format!(
                "request of {bytes} bytes exceeds the queue limit of {} bytes; raise the model's max_queue_bytes",
                state.queue.max_bytes()
            )));
        }
        if !state.queue.fits(bytes) {
            // Make room from requests that are already dead before refusing.
            worker::drop_dead(shared, &mut state, Instant::now());
        }
        if state.queue.push(entry).is_err() {
            return Err(state.queue.full_error(&shared.model));
        }
        shared.queue_depth.set(state.queue.len() as f64);
        let wake = decision_changed(shared, &state);
        drop(state);
        if wake {
            shared.work.notify_all();
        }
        Ok(receiver)
    }

    /// Requests waiting in the queue (not yet taken by an instance).
    pub fn queue_depth(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// The model's inputs, outputs and batch support, as the first instance reports them.
    pub fn signature(&self) -> &ModelSignature {
        &self.shared.signature
    }

    /// Every instance's device and whether it is in service.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        self.shared.lock().instances.clone()
    }

    /// How many instances are in service.
    pub fn in_service(&self) -> usize {
        self.shared.lock().in_service()
    }

    /// Most samples one request may carry (`max_batch_size` to report); 0 for unbatched models.
    pub fn max_batch_size(&self) -> usize {
        match self.shared.signature.batch {
            BatchSupport::Unbatched => 0,
            _ => self.shared.max_request_samples,
        }
    }

    /// Stops accepting requests, lets the instances finish what is queued and in flight for up to
    /// `grace`, then answers whatever is still queued with [`InferError::ShuttingDown`] and joins the
    /// threads that have finished (a backend run still going after `grace` is left to end on its
    /// own thread). Blocking: call it from `spawn_blocking` in async code. Idempotent.
    pub fn shutdown(&self, grace: Duration) {
        let shared = &self.shared;
        let deadline = Instant::now() + grace;
        let mut state = shared.lock();
        if state.phase == Phase::Running {
            state.phase = Phase::Draining;
        }
        shared.work.notify_all();
        while state.live > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = shared
                .exited
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        // Every instance has left its loop: joining only waits for the threads to return.
        let all_exited = state.live == 0;
        if !all_exited {
            tracing::warn!(model = %shared.model, busy = state.live, "shutdown grace over; dropping queued requests");
            state.phase = Phase::Aborted;
            abort_queue(shared, &mut state);
            shared.work.notify_all();
        }
        drop(state);
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in handles {
            if all_exited || handle.is_finished() {
                if handle.join().is_err() {
                    tracing::error!(model = %shared.model, "an instance thread panicked");
                }
            } else {
                tracing::warn!(model = %shared.model, "an instance is still running a batch; not waiting for it");
            }
        }
    }
}

impl Drop for ModelScheduler {
    /// Without a prior [`ModelScheduler::shutdown`], queued requests are answered `ShuttingDown`
    /// and the threads exit after their current batch (not joined).
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if state.phase != Phase::Aborted && state.live > 0 {
            state.phase = Phase::Aborted;
            abort_queue(&self.shared, &mut state);
        }
        drop(state);
        self.shared.work.notify_all();
    }
}
