//! `inference-server devices` lines of the ONNX Runtime backend: the CPU, and the CUDA and
//! TensorRT providers with the NVIDIA driver they need.

use super::environment::OrtLibrary;
use crate::backend::devices::{nvidia_driver, DeviceReport, DeviceStatus, ProbeEnv};

/// What loading ONNX Runtime gave: the library, or why it could not load.
pub type OrtProbe<'a> = Result<&'a OrtLibrary, String>;

/// The CPU, `cuda:0` and `tensorrt:0` lines.
pub fn probe(env: &ProbeEnv, ort: OrtProbe<'_>) -> Vec<DeviceReport> {
    let nvidia = nvidia_driver(env);
    let report = |device: &str, status| DeviceReport {
        backend: "onnxruntime",
        device: device.to_string(),
        status,
    };
    vec![
        report("cpu", ort_cpu_status(&ort)),
        report(
            "cuda:0",
            ort_gpu_status(env, &ort, "CUDAExecutionProvider", &nvidia, None),
        ),
        report(
            "tensorrt:0",
            ort_gpu_status(
                env,
                &ort,
                "TensorrtExecutionProvider",
                &nvidia,
                Some("libnvinfer.so"),
            ),
        ),
    ]
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
