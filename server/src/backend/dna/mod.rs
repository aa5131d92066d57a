//! The Edgecortix DNA backend (`backend = "dna"`): deployments made by the MERA compiler
//! (`<project>/build/<Target>/result/{deploy.so, deploy.json, deploy.params}` as the version
//! folder), run by MERA's TVM-based runtime (`libmeratvm.so` from the `mera-tvm-full` wheel for
//! the software targets, `libmeratvm_runtime.so` from `mera-tvm-runtime` for the DNA IP on a
//! board).
//!
//! The vendor libraries abort or crash the process when a board library or device is missing,
//! so each instance runs them in a worker process of its own (`inference-server dna-worker`,
//! [`serve`]), spoken to over a pipe ([`protocol`]). A worker that dies takes its instance out of
//! service with the reason (its exit signal and last words); the instance's health check starts
//! a new one, with a back-off, and the server's other models never notice.
//!
//! Devices: `cpu` for the software targets (Interpreter, InterpreterHw, Simulator run on the
//! host) and `dna[:N]`, the Nth board, for the IP target. Its table in a model's `config.toml`:
//! ```toml
//! [dna]
//! target = "Simulator"      # IP | Simulator | InterpreterHw | Interpreter: what it was built for
//! board = "sakura1"         # sakura1 | xilinx-u50 | intel-ia420 [default: sakura1]
//! batch = 1                 # the batch it was compiled for [default: its inputs' dimension 0]
//! outputs = ["logits"]      # the outputs' names, in order [default: output_0, output_1, ...]
//! library = "/opt/mera/libmeratvm_runtime.so"  # this model's runtime library [default: searched]
//! loader = "/opt/mera-sysroot/lib/ld-linux-x86-64.so.2"   # start the worker under this loader
//! library_path = ["/opt/mera-sysroot/lib"]                # searched first by the worker
//! ```
//! `loader` and `library_path` default to `$INFERENCE_SERVER_DNA_LOADER` and
//! `$INFERENCE_SERVER_DNA_LIBRARY_PATH` (`:`-separated), so a box sets them once for every model.
//! The runtime library is found like the others' (`[mera] library = PATH`, `MERA_TVM_LIBRARY`,
//! the system folders, a Python with the wheel).

mod graph;
mod protocol;
pub mod serve;
mod tvm;
mod worker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::devices::{DeviceReport, DeviceStatus, ProbeEnv};
use super::library::{FoundLibrary, LibraryPaths, LibrarySearch, RuntimeLibrary, Wheel};
use super::runtime::{
    ConfigTable, DeviceInfo, DeviceKind, LoadRequest, ModelLayout, ModelRuntime, Runtime,
};
use super::{Backend, BackendError, ModelSignature, TensorSpec};
use crate::tensor::Tensor;
use graph::GraphSignature;
use protocol::{FailureKind, Request, Response};
use worker::{Died, Worker, WorkerCommand, WorkerLoad};

/// The DNA [`Runtime`].
#[derive(Debug)]
pub struct Dna;

/// The library name in the server settings (`[mera] library = PATH`).
pub const MERA_LIBRARY: &str = "mera";

/// The environment variable naming the inference-server binary that runs the workers
/// [default: this program].
pub const WORKER_PROGRAM_ENV: &str = "INFERENCE_SERVER_DNA_WORKER";
/// The loader workers start under when a model's `[dna] loader` is not set.
pub const LOADER_ENV: &str = "INFERENCE_SERVER_DNA_LOADER";
/// The library folders (`:`-separated) when a model's `[dna] library_path` is not set.
pub const LIBRARY_PATH_ENV: &str = "INFERENCE_SERVER_DNA_LIBRARY_PATH";

/// MERA's full runtime (software targets and the IP), from the `mera-tvm-full` wheel.
const MERA_FULL: RuntimeLibrary = RuntimeLibrary {
    display_name: "MERA TVM runtime (full)",
    env_var: "MERA_TVM_LIBRARY",
    file_stem: "libmeratvm.so",
    wheel: Some(Wheel {
        python_module: "tvm",
        subdir: "",
    }),
    install: "`pip install mera-tvm-full==1.6.0` (Python 3.10; see the README's DNA section)",
};

