//! Server settings: command-line flags, `INFERENCE_SERVER_*` environment variables and an optional
//! TOML file, merged with the precedence flag > environment > file > built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::api::access::AccessSettings;
use crate::api::transport::Limits;
use crate::backend::library::LibraryPaths;
use crate::backend::registry;
use crate::scheduler::DEFAULT_HEALTH_INTERVAL;

/// Default gRPC listen address (loopback only: exposing the box is an explicit choice).
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:8001";
/// Default Prometheus `/metrics` listen address.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:8002";
/// Default HTTP/REST listen address (Triton's port).
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8000";

/// Where the HTTP/REST protocol listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpAddr {
    Off,
    On(SocketAddr),
}

impl std::str::FromStr for HttpAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(HttpAddr::Off);
        }
        text.trim()
            .parse()
            .map(HttpAddr::On)
            .map_err(|_| format!("'{text}' is not an address like 127.0.0.1:8000, or off"))
    }
}

impl<'de> Deserialize<'de> for HttpAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
/// Default largest gRPC message, in bytes: 64 MiB fits a 64 × 224 × 224 × 3 FP32 batch (38.5 MB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
/// Default time given to queued and in-flight requests on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default bytes of request bodies received at once.
pub const DEFAULT_MAX_REQUEST_MEMORY: usize = 256 * 1024 * 1024;
/// Default tracing filter.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Command line of `inference-server`.
#[derive(Debug, Parser)]
#[command(
    name = "inference-server",
    version,
    about = "KServe v2 gRPC inference server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: SettingsArgs,
}

/// Modes other than serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every backend and device found, with library versions or why each is unavailable.
    Devices,
    /// Run one DNA model instance's vendor runtime, spoken to over stdin and stdout (the
    /// server starts these itself; see the dna backend).
    #[command(hide = true)]
    DnaWorker,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald or log shippers).
    Json,
}

