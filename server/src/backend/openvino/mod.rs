//! The OpenVINO backend (`backend = "openvino"`): IR (`model.xml` + `model.bin`), ONNX
//! (`model.onnx`) or TFLite (`model.tflite`) models on OpenVINO's devices by their own names:
//! `CPU`, `GPU`, `GPU.N`, `NPU`, `AUTO`, `MULTI:…`, `HETERO:…`, and `MYRIAD` (the Intel Neural
//! Compute Stick 2, which only OpenVINO 2022.3 LTS drives: see [`legacy`]).
//!
//! Its table in a model's `config.toml`, every key optional:
//! ```toml
//! [openvino]
//! performance_hint = "latency"      # latency | throughput | cumulative_throughput
//! num_streams = 1                   # NUM_STREAMS [default: what the hint picks]
//! inference_threads = 1             # INFERENCE_NUM_THREADS [default: OpenVINO's]
//! inference_precision = "f32"       # f32 | f16 | bf16 [default on CPU: f32, not the bf16 some CPUs pick]
//! cache_dir = "/var/cache/inference-server/openvino"   # compiled-model cache
//! reshape = { x = [1, 3, 224, 224] }                  # input shapes set before compiling (-1 = dynamic)
//! [[openvino.preprocess]]           # built into the model: clients send raw image bytes
//! input = "x"                       # [default: the first input]
//! datatype = "UINT8"                # what the client sends
//! layout = "NHWC"                   # its layout
//! model_layout = "NCHW"             # the model's own
//! mean = [127.0, 127.0, 127.0]      # subtracted per channel (or one value)
//! scale = [128.0, 128.0, 128.0]     # then divided by
//! ```
//! Devices that need static shapes (`NPU`, `MYRIAD`) get a dynamic batch dimension fixed to 1;
//! other dynamic dimensions must be given with `reshape`.

pub mod environment;
mod ffi;
mod instance;
pub mod legacy;

use std::collections::BTreeMap;
use std::path::PathBuf;

use inference_proto::DataType;
use serde::Deserialize;

use super::devices::{DeviceReport, DeviceStatus, ProbeEnv};
use super::library::LibraryPaths;
use super::runtime::{
    ConfigTable, DeviceInfo, DeviceKind, LoadRequest, ModelLayout, ModelRuntime, Runtime,
};
use super::{Backend, BackendError};

pub use instance::OpenVinoBackend;

/// The OpenVINO [`Runtime`].
#[derive(Debug)]
pub struct OpenVino;

/// The name of OpenVINO's library in the server settings (`[openvino] library`).
pub const LIBRARY: &str = "openvino";

/// Intel Neural Compute Stick 2 (Movidius Myriad X) on USB.
pub const NCS2_USB_ID: (&str, &str) = ("03e7", "2485");

/// `performance_hint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerformanceHint {
    Latency,
    Throughput,
    CumulativeThroughput,
}

impl PerformanceHint {
    fn property_value(self) -> &'static str {
        match self {
            PerformanceHint::Latency => "LATENCY",
            PerformanceHint::Throughput => "THROUGHPUT",
            PerformanceHint::CumulativeThroughput => "CUMULATIVE_THROUGHPUT",
        }
    }
}

/// `inference_precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl Precision {
    fn property_value(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// One `[[openvino.preprocess]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Input name [default: the first input].
    pub input: Option<String>,
    /// KServe datatype the client sends, e.g. `UINT8`.
    pub datatype: String,
    /// Layout of what the client sends, e.g. `NHWC`.
    pub layout: Option<String>,
    /// The model's own layout, e.g. `NCHW`.
    pub model_layout: Option<String>,
    #[serde(default)]
    pub mean: Vec<f32>,
    #[serde(default)]
    pub scale: Vec<f32>,
}

/// The `[openvino]` table of a model's config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvSettings {
    pub performance_hint: Option<PerformanceHint>,
    pub num_streams: Option<u32>,
    pub inference_threads: Option<u32>,
    pub inference_precision: Option<Precision>,
    pub cache_dir: Option<PathBuf>,
    /// Input name → full shape (dimension 0 included; -1 = dynamic), set before compiling.
    #[serde(default)]
    pub reshape: BTreeMap<String, Vec<i64>>,
    #[serde(default)]
    pub preprocess: Vec<Preprocess>,
}

impl OvSettings {
    /// The compile-time properties for `device`.
    fn properties(&self, device: &str) -> Vec<(&'static str, String)> {
        let mut out = vec![(
            "PERFORMANCE_HINT",
            self.performance_hint
                .unwrap_or(PerformanceHint::Latency)
                .property_value()
                .to_string(),
        )];
        if let Some(n) = self.num_streams {
            out.push(("NUM_STREAMS", n.to_string()));
        }
        if let Some(n) = self.inference_threads {
            out.push(("INFERENCE_NUM_THREADS", n.to_string()));
        }
        // Some CPUs default to bf16, which changes results visibly; f32 unless asked.
        let precision = self
            .inference_precision
            .or((device == "CPU").then_some(Precision::F32));
        if let Some(p) = precision {
            out.push(("INFERENCE_PRECISION_HINT", p.property_value().to_string()));
        }
        if let Some(dir) = &self.cache_dir {
            out.push(("CACHE_DIR", dir.display().to_string()));
        }
        out
    }