/// MERA's IP-only runtime, from the `mera-tvm-runtime` wheel (the one a DNA box has).
const MERA_RUNTIME: RuntimeLibrary = RuntimeLibrary {
    display_name: "MERA TVM runtime",
    env_var: "MERA_TVM_LIBRARY",
    file_stem: "libmeratvm_runtime.so",
    wheel: Some(Wheel {
        python_module: "tvm",
        subdir: "",
    }),
    install: "`pip install mera-tvm-runtime==1.6.0` (Python 3.10), or the vendor's MERA stack",
};

/// `target`: what the deployment was compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Target {
    /// The DNA IP on a board.
    #[serde(rename = "IP")]
    Ip,
    Simulator,
    InterpreterHw,
    Interpreter,
}

/// `board`: the DNA board an IP deployment runs on (and the one the simulator models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Board {
    #[default]
    Sakura1,
    XilinxU50,
    IntelIa420,
}

impl Board {
    /// `mera_runtime_init_device`'s code.
    fn code(self) -> i64 {
        match self {
            Board::Sakura1 => 1,
            Board::XilinxU50 => 2,
            Board::IntelIa420 => 3,
        }
    }
}

/// The `[dna]` table of a model's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnaSettings {
    pub target: Target,
    #[serde(default)]
    pub board: Board,
    pub batch: Option<usize>,
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The MERA runtime library for this model, before the server's `[mera] library`.
    pub library: Option<PathBuf>,
    pub loader: Option<PathBuf>,
    #[serde(default)]
    pub library_path: Vec<PathBuf>,
}

/// The Sakura-1 PCIe device node of board `n` (what MERA's runtime opens).
fn sakura_node(n: u32) -> String {
    format!("/dev/sakura_pcie_{n}")
}

impl Runtime for Dna {
    fn name(&self) -> &'static str {
        "dna"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["mera", "edgecortix"]
    }

    fn libraries(&self) -> &'static [&'static str] {
        &[MERA_LIBRARY]
    }

    fn platform(&self) -> &'static str {
        "mera_tvm"
    }

    fn model_layouts(&self) -> &'static [ModelLayout] {
        &[ModelLayout {
            files: &["deploy.so", "deploy.json", "deploy.params"],
        }]
    }

    fn default_device(&self) -> &'static str {
        "cpu"
    }

    fn device_help(&self) -> &'static str {
        "cpu (software targets), dna[:N] (the IP on board N)"
    }

    fn parse_device(&self, name: &str) -> Result<DeviceInfo, String> {
        let lower = name.trim().to_ascii_lowercase();
        if lower == "cpu" {
            return Ok(DeviceInfo {
                name: lower,
                kind: DeviceKind::Cpu,
            });
        }
        let index = match lower.split_once(':') {
            None if lower == "dna" => 0,
            Some(("dna", n)) => n
                .parse::<u32>()
                .map_err(|_| format!("'{n}' is not a board index"))?,
            _ => return Err(format!("unknown device '{name}'")),
        };
        Ok(DeviceInfo {
            name: format!("dna:{index}"),
            kind: DeviceKind::Accelerator,
        })
    }

    fn configure(
        &self,
        table: Option<ConfigTable<'_>>,
    ) -> Result<Box<dyn ModelRuntime>, toml::de::Error> {
        let Some(table) = table else {
            return Err(serde::de::Error::custom(
                "a dna model needs a [dna] table with its target: target = \"IP\", \
                 \"Simulator\", \"InterpreterHw\" or \"Interpreter\"",
            ));
        };
        Ok(Box::new(DnaSettings::deserialize(table)?))
    }

    fn probe(&self, env: &ProbeEnv, libraries: &LibraryPaths) -> Vec<DeviceReport> {
        let report = |device: String, status| DeviceReport {
            backend: "dna",
            device,
            status,
        };
        let found = |library| LibrarySearch::standard(library, libraries.get(MERA_LIBRARY)).find();
        let full = found(MERA_FULL);
        let mut out = vec![report(
            "cpu".into(),
            match &full {
                Ok(lib) => DeviceStatus::Available {
                    library_version: lib.version.clone().unwrap_or_else(|| "unknown".into()),
                    detail: format!(
                        "MERA Interpreter, InterpreterHw and Simulator, {} ({})",
                        lib.path.display(),
                        lib.source
                    ),
                },
                Err(e) => DeviceStatus::Unavailable {
                    reason: e.to_string(),
                },
            },
        )];
        let boards = env.dev_nodes("sakura_pcie_");
        if boards.is_empty() {
            out.push(report(
                "dna:0".into(),
                DeviceStatus::Unavailable {
                    reason: "no DNA board found (no /dev/sakura_pcie_*)".into(),
                },
            ));
            return out;
        }
        // The IP runtime when installed, else the full one (searched once for every board).
        let ip_runtime = found(MERA_RUNTIME).or(full);
        for node in boards {
            let index = node.trim_start_matches("sakura_pcie_").to_string();
            let status = match &ip_runtime {
                Ok(lib) => DeviceStatus::Available {
                    library_version: lib.version.clone().unwrap_or_else(|| "unknown".into()),
                    detail: format!("Sakura-1 at /dev/{node}, {}", lib.path.display()),
                },
                Err(e) => DeviceStatus::Unavailable {
                    reason: format!("Sakura-1 at /dev/{node}, but {e}"),
                },
            };
            out.push(report(format!("dna:{index}"), status));
        }
        out
    }
}