/// Settings as given on the command line or in the environment; unset ones fall back to the
/// config file, then to the defaults.
#[derive(Debug, Default, Args)]
pub struct SettingsArgs {
    /// Server config file (TOML) with any of the settings below; flags and environment win over it.
    #[arg(
        long,
        global = true,
        env = "INFERENCE_SERVER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Model repository to serve: DIR/<model>/config.toml and DIR/<model>/<version>/model.onnx.
    #[arg(long, env = "INFERENCE_SERVER_MODEL_REPOSITORY", value_name = "DIR")]
    pub model_repository: Option<PathBuf>,
    /// Validate the repository at DIR (configs and model files), print every error and exit.
    #[arg(long, value_name = "DIR", conflicts_with = "model_repository")]
    pub check_repository: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:8001].
    #[arg(long, env = "INFERENCE_SERVER_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Prometheus /metrics listen address [default: 127.0.0.1:8002].
    #[arg(long, env = "INFERENCE_SERVER_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// HTTP/REST (KServe v2) listen address, or `off` [default: 127.0.0.1:8000].
    #[arg(long, env = "INFERENCE_SERVER_HTTP_ADDR", value_name = "ADDR|off")]
    pub http_addr: Option<HttpAddr>,
    /// Log format [default: text].
    #[arg(long, global = true, env = "INFERENCE_SERVER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `inference_server=debug,info` [default: info].
    #[arg(
        long,
        global = true,
        env = "INFERENCE_SERVER_LOG_LEVEL",
        value_name = "FILTER"
    )]
    pub log_level: Option<String>,
    /// Seconds queued and in-flight requests get to finish after SIGTERM/SIGINT [default: 30].
    #[arg(long, env = "INFERENCE_SERVER_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<f64>,
    /// Allow RepositoryModelLoad/RepositoryModelUnload (they change what the box serves).
    #[arg(
        long,
        env = "INFERENCE_SERVER_ALLOW_MODEL_CONTROL",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_model_control: Option<bool>,
    /// Let clients on this box register system shared-memory regions (Triton's extension): they
    /// name local shared-memory objects the server then reads and writes.
    #[arg(
        long,
        env = "INFERENCE_SERVER_ALLOW_SHARED_MEMORY",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_shared_memory: Option<bool>,
    /// Seconds between checks that an idle (or out-of-service) instance's device is still there
    /// [default: 5].
    #[arg(
        long,
        env = "INFERENCE_SERVER_DEVICE_HEALTH_INTERVAL",
        value_name = "SECONDS"
    )]
    pub device_health_interval: Option<f64>,
    /// Largest gRPC request or response message in bytes [default: 67108864 = 64 MiB].
    #[arg(long, env = "INFERENCE_SERVER_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Where device telemetry is read: DIR/sys and DIR/proc [default: /]. Another folder is for
    /// tests, or a container that mounts the host's /sys and /proc elsewhere.
    #[arg(long, env = "INFERENCE_SERVER_TELEMETRY_ROOT", value_name = "DIR")]
    pub telemetry_root: Option<PathBuf>,
    /// Threads serving the network: they read, check and answer requests on every listener,
    /// while each model instance runs on a thread of its own [default: half the CPUs, at least 1].
    #[arg(long, env = "INFERENCE_SERVER_NETWORK_THREADS", value_name = "N")]
    pub network_threads: Option<usize>,
    /// Open connections per listener; more are closed as they arrive [default: 512].
    #[arg(long, env = "INFERENCE_SERVER_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Seconds without a request after which a connection is closed [default: 300].
    #[arg(long, env = "INFERENCE_SERVER_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<f64>,
    /// Concurrent HTTP/2 streams per connection [default: 64].
    #[arg(
        long,
        env = "INFERENCE_SERVER_MAX_CONCURRENT_STREAMS",
        value_name = "N"
    )]
    pub max_concurrent_streams: Option<u32>,
    /// Largest header block a request may send, in bytes [default: 65536].
    #[arg(long, env = "INFERENCE_SERVER_MAX_HEADER_SIZE", value_name = "BYTES")]
    pub max_header_size: Option<u32>,
    /// Seconds a request's whole body may take to arrive [default: 30].
    #[arg(long, env = "INFERENCE_SERVER_BODY_TIMEOUT", value_name = "SECONDS")]
    pub body_timeout: Option<f64>,
    /// Seconds between HTTP/2 keep-alive pings; a peer that does not answer is dropped
    /// [default: 60].
    #[arg(
        long,
        env = "INFERENCE_SERVER_KEEPALIVE_INTERVAL",
        value_name = "SECONDS"
    )]
    pub keepalive_interval: Option<f64>,
    /// Bytes of request bodies the server receives at once, over every connection; more are
    /// refused with RESOURCE_EXHAUSTED [default: 268435456 = 256 MiB, at least max_message_size].
    #[arg(
        long,
        env = "INFERENCE_SERVER_MAX_REQUEST_MEMORY",
        value_name = "BYTES"
    )]
    pub max_request_memory: Option<usize>,
    /// TLS on every listener: the server's certificate chain (PEM); needs --tls-key. Reloaded
    /// on SIGHUP.
    #[arg(long, env = "INFERENCE_SERVER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "INFERENCE_SERVER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by these CAs (PEM) on every call but the health
    /// checks: mutual TLS. Needs --tls-cert.
    #[arg(long, env = "INFERENCE_SERVER_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require `authorization: Bearer <token>` on every call but the health checks; the file
    /// holds the tokens, one per line, at least 16 characters each. Reloaded on SIGHUP.
    #[arg(long, env = "INFERENCE_SERVER_AUTH_TOKEN_FILE", value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// A runtime's library to load instead of searching the system and Python installs, e.g.
    /// `onnxruntime=/opt/ort/lib/libonnxruntime.so.1.20.1`; repeat for several runtimes.
    #[arg(
        long = "runtime-library",
        global = true,
        env = "INFERENCE_SERVER_RUNTIME_LIBRARY",
        value_name = "RUNTIME=PATH",
        value_delimiter = ','
    )]
    pub runtime_libraries: Vec<String>,
}

/// A runtime's table in the server config file (`[onnxruntime]`, `[openvino]`, ...).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeServerSettings {
    /// The runtime's library (file, or folder holding it).
    pub library: Option<PathBuf>,
}

/// The keys a server config file may hold; every one is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    pub model_repository: Option<PathBuf>,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub http_addr: Option<HttpAddr>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub shutdown_grace: Option<f64>,
    pub allow_model_control: Option<bool>,
    pub allow_shared_memory: Option<bool>,
    pub device_health_interval: Option<f64>,
    pub max_message_size: Option<usize>,
    pub telemetry_root: Option<PathBuf>,
    pub network_threads: Option<usize>,
    pub max_connections: Option<usize>,
    pub idle_timeout: Option<f64>,
    pub max_concurrent_streams: Option<u32>,
    pub max_header_size: Option<u32>,
    pub body_timeout: Option<f64>,
    pub keepalive_interval: Option<f64>,
    pub max_request_memory: Option<usize>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub auth_token_file: Option<PathBuf>,
    /// Runtime tables, by runtime name (not a key of the file: they are its `[<runtime>]` tables).
    #[serde(skip)]
    pub runtimes: Vec<(String, RuntimeServerSettings)>,
}

