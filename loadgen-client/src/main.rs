//! `loadgen-client`: runs an MLPerf LoadGen test against a KServe v2 gRPC inference server.
//!
//! Settings are built like the official harnesses build them: mlperf.conf (embedded, or
//! `--mlperf-conf`), then `--user-conf` through the official `FromConfig` rules, then the
//! command-line options assigned directly to the `TestSettings` fields.
//!
//! Config files: a file that cannot be read (`--user-conf`, `--mlperf-conf`) is a usage error
//! (exit 2) before anything runs — the official harnesses check that user.conf exists before
//! calling `FromConfig`, which would otherwise only log "can't open file" and carry on. A
//! user.conf that exists but does not parse is handled as the official LoadGen handles it: its
//! `error_invalid_config` lines open the detail log, nothing from that file is applied, and the
//! test runs (a warning is printed). An invalid `--mlperf-conf` is a usage error, since running
//! without any rules file would silently use zero seeds.
//!
//! Exit status: 0 when the test ran and every sample completed; 1 when it could not run (dataset,
//! connection, TLS handshake, token refused, unknown model, I/O); 2 for bad options, unreadable
//! config, CA, certificate or key files, and settings whose pre-generated schedule would not fit
//! in the memory available; 3 when the test ran to the end and wrote its logs but some samples
//! failed (e.g. the server went away, or stayed overloaded past `--retries`): the result is then
//! INVALID and the summary says how many failed and why; 4 when a device throttled or
//! reset during the run (device telemetry, read from the servers' metrics endpoints, marks it in
//! the summary and detail log; `--allow-device-trouble` accepts it); 130 when interrupted by
//! SIGINT/SIGTERM: issuing stops, outstanding samples are awaited and the logs are written (a
//! second signal ends the process at once).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use signal_hook::consts::{SIGINT, SIGTERM};

use loadgen::diagnostics::Diagnostic;
use loadgen::null_sut::NullSut;
use loadgen::observer::Observers;
use loadgen::observer::RunObserver;
use loadgen::runner::{self, LogPaths, RunOptions, TestOutcome};
use loadgen::schedule;
use loadgen::settings::EffectiveSettings;
use loadgen::settings::{LogSettings, TestMode, TestScenario, TestSettings};
use loadgen::sources::{ConfFile, Overrides, SettingsError, SettingsSources};
use loadgen::sut::{Qsl, Sut};
use loadgen_client::accuracy::{self, AccuracyLog};
use loadgen_client::calibrate::{
    merge_user_conf, CalibrationError, CalibrationPlan, Calibrator, LoadgenProbes,
};
use loadgen_client::client_log::{self, ClientLog};
use loadgen_client::dataset::coco::CocoSource;
use loadgen_client::dataset::imagenet::ImagenetSource;
use loadgen_client::dataset::synthetic::SyntheticSource;
use loadgen_client::dataset::{Cache, DatasetQsl, GroundTruth, SampleSource};
use loadgen_client::grpc_sut::{self, GrpcSut, GrpcSutConfig, RetryStats, ServedModel};
use loadgen_client::official::{self, OfficialError, OfficialLoadgen, OfficialRun, OfficialTest};
use loadgen_client::package::{self, Submission};
use loadgen_client::profile::{self, Profile};
use loadgen_client::progress::ProgressSut;
use loadgen_client::report::{self as run_report, RunRecord};
use loadgen_client::run_info::RunInfo;
use loadgen_client::security::{is_https, BearerToken, Security, TlsOptions};
use loadgen_client::store::{self, ResultsStore, RunFilter};
use loadgen_client::system::SystemDescription;
use loadgen_client::telemetry::{self, Monitor, ScrapeAccess, Verdict};

/// mimalloc instead of the C library's allocator: every request allocates and frees buffers on
/// the network threads, and glibc's malloc and free took about 5% of the client's CPU in the
/// per-request profile (README: "Per-request cost").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Seed of the synthetic dataset, fixed so runs are comparable.
const SYNTHETIC_SEED: u64 = 0x6d6c_7065_7266;

/// Which LoadGen runs the test: `builtin`, this crate's (the 6.0.17 behaviour, plus the
/// breakdown and timeline files), or `official`, the C++ LoadGen 6.0.17 (`--official-library`).
/// (The variants carry no doc comments: clap would switch every option's help to the long layout.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LoadgenKind {
    Builtin,
    Official,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatasetKind {
    Imagenet,
    Coco,
    Synthetic,
}

/// MLPerf Inference LoadGen (6.0.17 behaviour) driving a KServe v2 gRPC inference server.
///
/// Precedence of settings: command-line options override user.conf, which overrides
/// mlperf.conf. Samples are decoded and preprocessed before timing starts.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "Settings precedence: command line > --user-conf > mlperf.conf (built in, or \
                  --mlperf-conf). Results go to --output-dir; accuracy modes also write \
                  accuracy.txt there. An invalid user.conf is logged (error_invalid_config) and \
                  ignored, as the official LoadGen does.\n\nExit status: 0 success; 1 the test \
                  could not run; 2 bad options, unreadable config/TLS files, or a schedule too \
                  large for the memory available; 3 the test ran and wrote its logs but some \
                  samples failed (the result is INVALID); 4 a device throttled or reset during \
                  the run (see the summary's device telemetry)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measures the system with short probe runs and writes a user.conf with the expected
    /// latency (SingleStream, MultiStream) or QPS (Offline, Server) that makes the next full run
    /// VALID. Takes the run's options; probe logs go to OUTPUT_DIR/calibration/.
    Calibrate(Box<CalibrateArgs>),
    /// Writes one self-contained HTML report of the runs in RUN_DIR... (output folders): latency
    /// CDF, histogram and time series, the latency breakdown, batch sizes, telemetry, settings;
    /// with several runs, a comparison table and the Pareto frontier.
    Report(ReportArgs),
    /// Lists the runs in the results store, filtered; --report draws them.
    Runs(RunsArgs),
    /// Lays out runs (a VALID performance run and a scored accuracy run per scenario) as an
    /// MLPerf Inference submission for the open division (the v6.1 tree of the official
    /// submission checker), with the accuracy logs truncated as truncate_accuracy_log.py does
    /// and the system description captured from this machine and the server.
    Package(PackageArgs),
}

/// `loadgen-client package`.
#[derive(Debug, Args)]
struct PackageArgs {
    /// Output folders of the runs.
    #[arg(value_name = "RUN_DIR", required = true)]
    runs: Vec<PathBuf>,
    /// The submitting organisation (a folder name of the tree).
    #[arg(long)]
    submitter: String,
    /// The system's name (its description file and results folder).
    #[arg(long)]
    system: String,
    /// The system's availability: available, preview or rdi.
    #[arg(long, default_value = "available", value_parser = ["available", "preview", "rdi"])]
    status: String,
    /// A JSON object of system description fields, over the captured ones (memory
    /// configuration, storage, cooling, the server box when it is remote, ...).
    #[arg(long, value_name = "FILE")]
    system_json: Option<PathBuf>,
    /// A JSON object of measurements.json fields, over the defaults (weight_data_types,
    /// weight_transformations, starting_weights_filename, ...).
    #[arg(long, value_name = "FILE")]
    measurements_json: Option<PathBuf>,
    /// The folder to write the tree into (new or empty).
    #[arg(long, short = 'o', value_name = "DIR", default_value = "submission")]
    out: PathBuf,
}