impl ModelRuntime for DnaSettings {
    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Backend>, BackendError> {
        Ok(Box::new(DnaBackend::load(self, request)?))
    }
}

/// The first wait before a dead worker is started again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One loaded DNA model instance: its worker process (when one runs) and how to start another.
pub struct DnaBackend {
    worker: Option<Worker>,
    command: WorkerCommand,
    load: WorkerLoad,
    graph: GraphSignature,
    signature: ModelSignature,
    device: String,
    /// When the next start may be tried, and the wait after that.
    next_start: Instant,
    backoff: Duration,
    /// Why the last worker is gone.
    last_death: String,
    /// The runtime's metrics of the last run (`get_runtime_metrics`).
    runtime_metrics: Vec<(String, f64)>,
}

impl DnaBackend {
    fn load(settings: &DnaSettings, request: &LoadRequest<'_>) -> Result<Self, BackendError> {
        let dir = request.model.dir.clone();
        let device = request.device.name.clone();
        let invalid = |reason: String| BackendError::InvalidModel {
            path: dir.display().to_string(),
            reason,
        };
        if let Some(index) = device.strip_prefix("dna:") {
            let index: u32 = index.parse().unwrap_or(0);
            if settings.board == Board::Sakura1 && !Path::new(&sakura_node(index)).exists() {
                return Err(BackendError::DeviceUnavailable {
                    device,
                    reason: format!(
                        "no Sakura-1 board {index}: {} does not exist (is the Sakura-1 driver \
                         loaded?)",
                        sakura_node(index)
                    ),
                });
            }
        }
        match (settings.target, request.device.kind) {
            (Target::Ip, DeviceKind::Cpu) => {
                return Err(invalid(
                    "target IP runs on a DNA board: device = \"dna:N\" (a software target runs \
                     on device = \"cpu\")"
                        .into(),
                ))
            }
            (Target::Ip, _) | (_, DeviceKind::Cpu) => {}
            (target, _) => {
                return Err(invalid(format!(
                    "target {target:?} runs on the host: device = \"cpu\" (device = \"dna:N\" \
                     needs a deployment built for target IP)"
                )))
            }
        }
        let graph = graph::read(&dir, &settings.outputs).map_err(invalid)?;
        let to_spec = |t: &graph::GraphTensor| TensorSpec {
            name: t.name.clone(),
            datatype: t.datatype,
            dims: t.dims.clone(),
        };
        let signature = ModelSignature::from_full_dims(
            graph.inputs.iter().map(to_spec).collect(),
            graph.outputs.iter().map(to_spec).collect(),
            request.max_batch_size,
        )
        .map_err(invalid)?;
        if let (Some(batch), super::BatchSupport::Fixed(compiled)) =
            (settings.batch, signature.batch)
        {
            if batch != compiled {
                return Err(invalid(format!(
                    "dna.batch = {batch}, but the deployment was compiled for batch {compiled}"
                )));
            }
        }
        let library_kind = match settings.target {
            Target::Ip => MERA_RUNTIME,
            _ => MERA_FULL,
        };
        let explicit = settings
            .library
            .as_deref()
            .or_else(|| request.libraries.get(MERA_LIBRARY));
        let library: FoundLibrary = LibrarySearch::standard(library_kind, explicit)
            .find()
            .map_err(|e| BackendError::LibraryUnavailable(e.to_string()))?;
        let program = match std::env::var_os(WORKER_PROGRAM_ENV).filter(|p| !p.is_empty()) {
            Some(program) => PathBuf::from(program),
            None => std::env::current_exe().map_err(|e| {
                BackendError::Internal(format!("cannot tell this program's path: {e}"))
            })?,
        };
        let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let loader = settings
            .loader
            .clone()
            .or_else(|| env(LOADER_ENV).map(PathBuf::from));
        let library_path = if settings.library_path.is_empty() {
            env(LIBRARY_PATH_ENV)
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default()
        } else {
            settings.library_path.clone()
        };
        let command = WorkerCommand {
            program,
            loader,
            library_path,
        };
        let load = WorkerLoad {
            dir: dir.clone(),
            library: library.path,
            device_code: settings.board.code(),
        };
        let worker = Worker::start(&command, &load, &device)?;
        Ok(DnaBackend {
            worker: Some(worker),
            command,
            load,
            graph,
            signature,
            device,
            next_start: Instant::now(),
            backoff: FIRST_BACKOFF,
            last_death: String::new(),
            runtime_metrics: Vec::new(),
        })
    }

