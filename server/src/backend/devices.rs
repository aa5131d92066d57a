//! Devices: the [`Device`] a model instance runs on, parsed from config strings, and the probes
//! behind `inference-server devices`, which lists what this box can run and, for what it cannot,
//! why.
//!
//! Config strings: `cpu`, `cuda[:N]`, `tensorrt[:N]` (served by ONNX Runtime's execution
//! providers), and, for backends to come, `openvino[:TARGET]` (`CPU`, `GPU`, `NPU`, `MYRIAD` for the
//! Intel NCS2, `AUTO`), `tflite`, `edgetpu[:N]` (Coral Edge TPU) and `dna[:N]`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::library;

/// Where a model instance runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    /// NVIDIA GPU N through ONNX Runtime's CUDA execution provider.
    Cuda(u32),
    /// NVIDIA GPU N through ONNX Runtime's TensorRT execution provider.
    TensorRt(u32),
    /// An OpenVINO target (`CPU`, `GPU`, `NPU`, `MYRIAD`, `AUTO`, ...), upper case.
    OpenVino(String),
    /// TFLite on the CPU.
    TfLite,
    /// Coral Edge TPU N.
    EdgeTpu(u32),
    /// DNA accelerator N.
    Dna(u32),
}

/// A device string that is not one of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device '{input}': {reason} (expected cpu, cuda[:N], tensorrt[:N], openvino[:CPU|GPU|NPU|MYRIAD|AUTO], tflite, edgetpu[:N] or dna[:N])")]
pub struct DeviceParseError {
    pub input: String,
    pub reason: String,
}

impl FromStr for Device {
    type Err = DeviceParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| DeviceParseError {
            input: s.to_string(),
            reason,
        };
        let trimmed = s.trim();
        let (kind, arg) = match trimmed.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (trimmed, None),
        };
        let kind = kind.to_ascii_lowercase();
        let index = |arg: Option<&str>| -> Result<u32, DeviceParseError> {
            match arg {
                None => Ok(0),
                Some(a) => a
                    .parse::<u32>()
                    .map_err(|_| err(format!("'{a}' is not a device index (a number like 0)"))),
            }
        };
        let no_arg = |device: Device| -> Result<Device, DeviceParseError> {
            match arg {
                None => Ok(device),
                Some(a) => Err(err(format!("'{kind}' takes no ':{a}'"))),
            }
        };
        match kind.as_str() {
            "cpu" => no_arg(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(index(arg)?)),
            "tensorrt" | "trt" => Ok(Device::TensorRt(index(arg)?)),
            "openvino" => match arg {
                None => Ok(Device::OpenVino("CPU".into())),
                Some(a)
                    if !a.is_empty()
                        && a.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._,:-".contains(c)) =>
                {
                    Ok(Device::OpenVino(a.to_ascii_uppercase()))
                }
                Some(a) => Err(err(format!("'{a}' is not an OpenVINO device name"))),
            },
            "tflite" => no_arg(Device::TfLite),
            "edgetpu" | "coral" => Ok(Device::EdgeTpu(index(arg)?)),
            "dna" => Ok(Device::Dna(index(arg)?)),
            "" => Err(err("empty device".into())),
            other => Err(err(format!("unknown device kind '{other}'"))),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::TensorRt(n) => write!(f, "tensorrt:{n}"),
            Device::OpenVino(target) => write!(f, "openvino:{target}"),
            Device::TfLite => f.write_str("tflite"),
            Device::EdgeTpu(n) => write!(f, "edgetpu:{n}"),
            Device::Dna(n) => write!(f, "dna:{n}"),
        }
    }
}

impl serde::Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a probe found for one (backend, device) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Usable now: models can be loaded on it.
    Available {
        library_version: String,
        detail: String,
    },
    /// The hardware is there, but this build has no backend for it yet.
    Detected { detail: String },
    /// Not usable, and why.
    Unavailable { reason: String },
}

