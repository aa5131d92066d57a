//! `inference-server`: startup, modes (`devices`, `--check-repository`, serving), signals,
//! systemd notification and graceful shutdown.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use inference_server::api::access::{self, Access};
use inference_server::api::transport::{BodyBudget, Policy};
use inference_server::api::{self, Health, InferenceService, ServerState, ServiceOptions};
use inference_server::backend::devices;
use inference_server::config::{Cli, Command, ConfigError, HttpAddr, LogFormat, Settings};
use inference_server::metrics;
use inference_server::metrics_endpoint;
use inference_server::repository::{self, Repository, RepositoryError, RepositoryOptions};
use inference_server::telemetry::Telemetry;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the C library's allocator: each request allocates and frees many small
/// buffers on the network and instance threads, and glibc's malloc, free and consolidation took
/// about 8% of the server's CPU in the per-request profile (README: "Per-request cost").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod watchdog;

/// Exit status for settings the user must fix (clap uses the same for bad flags).
const EXIT_USAGE: u8 = 2;
/// Extra time after the grace period for the gRPC server to flush its last answers.
const SERVER_FLUSH: Duration = Duration::from_secs(2);
/// How often model health statuses follow their instances.
const HEALTH_SYNC: Duration = Duration::from_secs(1);

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
enum StartupError {
    #[error("invalid --log-level '{filter}': {reason} (examples: info, debug, inference_server=debug,warn)")]
    LogFilter { filter: String, reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Access(access::AccessError),
    #[error(
        "model control (--allow-model-control) on an address other machines reach needs \
             credentials: pass --auth-token-file or --tls-client-ca, or listen on 127.0.0.1 only"
    )]
    OpenModelControl,
    #[error("cannot set up the metrics recorder: {0}")]
    Recorder(metrics_exporter_prometheus::BuildError),
    #[error("cannot serve metrics on {addr}: {reason}; pick a free address with --metrics-addr")]
    Metrics { addr: String, reason: String },
    #[error("cannot listen for gRPC on {addr}: {source}; pick a free address with --grpc-addr")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot listen for HTTP on {addr}: {source}; pick a free address with --http-addr, or --http-addr off")]
    BindHttp {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Serve(#[from] api::ServeError),
    #[error("cannot wait for shutdown signals: {0}")]
    Signals(std::io::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::DnaWorker) = cli.command {
        // Before settings and logging: the worker reads no config and keeps stdout for its pipe.
        return ExitCode::from(inference_server::backend::dna::serve::run());
    }
    let needs_repository = cli.command.is_none();
    let settings = match cli.args.resolve(needs_repository) {
        Ok(settings) => settings,
        Err(err) => return usage_error(&err),
    };
    if let Err(err) = init_tracing(&settings) {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_USAGE);
    }
    match cli.command {
        Some(Command::Devices) => list_devices(&settings),
        Some(Command::DnaWorker) => unreachable!("handled above"),
        None if cli.args.check_repository.is_some() => check_repository(&settings),
        None => match run_server(settings) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("{err}");
                eprintln!("error: {err}");
                err.exit_code()
            }
        },
    }
}

impl StartupError {
    /// 2 for settings the user must fix, 1 for failures while running.
    fn exit_code(&self) -> ExitCode {
        match self {
            StartupError::Config(_) | StartupError::Access(_) | StartupError::OpenModelControl => {
                ExitCode::from(EXIT_USAGE)
            }
            _ => ExitCode::FAILURE,
        }
    }
}

fn usage_error(err: &ConfigError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(EXIT_USAGE)
}

