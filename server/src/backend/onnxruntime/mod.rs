//! The ONNX Runtime backend (`backend = "onnxruntime"`, alias `ort`): `model.onnx` on the CPU, or
//! on an NVIDIA GPU through the CUDA (`cuda:N`) or TensorRT (`tensorrt:N`) execution provider.
//!
//! Its table in a model's `config.toml`:
//! ```toml
//! [onnxruntime]
//! intra_op_threads = 2        # threads inside one operator, per instance [default: cores / instances]
//! intra_op_spinning = false   # idle operator threads spin-wait [default: false]
//! cpu_arena = true            # keep freed tensor memory for the next run [default: true]
//! # On cuda:N and tensorrt:N only:
//! gpu_mem_limit_mb = 2048     # GPU memory the CUDA provider's arena may take [default: no limit]
//! allow_cpu_fallback = false  # let nodes the GPU provider cannot take run on the CPU [default: false]
//! # On tensorrt:N only:
//! tensorrt_fp16 = true        # build engines in fp16 [default: false]
//! tensorrt_workspace_mb = 1024  # TensorRT's builder workspace [default: ONNX Runtime's]
//! tensorrt_engine_cache = "/var/cache/inference-server/trt"  # reuse built engines [default: none]
//! ```
//! The library is found by [`environment::load`]: `[onnxruntime] library` in the server config →
//! `ORT_DYLIB_PATH` → system locations → an installed Python `onnxruntime` wheel.

pub mod environment;
mod probe;
pub mod session;

use std::fmt;

use serde::Deserialize;

use super::devices::{DeviceReport, ProbeEnv};
use super::library::LibraryPaths;
use super::runtime::{
    ConfigTable, DeviceInfo, DeviceKind, LoadRequest, ModelLayout, ModelRuntime, Runtime,
};
use super::{Backend, BackendError};

pub use session::OnnxRuntimeBackend;

/// The name of ONNX Runtime's library in the server settings (`[onnxruntime] library`).
pub const LIBRARY: &str = "onnxruntime";

/// The ONNX Runtime [`Runtime`].
#[derive(Debug)]
pub struct OnnxRuntime;

/// Where an ONNX Runtime instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrtDevice {
    Cpu,
    /// NVIDIA GPU N through the CUDA execution provider.
    Cuda(u32),
    /// NVIDIA GPU N through the TensorRT execution provider (CUDA takes what TensorRT cannot).
    TensorRt(u32),
}

impl OrtDevice {
    /// `cpu`, `cuda[:N]` (alias `gpu`), `tensorrt[:N]` (alias `trt`), any case.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (kind, index) = match lower.split_once(':') {
            Some((kind, index)) => (kind, Some(index)),
            None => (lower.as_str(), None),
        };
        let number = || -> Result<u32, String> {
            index.map_or(Ok(0), |i| {
                i.parse()
                    .map_err(|_| format!("'{i}' is not a device index (a number like 0)"))
            })
        };
        match kind {
            "cpu" if index.is_none() => Ok(OrtDevice::Cpu),
            "cpu" => Err("'cpu' takes no index".into()),
            "cuda" | "gpu" => Ok(OrtDevice::Cuda(number()?)),
            "tensorrt" | "trt" => Ok(OrtDevice::TensorRt(number()?)),
            _ => Err(format!("unknown device '{}'", text.trim())),
        }
    }
}

impl fmt::Display for OrtDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrtDevice::Cpu => f.write_str("cpu"),
            OrtDevice::Cuda(n) => write!(f, "cuda:{n}"),
            OrtDevice::TensorRt(n) => write!(f, "tensorrt:{n}"),
        }
    }
}

