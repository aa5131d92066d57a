//! Every Prometheus metric the server exports is named here, and only here. Other modules call
//! these functions where the event happens; `metrics_endpoint` serves them as text on `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::telemetry::{Reading, PI_THROTTLE_CONDITIONS};

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
/// model, backend, device and `model_instance` (its index; not `instance`, which Prometheus
/// gives the scrape target).
pub const INSTANCE_UP: &str = "inference_instance_up";
/// A runtime's own figure for an instance's last run (DNA: `total_sim_cycles`, `sim_time_us`,
/// `freq_mhz`); by model, backend, device, `model_instance` and `metric`.
pub const RUNTIME_METRIC: &str = "inference_runtime_metric";
/// Requests waiting in a model's queue.
pub const QUEUE_DEPTH: &str = "inference_queue_depth";
/// Requests a model's queue holds before it rejects more.
pub const QUEUE_CAPACITY: &str = "inference_queue_capacity";
/// The p99 latency a model's config sets as its objective, seconds.
pub const LATENCY_OBJECTIVE: &str = "inference_latency_objective_seconds";
/// Requests accepted and not yet answered.
pub const INFLIGHT_REQUESTS: &str = "inference_inflight_requests";
/// Time to load a model version, seconds.
pub const MODEL_LOAD_DURATION: &str = "model_load_duration_seconds";
/// 1 for the state a model is in (`loading`, `ready`, `unavailable`, `unloaded`), 0 for the others.
pub const MODEL_STATE: &str = "model_state";

/// A thermal zone's temperature, °C; by `zone` and `type`.
pub const SOC_TEMPERATURE: &str = "inference_soc_temperature_celsius";
/// A CPU's current frequency, Hz; by `cpu`.
pub const CPU_FREQUENCY: &str = "inference_cpu_frequency_hertz";
/// The frequency a CPU may scale up to now (lowered when capped), Hz; by `cpu`.
pub const CPU_FREQUENCY_MAX: &str = "inference_cpu_frequency_max_hertz";
/// The highest frequency a CPU's hardware runs at, Hz; by `cpu`.
pub const CPU_FREQUENCY_HARDWARE_MAX: &str = "inference_cpu_frequency_hardware_max_hertz";
/// 1 for a CPU's frequency governor; by `cpu` and `governor`.
pub const CPU_GOVERNOR: &str = "inference_cpu_governor";
/// Raspberry Pi firmware throttling flags, 1 when set; by `condition` and `when` (`now`,
/// `since_boot`).
pub const PI_THROTTLED: &str = "inference_pi_throttled";
/// The box's memory, bytes.
pub const MEMORY_TOTAL: &str = "inference_memory_total_bytes";
/// Memory available to start new work without swapping, bytes.
pub const MEMORY_AVAILABLE: &str = "inference_memory_available_bytes";
/// An accelerator's own temperature sensor, °C; by `device`.
pub const ACCELERATOR_TEMPERATURE: &str = "inference_accelerator_temperature_celsius";
/// Resets of an accelerator since its driver loaded; by `device`.
pub const ACCELERATOR_RESETS: &str = "inference_accelerator_resets_total";
/// 1 while an accelerator's driver reports it alive; by `device`.
pub const ACCELERATOR_ALIVE: &str = "inference_accelerator_alive";

/// Connections by listener and `outcome`: `accepted`, `rejected_limit` (over --max-connections),
/// `closed_idle` (no request for --idle-timeout), `tls_failed` (the TLS handshake failed).
pub const CONNECTIONS: &str = "inference_connections_total";
/// Connections open now, by listener.
pub const CONNECTIONS_OPEN: &str = "inference_connections_open";
/// Request bodies refused while arriving, by listener and `reason`: `memory_budget`
/// (--max-request-memory), `timeout` (--body-timeout).
pub const BODIES_REFUSED: &str = "inference_request_bodies_refused_total";
/// Requests refused for want of a valid bearer token or client certificate, by listener.
pub const UNAUTHENTICATED: &str = "inference_requests_unauthenticated_total";
/// Times a ModelStreamInfer stream stopped reading requests because its client was not reading
/// the responses.
pub const STREAM_BACKPRESSURE: &str = "inference_stream_backpressure_total";

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
    /// Every outcome, in the order of its discriminant.
    const ALL: [Outcome; 7] = [
        Outcome::Success,
        Outcome::Invalid,
        Outcome::Rejected,
        Outcome::Expired,
        Outcome::Cancelled,
        Outcome::Unavailable,
        Outcome::BackendError,
    ];

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

/// Installs the Prometheus recorder every metric goes to; the handle renders them for a scrape.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let latency_metrics = [
        REQUEST_DURATION,
        QUEUE_DURATION,
        COMPUTE_DURATION,
        MODEL_LOAD_DURATION,
    ];
    let mut builder = PrometheusBuilder::new();
    for name in latency_metrics {
        builder =
            builder.set_buckets_for_metric(Matcher::Full(name.to_string()), &LATENCY_BUCKETS)?;
    }
    builder =
        builder.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.to_string()), &BATCH_BUCKETS)?;
    builder.install_recorder()
}