    /// The running worker, or a new one when the back-off allows; the error says why not.
    fn worker(&mut self) -> Result<&mut Worker, BackendError> {
        let worker = match self.worker.take() {
            Some(worker) => worker,
            None => {
                let now = Instant::now();
                if now < self.next_start {
                    return Err(self.unavailable(format!(
                        "{}; a new worker starts in {:.1} s",
                        self.last_death,
                        (self.next_start - now).as_secs_f64()
                    )));
                }
                match Worker::start(&self.command, &self.load, &self.device) {
                    Ok(worker) => {
                        tracing::info!(device = %self.device, "DNA worker started again");
                        worker
                    }
                    Err(e) => {
                        let reason = match e {
                            BackendError::DeviceUnavailable { reason, .. } => reason,
                            other => other.to_string(),
                        };
                        self.schedule_restart(reason);
                        return Err(self.unavailable(self.last_death.clone()));
                    }
                }
            }
        };
        Ok(self.worker.insert(worker))
    }

    /// The worker is gone for `reason`: the next start waits out the back-off.
    fn schedule_restart(&mut self, reason: String) {
        self.worker = None;
        self.last_death = reason;
        self.next_start = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn unavailable(&self, reason: String) -> BackendError {
        BackendError::DeviceUnavailable {
            device: self.device.clone(),
            reason,
        }
    }

    /// Checks the inputs against the deployment's (full) shapes and types.
    fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), BackendError> {
        if inputs.len() != self.graph.inputs.len() {
            return Err(BackendError::InvalidInput(format!(
                "the model takes {} input(s), got {}",
                self.graph.inputs.len(),
                inputs.len()
            )));
        }
        for (tensor, spec) in inputs.iter().zip(&self.graph.inputs) {
            if tensor.datatype != spec.datatype {
                return Err(BackendError::InvalidInput(format!(
                    "input '{}' is {}, got {}",
                    spec.name, spec.datatype, tensor.datatype
                )));
            }
            if tensor.shape != spec.dims {
                return Err(BackendError::InvalidInput(format!(
                    "input '{}' needs shape {:?} (the deployment's), got {:?}",
                    spec.name, spec.dims, tensor.shape
                )));
            }
        }
        Ok(())
    }
}