impl DeviceStatus {
    /// Whether a backend can run models on the device.
    pub fn is_available(&self) -> bool {
        matches!(self, DeviceStatus::Available { .. })
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceStatus::Available {
                library_version,
                detail,
            } => {
                write!(f, "available (version {library_version}; {detail})")
            }
            DeviceStatus::Detected { detail } => {
                write!(f, "detected, no backend in this build yet: {detail}")
            }
            DeviceStatus::Unavailable { reason } => write!(f, "unavailable: {reason}"),
        }
    }
}

/// One line of `inference-server devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    /// Backend that serves (or will serve) it: `onnxruntime`, `tflite`, `openvino`.
    pub backend: &'static str,
    /// Device string as a config would name it.
    pub device: String,
    pub status: DeviceStatus,
}

impl fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<12} {:<16} {}",
            self.backend, self.device, self.status
        )
    }
}

/// Where the probes look; [`ProbeEnv::system`] is the real machine, tests point it at a fake tree.
#[derive(Debug, Clone)]
pub struct ProbeEnv {
    /// Prefix for `/dev` and `/sys` (`/` on the real machine).
    pub root: PathBuf,
    /// Folders searched for driver libraries (`libcuda.so.1`, `libedgetpu.so.1`, `libnvinfer.so*`),
    /// used as they are (not under `root`).
    pub lib_dirs: Vec<PathBuf>,
}

impl ProbeEnv {
    /// The real machine: `/` plus the system library folders and the usual CUDA and WSL ones.
    pub fn system() -> Self {
        let mut lib_dirs = library::system_library_dirs();
        for extra in ["/usr/local/cuda/lib64", "/usr/lib/wsl/lib"] {
            lib_dirs.push(PathBuf::from(extra));
        }
        ProbeEnv {
            root: PathBuf::from("/"),
            lib_dirs,
        }
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// USB (vendor, product) ids present, from `/sys/bus/usb/devices/*/idVendor,idProduct`.
    pub fn usb_ids(&self) -> Vec<(String, String)> {
        let mut ids = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.path("/sys/bus/usb/devices")) else {
            return ids;
        };
        for entry in entries.flatten() {
            let read = |name: &str| {
                std::fs::read_to_string(entry.path().join(name))
                    .ok()
                    .map(|s| s.trim().to_ascii_lowercase())
            };
            if let (Some(vendor), Some(product)) = (read("idVendor"), read("idProduct")) {
                ids.push((vendor, product));
            }
        }
        ids
    }

    /// Device nodes in `/dev` whose names start with `prefix`, sorted.
    pub fn dev_nodes(&self, prefix: &str) -> Vec<String> {
        let mut nodes: Vec<String> = std::fs::read_dir(self.path("/dev"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default();
        nodes.sort();
        nodes
    }

    /// The first library file named `name` or `name.*` in the library folders.
    pub fn find_library(&self, name: &str) -> Option<PathBuf> {
        let prefix = format!("{name}.");
        self.lib_dirs.iter().find_map(|dir| {
            let exact = dir.join(name);
            if exact.exists() {
                return Some(exact);
            }
            std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                })
        })
    }