/// The governor each CPU had at the last reading, so a change sets the old one's series to 0.
static LAST_GOVERNORS: Mutex<BTreeMap<u32, String>> = Mutex::new(BTreeMap::new());

/// Sets the device telemetry gauges from a reading; sources it lacks stay unexported.
pub fn record_telemetry(reading: &Reading) {
    for zone in &reading.soc_temperatures {
        gauge!(SOC_TEMPERATURE, "zone" => zone.zone.clone(), "type" => zone.kind.clone())
            .set(zone.celsius);
    }
    for cpu in &reading.cpus {
        let label = cpu.cpu.to_string();
        let frequencies = [
            (CPU_FREQUENCY, cpu.current_hz),
            (CPU_FREQUENCY_MAX, cpu.max_hz),
            (CPU_FREQUENCY_HARDWARE_MAX, cpu.hardware_max_hz),
        ];
        for (name, hz) in frequencies {
            if let Some(hz) = hz {
                gauge!(name, "cpu" => label.clone()).set(hz);
            }
        }
        if let Some(governor) = &cpu.governor {
            let mut last = LAST_GOVERNORS.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = last.insert(cpu.cpu, governor.clone()) {
                if &old != governor {
                    gauge!(CPU_GOVERNOR, "cpu" => label.clone(), "governor" => old).set(0.0);
                }
            }
            gauge!(CPU_GOVERNOR, "cpu" => label, "governor" => governor.clone()).set(1.0);
        }
    }
    if let Some(flags) = reading.pi_throttled {
        for (condition, bit) in PI_THROTTLE_CONDITIONS {
            let flag = |set: bool| if set { 1.0 } else { 0.0 };
            gauge!(PI_THROTTLED, "condition" => condition, "when" => "now")
                .set(flag(flags.now(bit)));
            gauge!(PI_THROTTLED, "condition" => condition, "when" => "since_boot")
                .set(flag(flags.since_boot(bit)));
        }
    }
    if let Some(memory) = reading.memory {
        gauge!(MEMORY_TOTAL).set(memory.total_bytes);
        gauge!(MEMORY_AVAILABLE).set(memory.available_bytes);
    }
    for accelerator in &reading.accelerators {
        let device = accelerator.device.clone();
        if let Some(celsius) = accelerator.celsius {
            gauge!(ACCELERATOR_TEMPERATURE, "device" => device.clone()).set(celsius);
        }
        if let Some(resets) = accelerator.resets {
            counter!(ACCELERATOR_RESETS, "device" => device.clone()).absolute(resets);
        }
        if let Some(alive) = accelerator.alive {
            gauge!(ACCELERATOR_ALIVE, "device" => device).set(if alive { 1.0 } else { 0.0 });
        }
    }
}

/// Counts one finished request of `model` with its outcome.
pub fn record_request(model: &str, outcome: Outcome) {
    counter!(REQUESTS_TOTAL, "model" => model.to_string(), "outcome" => outcome.label())
        .increment(1);
}

/// The series a served model's requests update, resolved once when its version starts, so the
/// request path formats no labels and looks nothing up.
#[derive(Debug, Clone)]
pub struct ModelMetrics {
    /// [`REQUESTS_TOTAL`] by [`Outcome`] discriminant.
    outcomes: [Counter; Outcome::ALL.len()],
    request_duration: Histogram,
    queue_duration: Histogram,
    inflight: Gauge,
    /// [`COMPUTE_DURATION`] of each instance's device.
    compute: Vec<(String, Histogram)>,
    backend: &'static str,
    model: String,
}

impl ModelMetrics {
    /// The series of `model`, whose instances run on `devices` with runtime `backend`.
    pub fn new<'a>(
        model: &str,
        backend: &'static str,
        devices: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut compute: Vec<(String, Histogram)> = Vec::new();
        for device in devices {
            if !compute.iter().any(|(d, _)| d == device) {
                compute.push((
                    device.to_string(),
                    compute_histogram(model, backend, device),
                ));
            }
        }
        ModelMetrics {
            outcomes: Outcome::ALL.map(|outcome| {
                counter!(REQUESTS_TOTAL, "model" => model.to_string(), "outcome" => outcome.label())
            }),
            request_duration: histogram!(REQUEST_DURATION, "model" => model.to_string()),
            queue_duration: histogram!(QUEUE_DURATION, "model" => model.to_string()),
            inflight: gauge!(INFLIGHT_REQUESTS, "model" => model.to_string()),
            compute,
            backend,
            model: model.to_string(),
        }
    }

    /// Counts one finished request with its outcome.
    pub fn record_request(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].increment(1);
    }

    /// Records the timings of one successful request that ran on `device`.
    pub fn record_timings(
        &self,
        device: &str,
        total: Duration,
        queue: Duration,
        compute: Duration,
    ) {
        self.request_duration.record(total.as_secs_f64());
        self.queue_duration.record(queue.as_secs_f64());
        match self.compute.iter().find(|(d, _)| d == device) {
            Some((_, histogram)) => histogram.record(compute.as_secs_f64()),
            None => {
                compute_histogram(&self.model, self.backend, device).record(compute.as_secs_f64())
            }
        }
    }

    /// Adds `delta` (+1 on accept, −1 on answer) to the in-flight request gauge.
    pub fn add_inflight(&self, delta: f64) {
        self.inflight.increment(delta);
    }
}