/// Fully resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Repository to serve or check; `None` only when the mode needs none (`devices`).
    pub model_repository: Option<PathBuf>,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub http_addr: HttpAddr,
    pub log_format: LogFormat,
    pub log_level: String,
    pub shutdown_grace: Duration,
    pub allow_model_control: bool,
    pub allow_shared_memory: bool,
    pub device_health_interval: Duration,
    pub max_message_size: usize,
    /// Root of the sysfs/procfs tree device telemetry is read from.
    pub telemetry_root: PathBuf,
    /// Threads of the async runtime that serves the listeners.
    pub network_threads: usize,
    /// Connection and request bounds of every listener.
    pub limits: Limits,
    /// Bytes of request bodies received at once, over every listener.
    pub max_request_memory: usize,
    /// TLS and bearer-token files.
    pub access: AccessSettings,
    /// Runtime libraries named by flag, environment or config file.
    pub libraries: LibraryPaths,
}

/// Half the CPUs, at least 1: the other half is left to the model instances, which on a small
/// box compete with the network threads for the same cores.
fn default_network_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus / 2).max(1)
}

/// A settings problem, worded so the user knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read server config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("server config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
    #[error("no model repository given: pass --model-repository DIR, set INFERENCE_SERVER_MODEL_REPOSITORY, or add model_repository to the --config file")]
    MissingRepository,
}

impl SettingsFile {
    /// Reads and parses a server config file; relative paths in it are taken from its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_error = |err: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: TomlErrorAt::locate(&text, &err).to_string(),
        };
        // The runtimes' tables come out first; the rest are the server's own keys.
        let mut root = toml::de::DeTable::parse(&text).map_err(parse_error)?;
        let mut runtimes = Vec::new();
        for name in registry::library_names() {
            if let Some(table) = root.get_mut().remove(name) {
                let settings =
                    RuntimeServerSettings::deserialize(toml::de::ValueDeserializer::from(table))
                        .map_err(parse_error)?;
                runtimes.push((name.to_string(), settings));
            }
        }
        let mut file =
            SettingsFile::deserialize(toml::de::Deserializer::from(root)).map_err(parse_error)?;
        let base = path.parent().unwrap_or(Path::new("."));
        file.model_repository = file.model_repository.map(|p| base.join(p));
        file.telemetry_root = file.telemetry_root.map(|p| base.join(p));
        for path in [
            &mut file.tls_cert,
            &mut file.tls_key,
            &mut file.tls_client_ca,
            &mut file.auth_token_file,
        ] {
            *path = path.take().map(|p| base.join(p));
        }
        for (_, runtime) in &mut runtimes {
            runtime.library = runtime.library.take().map(|p| base.join(p));
        }
        file.runtimes = runtimes;
        Ok(file)
    }
}