    fn lib_dirs_label(&self) -> String {
        self.lib_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Coral Edge TPU USB ids: before (Global Unichip) and after (Google) its firmware is loaded.
pub const EDGETPU_USB_IDS: [(&str, &str); 2] = [("1a6e", "089a"), ("18d1", "9302")];
/// Intel Neural Compute Stick 2 (Movidius Myriad X).
pub const NCS2_USB_ID: (&str, &str) = ("03e7", "2485");

/// What ONNX Runtime's loading gave: the runtime, or why it could not load.
pub type OrtProbe<'a> = Result<&'a library::OnnxRuntime, String>;

/// Lists every device this build knows, with its status. `ort_library` is the explicit ONNX
/// Runtime path (config or flag), if any; the usual search applies otherwise.
pub fn list_devices(ort_library: Option<&Path>) -> Vec<DeviceReport> {
    let runtime = library::onnxruntime(ort_library).map_err(|e| e.to_string());
    probe_all(&ProbeEnv::system(), runtime.as_ref().map_err(Clone::clone))
}

/// The probes, against an explicit environment and ONNX Runtime outcome (testable).
pub fn probe_all(env: &ProbeEnv, ort: OrtProbe<'_>) -> Vec<DeviceReport> {
    let nvidia = probe_nvidia(env);
    let mut out = vec![
        DeviceReport {
            backend: "onnxruntime",
            device: "cpu".into(),
            status: ort_cpu_status(&ort),
        },
        DeviceReport {
            backend: "onnxruntime",
            device: Device::Cuda(0).to_string(),
            status: ort_gpu_status(env, &ort, "CUDAExecutionProvider", &nvidia, None),
        },
        DeviceReport {
            backend: "onnxruntime",
            device: Device::TensorRt(0).to_string(),
            status: ort_gpu_status(
                env,
                &ort,
                "TensorrtExecutionProvider",
                &nvidia,
                Some("libnvinfer.so"),
            ),
        },
    ];
    out.push(DeviceReport {
        backend: "tflite",
        device: Device::EdgeTpu(0).to_string(),
        status: probe_edgetpu(env),
    });
    out.push(DeviceReport {
        backend: "openvino",
        device: Device::OpenVino("MYRIAD".into()).to_string(),
        status: probe_ncs2(env),
    });
    out
}

fn ort_cpu_status(ort: &OrtProbe<'_>) -> DeviceStatus {
    match ort {
        Ok(rt) => DeviceStatus::Available {
            library_version: rt.version.clone(),
            detail: format!("{} ({})", rt.library.path.display(), rt.library.source),
        },
        Err(why) => DeviceStatus::Unavailable {
            reason: why.clone(),
        },
    }
}

/// NVIDIA driver presence: `Ok(evidence)` or `Err(why not)`.
fn probe_nvidia(env: &ProbeEnv) -> Result<String, String> {
    let nodes = env.dev_nodes("nvidia");
    let node = nodes.iter().find(|n| {
        n.strip_prefix("nvidia")
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
    });
    let libcuda = env.find_library("libcuda.so.1");
    match (node, libcuda) {
        (Some(node), Some(lib)) => Ok(format!("/dev/{node}, {}", lib.display())),
        (Some(node), None) => Ok(format!("/dev/{node}")),
        (None, Some(lib)) => Ok(format!("{} (no /dev/nvidia0)", lib.display())),
        (None, None) => Err(format!(
            "no NVIDIA GPU driver: /dev/nvidia0 absent and libcuda.so.1 not found in {}",
            env.lib_dirs_label()
        )),
    }
}

fn ort_gpu_status(
    env: &ProbeEnv,
    ort: &OrtProbe<'_>,
    provider: &str,
    nvidia: &Result<String, String>,
    extra_lib: Option<&str>,
) -> DeviceStatus {
    let rt = match ort {
        Ok(rt) => rt,
        Err(why) => {
            return DeviceStatus::Unavailable {
                reason: format!("ONNX Runtime not loaded: {why}"),
            }
        }
    };
    if !rt.has_provider(provider) {
        let hint = match nvidia {
            Ok(evidence) => format!("an NVIDIA GPU is present ({evidence}); "),
            Err(_) => String::new(),
        };
        return DeviceStatus::Unavailable {
            reason: format!(
                "ONNX Runtime {} at {} was built without {provider} (a CPU-only build); {hint}install the \
                 onnxruntime-gpu wheel and point ORT_DYLIB_PATH at its library",
                rt.version,
                rt.library.path.display()
            ),
        };
    }
    let evidence = match nvidia {
        Ok(evidence) => evidence,
        Err(why) => {
            return DeviceStatus::Unavailable {
                reason: why.clone(),
            }
        }
    };
    if let Some(lib) = extra_lib {
        if env.find_library(lib).is_none() {
            return DeviceStatus::Unavailable {
                reason: format!(
                    "TensorRT runtime ({lib}*) not found in {}",
                    env.lib_dirs_label()
                ),
            };
        }
    }
    DeviceStatus::Available {
        library_version: rt.version.clone(),
        detail: format!("{provider}; {evidence}"),
    }
}

fn probe_edgetpu(env: &ProbeEnv) -> DeviceStatus {
    let usb = env.usb_ids();
    let usb_hit = EDGETPU_USB_IDS
        .iter()
        .find(|(v, p)| usb.iter().any(|(uv, up)| uv == v && up == p));
    let apex = env.dev_nodes("apex_");
    let hardware = match (apex.first(), usb_hit) {
        (Some(node), _) => Some(format!("PCIe/M.2 /dev/{node}")),
        (None, Some((v, p))) => Some(format!("USB {v}:{p}")),
        (None, None) => None,
    };
    let lib = env.find_library("libedgetpu.so.1");
    match (hardware, lib) {
        (None, _) => DeviceStatus::Unavailable {
            reason: "no Coral Edge TPU found (no /dev/apex_*, no USB device 1a6e:089a or 18d1:9302)".into(),
        },
        (Some(hw), None) => DeviceStatus::Unavailable {
            reason: format!(
                "Edge TPU present ({hw}) but libedgetpu.so.1 not found in {}; install libedgetpu1-std",
                env.lib_dirs_label()
            ),
        },
        (Some(hw), Some(lib)) => DeviceStatus::Detected { detail: format!("{hw}, {}", lib.display()) },
    }
}

fn probe_ncs2(env: &ProbeEnv) -> DeviceStatus {
    let (v, p) = NCS2_USB_ID;
    if env.usb_ids().iter().any(|(uv, up)| uv == v && up == p) {
        DeviceStatus::Detected {
            detail: format!("Intel NCS2 on USB {v}:{p} (needs OpenVINO 2022.3 LTS)"),
        }
    } else {
        DeviceStatus::Unavailable {
            reason: format!("no Intel NCS2 found (no USB device {v}:{p})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_parse_and_print_canonically() {
        let cases = [
            ("cpu", Device::Cpu, "cpu"),
            ("CPU", Device::Cpu, "cpu"),
            ("cuda", Device::Cuda(0), "cuda:0"),
            ("cuda:1", Device::Cuda(1), "cuda:1"),
            ("gpu:2", Device::Cuda(2), "cuda:2"),
            ("tensorrt:0", Device::TensorRt(0), "tensorrt:0"),
            ("trt", Device::TensorRt(0), "tensorrt:0"),
            ("openvino", Device::OpenVino("CPU".into()), "openvino:CPU"),
            (
                "openvino:myriad",
                Device::OpenVino("MYRIAD".into()),
                "openvino:MYRIAD",
            ),
            ("tflite", Device::TfLite, "tflite"),
            ("edgetpu:0", Device::EdgeTpu(0), "edgetpu:0"),
            ("dna:3", Device::Dna(3), "dna:3"),
        ];
        for (text, device, canonical) in cases {
            let parsed: Device = text.parse().unwrap();
            assert_eq!(parsed, device, "{text}");
            assert_eq!(parsed.to_string(), canonical);
            assert_eq!(canonical.parse::<Device>().unwrap(), device);
        }
    }

    #[test]
    fn bad_device_strings_say_what_is_accepted() {
        for (text, needle) in [
            ("tpu", "unknown device kind 'tpu'"),
            ("cuda:x", "'x' is not a device index"),
            ("cpu:0", "'cpu' takes no ':0'"),
            ("", "empty device"),
            ("openvino:", "not an OpenVINO device name"),
        ] {
            let err = text.parse::<Device>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains("expected cpu, cuda[:N]"), "{err}");
        }
    }

    #[test]
    fn device_deserializes_from_config_strings() {
        #[derive(serde::Deserialize)]
        struct C {
            device: Device,
        }
        let c: C = toml::from_str("device = \"cuda:1\"").unwrap();
        assert_eq!(c.device, Device::Cuda(1));
        let err = toml::from_str::<C>("device = \"quantum\"")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown device kind"), "{err}");
    }

    fn fake_env(tmp: &Path) -> ProbeEnv {
        std::fs::create_dir_all(tmp.join("dev")).unwrap();
        std::fs::create_dir_all(tmp.join("sys/bus/usb/devices")).unwrap();
        std::fs::create_dir_all(tmp.join("lib")).unwrap();
        ProbeEnv {
            root: tmp.to_path_buf(),
            lib_dirs: vec![tmp.join("lib")],
        }
    }

    fn add_usb(tmp: &Path, port: &str, vendor: &str, product: &str) {
        let dir = tmp.join("sys/bus/usb/devices").join(port);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("idVendor"), format!("{vendor}\n")).unwrap();
        std::fs::write(dir.join("idProduct"), format!("{product}\n")).unwrap();
    }

    fn status_of<'a>(reports: &'a [DeviceReport], device: &str) -> &'a DeviceStatus {
        &reports.iter().find(|r| r.device == device).unwrap().status
    }

