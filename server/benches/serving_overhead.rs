//! Serving-overhead benchmark: what the server costs on top of the bare runtime, for each
//! backend asked for (`--backend onnxruntime,openvino` on an ONNX model, `--backend tflite,openvino`
//! on a `.tflite` one), and how the backends compare.
//!
//! On one model and in one run it measures, per backend,
//! - **in-process**: the server's own backend code (loaded from the same `config.toml` text as
//!   the served model, so the same runtime settings) in a sequential loop, at batch 1 and at B;
//! - **through the server**: the real `inference-server` binary, spawned on loopback ports with a
//!   temporary repository holding the model twice per backend (`overhead-on-<backend>`: dynamic
//!   batching up to B with a queue delay; `overhead-off-<backend>`: `max_batch_size = 1`), driven
//!   over gRPC `ModelInfer` with `raw_input_contents` at concurrency 1 and at concurrency C (closed
//!   loop, C in-flight requests over a few HTTP/2 connections).
//!
//! Every configuration is warmed up once, then the configurations are measured round-robin
//! `repeats` times (so slow drifts of a noisy machine hit them all alike) and medians are printed
//! as a markdown table with ratios to the matching in-process figure: batch-1 for concurrency 1 and
//! for batching off, batch-B for batching on; the in-process rows of the second and later
//! backends are compared with the first backend's. A ratio is the median of the per-repeat ratios.
//! Throughput is samples / wall time up to the last answer; latency is per call (per request
//! through the server, measured by the client); CPU is the user + system time of the bench and
//! server processes together per sample. CPU time shifts less than wall time when other programs
//! load the machine, but it counts the client's own work and ONNX Runtime's spin-waiting, and
//! contention still inflates it.
//!
//! `cargo bench -p inference-server --bench serving_overhead -- --help` lists the options; every
//! option also reads a `SERVING_OVERHEAD_*` variable. Without `--bench` (as in
//! `cargo test --benches`) it runs a short smoke pass on the small digits model.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use inference_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use inference_proto::inference::infer_parameter::ParameterChoice;
use inference_proto::inference::model_infer_request::InferInputTensor;
use inference_proto::inference::{
    ModelInferRequest, ModelInferResponse, ModelReadyRequest, ServerReadyRequest,
};
use inference_proto::DataType;
use inference_server::api::infer::BATCH_SIZE_PARAMETER;
use inference_server::backend::library::LibraryPaths;
use inference_server::backend::runtime::{LoadRequest, ModelFiles};
use inference_server::backend::{
    onnxruntime, openvino, tflite, Backend, BackendError, BatchSupport, TensorSpec,
};
use inference_server::model_config::ModelConfig;
use inference_server::tensor::Tensor;
use tonic::transport::{Channel, Endpoint};

/// Name of this bench, matched against a `cargo bench FILTER`.
const BENCH_NAME: &str = "serving_overhead";
/// Largest gRPC message the clients accept.
const MAX_MESSAGE_SIZE: usize = 64 << 20;
/// How long the server may take to load the models and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest allowed difference between server and in-process outputs, relative to the largest
/// in-process output magnitude (at least 1).
const OUTPUT_TOLERANCE: f32 = 1e-3;
/// Largest difference, in quantization steps, between two runtimes' UINT8 outputs.
const QUANTIZED_TOLERANCE: u8 = 8;

/// Options of the serving-overhead benchmark.
#[derive(Debug, Parser)]
#[command(
    name = BENCH_NAME,
    about = "Serving overhead: each backend in-process vs the same model through inference-server over loopback gRPC"
)]
struct Args {
    /// Backends to measure, comma-separated: onnxruntime, openvino. The first is the reference
    /// the others' in-process rows are compared with.
    #[arg(
        long = "backend",
        env = "SERVING_OVERHEAD_BACKENDS",
        value_delimiter = ',',
        default_value = "onnxruntime"
    )]
    backends: Vec<String>,
    /// Model folder (DIR/<version>/model.onnx, the highest version is used) or an .onnx file
    /// [default: models/generated/efficientnet-lite0 if present, else models/repository/digits-cnn;
    /// digits-cnn in smoke mode].
    #[arg(long, env = "SERVING_OVERHEAD_MODEL", value_name = "PATH")]
    model: Option<PathBuf>,
    /// Seconds each configuration is measured per repeat [default: 2; 0.3 in smoke mode].
    #[arg(long, env = "SERVING_OVERHEAD_DURATION", value_name = "SECONDS")]
    duration: Option<f64>,
    /// Seconds each configuration runs once, unmeasured, before the first repeat
    /// [default: 2; 0.2 in smoke mode].
    #[arg(long, env = "SERVING_OVERHEAD_WARMUP", value_name = "SECONDS")]
    warmup: Option<f64>,
    /// Measurements per configuration; medians are reported [default: 8; 1 in smoke mode].
    #[arg(long, env = "SERVING_OVERHEAD_REPEATS", value_name = "N")]
    repeats: Option<usize>,
    /// Batch size B: the server's max and preferred batch size, and the in-process batch.
    #[arg(
        long,
        env = "SERVING_OVERHEAD_BATCH",
        value_name = "B",
        default_value_t = 8
    )]
    batch: usize,
    /// In-flight requests C for the batching runs [default: 2 × B].
    #[arg(long, env = "SERVING_OVERHEAD_CONCURRENCY", value_name = "C")]
    concurrency: Option<usize>,
    /// HTTP/2 connections the C requests share.
    #[arg(
        long,
        env = "SERVING_OVERHEAD_CONNECTIONS",
        value_name = "N",
        default_value_t = 4
    )]
    connections: usize,
    /// The batching model's `max_queue_delay_us`.
    #[arg(
        long,
        env = "SERVING_OVERHEAD_MAX_QUEUE_DELAY_US",
        value_name = "MICROS",
        default_value_t = 2000
    )]
    max_queue_delay_us: u64,
    /// The `inference-server` binary [default: the one cargo built for this bench profile].
    #[arg(long, env = "SERVING_OVERHEAD_SERVER", value_name = "FILE")]
    server_binary: Option<PathBuf>,
    /// `cargo bench FILTER`: the bench runs only when its name contains FILTER.
    filter: Option<String>,
}

