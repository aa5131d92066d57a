//! The TFLite backend (`backend = "tflite"`): `model.tflite` on the CPU or on Coral Edge TPUs,
//! with two runtime flavours, both loaded at run time:
//!
//! - `litert`: LiteRT's `libLiteRt.so` (the `ai-edge-litert` wheel), CPU with XNNPACK — the CPU
//!   path, the default on `device = "cpu"`;
//! - `classic`: the TensorFlow Lite C API (`libtensorflowlite_c.so`) with libedgetpu as its
//!   external delegate — the Edge TPU path, the only one on `device = "edgetpu…"` (it also runs
//!   CPU models).
//!
//! Devices: `cpu`, and each Edge TPU on its own: `edgetpu` (the first), `edgetpu:N`,
//! `edgetpu:usb[:N]`, `edgetpu:pci[:N]`. Its table in a model's `config.toml`, every key optional:
//! ```toml
//! [tflite]
//! runtime = "litert"            # litert | classic [default: litert on the CPU, classic on an Edge TPU]
//! threads = 2                   # CPU threads per instance [default: the runtime's]
//! edgetpu_performance = "max"   # low | medium | high | max: libedgetpu's clock setting
//! ```
//! Edge TPU models have static shapes and batch 1: the backend declares the batch the model has
//! and the batcher splits larger ones. Quantized tensors are served as they are; their scale and
//! zero point go into ModelConfig's parameters. A model compiled for the Edge TPU (it contains
//! `edgetpu-custom-op`) never falls back to the CPU: without a working Edge TPU it fails to load.

mod classic;
mod edgetpu;
mod environment;
mod litert;

use std::path::Path;
use std::sync::Arc;

use inference_proto::DataType;
use serde::Deserialize;

use super::devices::{DeviceReport, DeviceStatus, ProbeEnv, EDGETPU_USB_IDS};
use super::library::LibraryPaths;
use super::runtime::{
    ConfigTable, DeviceInfo, DeviceKind, LoadRequest, ModelLayout, ModelRuntime, Runtime,
};
use super::{Backend, BackendError, ModelSignature, Quantization, TensorSpec};
use crate::tensor::Tensor;
use edgetpu::{EdgeTpuLibrary, EdgeTpuSpec};

/// The TFLite [`Runtime`].
#[derive(Debug)]
pub struct Tflite;

/// The names of the backend's libraries in the server settings.
pub const LITERT_LIBRARY: &str = "litert";
pub const TFLITE_LIBRARY: &str = "tflite";
pub const EDGETPU_LIBRARY: &str = "edgetpu";

/// LiteRT's library, found and loaded for this process (for tools that report which one runs).
pub fn litert_library(
    explicit: Option<&Path>,
) -> Result<crate::backend::library::FoundLibrary, BackendError> {
    environment::litert(explicit).map(|lib| lib.found.clone())
}

/// The custom op the Edge TPU compiler puts in a compiled model.
const EDGETPU_CUSTOM_OP: &[u8] = b"edgetpu-custom-op";

/// `runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    Litert,
    Classic,
}

/// `edgetpu_performance`: libedgetpu's `Performance` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Performance {
    Low,
    Medium,
    High,
    Max,
}

impl Performance {
    fn option_value(self) -> &'static str {
        match self {
            Performance::Low => "Low",
            Performance::Medium => "Medium",
            Performance::High => "High",
            Performance::Max => "Max",
        }
    }
}

/// The `[tflite]` table of a model's config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TfliteSettings {
    pub runtime: Option<Flavour>,
    pub threads: Option<u32>,
    pub edgetpu_performance: Option<Performance>,
}

/// Name, type, full dims, quantization and byte size of one tensor, as a runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub datatype: DataType,
    pub dims: Vec<i64>,
    pub quantization: Option<Quantization>,
    pub byte_size: usize,
}

