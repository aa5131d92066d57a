//! `inference-server devices` lines of the ONNX Runtime backend: the CPU (with every execution
//! provider the loaded library has), and per NVIDIA GPU the CUDA and TensorRT providers with the
//! GPU's name and memory and the driver (from NVML).

use super::environment::OrtLibrary;
use crate::backend::devices::{nvidia_driver, DeviceReport, DeviceStatus, ProbeEnv};
use crate::backend::nvml::{self, Gpu};

/// What loading ONNX Runtime gave: the library, or why it could not load.
pub type OrtProbe<'a> = Result<&'a OrtLibrary, String>;

/// The CPU line, and `cuda:N` and `tensorrt:N` for each GPU NVML reports (`cuda:0` and
/// `tensorrt:0` when it reports none, saying why).
pub fn probe(env: &ProbeEnv, ort: OrtProbe<'_>) -> Vec<DeviceReport> {
    let report = |device: String, status| DeviceReport {
        backend: "onnxruntime",
        device,
        status,
    };
    let mut out = vec![report("cpu".into(), ort_cpu_status(&ort))];
    // Per GPU, what describes it, or why it cannot be used.
    let gpus: Vec<(u32, Result<String, String>)> = match nvml::inventory(env) {
        Ok(inventory) if !inventory.gpus.is_empty() => inventory
            .gpus
            .iter()
            .map(|gpu| (gpu.index, Ok(describe(gpu, &inventory.driver))))
            .collect(),
        Ok(inventory) => vec![(
            0,
            Err(format!("NVML (driver {}) sees no GPU", inventory.driver)),
        )],
        // No NVML: the device node or libcuda is the only evidence; say NVML is missing.
        Err(why) => vec![(
            0,
            nvidia_driver(env).map(|evidence| format!("{evidence}; {why}")),
        )],
    };
    for (index, gpu) in gpus {
        for (kind, provider, extra) in [
            ("cuda", "CUDAExecutionProvider", None),
            (
                "tensorrt",
                "TensorrtExecutionProvider",
                Some("libnvinfer.so"),
            ),
        ] {
            out.push(report(
                format!("{kind}:{index}"),
                ort_gpu_status(env, &ort, provider, &gpu, extra),
            ));
        }
    }
    out
}

/// `NVIDIA H200, 143771 MiB, driver 570.86.15`.
fn describe(gpu: &Gpu, driver: &str) -> String {
    format!(
        "{}, {} MiB, driver {driver}",
        gpu.name,
        gpu.memory_bytes >> 20
    )
}

fn ort_cpu_status(ort: &OrtProbe<'_>) -> DeviceStatus {
    match ort {
        Ok(rt) => DeviceStatus::Available {
            library_version: rt.version.clone(),
            detail: format!(
                "{} ({}); providers: {}",
                rt.library.path.display(),
                rt.library.source,
                rt.providers.join(", ")
            ),
        },
        Err(why) => DeviceStatus::Unavailable {
            reason: why.clone(),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_library_every_line_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let env = ProbeEnv {
            root: tmp.path().to_path_buf(),
            lib_dirs: vec![tmp.path().join("lib")],
        };
        let reports = probe(&env, Err("library not found".into()));
        let names: Vec<&str> = reports.iter().map(|r| r.device.as_str()).collect();
        assert_eq!(names, ["cpu", "cuda:0", "tensorrt:0"]);
        for r in &reports {
            assert!(!r.status.is_available(), "{r}");
        }
        assert!(reports[0].status.to_string().contains("library not found"));
        assert!(reports[1]
            .status
            .to_string()
            .contains("ONNX Runtime not loaded"));
    }
}