/// Why the benchmark could not run, with what to do about it.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("invalid --{option}: {message}")]
    Option {
        option: &'static str,
        message: String,
    },
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("in-process backend: {0}")]
    Backend(#[from] BackendError),
    #[error("{action}: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    #[error("server binary {0} not found; build it with `cargo build --release -p inference-server` or pass --server-binary")]
    ServerBinary(PathBuf),
    #[error("inference-server exited with {status} before it was ready; its log:\n{log}")]
    ServerExited { status: ExitStatus, log: String },
    #[error("inference-server not ready: {reason}; its log:\n{log}")]
    ServerNotReady { reason: String, log: String },
    #[error("cannot connect to inference-server: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("ModelInfer on '{model}' failed: {status}")]
    Infer {
        model: String,
        status: tonic::Status,
    },
    #[error("bad answer from inference-server: {0}")]
    Answer(String),
}

/// Smoke mode (no `--bench`) or a real measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bench,
    Smoke,
}

/// Resolved settings.
#[derive(Debug)]
struct Settings {
    backends: Vec<String>,
    model_file: PathBuf,
    duration: Duration,
    warmup: Duration,
    repeats: usize,
    batch: usize,
    concurrency: usize,
    connections: usize,
    max_queue_delay_us: u64,
    server_binary: PathBuf,
}

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; without it (`cargo test --benches`) only a smoke pass runs.
    let mut mode = Mode::Smoke;
    let argv = std::env::args_os().filter(|arg| {
        let bench = arg == "--bench";
        if bench {
            mode = Mode::Bench;
        }
        !bench
    });
    let args = Args::parse_from(argv.collect::<Vec<_>>());
    if args
        .filter
        .as_deref()
        .is_some_and(|filter| !BENCH_NAME.contains(filter))
    {
        return ExitCode::SUCCESS;
    }
    match Settings::resolve(args, mode).and_then(|settings| run(&settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

impl Settings {
    fn resolve(args: Args, mode: Mode) -> Result<Self, BenchError> {
        let smoke = mode == Mode::Smoke;
        let seconds = |option: &'static str, value: Option<f64>, bench: f64, smoke_value: f64| {
            let value = value.unwrap_or(if smoke { smoke_value } else { bench });
            let zero_ok = option == "warmup";
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| zero_ok || !d.is_zero())
                .ok_or_else(|| BenchError::Option {
                    option,
                    message: format!(
                        "{value} is not a {} number of seconds",
                        if zero_ok { "non-negative" } else { "positive" }
                    ),
                })
        };
        let positive = |option: &'static str, value: usize| {
            if value == 0 {
                Err(BenchError::Option {
                    option,
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(value)
            }
        };
        let batch = positive("batch", args.batch)?;
        let concurrency = positive("concurrency", args.concurrency.unwrap_or(2 * batch))?;
        let model = match args.model {
            Some(path) => path,
            None => default_model(smoke),
        };
        let server_binary = args
            .server_binary
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_inference-server")));
        if !server_binary.is_file() {
            return Err(BenchError::ServerBinary(server_binary));
        }
        if let Some(unknown) = args
            .backends
            .iter()
            .find(|b| !["onnxruntime", "openvino", "tflite"].contains(&b.as_str()))
        {
            return Err(BenchError::Option {
                option: "backend",
                message: format!("'{unknown}' is not onnxruntime, openvino or tflite"),
            });
        }
        Ok(Settings {
            backends: args.backends,
            model_file: model_file(&model)?,
            duration: seconds("duration", args.duration, 2.0, 0.3)?,
            warmup: seconds("warmup", args.warmup, 2.0, 0.2)?,
            repeats: positive("repeats", args.repeats.unwrap_or(if smoke { 1 } else { 8 }))?,
            batch,
            concurrency,
            connections: positive("connections", args.connections)?.min(concurrency),
            max_queue_delay_us: args.max_queue_delay_us,
            server_binary,
        })
    }

    /// The `cargo bench` line that repeats this run.
    fn command(&self) -> String {
        format!(
            "cargo bench -p inference-server --bench {BENCH_NAME} -- --backend {} --model {} --duration {} \
             --warmup {} --repeats {} --batch {} --concurrency {} --connections {} --max-queue-delay-us {}",
            self.backends.join(","),
            self.model_file.display(),
            self.duration.as_secs_f64(),
            self.warmup.as_secs_f64(),
            self.repeats,
            self.batch,
            self.concurrency,
            self.connections,
            self.max_queue_delay_us
        )
    }
}

/// The workspace root (the server crate's parent folder).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// efficientnet-lite0 when generated (bench mode), else the small digits CNN.
fn default_model(smoke: bool) -> PathBuf {
    let models = workspace_root().join("models");
    let efficientnet = models.join("generated/efficientnet-lite0");
    if !smoke && efficientnet.is_dir() {
        efficientnet
    } else {
        models.join("repository/digits-cnn")
    }
}

/// The `.onnx` file of `path`: the file itself, or `model.onnx` of the highest numbered version
/// folder of a repository-style model folder. A relative path is looked up from the current folder,
/// then from the workspace root (cargo runs benches in `server/`). Returned absolute (the server
/// gets a symlink to it).
fn model_file(path: &Path) -> Result<PathBuf, BenchError> {
    let model_error = |message: String| BenchError::Model {
        path: path.to_path_buf(),
        message,
    };
    let path = path
        .canonicalize()
        .or_else(|err| {
            if path.is_relative() {
                workspace_root().join(path).canonicalize()
            } else {
                Err(err)
            }
        })
        .map_err(|err| {
            model_error(format!(
                "{err} (run scripts/setup_models.sh, or pass --model DIR|FILE.onnx)"
            ))
        })?;
    if path.is_file() {
        return Ok(path);
    }
    let entries = std::fs::read_dir(&path).map_err(|err| model_error(err.to_string()))?;
    let model_in = |version: u64| {
        ["model.onnx", "model.tflite"]
            .iter()
            .map(|name| path.join(version.to_string()).join(name))
            .find(|file| file.is_file())
    };
    let version = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u64>().ok())
        .filter(|version| model_in(*version).is_some())
        .max()
        .ok_or_else(|| model_error("no <version>/model.onnx or model.tflite inside".into()))?;
    model_in(version).ok_or_else(|| model_error("the model file vanished".into()))
}