/// Where the results store is.
#[derive(Debug, Clone, Args)]
struct StoreArgs {
    /// The results store (SQLite) every finished run is recorded in, or `off`
    /// [default: $XDG_DATA_HOME/loadgen-client/results.sqlite, else under ~/.local/share].
    #[arg(long, value_name = "FILE|off", env = "LOADGEN_RESULTS_DB")]
    results_db: Option<String>,
}

impl StoreArgs {
    /// The store's path; `None` when it is off (or no home folder says where).
    fn path(&self) -> Option<PathBuf> {
        match self.results_db.as_deref() {
            Some("off") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => store::default_path(),
        }
    }
}

/// `loadgen-client report`.
#[derive(Debug, Args)]
struct ReportArgs {
    /// Output folders of runs (each with mlperf_log_detail.txt).
    #[arg(value_name = "RUN_DIR", required = true)]
    runs: Vec<PathBuf>,
    /// The HTML file to write.
    #[arg(long, short = 'o', value_name = "FILE", default_value = "report.html")]
    output: PathBuf,
}

/// `loadgen-client runs`.
#[derive(Debug, Args)]
struct RunsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only runs of this scenario.
    #[arg(long)]
    scenario: Option<String>,
    /// Only runs of this served model.
    #[arg(long)]
    model: Option<String>,
    /// Only runs on this device (as the server names it, e.g. cpu, edgetpu:0).
    #[arg(long)]
    device: Option<String>,
    /// Only VALID performance runs.
    #[arg(long)]
    valid: bool,
    /// Only the latest N runs.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// Also write the HTML report of the runs listed (those whose folders still exist).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// `loadgen-client calibrate`.
#[derive(Debug, Args)]
struct CalibrateArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Calibrate SingleStream, MultiStream, Offline and Server in turn, instead of --scenario.
    #[arg(long)]
    all_scenarios: bool,
    /// The user.conf to write. When it exists it is updated: its other lines are kept and the
    /// calibrated ones replaced; otherwise it starts from --user-conf's lines.
    #[arg(long, value_name = "FILE", default_value = "user.conf")]
    write: PathBuf,
    /// Seconds of one probe run.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    probe_time: f64,
    /// Safety margin: Server's QPS is set this fraction below the highest that met the latency
    /// bound, Offline's expected QPS this fraction above the measured throughput.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.1)]
    margin: f64,
    /// The Server search ends when its bounds are within this fraction of each other.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.05)]
    tolerance: f64,
}

/// The options of a run (and of calibration, which runs probes).
#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// The LoadGen that runs the test: the built-in one, or the official C++ LoadGen 6.0.17
    /// (built by scripts/build_official_loadgen.sh), which MLPerf submissions require. Both
    /// read the same conf files and drive the same server, dataset and accuracy scoring.
    #[arg(long, value_enum, default_value_t = LoadgenKind::Builtin)]
    loadgen: LoadgenKind,
    /// The official LoadGen library for --loadgen official [default:
    /// target/official-loadgen/libmlperf_loadgen_official.so of the build this program is in,
    /// else the library beside the program].
    #[arg(long, value_name = "FILE", env = official::LIBRARY_ENV)]
    official_library: Option<PathBuf>,
    /// MLPerf scenario.
    #[arg(
        long,
        default_value = "SingleStream",
        value_parser = PossibleValuesParser::new(TestScenario::ALL.map(TestScenario::as_str))
            .try_map(|name: String| name.parse::<TestScenario>())
    )]
    scenario: TestScenario,
    /// Test mode; overrides user.conf's `mode`. FindPeakPerformance needs --scenario Server
    /// [default: user.conf's mode, else PerformanceOnly].
    #[arg(
        long,
        value_parser = PossibleValuesParser::new(TestMode::ALL.map(TestMode::as_str))
            .try_map(|name: String| name.parse::<TestMode>())
    )]
    mode: Option<TestMode>,
    /// Shorthand for --mode AccuracyOnly: every sample once, logged, then scored.
    #[arg(long, conflicts_with = "mode")]
    accuracy: bool,
    /// Server gRPC URL; repeat to spread queries over several servers. `null` runs the
    /// in-process null SUT (LoadGen self-test, no network).
    #[arg(
        long = "endpoint",
        value_name = "URL",
        default_value = "http://127.0.0.1:8001"
    )]
    endpoints: Vec<String>,
    /// Served model name [default: the profile's].
    #[arg(long)]
    model: Option<String>,
    /// Model preset: preprocessing, tensor names and types, post-processing, default --model,
    /// --dataset and --mlperf-model.
    #[arg(
        long,
        default_value = "efficientnet-lite0-onnxruntime",
        value_parser = PossibleValuesParser::new(profile::names())
            .try_map(|name: String| profile::lookup(&name))
    )]
    profile: &'static Profile,
    /// Dataset kind [default: the profile's].
    #[arg(long, value_enum)]
    dataset: Option<DatasetKind>,
    /// Dataset folder: images + val_map.txt (imagenet), or val2017/ + annotations/ (coco).
    #[arg(long, value_name = "DIR")]
    dataset_path: Option<PathBuf>,
    /// ImageNet list file (`<file> <label>` per line) [default: DATASET_PATH/val_map.txt].
    #[arg(long, value_name = "FILE")]
    dataset_list: Option<PathBuf>,
    /// Use only the first COUNT dataset entries (synthetic: number of samples to generate).
    #[arg(long)]
    count: Option<usize>,
    /// MLPerf benchmark name for conf look-ups (e.g. resnet50) [default: the profile's].
    #[arg(long)]
    mlperf_model: Option<String>,
    /// Rules file replacing the built-in mlperf.conf (6.0.17); not for submissions.
    #[arg(long, value_name = "FILE")]
    mlperf_conf: Option<PathBuf>,
    /// user.conf with the system's settings (target QPS, latencies, ...).
    #[arg(long, value_name = "FILE")]
    user_conf: Option<PathBuf>,
    /// Target QPS: Server's target_qps and Offline's expected QPS (over the conf files).
    #[arg(long)]
    qps: Option<f64>,
    /// Latency bound in seconds: Server's target latency and MultiStream's expected latency
    /// (over the conf files).
    #[arg(long, value_name = "SECONDS")]
    max_latency: Option<f64>,
    /// Minimum test duration in seconds (min_duration, over the conf files).
    #[arg(long, value_name = "SECONDS")]
    time: Option<f64>,
    /// MultiStream samples per query (over the conf files).
    #[arg(long)]
    samples_per_query: Option<u64>,
    /// Largest request: queries with more samples are split [default: 32 in Offline,
    /// unlimited otherwise].
    #[arg(long)]
    max_batchsize: Option<usize>,
    /// HTTP/2 connections per endpoint (requests are spread over them). `--threads`, the
    /// reference harnesses' name, is accepted as an alias.
    #[arg(long, visible_alias = "threads", default_value_t = 4)]
    connections: usize,
    /// Threads that send the requests and read the answers. Each one more costs thread
    /// wake-ups per query; more help only when one thread is saturated (many endpoints, large
    /// tensors) [default: half the CPUs, at least 1].
    #[arg(long, value_name = "N")]
    network_threads: Option<usize>,
    /// Megabytes of input tensors in flight per endpoint; keeps a server's bounded queue from
    /// overflowing (requests it still refuses as overloaded are retried, see --retries).
    #[arg(long, value_name = "MB", default_value_t = 48)]
    inflight_mb: usize,
    /// Times a request the server refuses as overloaded (RESOURCE_EXHAUSTED) is sent again,
    /// after 5 ms doubling up to 200 ms (and within --request-timeout); then its samples fail
    /// with the server's status. Every retry is counted in the summary and the detail log.
    #[arg(long, value_name = "N", default_value_t = 3)]
    retries: u32,
    /// PEM bundle of the CA certificates that signed the server's certificate, for https://
    /// endpoints (and https:// metrics URLs) [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for servers that require mutual TLS; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The name the server's certificate must carry (also sent as SNI) [default: the endpoint's
    /// host].
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Bearer token sent as `authorization: Bearer TOKEN` metadata with every RPC (readiness
    /// checks, ModelConfig and inference).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LOADGEN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Samples loaded into RAM for performance runs: the QSL's performance count (at most the
    /// dataset size) and performance_sample_count_override, over user.conf and mlperf.conf
    /// [default: the profile's count, and the conf files' override].
    #[arg(long)]
    performance_sample_count: Option<usize>,
    /// Folder caching preprocessed tensors across runs.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// Where the mlperf_log_* files (and accuracy.txt) are written.
    #[arg(long, value_name = "DIR", default_value = "output")]
    output_dir: PathBuf,
    /// Also write mlperf_log_trace.json.
    #[arg(long)]
    trace: bool,
    /// Deadline of one inference request, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    request_timeout: f64,
    /// A server's Prometheus /metrics URL to read device telemetry from (temperatures, CPU
    /// frequency, throttling, accelerator resets), or `off`; repeat for several servers
    /// [default: each endpoint's host and scheme at the next port, e.g. http://host:8001 →
    /// http://host:8002/metrics].
    #[arg(long, value_name = "URL|off")]
    server_metrics: Vec<String>,
    /// Seconds between telemetry samples during the run.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    telemetry_interval: f64,
    /// Exit 0 even when a device throttled or reset during the run (it is still marked in the
    /// summary and the detail log).
    #[arg(long)]
    allow_device_trouble: bool,
}