/// The protocol datatype of a TensorFlow Lite type code (`TfLiteType`, which LiteRT's element
/// types share for every type the server carries); `None` for the others (strings, resources).
pub fn datatype_of(code: u32) -> Option<DataType> {
    Some(match code {
        1 => DataType::Fp32,
        2 => DataType::Int32,
        3 => DataType::Uint8,
        4 => DataType::Int64,
        6 => DataType::Bool,
        7 => DataType::Int16,
        9 => DataType::Int8,
        10 => DataType::Fp16,
        11 => DataType::Fp64,
        13 => DataType::Uint64,
        16 => DataType::Uint32,
        17 => DataType::Uint16,
        19 => DataType::Bf16,
        _ => return None,
    })
}

/// Whether a `.tflite` file was compiled for the Edge TPU.
fn is_edgetpu_model(path: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    Ok(bytes
        .windows(EDGETPU_CUSTOM_OP.len())
        .any(|w| w == EDGETPU_CUSTOM_OP))
}

/// Where an instance runs: the CPU, or one Edge TPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Cpu,
    EdgeTpu(EdgeTpuSpec),
}

fn target_of(device: &str) -> Target {
    EdgeTpuSpec::parse(device).map_or(Target::Cpu, Target::EdgeTpu)
}

/// The runtime that runs one instance.
enum Engine {
    Litert(litert::CompiledModel),
    Classic(classic::Interpreter),
}

impl Engine {
    fn tensors(&self) -> Result<(Vec<TensorInfo>, Vec<TensorInfo>), String> {
        match self {
            Engine::Litert(m) => Ok(m.tensors()),
            Engine::Classic(i) => i.tensors(),
        }
    }

    fn set_input(&mut self, index: usize, data: &[u8]) -> Result<(), String> {
        match self {
            Engine::Litert(m) => m.set_input(index, data),
            Engine::Classic(i) => i.set_input(index, data),
        }
    }

    fn run(&mut self) -> Result<(), String> {
        match self {
            Engine::Litert(m) => m.run(),
            Engine::Classic(i) => i.invoke(),
        }
    }

    fn output_bytes(&self, index: usize, size: usize) -> Result<Vec<u8>, String> {
        match self {
            Engine::Litert(m) => m.output_bytes(index),
            Engine::Classic(i) => i.output_bytes(index, size),
        }
    }
}

/// The Edge TPU an instance runs on.
struct EdgeTpuBinding {
    library: Arc<EdgeTpuLibrary>,
    spec: EdgeTpuSpec,
    /// Its path when the instance was loaded: the health check looks for it.
    path: String,
    performance: Option<Performance>,
}

impl EdgeTpuBinding {
    /// Whether the device is still there.
    fn present(&self) -> bool {
        self.library.devices().iter().any(|d| d.path == self.path)
    }

    fn delegate(&self) -> Result<edgetpu::EdgeTpuDelegate, String> {
        let mut options = vec![("device", self.spec.plugin_option())];
        if let Some(p) = self.performance {
            options.push(("Performance", p.option_value().to_string()));
        }
        self.library.create_delegate(&options)
    }
}

/// One loaded TFLite model instance.
pub struct TfliteBackend {
    engine: Engine,
    signature: ModelSignature,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    device: String,
    /// What a rebuild needs after the Edge TPU came back.
    model: std::path::PathBuf,
    threads: Option<u32>,
    classic_library: Option<Arc<classic::ClassicLibrary>>,
    edgetpu: Option<EdgeTpuBinding>,
    /// The device failed a run: the interpreter is rebuilt once it is back.
    needs_rebuild: bool,
}