    #[test]
    fn an_empty_box_reports_every_accelerator_unavailable_with_a_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let env = fake_env(tmp.path());
        let reports = probe_all(&env, Err("library not found".into()));
        let names: Vec<_> = reports
            .iter()
            .map(|r| (r.backend, r.device.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("onnxruntime", "cpu"),
                ("onnxruntime", "cuda:0"),
                ("onnxruntime", "tensorrt:0"),
                ("tflite", "edgetpu:0"),
                ("openvino", "openvino:MYRIAD")
            ]
        );
        for r in &reports {
            assert!(matches!(r.status, DeviceStatus::Unavailable { .. }), "{r}");
        }
        assert!(status_of(&reports, "edgetpu:0")
            .to_string()
            .contains("no Coral Edge TPU found"));
        assert!(status_of(&reports, "openvino:MYRIAD")
            .to_string()
            .contains("03e7:2485"));
        assert!(status_of(&reports, "cuda:0")
            .to_string()
            .contains("ONNX Runtime not loaded"));
    }

    #[test]
    fn usb_and_dev_probes_detect_fake_hardware() {
        let tmp = tempfile::tempdir().unwrap();
        let env = fake_env(tmp.path());
        add_usb(tmp.path(), "1-1", "18d1", "9302");
        add_usb(tmp.path(), "1-2", "03E7", "2485");
        let reports = probe_all(&env, Err("x".into()));
        let tpu = status_of(&reports, "edgetpu:0").to_string();
        assert!(
            tpu.contains("USB 18d1:9302") && tpu.contains("libedgetpu.so.1 not found"),
            "{tpu}"
        );
        assert!(matches!(
            status_of(&reports, "openvino:MYRIAD"),
            DeviceStatus::Detected { .. }
        ));

        std::fs::write(tmp.path().join("lib/libedgetpu.so.1"), b"").unwrap();
        std::fs::write(tmp.path().join("dev/apex_0"), b"").unwrap();
        let reports = probe_all(&env, Err("x".into()));
        let tpu = status_of(&reports, "edgetpu:0");
        assert!(
            matches!(tpu, DeviceStatus::Detected { detail } if detail.contains("/dev/apex_0")),
            "{tpu}"
        );
    }

    #[test]
    fn nvidia_probe_needs_a_device_node_or_driver_library() {
        let tmp = tempfile::tempdir().unwrap();
        let env = fake_env(tmp.path());
        assert!(probe_nvidia(&env)
            .unwrap_err()
            .contains("/dev/nvidia0 absent"));
        std::fs::write(tmp.path().join("dev/nvidiactl"), b"").unwrap();
        assert!(probe_nvidia(&env).is_err(), "nvidiactl alone is not a GPU");
        std::fs::write(tmp.path().join("dev/nvidia0"), b"").unwrap();
        assert_eq!(probe_nvidia(&env).unwrap(), "/dev/nvidia0");
        std::fs::write(tmp.path().join("lib/libcuda.so.1"), b"").unwrap();
        assert!(probe_nvidia(&env).unwrap().contains("libcuda.so.1"));
    }

    #[test]
    fn this_machine_reports_unavailable_accelerators() {
        // The real probes on the build machine: no Edge TPU, no NCS2 (reported with a reason).
        let reports = probe_all(&ProbeEnv::system(), Err("not loaded in this test".into()));
        for device in ["edgetpu:0", "openvino:MYRIAD"] {
            let status = status_of(&reports, device);
            assert!(!status.is_available(), "{device}: {status}");
            assert!(!status.to_string().is_empty());
        }
    }
}