/// The SUT and, for the gRPC one, its retry counters and the model it serves.
struct Connected {
    sut: Arc<dyn Sut>,
    retries: Option<Arc<RetryStats>>,
    served: ServedModel,
}

/// Exit status of a run stopped by SIGINT/SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// The option that names a conf file.
fn conf_option(file: ConfFile) -> &'static str {
    match file {
        ConfFile::Rules => "--mlperf-conf",
        ConfFile::UserConf => "--user-conf",
    }
}

/// Why the run did not complete.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    /// A config file the run cannot do without.
    #[error("{option}: {error}", option = conf_option(.0.file), error = .0)]
    Config(#[from] SettingsError),
    #[error(transparent)]
    Dataset(#[from] loadgen_client::dataset::DatasetError),
    #[error(transparent)]
    Sut(#[from] loadgen_client::grpc_sut::GrpcSutError),
    #[error(transparent)]
    Run(#[from] runner::LoadgenError),
    #[error(transparent)]
    Official(#[from] OfficialError),
    #[error("cannot install the SIGINT/SIGTERM handler: {0}")]
    Signals(std::io::Error),
    #[error("accuracy: {0}")]
    Accuracy(#[from] accuracy::AccuracyError),
    #[error("calibrate: {0}")]
    Calibration(Box<CalibrationError<CliError>>),
    #[error(transparent)]
    Report(#[from] loadgen_client::report::ReportError),
    #[error(transparent)]
    Store(#[from] loadgen_client::store::StoreError),
    #[error(transparent)]
    Package(#[from] loadgen_client::package::PackageError),
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the run is marked: {events}; see \"Device telemetry\" in {summary}. Cool the box or \
         fix its power supply and rerun, or pass --allow-device-trouble to accept the run"
    )]
    DeviceTrouble { events: String, summary: PathBuf },
    #[error(
        "{failed} sample(s) failed{first}; the logs were written but the result is INVALID (see \
         the summary and error_runtime in {detail})",
        first = .first.as_ref().map(|f| format!(" (first: {f})")).unwrap_or_default()
    )]
    FailedSamples {
        failed: u64,
        first: Option<String>,
        detail: PathBuf,
    },
}

impl CliError {
    /// The process exit status (see the crate documentation).
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => 2,
            CliError::FailedSamples { .. } => 3,
            CliError::DeviceTrouble { .. } => 4,
            CliError::Run(runner::LoadgenError::Interrupted) => EXIT_INTERRUPTED,
            _ => 1,
        }
    }
}

impl RunArgs {
    /// The mode given on the command line, if any.
    fn mode(&self) -> Option<TestMode> {
        if self.accuracy {
            return Some(TestMode::AccuracyOnly);
        }
        self.mode
    }

    fn dataset(&self) -> DatasetKind {
        self.dataset.unwrap_or(match self.profile.dataset {
            "coco" => DatasetKind::Coco,
            _ => DatasetKind::Imagenet,
        })
    }

    /// Checks combinations clap cannot express.
    fn validate(&self) -> Result<(), CliError> {
        let usage = |m: &str| Err(CliError::Usage(m.to_string()));
        if self.mode() == Some(TestMode::FindPeakPerformance)
            && self.scenario != TestScenario::Server
        {
            return usage("--mode FindPeakPerformance needs --scenario Server");
        }
        if self.loadgen == LoadgenKind::Official && self.mlperf_conf.is_some() {
            return usage(
                "--mlperf-conf cannot be used with --loadgen official: the official LoadGen \
                 applies the mlperf.conf compiled into it (put your settings in --user-conf)",
            );
        }
        if self.connections == 0 {
            return usage("--connections must be at least 1");
        }
        if self.network_threads == Some(0) {
            return usage("--network-threads must be at least 1");
        }
        if self.inflight_mb == 0 {
            return usage("--inflight-mb must be at least 1");
        }
        if self.max_batchsize == Some(0) {
            return usage("--max-batchsize must be at least 1");
        }
        if self.count == Some(0) {
            return usage("--count must be at least 1");
        }
        if self.performance_sample_count == Some(0) {
            return usage("--performance-sample-count must be at least 1");
        }
        if self.qps.is_some_and(|q| !(q > 0.0 && q.is_finite())) {
            return usage("--qps must be a positive number");
        }
        if self
            .max_latency
            .is_some_and(|l| !(l > 0.0 && l.is_finite()))
        {
            return usage("--max-latency must be a positive number of seconds");
        }
        if self.time.is_some_and(|t| !(t >= 0.0 && t.is_finite())) {
            return usage("--time must be a number of seconds, 0 or more");
        }
        if !(self.request_timeout > 0.0 && self.request_timeout.is_finite()) {
            return usage("--request-timeout must be a positive number of seconds");
        }
        if !(self.telemetry_interval > 0.0 && self.telemetry_interval.is_finite()) {
            return usage("--telemetry-interval must be a positive number of seconds");
        }
        if self.server_metrics.len() > 1 && self.server_metrics.iter().any(|u| u == "off") {
            return usage("--server-metrics off cannot be combined with URLs");
        }
        if self.endpoints.len() > 1 && self.endpoints.iter().any(|e| e == "null") {
            return usage("--endpoint null cannot be combined with other endpoints");
        }
        if let Some(flag) = self.tls_flag() {
            if let Some(plain) = self.endpoints.iter().find(|e| !is_https(e)) {
                return Err(CliError::Usage(format!(
                    "{flag} needs https:// endpoints, and --endpoint {plain} is not one: use \
                     https://HOST:PORT for a server that serves TLS, or drop the TLS options"
                )));
            }
        }
        if self.token.is_some() && self.endpoints.iter().any(|e| e == "null") {
            return usage("--token has no use with --endpoint null");
        }
        Ok(())
    }

    /// The first TLS option given, if any.
    fn tls_flag(&self) -> Option<&'static str> {
        [
            (self.tls_ca.is_some(), "--tls-ca"),
            (self.tls_cert.is_some(), "--tls-cert"),
            (self.tls_key.is_some(), "--tls-key"),
            (self.tls_server_name.is_some(), "--tls-server-name"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }

    /// The TLS and token settings, with the files read and checked; https:// endpoints need
    /// usable CA certificates (--tls-ca, or the system's).
    fn security(&self) -> Result<Security, CliError> {
        let usage = |e: loadgen_client::security::SecurityError| CliError::Usage(e.to_string());
        BearerToken::new(self.token.as_deref()).map_err(usage)?;
        let tls = if self.tls_flag().is_some() {
            let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
            Some(
                TlsOptions::load(
                    self.tls_ca.as_deref(),
                    identity,
                    self.tls_server_name.clone(),
                )
                .map_err(usage)?,
            )
        } else {
            None
        };
        if self.endpoints.iter().any(|e| is_https(e)) {
            tls.clone()
                .unwrap_or_default()
                .client_config()
                .map_err(usage)?;
        }
        if self.token.is_some() {
            if let Some(plain) = self.endpoints.iter().find(|e| !is_https(e)) {
                eprintln!(
                    "warning: --token with the plaintext endpoint {plain}: the token crosses the \
                     network unencrypted (use an https:// endpoint)"
                );
            }
        }
        Ok(Security {
            tls,
            token: self.token.clone(),
        })
    }

    /// mlperf.conf, then user.conf, then the command line (the library's precedence).
    fn settings_sources(&self, mlperf_model: &str) -> SettingsSources {
        SettingsSources {
            scenario: self.scenario,
            model: mlperf_model.to_string(),
            rules_file: self.mlperf_conf.clone(),
            user_conf: self.user_conf.clone(),
            overrides: Overrides {
                mode: self.mode(),
                target_qps: self.qps,
                target_latency: self.max_latency.map(Duration::from_secs_f64),
                // Whole milliseconds, rounded, as min_duration is kept.
                min_duration: self
                    .time
                    .map(|seconds| Duration::from_millis((seconds * 1000.0).round() as u64)),
                samples_per_query: self.samples_per_query,
                performance_sample_count: self.performance_sample_count.map(|n| n as u64),
            },
        }
    }

    /// The resolved settings and the config files' detail-log lines; an invalid user.conf is
    /// reported as a warning and ignored, as the official LoadGen does.
    fn settings(&self, mlperf_model: &str) -> Result<(TestSettings, Vec<Diagnostic>), CliError> {
        let resolved = self.settings_sources(mlperf_model).resolve()?;
        if let Some(ignored) = &resolved.ignored_user_conf {
            eprintln!(
                "warning: --user-conf: {ignored}; the test runs without it, and the detail log \
                 records error_invalid_config, as with the official LoadGen"
            );
        }
        Ok((resolved.settings, resolved.diagnostics))
    }

    fn source(&self) -> Result<Box<dyn SampleSource>, CliError> {
        let path = || {
            self.dataset_path.as_deref().ok_or_else(|| {
                CliError::Usage("--dataset-path is required for --dataset imagenet and coco".into())
            })
        };
        Ok(match self.dataset() {
            DatasetKind::Imagenet => Box::new(ImagenetSource::open(
                path()?,
                self.dataset_list.as_deref(),
                self.count,
                self.profile,
            )?),
            DatasetKind::Coco => Box::new(CocoSource::open(path()?, self.count, self.profile)?),
            DatasetKind::Synthetic => Box::new(SyntheticSource::new(
                self.profile,
                self.count.unwrap_or(self.profile.performance_sample_count),
                SYNTHETIC_SEED,
            )),
        })
    }

    fn qsl(&self) -> Result<DatasetQsl, CliError> {
        let cache = self
            .cache
            .as_deref()
            .map(|dir| Cache::new(dir, self.profile))
            .transpose()?;
        let count = self
            .performance_sample_count
            .unwrap_or(self.profile.performance_sample_count);
        Ok(DatasetQsl::new(self.source()?, count, cache)?)
    }

    /// The profile, with the input quantization the server reports for the model when the
    /// profile sends quantized inputs (ModelConfig's `quantization.<input>.*` parameters).
    fn served_profile(&self, security: &Security) -> Result<&'static Profile, CliError> {
        let endpoint = match self.endpoints.first() {
            Some(e) if e != "null" => e,
            _ => return Ok(self.profile),
        };
        if self.profile.with_input_quantization(1.0, 0).is_none() {
            return Ok(self.profile);
        }
        let model = self.model.as_deref().unwrap_or(self.profile.model);
        let timeout = Duration::from_secs(10);
        let Some((scale, zero_point)) =
            grpc_sut::input_quantization(endpoint, security, model, self.profile.input, timeout)?
        else {
            return Ok(self.profile);
        };
        let Some(served) = self.profile.with_input_quantization(scale, zero_point) else {
            return Ok(self.profile);
        };
        if served != *self.profile {
            println!(
                "input '{}': the server's quantization (scale {scale}, zero point {zero_point}) \
                 replaces the profile's",
                self.profile.input
            );
        }
        // One profile for the whole run.
        Ok(Box::leak(Box::new(served)))
    }

    /// The telemetry monitor, unless telemetry is off or the SUT is the in-process null SUT.
    fn monitor(&self, security: &Security) -> Result<Option<Arc<Monitor>>, CliError> {
        if self.server_metrics.iter().any(|u| u == "off")
            || self.endpoints.iter().any(|e| e == "null")
        {
            return Ok(None);
        }
        let urls = if self.server_metrics.is_empty() {
            self.endpoints
                .iter()
                .map(|e| {
                    telemetry::default_metrics_url(e).ok_or_else(|| {
                        CliError::Usage(format!(
                            "cannot tell the metrics URL of endpoint {e}; pass --server-metrics URL or --server-metrics off"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            self.server_metrics.clone()
        };
        if security.token.is_some() {
            if let Some(plain) = urls.iter().find(|u| !is_https(u)) {
                eprintln!(
                    "warning: --token with the plaintext metrics URL {plain}: the token crosses \
                     the network unencrypted (use an https:// --server-metrics URL)"
                );
            }
        }
        let tls = if urls.iter().any(|u| is_https(u)) {
            let tls = security.tls.clone().unwrap_or_default();
            Some(
                tls.ureq_config()
                    .map_err(|e| CliError::Usage(format!("--server-metrics: {e}")))?,
            )
        } else {
            None
        };
        let access = ScrapeAccess {
            tls,
            token: security.token.clone(),
        };
        let interval = Duration::from_secs_f64(self.telemetry_interval);
        Ok(Some(Arc::new(Monitor::new(&urls, interval, access))))
    }

    /// Refuses settings whose pre-generated schedule would not fit in the memory available.
    fn check_memory(&self, settings: &TestSettings, qsl: &DatasetQsl) -> Result<(), CliError> {
        let (eff, _) = EffectiveSettings::new(
            settings,
            qsl.performance_sample_count() as u64,
            qsl.total_sample_count() as u64,
        );
        schedule::check_test_memory(&eff, qsl.total_sample_count() as u64, None).map_err(|e| {
            CliError::Usage(format!(
                "{e} (on the command line: --qps, --time, --max-latency, --samples-per-query; \
                 min_query_count in --user-conf)"
            ))
        })
    }

    fn sut(&self, qsl: &DatasetQsl, security: &Security) -> Result<Connected, CliError> {
        if self.endpoints.iter().any(|e| e == "null") {
            return Ok(Connected {
                sut: Arc::new(NullSut::immediate("null SUT (in-process)")),
                retries: None,
                served: ServedModel::default(),
            });
        }
        let max_batch = match (self.max_batchsize, self.scenario) {
            (Some(n), _) => n,
            (None, TestScenario::Offline) => 32,
            (None, _) => usize::MAX,
        };
        let config = GrpcSutConfig {
            endpoints: self.endpoints.clone(),
            connections_per_endpoint: self.connections,
            network_threads: self.network_threads.unwrap_or_else(|| {
                let cpus = std::thread::available_parallelism().map_or(1, usize::from);
                (cpus / 2).max(1)
            }),
            model: self
                .model
                .clone()
                .unwrap_or_else(|| self.profile.model.to_string()),
            max_batch,
            in_flight_per_connection: 32,
            in_flight_bytes_per_endpoint: self.inflight_mb.saturating_mul(1 << 20),
            request_timeout: Duration::from_secs_f64(self.request_timeout),
            connect_timeout: Duration::from_secs(10),
            retries: self.retries,
            security: security.clone(),
        };
        let sut = GrpcSut::connect(&config, self.profile, qsl.store())?;
        Ok(Connected {
            retries: Some(sut.retry_stats()),
            served: sut.served_model().clone(),
            sut: Arc::new(sut),
        })
    }

    /// The served model's name.
    fn model_name(&self) -> &str {
        self.model.as_deref().unwrap_or(self.profile.model)
    }

    /// The client's description of the run, for the detail log.
    fn run_info(&self, mlperf_model: &str, qsl: &DatasetQsl, served: ServedModel) -> RunInfo {
        RunInfo {
            client: format!("loadgen-client {}", env!("CARGO_PKG_VERSION")),
            profile: self.profile.name.to_string(),
            model: self.model_name().to_string(),
            mlperf_model: mlperf_model.to_string(),
            dataset: qsl.name(),
            endpoints: self.endpoints.clone(),
            served,
            // Read once more (it was read for the settings), for `package`'s measurements folder.
            user_conf: self
                .user_conf
                .as_ref()
                .and_then(|path| std::fs::read_to_string(path).ok())
                .unwrap_or_default(),
            command: redacted(std::env::args()),
        }
    }

    /// Records the run in `--output-dir` in the results store; a store that cannot be used
    /// is a warning (the run's files are written either way).
    fn record(&self) {
        let Some(path) = self.store.path() else {
            return;
        };
        let dir = std::path::absolute(&self.output_dir).unwrap_or_else(|_| self.output_dir.clone());
        let recorded = RunRecord::read(&dir)
            .map_err(|e| e.to_string())
            .and_then(|run| {
                let store = ResultsStore::open(&path).map_err(|e| e.to_string())?;
                store
                    .record(&run, &SystemDescription::of_this_machine())
                    .map_err(|e| e.to_string())
            });
        match recorded {
            Ok(id) => println!("recorded as run {id} in {}", path.display()),
            Err(e) => eprintln!(
                "warning: the run was not recorded in the results store: {e} (--results-db \
                 FILE or off)"
            ),
        }
    }
}

fn run(mut cli: RunArgs) -> Result<(), CliError> {
    cli.validate()?;
    let official = match cli.loadgen {
        LoadgenKind::Builtin => None,
        LoadgenKind::Official => {
            let library = OfficialLoadgen::locate(cli.official_library.as_deref())?;
            let official = OfficialLoadgen::load(&library)?;
            println!(
                "LoadGen: the official LoadGen {} ({})",
                official.version(),
                official.path().display()
            );
            Some(official)
        }
    };
    let security = cli.security()?;
    cli.profile = cli.served_profile(&security)?;
    let cli = &cli;
    let mlperf_model = cli
        .mlperf_model
        .as_deref()
        .unwrap_or(cli.profile.mlperf_model);
    let (settings, pre_test_diagnostics) = cli.settings(mlperf_model)?;
    let qsl = cli.qsl()?;
    println!(
        "dataset: {}; {} samples, {} for performance runs; MLPerf model {mlperf_model}",
        qsl.name(),
        qsl.total_sample_count(),
        qsl.performance_sample_count(),
    );
    cli.check_memory(&settings, &qsl)?;
    let truth = qsl.ground_truth();
    let Connected {
        sut,
        retries,
        served,
    } = cli.sut(&qsl, &security)?;
    println!("SUT: {}", sut.name());
    let run_info = Arc::new(cli.run_info(mlperf_model, &qsl, served));
    let progress = Arc::new(ProgressSut::new(sut));
    let monitor = cli.monitor(&security)?;
    let mut observers: Vec<Arc<dyn RunObserver>> = vec![run_info];
    if let Some(m) = &monitor {
        observers.push(m.clone());
    }
    if let Some(r) = retries {
        observers.push(r);
    }
    let options = RunOptions {
        pre_test_diagnostics,
        writer: format!("loadgen-client {}", env!("CARGO_PKG_VERSION")),
        observer: Some(Arc::new(Observers(observers))),
        ..RunOptions::default()
    };
    stop_on_signals(&options.stop)?;
    let sut = Arc::clone(&progress) as Arc<dyn Sut>;
    let finished = match &official {
        None => {
            let log_settings = LogSettings {
                outdir: cli.output_dir.clone(),
                enable_trace: cli.trace,
                ..LogSettings::default()
            };
            runner::start_test(sut, Arc::new(qsl), &settings, &log_settings, &options)
                .map(|outcome| Finished::Builtin(Box::new(outcome)))
                .map_err(CliError::from)
        }
        Some(official) => run_official(official, cli, mlperf_model, sut, Arc::new(qsl), &options),
    };
    // The LoadGen has dropped its handle by now, so the progress line can be finished.
    if let Ok(progress) = Arc::try_unwrap(progress) {
        println!("client view: {}", progress.finish());
    }
    let finished = finished?;
    finished.report();
    let scored = if matches!(
        settings.mode,
        TestMode::AccuracyOnly | TestMode::SubmissionRun
    ) {
        score_accuracy(&finished.paths().accuracy, &cli.output_dir, &truth)
    } else {
        Ok(())
    };
    cli.record();
    scored?;
    if options.stop.load(Ordering::SeqCst) {
        return Err(runner::LoadgenError::Interrupted.into());
    }
    let (failed, first) = finished.failures();
    if failed > 0 {
        return Err(CliError::FailedSamples {
            failed,
            first,
            detail: finished.paths().detail,
        });
    }
    match monitor.map(|m| m.verdict()) {
        Some(Verdict::Marked(events)) if !cli.allow_device_trouble => {
            let events: Vec<String> = events.iter().map(ToString::to_string).collect();
            return Err(CliError::DeviceTrouble {
                events: events.join("; "),
                summary: finished.paths().summary,
            });
        }
        Some(Verdict::Unchecked(why)) => eprintln!(
            "warning: device telemetry unchecked ({why}); throttling or resets during the run would \
             go unseen (pass --server-metrics URL, or --server-metrics off to silence this)"
        ),
        _ => {}
    }
    Ok(())
}

/// A test that ran to the end, by either LoadGen.
enum Finished {
    Builtin(Box<TestOutcome>),
    /// The official LoadGen's run, its output folder and the client's summary sections.
    Official {
        run: OfficialRun,
        dir: PathBuf,
        client_summary: Option<String>,
    },
}

impl Finished {
    /// Where the log files are.
    fn paths(&self) -> LogPaths {
        match self {
            Finished::Builtin(outcome) => outcome.paths.clone(),
            Finished::Official { dir, .. } => {
                // The official LoadGen's default log settings, the names both LoadGens use.
                let log = LogSettings {
                    outdir: dir.clone(),
                    enable_trace: true,
                    ..LogSettings::default()
                };
                let paths = runner::log_paths(&log, "");
                LogPaths {
                    // It creates the trace file, empty, even when tracing is off.
                    trace: paths
                        .trace
                        .filter(|p| p.metadata().is_ok_and(|m| m.len() > 0)),
                    // This client's own files, which the official LoadGen does not write.
                    breakdown: None,
                    timeline: None,
                    ..paths
                }
            }
        }
    }

    /// Samples that failed, and the first failure.
    fn failures(&self) -> (u64, Option<String>) {
        match self {
            Finished::Builtin(o) => (o.failed_samples, o.first_failure.clone()),
            Finished::Official { run, .. } => (run.failed_samples, run.first_failure.clone()),
        }
    }

    /// Prints the summary, the headline metric and where the files are.
    fn report(&self) {
        let paths = self.paths();
        match self {
            Finished::Builtin(outcome) => {
                print!("{}", outcome.summary_text);
                if let Some(text) = &outcome.breakdown_text {
                    print!("\n{text}");
                }
                if let (Some(metric), Some(valid)) = (outcome.metric(), outcome.valid()) {
                    let verdict = if valid { "VALID" } else { "INVALID" };
                    println!(
                        "\n{} = {} {} ({verdict})",
                        metric.key, metric.value, metric.unit
                    );
                }
            }
            Finished::Official {
                dir,
                client_summary,
                ..
            } => {
                print!(
                    "{}",
                    std::fs::read_to_string(&paths.summary).unwrap_or_default()
                );
                if let Some(section) = client_summary {
                    print!("\n{section}");
                }
                if let Ok(run) = RunRecord::read(dir) {
                    if let (Some((key, value, unit)), Some(validity)) =
                        (run.metric(), run.validity())
                    {
                        println!("\n{key} = {value} {unit} ({validity})");
                    }
                }
                println!("client:   {}", dir.join(client_log::FILE).display());
            }
        }
        println!("summary:  {}", paths.summary.display());
        println!("detail:   {}", paths.detail.display());
        println!("accuracy: {}", paths.accuracy.display());
        for path in [&paths.trace, &paths.breakdown, &paths.timeline]
            .into_iter()
            .flatten()
        {
            println!("also:     {}", path.display());
        }
    }
}

/// Runs the test with the official LoadGen; the client's observations go to its own log
/// beside the official files (client_log.rs).
fn run_official(
    official: &OfficialLoadgen,
    cli: &RunArgs,
    mlperf_model: &str,
    sut: Arc<dyn Sut>,
    qsl: Arc<dyn Qsl>,
    options: &RunOptions,
) -> Result<Finished, CliError> {
    let dir = cli.output_dir.clone();
    let write_error = |error| CliError::Write {
        path: dir.join(client_log::FILE),
        error,
    };
    std::fs::create_dir_all(&dir).map_err(write_error)?;
    let mut log = ClientLog::create(&dir).map_err(write_error)?;
    let observer = options.observer.as_ref();
    if let Some(o) = observer {
        log.observations(&o.started()).map_err(write_error)?;
    }
    log.flush().map_err(write_error)?;
    let test = OfficialTest {
        scenario: cli.scenario,
        model: mlperf_model.to_string(),
        user_conf: cli.user_conf.clone(),
        audit_config: options.audit_config.clone(),
        outdir: dir.clone(),
        enable_trace: cli.trace,
        overrides: cli.settings_sources(mlperf_model).overrides,
    };
    let run = official.start_test(sut, qsl, &test, options.stop.clone());
    if let Some(o) = observer {
        log.observations(&o.finished()).map_err(write_error)?;
    }
    match &run {
        Err(e) => log.error(&e.to_string()),
        Ok(r) if r.failed_samples > 0 => log.error(&format!(
            "{} sample(s) failed (first: {})",
            r.failed_samples,
            r.first_failure.as_deref().unwrap_or_default()
        )),
        Ok(_) => Ok(()),
    }
    .and_then(|()| log.flush())
    .map_err(write_error)?;
    Ok(Finished::Official {
        run: run?,
        dir,
        client_summary: observer.and_then(|o| o.summary()),
    })
}

impl CalibrateArgs {
    fn validate(&self) -> Result<(), CliError> {
        self.run.validate()?;
        let usage = |m: &str| Err(CliError::Usage(m.to_string()));
        if self.run.mode().is_some() {
            return usage("calibrate runs performance probes: drop --mode and --accuracy");
        }
        if self.run.loadgen == LoadgenKind::Official {
            return usage(
                "calibrate probes with the built-in LoadGen (drop --loadgen official); the \
                 user.conf it writes is read the same way by both",
            );
        }
        if !(self.probe_time > 0.0 && self.probe_time.is_finite()) {
            return usage("--probe-time must be a positive number of seconds");
        }
        if !(0.0..1.0).contains(&self.margin) {
            return usage("--margin must be a fraction, at least 0 and below 1 (0.1 = 10 %)");
        }
        if !(self.tolerance > 0.0 && self.tolerance < 1.0) {
            return usage("--tolerance must be a fraction above 0 and below 1 (0.05 = 5 %)");
        }
        Ok(())
    }

    /// The scenarios to calibrate; Server, after SingleStream, reuses its latency probe.
    fn scenarios(&self) -> Vec<TestScenario> {
        if self.all_scenarios {
            vec![
                TestScenario::SingleStream,
                TestScenario::MultiStream,
                TestScenario::Offline,
                TestScenario::Server,
            ]
        } else {
            vec![self.run.scenario]
        }
    }

    /// The text the written file starts from: the file itself when it exists, else --user-conf.
    fn base_user_conf(&self) -> Result<String, CliError> {
        let path = match (&self.run.user_conf, self.write.exists()) {
            (_, true) => &self.write,
            (Some(user_conf), false) => user_conf,
            (None, false) => return Ok(String::new()),
        };
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
    }
}

/// `loadgen-client calibrate`: probes each scenario and writes the user.conf.
fn calibrate(mut args: CalibrateArgs) -> Result<(), CliError> {
    args.validate()?;
    let base = args.base_user_conf()?;
    let security = args.run.security()?;
    args.run.profile = args.run.served_profile(&security)?;
    let run = &args.run;
    let mlperf_model = run
        .mlperf_model
        .as_deref()
        .unwrap_or(run.profile.mlperf_model);
    let qsl = Arc::new(run.qsl()?);
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(&stop)?;
    let dir = run.output_dir.join("calibration");
    let make_sut = |scenario| {
        let scenario_args = RunArgs {
            scenario,
            ..run.clone()
        };
        scenario_args.sut(&qsl, &security).map(|c| c.sut)
    };
    let probes = LoadgenProbes::new(
        make_sut,
        Arc::clone(&qsl) as Arc<dyn Qsl>,
        dir.clone(),
        format!("loadgen-client {} calibrate", env!("CARGO_PKG_VERSION")),
        stop,
    );
    let plan = CalibrationPlan {
        probe_time: Duration::from_secs_f64(args.probe_time),
        margin: args.margin,
        tolerance: args.tolerance,
    };
    let mut calibrator = Calibrator::new(probes, plan);
    let mut calibrated = Vec::new();
    for scenario in args.scenarios() {
        let scenario_args = RunArgs {
            scenario,
            ..run.clone()
        };
        let (settings, _) = scenario_args.settings(mlperf_model)?;
        println!("calibrating {}", scenario.as_str());
        let result = calibrator.calibrate(&settings).map_err(|e| match e {
            CalibrationError::Probe(e) => e,
            other => CliError::Calibration(Box::new(other)),
        })?;
        for reason in &result.reasons {
            println!("  {reason}");
        }
        println!("  {}", result.line(mlperf_model));
        calibrated.push(result);
    }
    let header = format!(
        "loadgen-client {} calibrate, {}, model {} on {}; probe logs in {}",
        env!("CARGO_PKG_VERSION"),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        run.model.as_deref().unwrap_or(run.profile.model),
        run.endpoints.join(" "),
        dir.display()
    );
    let text = merge_user_conf(&base, mlperf_model, &header, &calibrated);
    std::fs::write(&args.write, text).map_err(|error| CliError::Write {
        path: args.write.clone(),
        error,
    })?;
    println!(
        "wrote {}; run with --user-conf {}",
        args.write.display(),
        args.write.display()
    );
    Ok(())
}

/// `loadgen-client report`: the HTML report of the runs in `dirs`.
fn report_runs(dirs: &[PathBuf], output: &Path) -> Result<(), CliError> {
    let runs = run_report::write_report(dirs, output)?;
    println!(
        "wrote {} ({} run{})",
        output.display(),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// `loadgen-client runs`: lists the store's runs, and reports them with --report.
fn list_runs(args: &RunsArgs) -> Result<(), CliError> {
    let path = args.store.path().ok_or_else(|| {
        CliError::Usage(
            "the results store is off; pass --results-db FILE (or set LOADGEN_RESULTS_DB)".into(),
        )
    })?;
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "no results store at {}: no run was recorded there yet",
            path.display()
        )));
    }
    let store = ResultsStore::open(&path)?;
    let runs = store.list(&RunFilter {
        scenario: args.scenario.clone(),
        model: args.model.clone(),
        device: args.device.clone(),
        valid_only: args.valid,
        last: args.last,
    })?;
    println!(
        "{:>5}  {:<20}  {:<12}  {:<15}  {:<16}  {:<10}  {:<7}  {:>10}  {:>11}  {:>8}  dir",
        "id",
        "date",
        "scenario",
        "mode",
        "model",
        "device",
        "result",
        "samples/s",
        "latency ms",
        "accuracy"
    );
    let number = |v: Option<f64>, scale: f64, decimals: usize| {
        v.map(|v| format!("{:.*}", decimals, v / scale))
            .unwrap_or_else(|| "-".into())
    };
    for r in &runs {
        println!(
            "{:>5}  {:<20}  {:<12}  {:<15}  {:<16}  {:<10}  {:<7}  {:>10}  {:>11}  {:>8}  {}",
            r.id,
            r.test_datetime,
            r.scenario,
            r.mode,
            r.model,
            r.device,
            r.validity.as_deref().unwrap_or("-"),
            number(r.throughput, 1.0, 1),
            number(r.latency_ns, 1e6, 3),
            number(r.accuracy, 1.0, 3),
            r.dir.display()
        );
    }
    println!("{} run(s) in {}", runs.len(), path.display());
    if let Some(output) = &args.report {
        let (present, missing): (Vec<_>, Vec<_>) = runs
            .iter()
            .map(|r| r.dir.clone())
            .partition(|d| d.join(run_report::run::DETAIL).is_file());
        for dir in &missing {
            eprintln!("warning: {} is gone; left out of the report", dir.display());
        }
        if present.is_empty() {
            return Err(CliError::Usage(
                "none of the runs listed has its folder any more; nothing to report".into(),
            ));
        }
        report_runs(&present, output)?;
    }
    Ok(())
}

/// The command line with the value of `--token` replaced, for logs.
fn redacted(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut hide_next = false;
    args.map(|arg| {
        if std::mem::take(&mut hide_next) {
            return "<redacted>".to_string();
        }
        if arg == "--token" {
            hide_next = true;
        } else if arg.starts_with("--token=") {
            return "--token=<redacted>".to_string();
        }
        arg
    })
    .collect()
}

/// `loadgen-client package`.
fn package_runs(args: &PackageArgs) -> Result<(), CliError> {
    let runs = args
        .runs
        .iter()
        .map(|dir| RunRecord::read(&std::path::absolute(dir).unwrap_or_else(|_| dir.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let fields = |path: &Option<PathBuf>| {
        path.as_deref()
            .map(package::read_fields)
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let submission = Submission {
        submitter: args.submitter.clone(),
        system: args.system.clone(),
        status: args.status.clone(),
        system_fields: fields(&args.system_json)?,
        measurement_fields: fields(&args.measurements_json)?,
    };
    let written = package::package(&runs, &submission, &args.out)?;
    for dir in &written {
        println!("wrote {}", dir.display());
    }
    println!(
        "submission tree in {} ({} division); check it with the official submission checker",
        args.out.display(),
        package::DIVISION
    );
    Ok(())
}

/// Makes the first SIGINT/SIGTERM set `stop` (the run winds down and writes its logs) and a
/// second one end the process.
fn stop_on_signals(stop: &Arc<AtomicBool>) -> Result<(), CliError> {
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            signal,
            EXIT_INTERRUPTED.into(),
            stop.clone(),
        )
        .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
        .map_err(CliError::Signals)?;
    }
    Ok(())
}

/// Scores the accuracy log and writes accuracy.txt beside it; data without labels leaves the log
/// to be scored elsewhere, as the official LoadGen always does.
fn score_accuracy(log_path: &Path, dir: &Path, truth: &GroundTruth) -> Result<(), CliError> {
    if matches!(truth, GroundTruth::None) {
        println!(
            "accuracy.txt not written: the dataset has no labels. {} holds every response; score \
             it with the benchmark's accuracy script (e.g. accuracy-imagenet.py --mlperf-accuracy-file \
             {} --imagenet-val-file val_map.txt), or rerun with a labelled --dataset-path.",
            log_path.display(),
            log_path.display()
        );
        return Ok(());
    }
    let log = AccuracyLog::read(log_path)?;
    let score = accuracy::score(&log, truth)?;
    let path = dir.join("accuracy.txt");
    accuracy::write_accuracy_txt(&path, &score, &log)?;
    println!("{score}");
    println!("accuracy.txt: {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.run),
        Some(Command::Calibrate(args)) => calibrate(*args),
        Some(Command::Report(args)) => report_runs(&args.runs, &args.output),
        Some(Command::Runs(args)) => list_runs(&args),
        Some(Command::Package(args)) => package_runs(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("loadgen-client").chain(args.iter().copied()))
            .expect("valid arguments")
            .run
    }

    #[test]
    fn command_line_overrides_user_conf_which_overrides_mlperf_conf() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.conf");
        std::fs::write(
            &user,
            "*.Server.target_qps = 50\n*.Server.min_duration = 1000\n",
        )
        .unwrap();
        let user = user.to_str().unwrap();

        let (s, _) = cli(&["--scenario", "Server"]).settings("resnet50").unwrap();
        assert_eq!(
            s.server_target_latency_ns, 15_000_000,
            "mlperf.conf applies"
        );
        assert_eq!(s.min_duration_ms, 600_000);

        let (s, _) = cli(&["--scenario", "Server", "--user-conf", user])
            .settings("resnet50")
            .unwrap();
        assert_eq!((s.server_target_qps, s.min_duration_ms), (50.0, 1000));

        let args = [
            "--scenario",
            "Server",
            "--user-conf",
            user,
            "--qps",
            "70",
            "--time",
            "3",
            "--max-latency",
            "0.02",
            "--accuracy",
        ];
        let (s, _) = cli(&args).settings("resnet50").unwrap();
        assert_eq!((s.server_target_qps, s.min_duration_ms), (70.0, 3000));
        assert_eq!(s.server_target_latency_ns, 20_000_000);
        assert_eq!(s.mode, TestMode::AccuracyOnly);
    }

    #[test]
    fn missing_conf_and_bad_combinations_are_errors() {
        let err = cli(&["--user-conf", "/nonexistent/user.conf"])
            .settings("resnet50")
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = err.to_string();
        assert!(
            err.contains("--user-conf: can't open file /nonexistent/user.conf"),
            "{err}"
        );
        let cases: [(&[&str], &str); 7] = [
            (
                &["--mode", "FindPeakPerformance"],
                "needs --scenario Server",
            ),
            (&["--threads", "0"], "--connections must be at least 1"),
            (
                &["--network-threads", "0"],
                "--network-threads must be at least 1",
            ),
            (&["--qps=-1"], "--qps"),
            (
                &["--endpoint", "null", "--endpoint", "http://x:1"],
                "cannot be combined",
            ),
            (&["--count", "0"], "--count"),
            (
                &["--performance-sample-count", "0"],
                "--performance-sample-count",
            ),
        ];
        for (args, expected) in cases {
            let err = cli(args).validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
        assert!(Cli::try_parse_from(["x", "--profile", "resnet51"]).is_err());
        assert!(Cli::try_parse_from(["x", "--scenario", "offline"]).is_err());
        let err = cli(&["--dataset", "imagenet"])
            .qsl()
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--dataset-path is required"), "{err}");
    }

    #[test]
    fn the_token_never_reaches_the_logged_command_line() {
        let args = ["x", "--token", "s3cret", "--token=s3cret", "--model", "m"];
        let logged = redacted(args.iter().map(|a| a.to_string()));
        assert_eq!(
            logged,
            [
                "x",
                "--token",
                "<redacted>",
                "--token=<redacted>",
                "--model",
                "m"
            ]
        );
    }

    #[test]
    fn profile_defaults_follow_the_profile() {
        let c = cli(&["--profile", "ssd-mobilenet-onnxruntime"]);
        assert_eq!(c.dataset(), DatasetKind::Coco);
        let c = cli(&[
            "--profile",
            "digits-cnn",
            "--dataset",
            "synthetic",
            "--count",
            "5",
        ]);
        let qsl = c.qsl().unwrap();
        assert_eq!(
            (qsl.total_sample_count(), qsl.performance_sample_count()),
            (5, 5)
        );
    }
}