impl SettingsArgs {
    /// Merges these arguments over the config file (if any) and the defaults. A repository is
    /// required unless `needs_repository` is false.
    pub fn resolve(&self, needs_repository: bool) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => SettingsFile::load(path)?,
            None => SettingsFile::default(),
        };
        let limits = self.limits(&file)?;
        let model_repository = self
            .check_repository
            .clone()
            .or_else(|| self.model_repository.clone())
            .or(file.model_repository);
        if needs_repository && model_repository.is_none() {
            return Err(ConfigError::MissingRepository);
        }
        let shutdown_grace = match self.shutdown_grace.or(file.shutdown_grace) {
            Some(seconds) => {
                Duration::try_from_secs_f64(seconds).map_err(|_| ConfigError::Invalid {
                    setting: "shutdown_grace",
                    message: format!("{seconds} is not a non-negative number of seconds"),
                })?
            }
            None => DEFAULT_SHUTDOWN_GRACE,
        };
        let device_health_interval =
            match self.device_health_interval.or(file.device_health_interval) {
                Some(seconds) => Duration::try_from_secs_f64(seconds)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| ConfigError::Invalid {
                        setting: "device_health_interval",
                        message: format!("{seconds} is not a positive number of seconds"),
                    })?,
                None => DEFAULT_HEALTH_INTERVAL,
            };
        let max_message_size = self
            .max_message_size
            .or(file.max_message_size)
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
        if max_message_size < 1024 {
            return Err(ConfigError::Invalid {
                setting: "max_message_size",
                message: format!(
                    "{max_message_size} bytes cannot hold a request; give at least 1024 (default 67108864)"
                ),
            });
        }
        let max_request_memory = self
            .max_request_memory
            .or(file.max_request_memory)
            .unwrap_or(DEFAULT_MAX_REQUEST_MEMORY);
        if max_request_memory < max_message_size {
            return Err(ConfigError::Invalid {
                setting: "max_request_memory",
                message: format!(
                    "{max_request_memory} bytes is less than max_message_size ({max_message_size}): \
                     a largest request could never be received"
                ),
            });
        }
        let access = AccessSettings {
            tls: match (
                self.tls_cert.clone().or(file.tls_cert),
                self.tls_key.clone().or(file.tls_key),
            ) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting: "tls_cert",
                        message: "TLS needs both --tls-cert and --tls-key".into(),
                    })
                }
            },
            client_ca: self.tls_client_ca.clone().or(file.tls_client_ca),
            token_file: self.auth_token_file.clone().or(file.auth_token_file),
        };
        let network_threads = match self.network_threads.or(file.network_threads) {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    setting: "network_threads",
                    message: "must be at least 1".into(),
                })
            }
            Some(n) => n,
            None => default_network_threads(),
        };
        Ok(Settings {
            access,
            limits,
            max_request_memory,
            network_threads,
            model_repository,
            grpc_addr: self
                .grpc_addr
                .or(file.grpc_addr)
                .unwrap_or_else(|| default_addr(DEFAULT_GRPC_ADDR)),
            metrics_addr: self
                .metrics_addr
                .or(file.metrics_addr)
                .unwrap_or_else(|| default_addr(DEFAULT_METRICS_ADDR)),
            http_addr: self
                .http_addr
                .or(file.http_addr)
                .unwrap_or(HttpAddr::On(default_addr(DEFAULT_HTTP_ADDR))),
            log_format: self
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            log_level: self
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string()),
            shutdown_grace,
            allow_model_control: self
                .allow_model_control
                .or(file.allow_model_control)
                .unwrap_or(false),
            allow_shared_memory: self
                .allow_shared_memory
                .or(file.allow_shared_memory)
                .unwrap_or(false),
            device_health_interval,
            max_message_size,
            telemetry_root: self
                .telemetry_root
                .clone()
                .or(file.telemetry_root)
                .unwrap_or_else(|| PathBuf::from("/")),
            libraries: self.libraries(file.runtimes)?,
        })
    }

    /// The connection limits, from the flags, the file and the defaults.
    fn limits(&self, file: &SettingsFile) -> Result<Limits, ConfigError> {
        let defaults = Limits::default();
        let seconds = |setting: &'static str, value: Option<f64>, default: Duration| match value {
            Some(v) => Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ConfigError::Invalid {
                    setting,
                    message: format!("{v} is not a positive number of seconds"),
                }),
            None => Ok(default),
        };
        let positive = |setting: &'static str, value: Option<u64>, default: u64| match value {
            Some(0) => Err(ConfigError::Invalid {
                setting,
                message: "must be at least 1".into(),
            }),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        Ok(Limits {
            max_connections: positive(
                "max_connections",
                self.max_connections
                    .or(file.max_connections)
                    .map(|n| n as u64),
                defaults.max_connections as u64,
            )? as usize,
            idle_timeout: seconds(
                "idle_timeout",
                self.idle_timeout.or(file.idle_timeout),
                defaults.idle_timeout,
            )?,
            max_concurrent_streams: positive(
                "max_concurrent_streams",
                self.max_concurrent_streams
                    .or(file.max_concurrent_streams)
                    .map(u64::from),
                u64::from(defaults.max_concurrent_streams),
            )? as u32,
            max_header_list_size: positive(
                "max_header_size",
                self.max_header_size.or(file.max_header_size).map(u64::from),
                u64::from(defaults.max_header_list_size),
            )? as u32,
            body_timeout: seconds(
                "body_timeout",
                self.body_timeout.or(file.body_timeout),
                defaults.body_timeout,
            )?,
            keepalive_interval: seconds(
                "keepalive_interval",
                self.keepalive_interval.or(file.keepalive_interval),
                defaults.keepalive_interval,
            )?,
            max_grpc_message: None,
        })
    }

    /// Runtime libraries: the config file's `[<runtime>] library`, then `--runtime-library`
    /// (which wins).
    fn libraries(
        &self,
        from_file: Vec<(String, RuntimeServerSettings)>,
    ) -> Result<LibraryPaths, ConfigError> {
        let mut libraries = LibraryPaths::default();
        for (name, settings) in from_file {
            if let Some(path) = settings.library {
                libraries.insert(&name, path);
            }
        }
        for entry in &self.runtime_libraries {
            let invalid = |message: String| ConfigError::Invalid {
                setting: "runtime-library",
                message,
            };
            let (name, path) = entry.split_once('=').ok_or_else(|| {
                invalid(format!(
                    "'{entry}' is not RUNTIME=PATH (e.g. onnxruntime=/opt/ort/lib)"
                ))
            })?;
            let library = library_named(name).ok_or_else(|| {
                invalid(format!(
                    "unknown library '{name}' (this build loads: {})",
                    registry::library_names().join(", ")
                ))
            })?;
            if path.trim().is_empty() {
                return Err(invalid(format!("'{entry}' has no path")));
            }
            libraries.insert(library, PathBuf::from(path.trim()));
        }
        Ok(libraries)
    }
}