    fn check(&self) -> Result<(), String> {
        if self.num_streams == Some(0) {
            return Err("openvino.num_streams must be at least 1".into());
        }
        if self.inference_threads == Some(0) {
            return Err("openvino.inference_threads must be at least 1".into());
        }
        for (name, dims) in &self.reshape {
            if dims.is_empty() || dims.iter().any(|&d| d == 0 || d < -1) {
                return Err(format!(
                    "openvino.reshape.{name} = {dims:?}: give the full shape with positive sizes, -1 for a dynamic one"
                ));
            }
        }
        for (i, p) in self.preprocess.iter().enumerate() {
            let field = format!("openvino.preprocess[{i}]");
            let datatype: DataType = p
                .datatype
                .parse()
                .map_err(|e| format!("{field}.datatype: {e}"))?;
            if ffi::element_type_of(datatype).is_none() {
                return Err(format!(
                    "{field}.datatype: {datatype} cannot be preprocessed"
                ));
            }
            for (key, values) in [("mean", &p.mean), ("scale", &p.scale)] {
                if values.len() > 4 {
                    return Err(format!("{field}.{key}: give one value, or one per channel"));
                }
            }
            if p.scale.contains(&0.0) {
                return Err(format!("{field}.scale: 0 would divide by zero"));
            }
            if self.preprocess[..i].iter().any(|q| q.input == p.input) {
                return Err(format!(
                    "{field}: input {:?} is preprocessed twice",
                    p.input
                ));
            }
        }
        Ok(())
    }
}

impl ModelRuntime for OvSettings {
    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Backend>, BackendError> {
        let library = environment::load(request.libraries.get(LIBRARY))?;
        match &library.binding {
            environment::Binding::Current(core) => {
                OpenVinoBackend::load(core, &library, request, self)
                    .map(|b| Box::new(b) as Box<dyn Backend>)
            }
            environment::Binding::Legacy(legacy) => legacy::load(legacy, &library, request, self),
        }
    }
}

const LAYOUTS: &[ModelLayout] = &[
    ModelLayout {
        files: &["model.xml", "model.bin"],
    },
    ModelLayout {
        files: &["model.onnx"],
    },
    ModelLayout {
        files: &["model.tflite"],
    },
];

/// Whether a device name is a virtual device that places work on others.
fn is_virtual(device: &str) -> bool {
    ["AUTO", "MULTI", "HETERO", "BATCH"]
        .iter()
        .any(|v| device == *v || device.starts_with(&format!("{v}:")))
}

/// Whether a device needs static shapes.
fn needs_static_shapes(device: &str) -> bool {
    device.starts_with("NPU") || device.starts_with("MYRIAD")
}