/// The `[onnxruntime]` table of a model's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrtSettings {
    /// Threads inside one operator, per instance; `None` = available cores / instances on the
    /// device (at least 1).
    pub intra_op_threads: Option<usize>,
    /// Let idle intra-op threads spin-wait for the next operator. Off by default: on a small box
    /// the spinning threads take the cores the gRPC runtime and the other instances need, and
    /// with requests that are not back to back they burn a core per thread for nothing.
    #[serde(default)]
    pub intra_op_spinning: bool,
    /// Keep the memory of freed tensors in ONNX Runtime's CPU arena (and plan it with memory
    /// patterns) for the next run; `None` = on, ONNX Runtime's default. Off, the process gives
    /// back most of a large batch's memory when idle, but runs take up to twice as long (README
    /// "Memory budget").
    pub cpu_arena: Option<bool>,
    /// GPU memory the CUDA provider's arena may take, MiB (`gpu_mem_limit`).
    pub gpu_mem_limit_mb: Option<usize>,
    /// Let nodes the GPU provider cannot take run on the CPU. Off, such a model fails to load
    /// (ONNX Runtime's `session.disable_cpu_ep_fallback`) instead of running slowly.
    #[serde(default)]
    pub allow_cpu_fallback: bool,
    /// TensorRT builds fp16 engines (`trt_fp16_enable`).
    #[serde(default)]
    pub tensorrt_fp16: bool,
    /// TensorRT's builder workspace, MiB (`trt_max_workspace_size`).
    pub tensorrt_workspace_mb: Option<usize>,
    /// A folder TensorRT keeps its built engines in, so a restart does not rebuild them
    /// (`trt_engine_cache_path`).
    pub tensorrt_engine_cache: Option<std::path::PathBuf>,
}

impl OrtSettings {
    /// The first option set that `device` does not use, with the devices that do.
    pub fn misplaced_option(&self, device: OrtDevice) -> Option<(&'static str, &'static str)> {
        let gpu = [
            ("gpu_mem_limit_mb", self.gpu_mem_limit_mb.is_some()),
            ("allow_cpu_fallback", self.allow_cpu_fallback),
        ];
        let tensorrt = [
            ("tensorrt_fp16", self.tensorrt_fp16),
            (
                "tensorrt_workspace_mb",
                self.tensorrt_workspace_mb.is_some(),
            ),
            (
                "tensorrt_engine_cache",
                self.tensorrt_engine_cache.is_some(),
            ),
        ];
        let set =
            |options: &[(&'static str, bool)]| options.iter().find(|(_, on)| *on).map(|(k, _)| *k);
        match device {
            OrtDevice::Cpu => set(&gpu)
                .map(|k| (k, "cuda:N and tensorrt:N"))
                .or_else(|| set(&tensorrt).map(|k| (k, "tensorrt:N"))),
            OrtDevice::Cuda(_) => set(&tensorrt).map(|k| (k, "tensorrt:N")),
            OrtDevice::TensorRt(_) => None,
        }
    }

    /// Whether instances keep ONNX Runtime's CPU arena (see [`OrtSettings::cpu_arena`]).
    pub fn uses_cpu_arena(&self) -> bool {
        self.cpu_arena.unwrap_or(true)
    }

    /// The intra-op thread count each of `instances` instances on one device gets.
    pub fn effective_intra_op_threads(&self, instances: usize) -> usize {
        self.intra_op_threads.filter(|n| *n > 0).unwrap_or_else(|| {
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(4);
            (cores / instances.max(1)).max(1)
        })
    }
}

impl ModelRuntime for OrtSettings {
    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Backend>, BackendError> {
        OnnxRuntimeBackend::load(request, self).map(|b| Box::new(b) as Box<dyn Backend>)
    }
}

const LAYOUTS: &[ModelLayout] = &[ModelLayout {
    files: &["model.onnx"],
}];

impl Runtime for OnnxRuntime {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["ort", "onnx"]
    }

    fn libraries(&self) -> &'static [&'static str] {
        &[LIBRARY]
    }