/// The library `name` means: a library's own name, or a runtime (or alias) that loads one library.
fn library_named(name: &str) -> Option<&'static str> {
    let wanted = name.trim().to_ascii_lowercase();
    if let Some(library) = registry::library_names().into_iter().find(|l| *l == wanted) {
        return Some(library);
    }
    match registry::find(&wanted).ok()?.libraries() {
        [only] => Some(only),
        _ => None,
    }
}

fn default_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Where a TOML error is: the key (with its table, e.g. `dynamic_batching.max_queue_delay`) and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlErrorAt {
    pub key: Option<String>,
    pub line: Option<usize>,
    /// The parser's message on one line.
    pub message: String,
}

impl TomlErrorAt {
    /// Locates `err`, which came from parsing `text`.
    pub fn locate(text: &str, err: &toml::de::Error) -> Self {
        let message = err.message().trim().replace('\n', " ");
        let Some(span) = err.span() else {
            return TomlErrorAt {
                key: None,
                line: None,
                message,
            };
        };
        let start = span.start.min(text.len());
        let line_number = text[..start].matches('\n').count() + 1;
        let line = text.lines().nth(line_number - 1).unwrap_or("").trim();
        let key = line
            .split_once('=')
            .map(|(key, _)| key.trim())
            .unwrap_or(line)
            .trim_matches(|c| c == '[' || c == ']')
            .trim();
        let table = text[..start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
            .filter(|t| *t != key);
        let key = match table {
            _ if key.is_empty() => None,
            Some(table) => Some(format!("{table}.{key}")),
            None => Some(key.to_string()),
        };
        TomlErrorAt {
            key,
            line: Some(line_number),
            message,
        }
    }
}

impl std::fmt::Display for TomlErrorAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> SettingsArgs {
        let mut full = vec!["inference-server"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full)
            .expect("test arguments parse")
            .args
    }

    fn write_config(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("server.toml");
        std::fs::write(&path, text).expect("write test config");
        path
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let settings = parse(&["--model-repository", "/models"])
            .resolve(true)
            .expect("valid");
        assert_eq!(settings.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
        assert_eq!(settings.metrics_addr.to_string(), DEFAULT_METRICS_ADDR);
        assert_eq!(
            settings.http_addr,
            HttpAddr::On(DEFAULT_HTTP_ADDR.parse().unwrap())
        );
        let off = parse(&["--model-repository", "/m", "--http-addr", "off"])
            .resolve(true)
            .expect("valid");
        assert_eq!(off.http_addr, HttpAddr::Off);
        assert!(Cli::try_parse_from(["inference-server", "--http-addr", "8000"]).is_err());
        assert_eq!(settings.max_message_size, 64 * 1024 * 1024);
        assert!(settings.max_message_size > 64 * 224 * 224 * 3 * 4);
        assert!(!settings.allow_model_control);
        assert_eq!(settings.log_format, LogFormat::Text);
        assert_eq!(settings.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert!(settings.network_threads >= 1);
    }

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(
            dir.path(),
            "model_repository = \"repo\"\ngrpc_addr = \"0.0.0.0:9001\"\nmetrics_addr = \"0.0.0.0:9002\"\nshutdown_grace = 2.5\nallow_model_control = true\nlog_format = \"json\"\nnetwork_threads = 3\n",
        );
        let config = config.to_str().expect("utf-8 path");
        let settings = parse(&["--config", config, "--grpc-addr", "127.0.0.1:7001"])
            .resolve(true)
            .expect("valid");
        assert_eq!(settings.grpc_addr.to_string(), "127.0.0.1:7001");
        assert_eq!(settings.metrics_addr.to_string(), "0.0.0.0:9002");
        assert_eq!(settings.model_repository, Some(dir.path().join("repo")));
        assert_eq!(settings.shutdown_grace, Duration::from_millis(2500));
        assert!(settings.allow_model_control);
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.network_threads, 3);
        let off = parse(&["--config", config, "--allow-model-control", "false"])
            .resolve(true)
            .expect("valid");
        assert!(!off.allow_model_control);
    }