/// One line of the table: what runs (on the `backend`-th backend), and which row it is
/// compared with.
#[derive(Debug, Clone, Copy)]
enum Configuration {
    /// The backend in a sequential loop with batches of `batch`; later backends' rows are
    /// compared with the first backend's at the same batch.
    InProcess {
        backend: usize,
        batch: usize,
        baseline: Option<usize>,
    },
    /// `concurrency` closed-loop clients against the model served with or without batching.
    Server {
        backend: usize,
        batching: Batching,
        concurrency: usize,
        /// Index of the in-process row this one is compared with.
        baseline: usize,
    },
}

/// Which of the two served copies of the model a server configuration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batching {
    /// `overhead-on`: dynamic batching up to B with the configured queue delay.
    On,
    /// `overhead-off`: `max_batch_size = 1`, every request runs alone.
    Off,
}

impl Batching {
    /// The served model name for `backend`.
    fn model(self, backend: &str) -> String {
        match self {
            Batching::On => format!("overhead-on-{backend}"),
            Batching::Off => format!("overhead-off-{backend}"),
        }
    }
}

/// The table's rows, labelled, for batch `b` and concurrency `c` and each backend, in measuring
/// order: each in-process reference is followed by the server rows compared with it, so that
/// within a repeat a server figure and its reference are measured close together in time.
fn configurations(b: usize, c: usize, backends: &[String]) -> Vec<(String, Configuration)> {
    let mut rows: Vec<(String, Configuration)> = Vec::new();
    let mut first_backend_rows = Vec::new();
    for (backend, name) in backends.iter().enumerate() {
        for (step, (batch, servers)) in [
            (
                1,
                vec![(Batching::Off, 1), (Batching::On, 1), (Batching::Off, c)],
            ),
            (b, vec![(Batching::On, c)]),
        ]
        .into_iter()
        .enumerate()
        {
            let baseline = rows.len();
            if backend == 0 {
                first_backend_rows.push(baseline);
            }
            rows.push((
                format!("{name} in-process, batch {batch}"),
                Configuration::InProcess {
                    backend,
                    batch,
                    baseline: (backend > 0).then(|| first_backend_rows[step]),
                },
            ));
            for (batching, concurrency) in servers {
                let on_off = match batching {
                    Batching::On => "on",
                    Batching::Off => "off",
                };
                rows.push((
                    format!("{name} server, c={concurrency}, batching {on_off}"),
                    Configuration::Server {
                        backend,
                        batching,
                        concurrency,
                        baseline,
                    },
                ));
            }
        }
    }
    rows
}

/// Median-able figures of one measurement.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    /// Samples per second.
    throughput: f64,
    p50: Duration,
    p99: Duration,
    /// Samples in the batch each call ran in, averaged over calls.
    mean_batch: f64,
    samples: usize,
    /// CPU time of the bench and server processes per sample; set by the caller.
    cpu_per_sample: Duration,
}

impl Measurement {
    /// Summarises calls that together carried `samples` samples in `elapsed`.
    fn from_calls(
        samples: usize,
        elapsed: Duration,
        mut latencies: Vec<Duration>,
        batch_sum: usize,
    ) -> Self {
        latencies.sort_unstable();
        let calls = latencies.len().max(1) as f64;
        Measurement {
            throughput: samples as f64 / elapsed.as_secs_f64(),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            mean_batch: batch_sum as f64 / calls,
            samples,
            cpu_per_sample: Duration::ZERO,
        }
    }
}