fn init_tracing(settings: &Settings) -> Result<(), StartupError> {
    let filter =
        EnvFilter::try_new(&settings.log_level).map_err(|err| StartupError::LogFilter {
            filter: settings.log_level.clone(),
            reason: err.to_string(),
        })?;
    // Colours only on a terminal, never in journald or log files.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// `inference-server devices`: one line per backend and device.
fn list_devices(settings: &Settings) -> ExitCode {
    println!("{:<12} {:<16} STATUS", "BACKEND", "DEVICE");
    for report in devices::list_devices(&settings.libraries) {
        println!("{report}");
    }
    ExitCode::SUCCESS
}

fn repository_options(settings: &Settings) -> RepositoryOptions {
    RepositoryOptions {
        libraries: settings.libraries.clone(),
        drain_grace: settings.shutdown_grace,
        health_interval: settings.device_health_interval,
    }
}

/// `--check-repository DIR`: every problem on stderr, non-zero exit when there is one.
fn check_repository(settings: &Settings) -> ExitCode {
    let Some(root) = &settings.model_repository else {
        return usage_error(&ConfigError::MissingRepository);
    };
    let problems = repository::check(root, &repository_options(settings));
    if problems.is_empty() {
        println!("{}: repository OK", root.display());
        return ExitCode::SUCCESS;
    }
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    eprintln!(
        "{}: {} problem(s) found; fix them and run --check-repository again",
        root.display(),
        problems.len()
    );
    ExitCode::FAILURE
}

fn run_server(settings: Settings) -> Result<(), StartupError> {
    let Some(root) = settings.model_repository.clone() else {
        return Err(StartupError::Config(ConfigError::MissingRepository));
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.network_threads)
        .enable_all()
        .build()
        .map_err(StartupError::Runtime)?;
    runtime.block_on(serve(settings, root))
}

async fn serve(settings: Settings, root: PathBuf) -> Result<(), StartupError> {
    let metrics_handle = metrics::install_recorder().map_err(StartupError::Recorder)?;
    let access = Access::load(&settings.access).map_err(StartupError::Access)?;
    let mut reachable = vec![settings.grpc_addr];
    if let HttpAddr::On(addr) = settings.http_addr {
        reachable.push(addr);
    }
    if settings.allow_model_control
        && !access.needs_credentials()
        && !access::all_loopback(&reachable)
    {
        return Err(StartupError::OpenModelControl);
    }
    let policy = Policy {
        limits: settings.limits,
        budget: BodyBudget::new(settings.max_request_memory),
        access: Arc::clone(&access),
    };
    let metrics_listener = TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|err| StartupError::Metrics {
            addr: settings.metrics_addr.to_string(),
            reason: err.to_string(),
        })?;
    tokio::spawn(metrics_endpoint::serve(
        metrics_listener,
        metrics_handle,
        Telemetry::new(&settings.telemetry_root),
        policy.clone(),
    ));
    let listener = TcpListener::bind(settings.grpc_addr)
        .await
        .map_err(|source| StartupError::Bind {
            addr: settings.grpc_addr.to_string(),
            source,
        })?;
    let grpc_addr = listener.local_addr().unwrap_or(settings.grpc_addr);
    let mut signals = Signals::new().map_err(StartupError::Signals)?;

    let (health, health_service) = Health::new().await;
    let state = Arc::new(ServerState::default());
    let repository = Arc::new(Repository::new(root.clone(), repository_options(&settings)));
    let service = InferenceService::new(
        Arc::clone(&repository),
        health.clone(),
        Arc::clone(&state),
        ServiceOptions {
            allow_model_control: settings.allow_model_control,
            unload_grace: settings.shutdown_grace,
            allow_shared_memory: settings.allow_shared_memory,
            max_request_bytes: settings.max_message_size,
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    };
    let http = match settings.http_addr {
        HttpAddr::Off => None,
        HttpAddr::On(addr) => {
            let listener =
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::BindHttp {
                        addr: addr.to_string(),
                        source,
                    })?;
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(http_addr = %addr, "HTTP/REST listening");
            Some(tokio::spawn(api::rest::serve(
                listener,
                service.clone(),
                settings.max_message_size,
                policy.clone(),
                stopped(),
            )))
        }
    };
    // Serve from the start so ServerLive answers while models load; ServerReady stays false.
    let mut server = tokio::spawn(api::serve(
        listener,
        service,
        health_service,
        settings.max_message_size,
        policy,
        stopped(),
    ));
    tracing::info!(%grpc_addr, metrics_addr = %settings.metrics_addr, repository = %root.display(), "listening; loading models");

    repository.load_all().await?;
    let index = repository.index();
    let ready = index
        .iter()
        .filter(|e| e.state == repository::ModelState::Ready)
        .count();
    if index.is_empty() {
        tracing::warn!(repository = %root.display(), "the repository holds no model folders");
    }
    state.set_accepting(true);
    health.set_server(true).await;
    health.sync_models(&repository, true).await;
    // Instances go out of and back into service as their devices come and go.
    let health_sync = tokio::spawn({
        let (health, repository, state) =
            (health.clone(), Arc::clone(&repository), Arc::clone(&state));
        async move {
            let mut tick = tokio::time::interval(HEALTH_SYNC);
            let mut was_unready = repository.unready_required();
            loop {
                tick.tick().await;
                health.sync_models(&repository, state.is_accepting()).await;
                let unready = repository.unready_required();
                if unready != was_unready && state.is_accepting() {
                    log_readiness(&unready);
                }
                was_unready = unready;
            }
        }
    });
    notify_systemd(sd_notify::NotifyState::Ready);
    let watchdog = sd_notify::watchdog_enabled()
        .map(|period| tokio::spawn(watchdog::run(grpc_addr, period, Arc::clone(&access))));
    tracing::info!(%grpc_addr, ready, models = index.len(), "serving");
    log_readiness(&repository.unready_required());

    let early_exit = loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Reload => {
                    tracing::info!("SIGHUP: reloading the model repository, the TLS certificate and the tokens");
                    if let Err(err) = access.reload() {
                        tracing::error!("reload: {err}; the old certificate and tokens stay in use");
                    }
                    notify_systemd_reloading();
                    match repository.reload().await {
                        Ok(report) => {
                            for (model, reason) in &report.failed {
                                tracing::error!(model, %reason, "reload: new files failed to load; any version serving keeps serving");
                            }
                        }
                        Err(err) => tracing::error!("reload: {err}"),
                    }
                    health.sync_models(&repository, true).await;
                    notify_systemd(sd_notify::NotifyState::Ready);
                }
                Signal::Stop(name) => {
                    tracing::info!(signal = name, grace = ?settings.shutdown_grace, "shutting down: finishing queued and in-flight requests");
                    break None;
                }
            },
            result = &mut server => break Some(result),
        }
    };
    if let Some(result) = early_exit {
        return match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.into()),
            Err(join) => Err(api::ServeError::Task(join.to_string()).into()),
        };
    }

    health_sync.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    state.set_accepting(false);
    health.set_server(false).await;
    health.sync_models(&repository, false).await;
    notify_systemd(sd_notify::NotifyState::Stopping);
    let _ = stop_tx.send(true);
    repository.shutdown(settings.shutdown_grace).await;
    if let Some(http) = http {
        match tokio::time::timeout(SERVER_FLUSH, http).await {
            Ok(Ok(())) => {}
            Ok(Err(join)) => tracing::error!(error = %join, "the HTTP server task failed"),
            Err(_) => tracing::warn!("HTTP connections still open after the grace period"),
        }
    }
    match tokio::time::timeout(SERVER_FLUSH, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("stopped"),
        Ok(Ok(Err(err))) => return Err(err.into()),
        Ok(Err(join)) => return Err(api::ServeError::Task(join.to_string()).into()),
        Err(_) => tracing::warn!("connections still open after the grace period; exiting anyway"),
    }
    Ok(())
}

/// Says whether the server is ready (ServerReady, health `""`) and, if not, which required
/// models hold it back.
fn log_readiness(unready: &[String]) {
    if unready.is_empty() {
        tracing::info!("server ready: every required model can serve");
    } else {
        tracing::warn!(
            models = %unready.join("; "),
            "server not ready: required models cannot serve (set required = false in a model's \
             config.toml to serve without it)"
        );
    }
}

/// What a signal asks for.
enum Signal {
    /// SIGHUP (`systemctl reload`): re-read the model repository.
    Reload,
    /// SIGTERM (systemd, Kubernetes) or SIGINT (Ctrl-C), named.
    Stop(&'static str),
}

/// SIGTERM, SIGINT and SIGHUP.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Stop("SIGTERM"),
            _ = self.interrupt.recv() => Signal::Stop("SIGINT"),
            _ = self.hangup.recv() => Signal::Reload,
        }
    }
}

/// Tells systemd a reload started (with the timestamp systemd ≥ 253 requires after RELOADING=1).
fn notify_systemd_reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    if let Err(err) = sd_notify::notify(&states) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// Tells systemd (when started with `Type=notify`, i.e. `NOTIFY_SOCKET` is set) about a state.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(err) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}