impl TfliteBackend {
    fn load(settings: &TfliteSettings, request: &LoadRequest<'_>) -> Result<Self, BackendError> {
        let model = request.model.model.clone();
        let device = request.device.name.clone();
        let invalid = |reason: String| BackendError::InvalidModel {
            path: model.display().to_string(),
            reason,
        };
        let compiled_for_edgetpu = is_edgetpu_model(&model).map_err(invalid)?;
        let target = target_of(&device);
        let flavour =
            match (target, settings.runtime) {
                (Target::EdgeTpu(_), Some(Flavour::Litert)) => return Err(invalid(
                    "tflite.runtime = \"litert\" cannot drive an Edge TPU (LiteRT cannot attach \
                     libedgetpu); use runtime = \"classic\" or leave it out"
                        .into(),
                )),
                (Target::EdgeTpu(_), _) => Flavour::Classic,
                (Target::Cpu, chosen) => chosen.unwrap_or(Flavour::Litert),
            };
        if compiled_for_edgetpu && target == Target::Cpu {
            return Err(invalid(
                "it was compiled for the Edge TPU (it contains edgetpu-custom-op), which never \
                 falls back to the CPU: serve it on device = \"edgetpu\", or give the CPU the \
                 model before edgetpu_compiler"
                    .into(),
            ));
        }
        let libraries = request.libraries;
        let (classic_library, edgetpu) = match (flavour, target) {
            (Flavour::Litert, _) => (None, None),
            (Flavour::Classic, Target::Cpu) => (
                Some(environment::classic(libraries.get(TFLITE_LIBRARY))?),
                None,
            ),
            (Flavour::Classic, Target::EdgeTpu(spec)) => {
                let classic = environment::classic(libraries.get(TFLITE_LIBRARY))?;
                let library = environment::edgetpu(libraries.get(EDGETPU_LIBRARY))?;
                edgetpu::check_pairing(&library.version, &classic.version)
                    .map_err(BackendError::LibraryUnavailable)?;
                let devices = library.devices();
                let found = spec
                    .pick(&devices)
                    .ok_or_else(|| BackendError::DeviceUnavailable {
                        device: device.clone(),
                        reason: format!(
                            "libedgetpu sees {} Edge TPU(s) ({}); {} is not among them",
                            devices.len(),
                            devices
                                .iter()
                                .map(|d| d.path.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            spec.canonical()
                        ),
                    })?;
                let binding = EdgeTpuBinding {
                    path: found.path.clone(),
                    library,
                    spec,
                    performance: settings.edgetpu_performance,
                };
                (Some(classic), Some(binding))
            }
        };
        let engine = match &classic_library {
            None => {
                let lib = environment::litert(libraries.get(LITERT_LIBRARY))?;
                Engine::Litert(
                    litert::CompiledModel::new(&lib, &model, settings.threads).map_err(invalid)?,
                )
            }
            Some(lib) => Engine::Classic(build_interpreter(
                lib,
                &model,
                settings.threads,
                edgetpu.as_ref(),
                &device,
            )?),
        };
        let (inputs, outputs) = engine.tensors().map_err(invalid)?;
        let spec = |t: &TensorInfo| TensorSpec {
            name: t.name.clone(),
            datatype: t.datatype,
            dims: t.dims.clone(),
        };
        let mut signature = ModelSignature::from_full_dims(
            inputs.iter().map(spec).collect(),
            outputs.iter().map(spec).collect(),
            request.max_batch_size,
        )
        .map_err(invalid)?;
        signature.quantization = inputs
            .iter()
            .chain(&outputs)
            .filter_map(|t| Some((t.name.clone(), t.quantization?)))
            .collect();
        Ok(TfliteBackend {
            engine,
            signature,
            inputs,
            outputs,
            device,
            model,
            threads: settings.threads,
            classic_library,
            edgetpu,
            needs_rebuild: false,
        })
    }

    /// A device error: what went wrong, with the device named.
    fn device_error(&self, reason: String) -> BackendError {
        BackendError::DeviceUnavailable {
            device: self.device.clone(),
            reason,
        }
    }
}

/// A classic interpreter, with the Edge TPU delegate when `edgetpu` is given.
fn build_interpreter(
    lib: &Arc<classic::ClassicLibrary>,
    model: &Path,
    threads: Option<u32>,
    edgetpu: Option<&EdgeTpuBinding>,
    device: &str,
) -> Result<classic::Interpreter, BackendError> {
    let delegate = match edgetpu {
        Some(binding) => {
            Some(
                binding
                    .delegate()
                    .map_err(|reason| BackendError::DeviceUnavailable {
                        device: device.to_string(),
                        reason,
                    })?,
            )
        }
        None => None,
    };
    classic::Interpreter::new(lib, model, threads, delegate).map_err(|reason| {
        BackendError::InvalidModel {
            path: model.display().to_string(),
            reason,
        }
    })
}

impl Backend for TfliteBackend {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn device(&self) -> &str {
        &self.device
    }

    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        if inputs.len() != self.inputs.len() {
            return Err(BackendError::InvalidInput(format!(
                "the model takes {} input(s), got {}",
                self.inputs.len(),
                inputs.len()
            )));
        }
        for (i, (tensor, info)) in inputs.iter().zip(&self.inputs).enumerate() {
            if tensor.datatype != info.datatype {
                return Err(BackendError::InvalidInput(format!(
                    "input '{}' is {}, got {}",
                    info.name, info.datatype, tensor.datatype
                )));
            }
            if tensor.data.len() != info.byte_size {
                return Err(BackendError::InvalidInput(format!(
                    "input '{}' needs shape {:?} ({} bytes), got shape {:?} ({} bytes)",
                    info.name,
                    info.dims,
                    info.byte_size,
                    tensor.shape,
                    tensor.data.len()
                )));
            }
            self.engine
                .set_input(i, &tensor.data)
                .map_err(BackendError::Internal)?;
        }
        if let Err(reason) = self.engine.run() {
            return Err(match &self.edgetpu {
                Some(binding) => {
                    self.needs_rebuild = true;
                    let state = if binding.present() {
                        "failed"
                    } else {
                        "is gone"
                    };
                    self.device_error(format!(
                        "the Edge TPU at {} {state}: {reason}",
                        binding.path
                    ))
                }
                None => BackendError::Internal(reason),
            });
        }
        self.outputs
            .iter()
            .enumerate()
            .map(|(i, info)| {
                Ok(Tensor {
                    name: info.name.clone(),
                    datatype: info.datatype,
                    shape: info.dims.clone(),
                    data: self
                        .engine
                        .output_bytes(i, info.byte_size)
                        .map_err(BackendError::Internal)?,
                })
            })
            .collect()
    }