fn compute_histogram(model: &str, backend: &'static str, device: &str) -> Histogram {
    histogram!(COMPUTE_DURATION, "model" => model.to_string(), "backend" => backend, "device" => device.to_string())
}

/// Where a batch ran: the labels of the per-device metrics.
#[derive(Debug, Clone, Copy)]
pub struct RanOn<'a> {
    pub model: &'a str,
    pub backend: &'a str,
    pub device: &'a str,
}

/// The [`BATCH_SIZE`] series of one instance: record each executed batch's sample count.
pub fn batch_size_histogram(on: RanOn<'_>) -> Histogram {
    histogram!(BATCH_SIZE, "model" => on.model.to_string(), "backend" => on.backend.to_string(), "device" => on.device.to_string())
}

/// Counts one failed backend run of `kind` (one of [`BACKEND_ERROR_KINDS`]).
pub fn record_backend_error(on: RanOn<'_>, kind: &'static str) {
    counter!(BACKEND_ERRORS, "model" => on.model.to_string(), "backend" => on.backend.to_string(), "device" => on.device.to_string(), "kind" => kind)
        .increment(1);
}

/// The `kind`s of [`BACKEND_ERRORS`].
pub const BACKEND_ERROR_KINDS: [&str; 3] = ["invalid_input", "device", "internal"];

/// Marks instance `instance` of a model in (`up`) or out of service.
pub fn set_instance_up(on: RanOn<'_>, instance: usize, up: bool) {
    gauge!(INSTANCE_UP, "model" => on.model.to_string(), "backend" => on.backend.to_string(), "device" => on.device.to_string(), "model_instance" => instance.to_string())
        .set(if up { 1.0 } else { 0.0 });
}

/// Sets the runtime's own figures of instance `instance`'s last run (see [`RUNTIME_METRIC`]).
pub fn set_runtime_metrics(on: RanOn<'_>, instance: usize, figures: &[(String, f64)]) {
    for (name, value) in figures {
        gauge!(RUNTIME_METRIC, "model" => on.model.to_string(), "backend" => on.backend.to_string(), "device" => on.device.to_string(), "model_instance" => instance.to_string(), "metric" => name.clone())
            .set(*value);
    }
}

/// A new instance: in service, and its device's error counters exported from 0, so that
/// Prometheus' `increase()` sees the first error too.
pub fn register_instance(on: RanOn<'_>, instance: usize) {
    set_instance_up(on, instance, true);
    for kind in BACKEND_ERROR_KINDS {
        counter!(BACKEND_ERRORS, "model" => on.model.to_string(), "backend" => on.backend.to_string(), "device" => on.device.to_string(), "kind" => kind)
            .increment(0);
    }
}

/// The [`QUEUE_DEPTH`] series of `model`: set it to the requests waiting in its queue.
pub fn queue_depth_gauge(model: &str) -> Gauge {
    gauge!(QUEUE_DEPTH, "model" => model.to_string())
}

/// Counts one connection event on `listener` (see [`CONNECTIONS`]).
pub fn record_connection(listener: &'static str, outcome: &'static str) {
    counter!(CONNECTIONS, "listener" => listener, "outcome" => outcome).increment(1);
}

/// Adds `delta` to the open connections of `listener`.
pub fn add_open_connection(listener: &'static str, delta: f64) {
    gauge!(CONNECTIONS_OPEN, "listener" => listener).increment(delta);
}

/// Counts one request refused on `listener` for want of a valid bearer token.
pub fn record_unauthenticated(listener: &'static str) {
    counter!(UNAUTHENTICATED, "listener" => listener).increment(1);
}

/// Counts one request body refused on `listener` for `reason` (see [`BODIES_REFUSED`]).
pub fn record_refused_body(listener: &'static str, reason: &'static str) {
    counter!(BODIES_REFUSED, "listener" => listener, "reason" => reason).increment(1);
}

/// Counts one wait of a stream's reader for its client to read responses.
pub fn record_stream_backpressure(model: &str) {
    counter!(STREAM_BACKPRESSURE, "model" => model.to_string()).increment(1);
}

/// Sets how many requests `model`'s queue holds.
pub fn set_queue_capacity(model: &str, capacity: usize) {
    gauge!(QUEUE_CAPACITY, "model" => model.to_string()).set(capacity as f64);
}

/// Sets `model`'s p99 latency objective.
pub fn set_latency_objective(model: &str, objective: Duration) {
    gauge!(LATENCY_OBJECTIVE, "model" => model.to_string()).set(objective.as_secs_f64());
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
