//! `loadgen-client`: runs an MLPerf LoadGen test against a KServe v2 gRPC inference server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, ValueEnum};

use loadgen_client::accuracy::{self, AccuracyLog};
use loadgen_client::config::{ConfType, ConfigSession, MLPERF_CONF};
use loadgen_client::dataset::coco::CocoSource;
use loadgen_client::dataset::imagenet::ImagenetSource;
use loadgen_client::dataset::synthetic::SyntheticSource;
use loadgen_client::dataset::{Cache, DatasetQsl, GroundTruth, SampleSource};
use loadgen_client::diagnostics::Diagnostic;
use loadgen_client::grpc_sut::{GrpcSut, GrpcSutConfig};
use loadgen_client::null_sut::NullSut;
use loadgen_client::profile::{self, Profile};
use loadgen_client::progress::ProgressSut;
use loadgen_client::runner::{self, RunOptions, TestOutcome};
use loadgen_client::settings::{LogSettings, TestMode, TestScenario, TestSettings};
use loadgen_client::sut::{Qsl, Sut};

/// Seed of the synthetic dataset, fixed so runs are comparable.
const SYNTHETIC_SEED: u64 = 0x6d6c_7065_7266;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "verbatim")]
enum Scenario {
    SingleStream,
    MultiStream,
    Server,
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "verbatim")]
enum Mode {
    PerformanceOnly,
    AccuracyOnly,
    SubmissionRun,
    FindPeakPerformance,
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
    after_help = "Settings precedence: command line > --user-conf > mlperf.conf (built in, or \
                  --mlperf-conf). Results go to --output-dir; accuracy modes also write \
                  accuracy.txt there."
)]
struct Cli {
    /// MLPerf scenario.
    #[arg(long, value_enum, default_value = "SingleStream")]
    scenario: Scenario,
    /// Test mode. FindPeakPerformance needs --scenario Server.
    #[arg(long, value_enum, default_value = "PerformanceOnly")]
    mode: Mode,
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
    /// Target QPS: Server's target_qps and Offline's expected QPS.
    #[arg(long)]
    qps: Option<f64>,
    /// Latency bound in seconds: Server's target latency and MultiStream's expected latency.
    #[arg(long, value_name = "SECONDS")]
    max_latency: Option<f64>,
    /// Minimum test duration in seconds.
    #[arg(long, value_name = "SECONDS")]
    time: Option<u64>,
    /// MultiStream samples per query.
    #[arg(long)]
    samples_per_query: Option<u64>,
    /// Largest request: queries with more samples are split [default: 32 in Offline,
    /// unlimited otherwise].
    #[arg(long)]
    max_batchsize: Option<usize>,
    /// HTTP/2 connections per endpoint.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Megabytes of input tensors in flight per endpoint; keeps a server's bounded queue from
    /// overflowing (requests it still refuses as overloaded are retried).
    #[arg(long, value_name = "MB", default_value_t = 48)]
    inflight_mb: usize,
    /// Samples loaded into RAM for performance runs [default: the profile's, at most the
    /// dataset size].
    #[arg(long)]
    performance_sample_count: Option<usize>,
    /// Folder caching preprocessed tensors across runs.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Where the mlperf_log_* files (and accuracy.txt) are written.
    #[arg(long, value_name = "DIR", default_value = "output")]
    output_dir: PathBuf,
    /// Also write mlperf_log_trace.json.
    #[arg(long)]
    trace: bool,
    /// Deadline of one inference request, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    request_timeout: f64,
}