    fn health(&mut self) -> Result<(), BackendError> {
        let Some(binding) = &self.edgetpu else {
            return Ok(());
        };
        if !binding.present() {
            // Its device context died with it: a stick plugged back in needs a new one.
            self.needs_rebuild = true;
            return Err(self.device_error(format!(
                "the Edge TPU at {} is gone (libedgetpu no longer lists it)",
                binding.path
            )));
        }
        if self.needs_rebuild {
            // A device that failed or was replugged needs a fresh delegate and interpreter.
            let lib = self
                .classic_library
                .as_ref()
                .ok_or_else(|| BackendError::Internal("no TensorFlow Lite library".into()))?;
            let interpreter =
                build_interpreter(lib, &self.model, self.threads, Some(binding), &self.device)?;
            self.engine = Engine::Classic(interpreter);
            self.needs_rebuild = false;
            tracing::info!(device = %self.device, path = %binding.path, "Edge TPU back: interpreter rebuilt");
        }
        Ok(())
    }
}

impl ModelRuntime for TfliteSettings {
    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Backend>, BackendError> {
        TfliteBackend::load(self, request).map(|b| Box::new(b) as Box<dyn Backend>)
    }
}

const LAYOUTS: &[ModelLayout] = &[ModelLayout {
    files: &["model.tflite"],
}];