impl Runtime for OpenVino {
    fn name(&self) -> &'static str {
        "openvino"
    }

    fn libraries(&self) -> &'static [&'static str] {
        &[LIBRARY]
    }

    fn platform(&self) -> &'static str {
        "openvino"
    }

    fn model_layouts(&self) -> &'static [ModelLayout] {
        LAYOUTS
    }

    fn default_device(&self) -> &'static str {
        "CPU"
    }

    fn device_help(&self) -> &'static str {
        "OpenVINO device names: CPU, GPU, GPU.N, NPU, AUTO, MULTI:…, HETERO:…, MYRIAD"
    }

    fn parse_device(&self, name: &str) -> Result<DeviceInfo, String> {
        let canonical = name.trim().to_ascii_uppercase();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._,:-".contains(c);
        if canonical.is_empty() || !canonical.chars().all(allowed) {
            return Err(format!("'{name}' is not an OpenVINO device name"));
        }
        let kind = if canonical == "CPU" {
            DeviceKind::Cpu
        } else if canonical == "GPU" {
            DeviceKind::Gpu(0)
        } else if let Some(n) = canonical
            .strip_prefix("GPU.")
            .and_then(|n| n.parse::<u32>().ok())
        {
            DeviceKind::Gpu(n)
        } else {
            DeviceKind::Accelerator
        };
        Ok(DeviceInfo {
            name: canonical,
            kind,
        })
    }

    fn configure(
        &self,
        table: Option<ConfigTable<'_>>,
    ) -> Result<Box<dyn ModelRuntime>, toml::de::Error> {
        let settings = match table {
            Some(table) => OvSettings::deserialize(table)?,
            None => OvSettings::default(),
        };
        settings.check().map_err(serde::de::Error::custom)?;
        Ok(Box::new(settings))
    }

    fn probe(&self, env: &ProbeEnv, libraries: &LibraryPaths) -> Vec<DeviceReport> {
        let library = libraries.get(LIBRARY);
        let report = |device: &str, status| DeviceReport {
            backend: "openvino",
            device: device.to_string(),
            status,
        };
        let mut out = Vec::new();
        match environment::load(library) {
            Ok(lib) => match lib.available_devices() {
                Ok(devices) if devices.is_empty() => out.push(report(
                    "CPU",
                    DeviceStatus::Unavailable {
                        reason: format!("OpenVINO {} sees no device", lib.version),
                    },
                )),
                Ok(devices) => {
                    for device in devices {
                        let name = lib.device_name(&device);
                        out.push(report(
                            &device,
                            DeviceStatus::Available {
                                library_version: lib.version.clone(),
                                detail: format!(
                                    "{name}; {} ({})",
                                    lib.library.path.display(),
                                    lib.library.source
                                ),
                            },
                        ));
                    }
                }
                Err(e) => out.push(report(
                    "CPU",
                    DeviceStatus::Unavailable {
                        reason: e.to_string(),
                    },
                )),
            },
            Err(e) => out.push(report(
                "CPU",
                DeviceStatus::Unavailable {
                    reason: e.to_string(),
                },
            )),
        }
        if !out.iter().any(|r| r.device == "MYRIAD") {
            out.push(report("MYRIAD", legacy::probe_ncs2(env)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(text: &str) -> Result<Box<dyn ModelRuntime>, toml::de::Error> {
        let table = toml::de::DeTable::parse(text).unwrap();
        let value = table.into_inner().remove("openvino");
        OpenVino.configure(value.map(ConfigTable::from))
    }

    #[test]
    fn device_names_are_the_runtimes_own() {
        for (text, canonical, kind) in [
            ("cpu", "CPU", DeviceKind::Cpu),
            ("GPU", "GPU", DeviceKind::Gpu(0)),
            ("gpu.1", "GPU.1", DeviceKind::Gpu(1)),
            ("NPU", "NPU", DeviceKind::Accelerator),
            ("MULTI:CPU,GPU", "MULTI:CPU,GPU", DeviceKind::Accelerator),
            ("myriad", "MYRIAD", DeviceKind::Accelerator),
        ] {
            let device = OpenVino.parse_device(text).unwrap();
            assert_eq!(
                (device.name.as_str(), device.kind),
                (canonical, kind),
                "{text}"
            );
        }
        assert!(OpenVino.parse_device("CPU GPU").is_err());
        assert!(OpenVino.parse_device("").is_err());
        assert!(is_virtual("AUTO") && is_virtual("HETERO:GPU,CPU") && !is_virtual("AUTOMATIC"));
        assert!(
            needs_static_shapes("MYRIAD")
                && needs_static_shapes("NPU")
                && !needs_static_shapes("CPU")
        );
    }

    #[test]
    fn the_table_is_checked_key_by_key() {
        assert!(configure("").is_ok());
        assert!(configure(
            "[openvino]\nperformance_hint = \"throughput\"\nnum_streams = 2\ninference_precision = \"bf16\"\nreshape = { x = [1, 3, -1] }\n[[openvino.preprocess]]\ndatatype = \"UINT8\"\nlayout = \"NHWC\"\nmodel_layout = \"NCHW\"\nmean = [1.0, 2.0, 3.0]\nscale = [2.0]\n"
        )
        .is_ok());
        for (text, needle) in [
            (
                "[openvino]\nperformance = \"latency\"\n",
                "unknown field `performance`",
            ),
            (
                "[openvino]\nperformance_hint = \"fast\"\n",
                "unknown variant `fast`",
            ),
            (
                "[openvino]\nnum_streams = 0\n",
                "num_streams must be at least 1",
            ),
            (
                "[openvino]\nreshape = { x = [1, 0] }\n",
                "openvino.reshape.x",
            ),
            (
                "[[openvino.preprocess]]\ndatatype = \"PIXELS\"\n",
                "preprocess[0].datatype",
            ),
            (
                "[[openvino.preprocess]]\ndatatype = \"UINT8\"\nscale = [0.0]\n",
                "divide by zero",
            ),
            (
                "[[openvino.preprocess]]\ndatatype = \"UINT8\"\nmeans = [1.0]\n",
                "unknown field `means`",
            ),
        ] {
            let err = configure(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn compile_properties_default_to_latency_and_f32_on_the_cpu() {
        let settings = OvSettings::default();
        assert_eq!(
            settings.properties("CPU"),
            [
                ("PERFORMANCE_HINT", "LATENCY".to_string()),
                ("INFERENCE_PRECISION_HINT", "f32".to_string())
            ]
        );
        assert_eq!(
            settings.properties("GPU.0").len(),
            1,
            "the GPU keeps its own precision"
        );
        let tuned = OvSettings {
            performance_hint: Some(PerformanceHint::Throughput),
            num_streams: Some(2),
            inference_threads: Some(1),
            inference_precision: Some(Precision::F16),
            ..OvSettings::default()
        };
        let props = tuned.properties("GPU");
        assert!(props.contains(&("NUM_STREAMS", "2".into())));
        assert!(props.contains(&("INFERENCE_NUM_THREADS", "1".into())));
        assert!(props.contains(&("INFERENCE_PRECISION_HINT", "f16".into())));
        assert!(props.contains(&("PERFORMANCE_HINT", "THROUGHPUT".into())));
    }
}