    fn platform(&self) -> &'static str {
        "onnxruntime_onnx"
    }

    fn model_layouts(&self) -> &'static [ModelLayout] {
        LAYOUTS
    }

    fn default_device(&self) -> &'static str {
        "cpu"
    }

    fn device_help(&self) -> &'static str {
        "cpu, cuda[:N], tensorrt[:N]"
    }

    fn parse_device(&self, name: &str) -> Result<DeviceInfo, String> {
        let device = OrtDevice::parse(name)?;
        let kind = match device {
            OrtDevice::Cpu => DeviceKind::Cpu,
            OrtDevice::Cuda(n) | OrtDevice::TensorRt(n) => DeviceKind::Gpu(n),
        };
        Ok(DeviceInfo {
            name: device.to_string(),
            kind,
        })
    }

    fn configure(
        &self,
        table: Option<ConfigTable<'_>>,
    ) -> Result<Box<dyn ModelRuntime>, toml::de::Error> {
        let settings = match table {
            Some(table) => OrtSettings::deserialize(table)?,
            None => OrtSettings::default(),
        };
        if settings.intra_op_threads == Some(0) {
            return Err(serde::de::Error::custom(
                "onnxruntime.intra_op_threads must be at least 1 (leave it out to let the server choose)",
            ));
        }
        Ok(Box::new(settings))
    }

    fn probe(&self, env: &ProbeEnv, libraries: &LibraryPaths) -> Vec<DeviceReport> {
        probe::probe(
            env,
            environment::load(libraries.get(LIBRARY))
                .as_ref()
                .map_err(ToString::to_string),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_canonically() {
        for (text, device, canonical) in [
            ("cpu", OrtDevice::Cpu, "cpu"),
            ("CPU", OrtDevice::Cpu, "cpu"),
            ("cuda", OrtDevice::Cuda(0), "cuda:0"),
            ("gpu:2", OrtDevice::Cuda(2), "cuda:2"),
            ("tensorrt:1", OrtDevice::TensorRt(1), "tensorrt:1"),
            ("trt", OrtDevice::TensorRt(0), "tensorrt:0"),
        ] {
            assert_eq!(OrtDevice::parse(text), Ok(device), "{text}");
            assert_eq!(device.to_string(), canonical);
        }
        for (text, needle) in [
            ("cpu:0", "takes no index"),
            ("cuda:x", "'x' is not a device index"),
            ("edgetpu", "unknown device 'edgetpu'"),
        ] {
            let err = OrtDevice::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert_eq!(
            OnnxRuntime.parse_device("trt:3").unwrap().kind,
            DeviceKind::Gpu(3)
        );
    }

    #[test]
    fn settings_table_refuses_unknown_keys_and_zero_threads() {
        let parse = |text: &str| {
            let table = toml::de::DeTable::parse(text).unwrap();
            let value = table.into_inner().remove("onnxruntime").unwrap();
            OnnxRuntime.configure(Some(ConfigTable::from(value)))
        };
        assert!(parse("[onnxruntime]\nintra_op_threads = 2\nintra_op_spinning = true\n").is_ok());
        let err = parse("[onnxruntime]\nintra_op_thread = 2\n").unwrap_err();
        assert!(err.message().contains("intra_op_thread"), "{err}");
        assert!(err.span().is_some());
        let err = parse("[onnxruntime]\nintra_op_threads = 0\n").unwrap_err();
        assert!(err.message().contains("at least 1"), "{err}");
    }

    #[test]
    fn threads_are_shared_among_the_instances_of_a_device() {
        let settings = OrtSettings::default();
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        assert_eq!(settings.effective_intra_op_threads(1), cores.max(1));
        assert_eq!(settings.effective_intra_op_threads(cores * 4), 1);
        let fixed = OrtSettings {
            intra_op_threads: Some(3),
            ..OrtSettings::default()
        };
        assert_eq!(fixed.effective_intra_op_threads(8), 3);
    }

    #[test]
    fn gpu_options_belong_to_their_devices() {
        let settings: OrtSettings = toml::from_str(
            "gpu_mem_limit_mb = 512\ntensorrt_fp16 = true\ntensorrt_workspace_mb = 256\n\
             tensorrt_engine_cache = \"/tmp/trt\"\nallow_cpu_fallback = true\n",
        )
        .unwrap();
        assert_eq!(settings.misplaced_option(OrtDevice::TensorRt(0)), None);
        assert_eq!(
            settings.misplaced_option(OrtDevice::Cuda(0)),
            Some(("tensorrt_fp16", "tensorrt:N"))
        );
        assert_eq!(
            settings.misplaced_option(OrtDevice::Cpu),
            Some(("gpu_mem_limit_mb", "cuda:N and tensorrt:N"))
        );
        let cuda_only = OrtSettings {
            gpu_mem_limit_mb: Some(512),
            ..OrtSettings::default()
        };
        assert_eq!(cuda_only.misplaced_option(OrtDevice::Cuda(1)), None);
        assert_eq!(
            OrtSettings::default().misplaced_option(OrtDevice::Cpu),
            None
        );
    }
}