impl Runtime for Tflite {
    fn name(&self) -> &'static str {
        "tflite"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["tensorflowlite", "litert"]
    }

    fn libraries(&self) -> &'static [&'static str] {
        &[LITERT_LIBRARY, TFLITE_LIBRARY, EDGETPU_LIBRARY]
    }

    fn platform(&self) -> &'static str {
        "tflite"
    }

    fn model_layouts(&self) -> &'static [ModelLayout] {
        LAYOUTS
    }

    fn default_device(&self) -> &'static str {
        "cpu"
    }

    fn device_help(&self) -> &'static str {
        "cpu, edgetpu, edgetpu:N, edgetpu:usb[:N], edgetpu:pci[:N]"
    }

    fn parse_device(&self, name: &str) -> Result<DeviceInfo, String> {
        if name.trim().eq_ignore_ascii_case("cpu") {
            return Ok(DeviceInfo {
                name: "cpu".into(),
                kind: DeviceKind::Cpu,
            });
        }
        let spec = EdgeTpuSpec::parse(name)
            .ok_or_else(|| format!("'{name}' is not a TFLite device ({})", self.device_help()))?;
        Ok(DeviceInfo {
            name: spec.canonical(),
            kind: DeviceKind::Accelerator,
        })
    }

    fn configure(
        &self,
        table: Option<ConfigTable<'_>>,
    ) -> Result<Box<dyn ModelRuntime>, toml::de::Error> {
        let settings = match table {
            Some(table) => TfliteSettings::deserialize(table)?,
            None => TfliteSettings::default(),
        };
        if settings.threads == Some(0) {
            return Err(serde::de::Error::custom(
                "tflite.threads must be at least 1",
            ));
        }
        Ok(Box::new(settings))
    }

    fn probe(&self, env: &ProbeEnv, libraries: &LibraryPaths) -> Vec<DeviceReport> {
        let report = |device: String, status| DeviceReport {
            backend: "tflite",
            device,
            status,
        };
        let mut out = Vec::new();
        out.push(report(
            "cpu".into(),
            match environment::litert(libraries.get(LITERT_LIBRARY)) {
                Ok(lib) => DeviceStatus::Available {
                    library_version: lib
                        .found
                        .version
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                    detail: format!(
                        "LiteRT, {} ({})",
                        lib.found.path.display(),
                        lib.found.source
                    ),
                },
                Err(e) => DeviceStatus::Unavailable {
                    reason: e.to_string(),
                },
            },
        ));
        let classic = environment::classic(libraries.get(TFLITE_LIBRARY));
        if let Ok(lib) = &classic {
            out.push(report(
                "cpu".into(),
                DeviceStatus::Available {
                    library_version: lib.version.clone(),
                    detail: format!(
                        "classic C API, {} ({})",
                        lib.found.path.display(),
                        lib.found.source
                    ),
                },
            ));
        }
        out.extend(
            probe_edgetpus(
                env,
                libraries,
                classic.as_ref().map_err(ToString::to_string),
            )
            .into_iter()
            .map(|(device, status)| report(device, status)),
        );
        out
    }
}

/// The Edge TPUs: each one libedgetpu lists, or why there is none to use.
fn probe_edgetpus(
    env: &ProbeEnv,
    libraries: &LibraryPaths,
    classic: Result<&Arc<classic::ClassicLibrary>, String>,
) -> Vec<(String, DeviceStatus)> {
    let hardware = edgetpu_hardware(env);
    let unavailable =
        |reason: String| vec![("edgetpu".to_string(), DeviceStatus::Unavailable { reason })];
    let library = match environment::edgetpu(libraries.get(EDGETPU_LIBRARY)) {
        Ok(library) => library,
        Err(e) => {
            return unavailable(match hardware {
                Some(hw) => format!("Edge TPU present ({hw}) but {e}"),
                None => format!(
                    "no Coral Edge TPU found (no /dev/apex_*, no USB device {}) and {e}",
                    EDGETPU_USB_IDS
                        .map(|(v, p)| format!("{v}:{p}"))
                        .join(" or ")
                ),
            })
        }
    };
    let devices = library.devices();
    if devices.is_empty() {
        return unavailable(match hardware {
            Some(hw) => format!(
                "libedgetpu ({}) lists no Edge TPU although {hw} is present: check the udev \
                 rules (deploy/udev) and that the server's user may open it",
                library.version
            ),
            None => format!("libedgetpu ({}) lists no Edge TPU", library.version),
        });
    }
    let usable = classic.and_then(|lib| {
        edgetpu::check_pairing(&library.version, &lib.version).map(|()| lib.version.clone())
    });
    let mut counts = [0usize; 2];
    devices
        .iter()
        .map(|d| {
            let n = &mut counts[d.bus as usize];
            let spec = EdgeTpuSpec {
                bus: Some(d.bus),
                index: *n,
            };
            *n += 1;
            let status = match &usable {
                Ok(tflite_version) => DeviceStatus::Available {
                    library_version: library.version.clone(),
                    detail: format!(
                        "{} with TensorFlow Lite {tflite_version}; {}",
                        d.path,
                        library.found.path.display()
                    ),
                },
                Err(why) => DeviceStatus::Unavailable {
                    reason: format!("{} is present, but {why}", d.path),
                },
            };
            (spec.canonical(), status)
        })
        .collect()
}