/// Nearest-rank percentile of sorted values (zero when empty).
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or_default()
}

/// Median of unsorted values (NaN when empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The inputs one sample needs, in the model's signature order, and the same repeated B times.
struct Workload {
    single: Vec<Tensor>,
    batched: Vec<Tensor>,
}

impl Workload {
    /// Deterministic pseudo-random inputs for every model input: FP32 in [-1, 1), or UINT8
    /// bytes (pixels of a quantized model).
    fn new(inputs: &[TensorSpec], batch: usize) -> Result<Self, String> {
        let mut state: u32 = 0x9E37_79B9;
        let mut single = Vec::with_capacity(inputs.len());
        let mut batched = Vec::with_capacity(inputs.len());
        for spec in inputs {
            if !matches!(spec.datatype, DataType::Fp32 | DataType::Uint8) {
                return Err(format!(
                    "input '{}' is {}; this bench generates FP32 and UINT8 inputs only",
                    spec.name, spec.datatype
                ));
            }
            let elements = spec.dims.iter().try_fold(1usize, |acc, d| {
                usize::try_from(*d)
                    .ok()
                    .filter(|d| *d > 0)
                    .and_then(|d| acc.checked_mul(d))
            });
            let Some(elements) = elements else {
                return Err(format!(
                    "input '{}' has dims {:?}; this bench needs fixed per-sample dims",
                    spec.name, spec.dims
                ));
            };
            let mut next = || {
                // xorshift32: cheap, deterministic, no dependency.
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state
            };
            let data: Vec<u8> = if spec.datatype == DataType::Uint8 {
                (0..elements).map(|_| (next() >> 24) as u8).collect()
            } else {
                (0..elements)
                    .flat_map(|_| (next() as f32 / u32::MAX as f32 * 2.0 - 1.0).to_le_bytes())
                    .collect()
            };
            let tensor = |batch: usize, data: Vec<u8>| Tensor {
                name: spec.name.clone(),
                datatype: spec.datatype,
                shape: std::iter::once(batch as i64)
                    .chain(spec.dims.iter().copied())
                    .collect(),
                data,
            };
            batched.push(tensor(batch, data.repeat(batch)));
            single.push(tensor(1, data));
        }
        Ok(Workload { single, batched })
    }

    /// The batch-1 inputs as a KServe request for `model`, sent as `raw_input_contents`.
    fn request(&self, model: &str) -> ModelInferRequest {
        ModelInferRequest {
            model_name: model.to_string(),
            inputs: self
                .single
                .iter()
                .map(|t| InferInputTensor {
                    name: t.name.clone(),
                    datatype: t.datatype.as_str().to_string(),
                    shape: t.shape.clone(),
                    ..Default::default()
                })
                .collect(),
            raw_input_contents: self.single.iter().map(|t| t.data.clone()).collect(),
            ..Default::default()
        }
    }

    fn inputs(&self, batch: usize) -> &[Tensor] {
        if batch == 1 {
            &self.single
        } else {
            &self.batched
        }
    }
}

/// Runs `backend` back to back on batches of `batch` samples for `duration`: one call with the
/// batch when the model batches dynamically, else `batch` calls of one sample (what the server's
/// batcher does for a model compiled for batch 1). A batch's latency covers all its calls.
fn measure_in_process(
    backend: &mut dyn Backend,
    workload: &Workload,
    batch: usize,
    duration: Duration,
) -> Result<Measurement, BenchError> {
    let (inputs, calls_per_batch) = match backend.signature().batch {
        BatchSupport::Dynamic { .. } => (workload.inputs(batch), 1),
        _ => (workload.inputs(1), batch),
    };
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let sent = Instant::now();
        for _ in 0..calls_per_batch {
            backend.infer(inputs.to_vec())?;
        }
        latencies.push(sent.elapsed());
    }
    let calls = latencies.len();
    Ok(Measurement::from_calls(
        calls * batch,
        start.elapsed(),
        latencies,
        calls * batch,
    ))
}

type Client = GrpcInferenceServiceClient<Channel>;

/// `concurrency` clients, each sending `request` again as soon as its answer arrives, until
/// `duration` has passed; throughput counts up to the last answer.
async fn measure_server(
    clients: &[Client],
    model: &str,
    request: &ModelInferRequest,
    concurrency: usize,
    duration: Duration,
) -> Result<Measurement, BenchError> {
    let start = Instant::now();
    let deadline = start + duration;
    let workers = (0..concurrency).map(|i| {
        let mut client = clients[i % clients.len()].clone();
        async move {
            let mut latencies = Vec::new();
            let mut batch_sum = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let response = client
                    .model_infer(request.clone())
                    .await
                    .map_err(|status| BenchError::Infer {
                        model: model.to_string(),
                        status,
                    })?
                    .into_inner();
                latencies.push(sent.elapsed());
                batch_sum += executed_batch(&response)?;
            }
            Ok::<_, BenchError>((latencies, batch_sum, Instant::now()))
        }
    });
    let results = futures::future::try_join_all(workers).await?;
    let end = results.iter().map(|r| r.2).max().unwrap_or(start);
    let batch_sum = results.iter().map(|r| r.1).sum();
    let latencies: Vec<Duration> = results.into_iter().flat_map(|r| r.0).collect();
    Ok(Measurement::from_calls(
        latencies.len(),
        end - start,
        latencies,
        batch_sum,
    ))
}