/// `key=value,...|` per DNA subgraph, as numbers; keys of later subgraphs get `_<n>`.
fn parse_runtime_metrics(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (i, group) in text.split('|').filter(|g| !g.is_empty()).enumerate() {
        for pair in group.split(',') {
            if let Some((key, value)) = pair.split_once('=') {
                if let Ok(value) = value.trim().parse::<f64>() {
                    let key = key.trim();
                    let key = if i == 0 {
                        key.to_string()
                    } else {
                        format!("{key}_{i}")
                    };
                    out.push((key, value));
                }
            }
        }
    }
    out
}

impl Backend for DnaBackend {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn device(&self) -> &str {
        &self.device
    }

    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        self.check_inputs(&inputs)?;
        let blobs: Vec<&[u8]> = inputs.iter().map(|t| t.data.as_slice()).collect();
        let answer = self.worker()?.call(&Request::Infer, &blobs);
        match answer {
            Ok((Response::Outputs { runtime_metrics }, data)) => {
                self.backoff = FIRST_BACKOFF;
                self.runtime_metrics = parse_runtime_metrics(&runtime_metrics);
                Ok(data
                    .into_iter()
                    .zip(&self.graph.outputs)
                    .map(|(data, spec)| Tensor {
                        name: spec.name.clone(),
                        datatype: spec.datatype,
                        shape: spec.dims.clone(),
                        data,
                    })
                    .collect())
            }
            Ok((Response::Failed { kind, message }, _)) => Err(match kind {
                FailureKind::Device => self.unavailable(message),
                _ => BackendError::Internal(message),
            }),
            Ok((other, _)) => Err(BackendError::Internal(format!(
                "the DNA worker answered {other:?} to a run"
            ))),
            Err(Died(reason)) => {
                let reason = format!("the DNA worker process died: {reason}");
                self.schedule_restart(reason.clone());
                Err(self.unavailable(reason))
            }
        }
    }

    fn health(&mut self) -> Result<(), BackendError> {
        if let Some(worker) = &mut self.worker {
            if worker.alive() {
                return Ok(());
            }
            self.schedule_restart("the DNA worker process is gone".into());
        }
        self.worker().map(|_| ())
    }

    fn runtime_metrics(&self) -> &[(String, f64)] {
        &self.runtime_metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_the_cpu_and_numbered_boards() {
        assert_eq!(Dna.parse_device("CPU").unwrap().kind, DeviceKind::Cpu);
        assert_eq!(Dna.parse_device("dna").unwrap().name, "dna:0");
        assert_eq!(Dna.parse_device("DNA:2").unwrap().name, "dna:2");
        assert!(Dna
            .parse_device("dna:x")
            .unwrap_err()
            .contains("board index"));
        assert!(Dna.parse_device("gpu").is_err());
    }

    #[test]
    fn runtime_metrics_are_numbers_by_key() {
        assert_eq!(
            parse_runtime_metrics("freq_mhz=800,sim_time_us=1,total_sim_cycles=1068|"),
            [
                ("freq_mhz".to_string(), 800.0),
                ("sim_time_us".to_string(), 1.0),
                ("total_sim_cycles".to_string(), 1068.0)
            ]
        );
        assert_eq!(
            parse_runtime_metrics("a=1|a=2|"),
            [("a".to_string(), 1.0), ("a_1".to_string(), 2.0)]
        );
        assert!(parse_runtime_metrics("").is_empty());
    }

    #[test]
    fn the_table_needs_a_known_target() {
        let parse = |text: &str| -> Result<DnaSettings, String> {
            toml::from_str(text).map_err(|e| e.to_string())
        };
        let settings = parse("target = \"Simulator\"\nbatch = 2\noutputs = [\"y\"]").unwrap();
        assert_eq!(settings.target, Target::Simulator);
        assert_eq!(settings.board, Board::Sakura1);
        assert_eq!(
            parse("target = \"IP\"\nboard = \"xilinx-u50\"")
                .unwrap()
                .board
                .code(),
            2
        );
        assert!(parse("target = \"GPU\"").is_err());
        assert!(parse("target = \"IP\"\nthreads = 2")
            .unwrap_err()
            .contains("threads"));
    }
}