/// What sysfs shows of Coral hardware, whatever libedgetpu says.
fn edgetpu_hardware(env: &ProbeEnv) -> Option<String> {
    if let Some(node) = env.dev_nodes("apex_").first() {
        return Some(format!("PCIe/M.2 /dev/{node}"));
    }
    let usb = env.usb_ids();
    EDGETPU_USB_IDS
        .iter()
        .find(|(v, p)| usb.iter().any(|(uv, up)| uv == v && up == p))
        .map(|(v, p)| format!("USB {v}:{p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(text: &str) -> Result<Box<dyn ModelRuntime>, toml::de::Error> {
        let table = toml::de::DeTable::parse(text).unwrap();
        let value = table.into_inner().remove("tflite");
        Tflite.configure(value.map(ConfigTable::from))
    }

    #[test]
    fn devices_are_the_cpu_and_each_edge_tpu() {
        assert_eq!(Tflite.parse_device("CPU").unwrap().name, "cpu");
        let tpu = Tflite.parse_device("edgetpu:usb").unwrap();
        assert_eq!(
            (tpu.name.as_str(), tpu.kind),
            ("edgetpu:usb:0", DeviceKind::Accelerator)
        );
        assert_eq!(Tflite.parse_device("edgetpu").unwrap().name, "edgetpu:0");
        let err = Tflite.parse_device("gpu").unwrap_err();
        assert!(err.contains("edgetpu:usb[:N]"), "{err}");
        assert_eq!(target_of("cpu"), Target::Cpu);
        assert!(matches!(target_of("edgetpu:pci:0"), Target::EdgeTpu(_)));
    }

    #[test]
    fn the_table_is_checked_key_by_key() {
        assert!(configure("").is_ok());
        assert!(configure(
            "[tflite]\nruntime = \"classic\"\nthreads = 2\nedgetpu_performance = \"max\"\n"
        )
        .is_ok());
        for (text, needle) in [
            (
                "[tflite]\nruntime = \"tensorrt\"\n",
                "unknown variant `tensorrt`",
            ),
            ("[tflite]\nthreads = 0\n", "threads must be at least 1"),
            (
                "[tflite]\nperformance = \"max\"\n",
                "unknown field `performance`",
            ),
            (
                "[tflite]\nedgetpu_performance = \"turbo\"\n",
                "unknown variant `turbo`",
            ),
        ] {
            let err = configure(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn type_codes_map_to_protocol_types() {
        assert_eq!(datatype_of(1), Some(DataType::Fp32));
        assert_eq!(datatype_of(3), Some(DataType::Uint8));
        assert_eq!(datatype_of(9), Some(DataType::Int8));
        assert_eq!(datatype_of(5), None, "strings are not carried");
        assert_eq!(datatype_of(14), None);
    }

    #[test]
    fn edge_tpu_models_are_recognised_by_their_custom_op() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.tflite");
        let compiled = dir.path().join("b.tflite");
        std::fs::write(&plain, b"TFL3 ops CONV_2D SOFTMAX").unwrap();
        std::fs::write(&compiled, b"TFL3 ops \x00edgetpu-custom-op\x00").unwrap();
        assert!(!is_edgetpu_model(&plain).unwrap());
        assert!(is_edgetpu_model(&compiled).unwrap());
        assert!(is_edgetpu_model(&dir.path().join("missing.tflite")).is_err());
    }
}