/// The `batch_size` response parameter: samples in the batch the request ran in.
fn executed_batch(response: &ModelInferResponse) -> Result<usize, BenchError> {
    match response
        .parameters
        .get(BATCH_SIZE_PARAMETER)
        .and_then(|p| p.parameter_choice.as_ref())
    {
        Some(ParameterChoice::Int64Param(n)) => usize::try_from(*n)
            .map_err(|_| BenchError::Answer(format!("negative {BATCH_SIZE_PARAMETER} {n}"))),
        other => Err(BenchError::Answer(format!(
            "response parameter '{BATCH_SIZE_PARAMETER}' is {other:?}, expected an int64"
        ))),
    }
}

/// Fails unless the server's outputs match the in-process ones (same model, same numbers).
fn check_outputs(reference: &[Tensor], response: &ModelInferResponse) -> Result<(), BenchError> {
    if response.raw_output_contents.len() != reference.len() {
        return Err(BenchError::Answer(format!(
            "{} raw outputs, the model has {}",
            response.raw_output_contents.len(),
            reference.len()
        )));
    }
    for (expected, got) in reference.iter().zip(&response.raw_output_contents) {
        compare_bytes(expected, got, "the server")?;
    }
    Ok(())
}

/// Fails unless another backend's in-process outputs match the first backend's.
fn check_tensors(reference: &[Tensor], theirs: &[Tensor], who: &str) -> Result<(), BenchError> {
    if theirs.len() != reference.len() {
        return Err(BenchError::Answer(format!(
            "{who} gave {} outputs, the reference {}",
            theirs.len(),
            reference.len()
        )));
    }
    for (expected, got) in reference.iter().zip(theirs) {
        compare_bytes(expected, &got.data, who)?;
    }
    Ok(())
}