    #[test]
    fn a_typo_in_the_config_file_names_the_key_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(
            dir.path(),
            "grpc_addr = \"127.0.0.1:1\"\ngrpc_adr = \"x\"\n",
        );
        let err = parse(&["--config", config.to_str().expect("utf-8 path")])
            .resolve(false)
            .expect_err("typo must be refused");
        let text = err.to_string();
        assert!(text.contains("grpc_adr"), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("server.toml"), "{text}");
    }

    #[test]
    fn missing_repository_and_bad_values_are_refused() {
        assert!(matches!(
            parse(&[]).resolve(true),
            Err(ConfigError::MissingRepository)
        ));
        assert!(parse(&[]).resolve(false).is_ok());
        let err = parse(&["--model-repository", "m", "--shutdown-grace=-1"])
            .resolve(true)
            .expect_err("negative grace");
        assert!(err.to_string().contains("shutdown_grace"));
        let err = parse(&["--model-repository", "m", "--max-message-size", "10"])
            .resolve(true)
            .expect_err("tiny messages");
        assert!(err.to_string().contains("max_message_size"));
        let err = parse(&["--model-repository", "m", "--network-threads", "0"])
            .resolve(true)
            .expect_err("no network thread");
        assert!(err.to_string().contains("network_threads"), "{err}");
        assert!(Cli::try_parse_from(["inference-server", "--grpc-addr", "nope"]).is_err());
    }

    #[test]
    fn check_repository_is_its_own_mode() {
        let settings = parse(&["--check-repository", "/x"])
            .resolve(true)
            .expect("valid");
        assert_eq!(settings.model_repository, Some(PathBuf::from("/x")));
        assert!(Cli::try_parse_from([
            "inference-server",
            "--check-repository",
            "/x",
            "--model-repository",
            "/y"
        ])
        .is_err());
    }

    #[test]
    fn runtime_libraries_come_from_tables_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(
            dir.path(),
            "model_repository = \"repo\"\n[onnxruntime]\nlibrary = \"lib/libonnxruntime.so\"\n[openvino]\nlibrary = \"/opt/ov/libopenvino_c.so\"\n",
        );
        let config = config.to_str().expect("utf-8 path");
        let settings = parse(&["--config", config]).resolve(true).expect("valid");
        assert_eq!(
            settings.libraries.get("onnxruntime"),
            Some(dir.path().join("lib/libonnxruntime.so").as_path())
        );
        let settings = parse(&["--config", config, "--runtime-library", "ort=/x/libort.so"])
            .resolve(true)
            .expect("valid");
        assert_eq!(
            settings.libraries.get("onnxruntime"),
            Some(Path::new("/x/libort.so")),
            "the flag wins, aliases name their runtime"
        );
        assert_eq!(
            settings.libraries.get("openvino"),
            Some(Path::new("/opt/ov/libopenvino_c.so"))
        );
        for bad in ["tensorflow=/x", "onnxruntime", "onnxruntime="] {
            let err = parse(&["--model-repository", "m", "--runtime-library", bad])
                .resolve(true)
                .expect_err(bad);
            assert!(err.to_string().contains("runtime-library"), "{bad}: {err}");
        }
        let typo = write_config(dir.path(), "[onnxruntime]\nlibary = \"x\"\n");
        let err = parse(&["--config", typo.to_str().expect("utf-8")])
            .resolve(false)
            .expect_err("typo in a runtime table");
        let text = err.to_string();
        assert!(
            text.contains("onnxruntime.libary") && text.contains("line 2"),
            "{text}"
        );
    }

    #[test]
    fn the_example_config_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/server.toml");
        let file = SettingsFile::load(&path).expect("examples/server.toml parses");
        assert_eq!(file.max_message_size, Some(DEFAULT_MAX_MESSAGE_SIZE));
        assert_eq!(
            file.grpc_addr.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_GRPC_ADDR)
        );
    }
}
