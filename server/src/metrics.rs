//! Every Prometheus metric the server exports is named here, and only here. Other modules call
//! these functions where the event happens; the exporter serves them as text on `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Requests by model and outcome (`success`, `invalid`, `rejected`, `expired`, `cancelled`,
/// `unavailable`, `backend_error`).
pub const REQUESTS_TOTAL: &str = "inference_requests_total";
/// End-to-end server time of a request, seconds.
pub const REQUEST_DURATION: &str = "inference_request_duration_seconds";
/// Time a request waited in the batch queue, seconds.
pub const QUEUE_DURATION: &str = "inference_queue_duration_seconds";
/// Time the backend spent on the batch a request ran in, seconds; by model, backend and device.
pub const COMPUTE_DURATION: &str = "inference_compute_duration_seconds";
/// Samples in each executed batch (after padding or splitting for the device); by model,
/// backend and device.
pub const BATCH_SIZE: &str = "inference_batch_size";
/// Failed backend runs by model, backend, device and `kind` (`invalid_input`, `device`, `internal`).
pub const BACKEND_ERRORS: &str = "inference_backend_errors_total";
/// 1 while a model instance is in service, 0 while it is out (its device gone or failed); by
/// model, backend, device and instance.
pub const INSTANCE_UP: &str = "inference_instance_up";
/// Requests waiting in a model's queue.
pub const QUEUE_DEPTH: &str = "inference_queue_depth";
/// Requests accepted and not yet answered.
pub const INFLIGHT_REQUESTS: &str = "inference_inflight_requests";
/// Time to load a model version, seconds.
pub const MODEL_LOAD_DURATION: &str = "model_load_duration_seconds";
/// 1 for the state a model is in (`loading`, `ready`, `unavailable`, `unloaded`), 0 for the others.
pub const MODEL_STATE: &str = "model_state";

/// The model states reported through [`MODEL_STATE`].
pub const MODEL_STATES: [&str; 4] = ["loading", "ready", "unavailable", "unloaded"];

/// Latency buckets from 100 µs to 10 s, roughly ×2.5 apart.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Outcome label of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Invalid,
    Rejected,
    Expired,
    Cancelled,
    /// No instance could run it: its device is gone or failed.
    Unavailable,
    BackendError,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Invalid => "invalid",
            Outcome::Rejected => "rejected",
            Outcome::Expired => "expired",
            Outcome::Cancelled => "cancelled",
            Outcome::Unavailable => "unavailable",
            Outcome::BackendError => "backend_error",
        }
    }
}

/// Starts the Prometheus HTTP listener on `addr` and the process-metrics collector.
pub fn install_exporter(addr: SocketAddr) -> Result<(), BuildError> {
    let latency_metrics = [
        REQUEST_DURATION,
        QUEUE_DURATION,
        COMPUTE_DURATION,
        MODEL_LOAD_DURATION,
    ];
    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for name in latency_metrics {
        builder =
            builder.set_buckets_for_metric(Matcher::Full(name.to_string()), &LATENCY_BUCKETS)?;
    }
    builder =
        builder.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.to_string()), &BATCH_BUCKETS)?;
    builder.install()?;
    let collector = metrics_process::Collector::default();
    collector.describe();
    collector.collect();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            collector.collect();
        }
    });
    Ok(())
}

/// Counts one finished request of `model` with its outcome.
pub fn record_request(model: &str, outcome: Outcome) {
    counter!(REQUESTS_TOTAL, "model" => model.to_string(), "outcome" => outcome.label())
        .increment(1);
}

/// Where a batch ran: the labels of the per-device metrics.
#[derive(Debug, Clone, Copy)]
pub struct RanOn<'a> {
    pub model: &'a str,
    pub backend: &'a str,
    pub device: &'a str,
}

/// Records the timings of one successful request.
pub fn record_request_timings(on: RanOn<'_>, total: Duration, queue: Duration, compute: Duration) {
    let model = on.model.to_string();
    histogram!(REQUEST_DURATION, "model" => model.clone()).record(total.as_secs_f64());
    histogram!(QUEUE_DURATION, "model" => model.clone()).record(queue.as_secs_f64());
    histogram!(COMPUTE_DURATION, "model" => model, "backend" => on.backend.to_string(), "device" => on.device.to_string())
        .record(compute.as_secs_f64());
}

/// Records the sample count of one executed batch.
pub fn record_batch_size(on: RanOn<'_>, samples: usize) {
    histogram!(BATCH_SIZE, "model" => on.model.to_string(), "backend" => on.backend.to_string(), "device" => on.device.to_string())
        .record(samples as f64);
}

/// Counts one failed backend run of `kind` (`invalid_input`, `device`, `internal`).
pub fn record_backend_error(on: RanOn<'_>, kind: &'static str) {
    counter!(BACKEND_ERRORS, "model" => on.model.to_string(), "backend" => on.backend.to_string(), "device" => on.device.to_string(), "kind" => kind)
        .increment(1);
}

/// Marks instance `instance` of a model in (`up`) or out of service.
pub fn set_instance_up(on: RanOn<'_>, instance: usize, up: bool) {
    gauge!(INSTANCE_UP, "model" => on.model.to_string(), "backend" => on.backend.to_string(), "device" => on.device.to_string(), "instance" => instance.to_string())
        .set(if up { 1.0 } else { 0.0 });
}

/// Sets the number of requests waiting in `model`'s queue.
pub fn set_queue_depth(model: &str, depth: usize) {
    gauge!(QUEUE_DEPTH, "model" => model.to_string()).set(depth as f64);
}

/// Adds `delta` (+1 on accept, −1 on answer) to the in-flight request gauge.
pub fn add_inflight(model: &str, delta: f64) {
    gauge!(INFLIGHT_REQUESTS, "model" => model.to_string()).increment(delta);
}

/// Records how long loading a model took.
pub fn record_model_load(model: &str, took: Duration) {
    histogram!(MODEL_LOAD_DURATION, "model" => model.to_string()).record(took.as_secs_f64());
}

/// Marks `model` as being in `state` (one of [`MODEL_STATES`]).
pub fn set_model_state(model: &str, state: &str) {
    for candidate in MODEL_STATES {
        let value = if candidate == state { 1.0 } else { 0.0 };
        gauge!(MODEL_STATE, "model" => model.to_string(), "state" => candidate).set(value);
    }
}