/// FP32 outputs within [`OUTPUT_TOLERANCE`] of the reference, UINT8 within
/// [`QUANTIZED_TOLERANCE`] steps (runtimes round quantized kernels differently), others byte for
/// byte.
fn compare_bytes(expected: &Tensor, got: &[u8], who: &str) -> Result<(), BenchError> {
    if expected.datatype == DataType::Uint8 && expected.data.len() == got.len() {
        let worst = expected
            .data
            .iter()
            .zip(got)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        if worst > QUANTIZED_TOLERANCE {
            return Err(BenchError::Answer(format!(
                "output '{}' of {who} differs from the in-process reference by up to {worst} steps",
                expected.name
            )));
        }
        return Ok(());
    }
    if expected.datatype != DataType::Fp32 || expected.data.len() != got.len() {
        if expected.data != got {
            return Err(BenchError::Answer(format!(
                "output '{}' of {who} differs from the in-process reference",
                expected.name
            )));
        }
        return Ok(());
    }
    let floats = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let (expected_values, got_values) = (floats(&expected.data), floats(got));
    let scale = expected_values.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = expected_values
        .iter()
        .zip(&got_values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if worst.is_nan() || worst > OUTPUT_TOLERANCE * scale {
        return Err(BenchError::Answer(format!(
            "output '{}' of {who} differs from the in-process reference by up to {worst} (scale {scale})",
            expected.name
        )));
    }
    Ok(())
}

/// A temporary model repository serving the model with and without dynamic batching.
struct TempRepository {
    dir: tempfile::TempDir,
}

impl TempRepository {
    fn create(settings: &Settings) -> Result<Self, BenchError> {
        let io = |action: String| move |source| BenchError::Io { action, source };
        let dir = tempfile::Builder::new()
            .prefix("serving-overhead-")
            .tempdir()
            .map_err(io("create a temporary model repository".into()))?;
        for backend in &settings.backends {
            let on = format!(
                "{}max_batch_size = {b}\ninstances = 1\n\n\
                 [dynamic_batching]\nmax_queue_delay_us = {delay}\npreferred_batch_sizes = [{b}]\n\
                 max_queue_size = {queue}\n",
                backend_config(backend),
                b = settings.batch,
                delay = settings.max_queue_delay_us,
                queue = settings.concurrency.max(1024),
            );
            let off = format!(
                "{}max_batch_size = 1\ninstances = 1\n",
                backend_config(backend)
            );
            for (name, config) in [
                (Batching::On.model(backend), on),
                (Batching::Off.model(backend), off),
            ] {
                let version = dir.path().join(&name).join("1");
                std::fs::create_dir_all(&version)
                    .map_err(io(format!("create {}", version.display())))?;
                let file_name = settings
                    .model_file
                    .file_name()
                    .map_or("model.onnx".into(), |n| n.to_string_lossy().into_owned());
                let link = if file_name.ends_with(".tflite") {
                    "model.tflite"
                } else {
                    "model.onnx"
                };
                std::os::unix::fs::symlink(&settings.model_file, version.join(link))
                    .map_err(io(format!("link the model into {}", version.display())))?;
                std::fs::write(dir.path().join(&name).join("config.toml"), config)
                    .map_err(io(format!("write the config of {name}")))?;
            }
        }
        Ok(TempRepository { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A running `inference-server`, killed when dropped.
struct ServerProcess {
    child: Child,
    grpc_addr: std::net::SocketAddr,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts the binary on free loopback ports, logging warnings to `log`.
    fn spawn(
        binary: &Path,
        repository: &Path,
        libraries: &[(String, PathBuf)],
        log: PathBuf,
    ) -> Result<Self, BenchError> {
        let io = |action: &str| {
            let action = action.to_string();
            move |source| BenchError::Io { action, source }
        };
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(io("find a free loopback port"))
        };
        let (grpc_addr, metrics_addr) = (free_port()?, free_port()?);
        let log_file = std::fs::File::create(&log).map_err(io("create the server log"))?;
        let child = Command::new(binary)
            .arg("--model-repository")
            .arg(repository)
            .arg("--grpc-addr")
            .arg(grpc_addr.to_string())
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .args(["--http-addr", "off"])
            .args(libraries.iter().flat_map(|(backend, path)| {
                [
                    "--runtime-library".to_string(),
                    format!("{}={}", library_name(backend), path.display()),
                ]
            }))
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(io(&format!("start {}", binary.display())))?;
        Ok(ServerProcess {
            child,
            grpc_addr,
            log,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|err| format!("(unreadable: {err})"))
    }

    /// Waits for ServerReady and for `models` to be ready, then opens `connections` clients.
    async fn connect_when_ready(
        &mut self,
        models: &[String],
        connections: usize,
    ) -> Result<Vec<Client>, BenchError> {
        let started = Instant::now();
        let mut last_problem = String::from("no answer yet");
        let mut client = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::ServerExited {
                    status,
                    log: self.log(),
                });
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(BenchError::ServerNotReady {
                    reason: format!("after {READY_TIMEOUT:?}: {last_problem}"),
                    log: self.log(),
                });
            }
            match self.connect().await {
                Ok(mut client) => match client.server_ready(ServerReadyRequest {}).await {
                    Ok(answer) if answer.get_ref().ready => break client,
                    Ok(_) => last_problem = "ServerReady is false".into(),
                    Err(status) => last_problem = format!("ServerReady failed: {status}"),
                },
                Err(err) => last_problem = format!("cannot connect: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for model in models {
            let request = ModelReadyRequest {
                name: model.clone(),
                version: String::new(),
            };
            let ready = client
                .model_ready(request)
                .await
                .map(|answer| answer.get_ref().ready);
            if !matches!(ready, Ok(true)) {
                return Err(BenchError::ServerNotReady {
                    reason: format!("model '{model}' is not ready ({ready:?})"),
                    log: self.log(),
                });
            }
        }
        let mut clients = vec![client];
        while clients.len() < connections {
            clients.push(self.connect().await?);
        }
        Ok(clients)
    }

    /// A client on a new HTTP/2 connection.
    async fn connect(&self) -> Result<Client, tonic::transport::Error> {
        let channel = Endpoint::from_shared(format!("http://{}", self.grpc_addr))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        Ok(GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The process may already be gone; nothing else to do then.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The generic part of a model config selecting `backend` on the CPU, with its default settings.
/// The name of a backend's (CPU) library in the server settings.
fn library_name(backend: &str) -> &str {
    match backend {
        "tflite" => tflite::LITERT_LIBRARY,
        other => other,
    }
}

fn backend_config(backend: &str) -> String {
    let device = if backend == "openvino" { "CPU" } else { "cpu" };
    format!("backend = \"{backend}\"\ndevice = \"{device}\"\n")
}

/// One backend loaded in-process, with its library and a description.
struct InProcess {
    name: String,
    backend: Box<dyn Backend>,
    library: PathBuf,
    description: String,
}

impl InProcess {
    /// Loads one instance of the model through the same config path the server uses.
    fn load(name: &str, settings: &Settings) -> Result<Self, BenchError> {
        let config = format!(
            "{}max_batch_size = {}\n",
            backend_config(name),
            settings.batch
        );
        let parsed = ModelConfig::parse(Path::new("bench/config.toml"), &config).map_err(|e| {
            BenchError::Option {
                option: "backend",
                message: format!("{e:?}"),
            }
        })?;
        let group = &parsed.instance_groups[0];
        let (library, description) = match name {
            "openvino" => {
                let lib = openvino::environment::load(None)?;
                let description = format!("OpenVINO {} ({})", lib.version, lib.library.source);
                (lib.library.path, description)
            }
            "tflite" => {
                let found = tflite::litert_library(None)?;
                let description = format!(
                    "LiteRT {} ({})",
                    found.version.as_deref().unwrap_or("?"),
                    found.source
                );
                (found.path, description)
            }
            _ => {
                let lib = onnxruntime::environment::load(None)?;
                let threads = onnxruntime::OrtSettings::default().effective_intra_op_threads(1);
                let description = format!(
                    "ONNX Runtime {} ({}), {threads} intra-op threads",
                    lib.version, lib.library.source
                );
                (lib.library.path, description)
            }
        };
        let files = ModelFiles {
            dir: settings
                .model_file
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            model: settings.model_file.clone(),
            files: vec![settings.model_file.clone()],
        };
        let mut libraries = LibraryPaths::default();
        libraries.insert(library_name(name), library.clone());
        let backend = parsed.settings.load(&LoadRequest {
            model: &files,
            device: &group.device,
            max_batch_size: settings.batch,
            instances_on_device: 1,
            libraries: &libraries,
        })?;
        Ok(InProcess {
            name: name.to_string(),
            backend,
            library,
            description: format!("{name}: {description}"),
        })
    }
}

/// Loads everything, measures every configuration and prints the table.
fn run(settings: &Settings) -> Result<(), BenchError> {
    let mut backends = settings
        .backends
        .iter()
        .map(|name| InProcess::load(name, settings))
        .collect::<Result<Vec<_>, _>>()?;
    let signature = backends[0].backend.signature().clone();
    let model_error = |message: String| BenchError::Model {
        path: settings.model_file.clone(),
        message,
    };
    for b in &backends {
        if !matches!(
            b.backend.signature().batch,
            BatchSupport::Dynamic { .. } | BatchSupport::Fixed(1)
        ) {
            return Err(model_error(format!(
                "batch support on {} is {:?}; this bench needs a dynamic batch dimension or a \
                 model compiled for batch 1",
                b.name,
                b.backend.signature().batch
            )));
        }
    }
    let workload = Workload::new(&signature.inputs, settings.batch).map_err(model_error)?;
    let reference = backends[0].backend.infer(workload.single.clone())?;
    for b in &mut backends[1..] {
        let theirs = b.backend.infer(workload.single.clone())?;
        check_tensors(&reference, &theirs, &b.name)?;
    }
    let libraries: Vec<(String, PathBuf)> = backends
        .iter()
        .map(|b| (b.name.clone(), b.library.clone()))
        .collect();
    let served = ServedModels::start(settings, &libraries, &workload, &reference)?;

    println!(
        "model: {} (inputs: {})",
        settings.model_file.display(),
        signature
            .inputs
            .iter()
            .map(|s| format!("{} {} {:?}", s.name, s.datatype, s.dims))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for b in &backends {
        println!("{} ({})", b.description, b.library.display());
    }
    println!(
        "{} CPU cores; server: {}; batching on = max_batch_size {b}, preferred [{b}], \
         max_queue_delay_us {}; batching off = max_batch_size 1; {} HTTP/2 connections",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.server_binary.display(),
        settings.max_queue_delay_us,
        settings.connections,
        b = settings.batch,
    );
    println!("command: {}", settings.command());
    println!("load average before: {}", load_average());

    let processes = [std::process::id(), served.server_pid()];
    let mut measure = |configuration: Configuration, duration: Duration| {
        let cpu_before = cpu_time(&processes)?;
        let mut measurement = match configuration {
            Configuration::InProcess { backend, batch, .. } => measure_in_process(
                backends[backend].backend.as_mut(),
                &workload,
                batch,
                duration,
            ),
            Configuration::Server {
                backend,
                batching,
                concurrency,
                ..
            } => served.measure(&settings.backends[backend], batching, concurrency, duration),
        }?;
        let cpu = cpu_time(&processes)?.saturating_sub(cpu_before);
        measurement.cpu_per_sample =
            cpu / u32::try_from(measurement.samples.max(1)).unwrap_or(u32::MAX);
        Ok::<_, BenchError>(measurement)
    };
    let configurations = configurations(settings.batch, settings.concurrency, &settings.backends);
    if !settings.warmup.is_zero() {
        for (_, configuration) in &configurations {
            measure(*configuration, settings.warmup)?;
        }
    }
    let mut results = vec![Vec::with_capacity(settings.repeats); configurations.len()];
    for repeat in 1..=settings.repeats {
        eprintln!("repeat {repeat}/{}", settings.repeats);
        for ((_, configuration), result) in configurations.iter().zip(&mut results) {
            result.push(measure(*configuration, settings.duration)?);
        }
    }
    drop(served);
    println!("load average after: {}", load_average());

    let rows: Vec<(&str, Configuration, &[Measurement])> = configurations
        .iter()
        .zip(&results)
        .map(|((label, configuration), runs)| (label.as_str(), *configuration, runs.as_slice()))
        .collect();
    println!();
    println!(
        "{} × {:.1} s per configuration after {:.1} s warm-up; medians (throughput min–max); \
         ratios: medians of per-repeat ratios",
        settings.repeats,
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64()
    );
    print!("{}", table(&rows));
    Ok(())
}

/// The spawned server, its client connections and a batch-1 request for each served model.
struct ServedModels {
    runtime: tokio::runtime::Runtime,
    clients: Vec<Client>,
    /// The batch-1 request per served model name.
    requests: std::collections::HashMap<String, ModelInferRequest>,
    /// Killed when dropped, before the repository it serves is deleted.
    process: ServerProcess,
    _repository: TempRepository,
}

impl ServedModels {
    /// Writes the repository, starts the server, waits until both models are ready and checks
    /// that each answers `workload` with the in-process `reference` outputs.
    fn start(
        settings: &Settings,
        libraries: &[(String, PathBuf)],
        workload: &Workload,
        reference: &[Tensor],
    ) -> Result<Self, BenchError> {
        let repository = TempRepository::create(settings)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| BenchError::Io {
                action: "start the client runtime".into(),
                source,
            })?;
        let mut process = ServerProcess::spawn(
            &settings.server_binary,
            repository.path(),
            libraries,
            repository.path().join("server.log"),
        )?;
        let models: Vec<String> = settings
            .backends
            .iter()
            .flat_map(|b| [Batching::On.model(b), Batching::Off.model(b)])
            .collect();
        let clients =
            runtime.block_on(process.connect_when_ready(&models, settings.connections))?;
        let served = ServedModels {
            runtime,
            clients,
            requests: models
                .iter()
                .map(|m| (m.clone(), workload.request(m)))
                .collect(),
            process,
            _repository: repository,
        };
        for model in &models {
            let mut client = served.clients[0].clone();
            let request = served.requests[model].clone();
            let answer = served
                .runtime
                .block_on(client.model_infer(request))
                .map_err(|status| BenchError::Infer {
                    model: model.clone(),
                    status,
                })?;
            check_outputs(reference, answer.get_ref())?;
        }
        Ok(served)
    }

    fn server_pid(&self) -> u32 {
        self.process.child.id()
    }

    /// One closed-loop measurement at `concurrency` (see [`measure_server`]).
    fn measure(
        &self,
        backend: &str,
        batching: Batching,
        concurrency: usize,
        duration: Duration,
    ) -> Result<Measurement, BenchError> {
        let model = batching.model(backend);
        self.runtime.block_on(measure_server(
            &self.clients,
            &model,
            &self.requests[&model],
            concurrency,
            duration,
        ))
    }
}

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, fixed at 100 in the Linux ABI).
const USER_HZ: u64 = 100;

/// User + system CPU time used so far by `pids` (all their threads), from `/proc/<pid>/stat`.
fn cpu_time(pids: &[u32]) -> Result<Duration, BenchError> {
    let mut ticks = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
            action: format!("read {path}"),
            source,
        })?;
        // Fields after the parenthesised command name: state is the 3rd field, utime the 14th
        // and stime the 15th of the whole line.
        let fields: Vec<&str> = text
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
        match (field(11), field(12)) {
            (Some(user), Some(system)) => ticks += user + system,
            _ => {
                return Err(BenchError::Io {
                    action: format!("parse {path}"),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, text),
                })
            }
        }
    }
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// `/proc/loadavg` (1, 5 and 15 minute load), a hint of how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|err| format!("unknown ({err})"))
}

/// Medians of the repeats of one configuration.
#[derive(Debug, Clone, Copy)]
struct Summary {
    throughput: f64,
    throughput_min: f64,
    throughput_max: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_batch: f64,
    cpu_ms: f64,
}

impl Summary {
    fn of(runs: &[Measurement]) -> Self {
        let each = |f: fn(&Measurement) -> f64| runs.iter().map(f).collect::<Vec<_>>();
        let throughputs = each(|m| m.throughput);
        Summary {
            throughput_min: throughputs.iter().copied().fold(f64::INFINITY, f64::min),
            throughput_max: throughputs.iter().copied().fold(0.0, f64::max),
            throughput: median(throughputs),
            p50_ms: median(each(|m| m.p50.as_secs_f64() * 1e3)),
            p99_ms: median(each(|m| m.p99.as_secs_f64() * 1e3)),
            mean_batch: median(each(|m| m.mean_batch)),
            cpu_ms: median(each(|m| m.cpu_per_sample.as_secs_f64() * 1e3)),
        }
    }
}

/// Ratios of throughput, p50, p99 and CPU per sample to the reference, each the median over repeats of the
/// ratio within one repeat (a server run and its reference ran seconds apart, so slow changes in
/// machine load cancel out better than in a ratio of medians).
fn paired_ratios(runs: &[Measurement], reference: &[Measurement]) -> [f64; 4] {
    let ratio = |f: fn(&Measurement) -> f64| {
        median(
            runs.iter()
                .zip(reference)
                .map(|(run, base)| f(run) / f(base))
                .collect(),
        )
    };
    [
        ratio(|m| m.throughput),
        ratio(|m| m.p50.as_secs_f64()),
        ratio(|m| m.p99.as_secs_f64()),
        ratio(|m| m.cpu_per_sample.as_secs_f64()),
    ]
}

/// The markdown table; server rows carry ratios to their in-process reference.
fn table(rows: &[(&str, Configuration, &[Measurement])]) -> String {
    let mut out = String::from(
        "| configuration | compared with | throughput (inf/s) | ratio | p50 ms | ratio | p99 ms | ratio | mean batch | CPU ms/inf | ratio |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (label, configuration, runs) in rows {
        let reference = match configuration {
            Configuration::InProcess { baseline, .. } => baseline.and_then(|b| rows.get(b)),
            Configuration::Server { baseline, .. } => rows.get(*baseline),
        };
        let (against, ratios) = match reference {
            Some((name, _, reference)) => (
                (*name).to_string(),
                paired_ratios(runs, reference).map(|r| format!("{r:.3}")),
            ),
            None => (
                "(reference)".to_string(),
                ["—".to_string(), "—".into(), "—".into(), "—".into()],
            ),
        };
        let s = Summary::of(runs);
        out.push_str(&format!(
            "| {label} | {against} | {:.1} ({:.1}–{:.1}) | {} | {:.3} | {} | {:.3} | {} | {:.2} | {:.3} | {} |\n",
            s.throughput,
            s.throughput_min,
            s.throughput_max,
            ratios[0],
            s.p50_ms,
            ratios[1],
            s.p99_ms,
            ratios[2],
            s.mean_batch,
            s.cpu_ms,
            ratios[3],
        ));
    }
    out
}