/// Why the run did not complete.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Dataset(#[from] loadgen_client::dataset::DatasetError),
    #[error(transparent)]
    Config(#[from] loadgen_client::config::ConfigError),
    #[error(transparent)]
    Sut(#[from] loadgen_client::grpc_sut::GrpcSutError),
    #[error(transparent)]
    Run(#[from] runner::LoadgenError),
    #[error("accuracy: {0}")]
    Accuracy(#[from] accuracy::AccuracyError),
}

impl Cli {
    fn scenario(&self) -> TestScenario {
        match self.scenario {
            Scenario::SingleStream => TestScenario::SingleStream,
            Scenario::MultiStream => TestScenario::MultiStream,
            Scenario::Server => TestScenario::Server,
            Scenario::Offline => TestScenario::Offline,
        }
    }

    fn mode(&self) -> TestMode {
        if self.accuracy {
            return TestMode::AccuracyOnly;
        }
        match self.mode {
            Mode::PerformanceOnly => TestMode::PerformanceOnly,
            Mode::AccuracyOnly => TestMode::AccuracyOnly,
            Mode::SubmissionRun => TestMode::SubmissionRun,
            Mode::FindPeakPerformance => TestMode::FindPeakPerformance,
        }
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
        if self.mode() == TestMode::FindPeakPerformance && self.scenario != Scenario::Server {
            return usage("--mode FindPeakPerformance needs --scenario Server");
        }
        if self.threads == 0 {
            return usage("--threads must be at least 1");
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
        if self.qps.is_some_and(|q| !(q > 0.0 && q.is_finite())) {
            return usage("--qps must be a positive number");
        }
        if self
            .max_latency
            .is_some_and(|l| !(l > 0.0 && l.is_finite()))
        {
            return usage("--max-latency must be a positive number of seconds");
        }
        if !(self.request_timeout > 0.0 && self.request_timeout.is_finite()) {
            return usage("--request-timeout must be a positive number of seconds");
        }
        if self.endpoints.len() > 1 && self.endpoints.iter().any(|e| e == "null") {
            return usage("--endpoint null cannot be combined with other endpoints");
        }
        Ok(())
    }

    /// mlperf.conf, then user.conf, then the command line.
    /// Also returns the config files' detail-log lines.
    fn settings(&self, mlperf_model: &str) -> Result<(TestSettings, Vec<Diagnostic>), CliError> {
        let mut settings = TestSettings {
            scenario: self.scenario(),
            ..TestSettings::default()
        };
        let scenario = settings.scenario.as_str();
        let mut session = ConfigSession::new();
        match (&self.mlperf_conf, &self.user_conf) {
            // A replaced rules file is the base; user.conf then applies on top of it.
            (Some(rules), user) => {
                session.apply_file(
                    &mut settings,
                    rules,
                    mlperf_model,
                    scenario,
                    ConfType::MlperfConf,
                )?;
                if let Some(user) = user {
                    session.apply_file(
                        &mut settings,
                        user,
                        mlperf_model,
                        scenario,
                        ConfType::MlperfConf,
                    )?;
                }
            }
            (None, Some(user)) => {
                session.apply_file(
                    &mut settings,
                    user,
                    mlperf_model,
                    scenario,
                    ConfType::UserConf,
                )?;
            }
            (None, None) => {
                session.apply_text(
                    &mut settings,
                    MLPERF_CONF,
                    mlperf_model,
                    scenario,
                    ConfType::MlperfConf,
                )?;
            }
        }
        settings.mode = self.mode();
        if let Some(qps) = self.qps {
            settings.server_target_qps = qps;
            settings.offline_expected_qps = qps;
        }
        if let Some(seconds) = self.max_latency {
            let ns = seconds * 1e9;
            settings.server_target_latency_ns = ns as u64;
            settings.multi_stream_expected_latency_ns = ns;
        }
        if let Some(seconds) = self.time {
            settings.min_duration_ms = seconds.saturating_mul(1000);
        }
        if let Some(n) = self.samples_per_query {
            settings.multi_stream_samples_per_query = n;
        }
        Ok((settings, session.diagnostics))
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

    fn sut(&self, qsl: &DatasetQsl) -> Result<Arc<dyn Sut>, CliError> {
        if self.endpoints.iter().any(|e| e == "null") {
            return Ok(Arc::new(NullSut::immediate("null SUT (in-process)")));
        }
        let max_batch = match (self.max_batchsize, self.scenario) {
            (Some(n), _) => n,
            (None, Scenario::Offline) => 32,
            (None, _) => usize::MAX,
        };
        let config = GrpcSutConfig {
            endpoints: self.endpoints.clone(),
            connections_per_endpoint: self.threads,
            model: self
                .model
                .clone()
                .unwrap_or_else(|| self.profile.model.to_string()),
            max_batch,
            in_flight_per_connection: 32,
            in_flight_bytes_per_endpoint: self.inflight_mb.saturating_mul(1 << 20),
            request_timeout: Duration::from_secs_f64(self.request_timeout),
            connect_timeout: Duration::from_secs(10),
        };
        Ok(Arc::new(GrpcSut::connect(
            &config,
            self.profile,
            qsl.store(),
        )?))
    }
}

fn run(cli: &Cli) -> Result<(), CliError> {
    cli.validate()?;
    let mlperf_model = cli
        .mlperf_model
        .as_deref()
        .unwrap_or(cli.profile.mlperf_model);
    let (settings, pre_test_diagnostics) = cli.settings(mlperf_model)?;
    let log_settings = LogSettings {
        outdir: cli.output_dir.clone(),
        enable_trace: cli.trace,
        ..LogSettings::default()
    };
    let qsl = cli.qsl()?;
    println!(
        "dataset: {}; {} samples, {} for performance runs; MLPerf model {mlperf_model}",
        qsl.name(),
        qsl.total_sample_count(),
        qsl.performance_sample_count(),
    );
    let truth = qsl.ground_truth();
    let sut = cli.sut(&qsl)?;
    println!("SUT: {}", sut.name());
    let progress = Arc::new(ProgressSut::new(sut));
    let options = RunOptions {
        pre_test_diagnostics,
        ..RunOptions::default()
    };
    let outcome = runner::start_test(
        Arc::clone(&progress) as Arc<dyn Sut>,
        Arc::new(qsl),
        &settings,
        &log_settings,
        &options,
    );
    // The runner has dropped its handle by now, so the progress line can be finished.
    if let Ok(progress) = Arc::try_unwrap(progress) {
        println!("client view: {}", progress.finish());
    }
    let outcome = outcome?;
    report(&outcome);
    if matches!(
        settings.mode,
        TestMode::AccuracyOnly | TestMode::SubmissionRun
    ) {
        score_accuracy(&outcome.paths.accuracy, &cli.output_dir, &truth)?;
    }
    Ok(())
}

/// Prints the summary, the headline metric and where the files are.
fn report(outcome: &TestOutcome) {
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
    if outcome.failed_samples > 0 {
        println!(
            "warning: {} samples failed (see the SUT errors above and in the detail log)",
            outcome.failed_samples
        );
    }
    let paths = &outcome.paths;
    println!("summary:  {}", paths.summary.display());
    println!("detail:   {}", paths.detail.display());
    println!("accuracy: {}", paths.accuracy.display());
    for path in [&paths.trace, &paths.breakdown].into_iter().flatten() {
        println!("also:     {}", path.display());
    }
}

/// Scores the accuracy log and writes accuracy.txt beside it.
fn score_accuracy(log_path: &Path, dir: &Path, truth: &GroundTruth) -> Result<(), CliError> {
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
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                CliError::Usage(_) => 2,
                _ => 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("loadgen-client").chain(args.iter().copied()))
            .expect("valid arguments")
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
    fn replaced_rules_file_is_the_base_for_user_conf() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("mlperf.conf");
        std::fs::write(
            &rules,
            "*.Offline.min_duration = 5000\n*.Offline.min_query_count = 7\n",
        )
        .unwrap();
        let user = dir.path().join("user.conf");
        std::fs::write(&user, "*.Offline.min_query_count = 9\n").unwrap();
        let args = [
            "--scenario",
            "Offline",
            "--mlperf-conf",
            rules.to_str().unwrap(),
            "--user-conf",
            user.to_str().unwrap(),
        ];
        let (s, _) = cli(&args).settings("resnet50").unwrap();
        assert_eq!((s.min_duration_ms, s.min_query_count), (5000, 9));
    }

    #[test]
    fn missing_conf_and_bad_combinations_are_errors() {
        let err = cli(&["--user-conf", "/nonexistent/user.conf"])
            .settings("resnet50")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/user.conf"), "{err}");
        let cases: [(&[&str], &str); 5] = [
            (
                &["--mode", "FindPeakPerformance"],
                "needs --scenario Server",
            ),
            (&["--threads", "0"], "--threads"),
            (&["--qps=-1"], "--qps"),
            (
                &["--endpoint", "null", "--endpoint", "http://x:1"],
                "cannot be combined",
            ),
            (&["--count", "0"], "--count"),
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
