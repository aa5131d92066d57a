//! ONNX Runtime itself: found with the generic library search, loaded and initialised once per
//! process (one library per process), with its version and execution providers.

use std::path::Path;
use std::sync::Mutex;

use crate::backend::library::{self, FoundLibrary, RuntimeLibrary, Wheel};
use crate::backend::BackendError;

/// ONNX Runtime as shipped by the `onnxruntime` (and `onnxruntime-gpu`) wheels or system packages.
pub const ONNXRUNTIME: RuntimeLibrary = RuntimeLibrary {
    display_name: "ONNX Runtime",
    env_var: "ORT_DYLIB_PATH",
    file_stem: "libonnxruntime.so",
    wheel: Some(Wheel {
        python_module: "onnxruntime",
        subdir: "capi",
    }),
    install: "`pip install onnxruntime` (in the server's virtualenv or for python3), or install the library system-wide",
};

/// ONNX Runtime, loaded and initialised for this process.
#[derive(Debug, Clone)]
pub struct OrtLibrary {
    pub library: FoundLibrary,
    /// Version reported by the loaded library.
    pub version: String,
    /// Execution providers the library was built with, e.g. `CPUExecutionProvider`.
    pub providers: Vec<String>,
    pub(crate) environment: ort::environment::Environment,
}

impl OrtLibrary {
    /// Whether the library was built with this execution provider (`CUDAExecutionProvider`, ...).
    pub fn has_provider(&self, name: &str) -> bool {
        self.providers.iter().any(|p| p == name)
    }
}

static ONNXRUNTIME_STATE: Mutex<Option<OrtLibrary>> = Mutex::new(None);

/// Finds, loads and initialises ONNX Runtime once per process; later calls return the same
/// runtime (an `explicit` path that differs from the loaded one is then ignored with a warning,
/// since a process can hold only one). A failed attempt is not cached, so a later call may retry.
pub fn load(explicit: Option<&Path>) -> Result<OrtLibrary, BackendError> {
    let mut state = ONNXRUNTIME_STATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(runtime) = state.as_ref() {
        if let Some(path) = explicit {
            if library::resolve_path(ONNXRUNTIME, path).map(|(p, _)| p)
                != Ok(runtime.library.path.clone())
            {
                tracing::warn!(
                    requested = %path.display(),
                    loaded = %runtime.library.path.display(),
                    "ONNX Runtime is already loaded from another path; one library per process"
                );
            }
        }
        return Ok(runtime.clone());
    }
    let found = library::LibrarySearch::standard(ONNXRUNTIME, explicit)
        .find()
        .map_err(|e| BackendError::LibraryUnavailable(e.to_string()))?;
    let unusable = |why: String| {
        BackendError::LibraryUnavailable(format!(
            "{} at {} ({}) cannot be used: {why}",
            ONNXRUNTIME.display_name,
            found.path.display(),
            found.source
        ))
    };
    let builder = ort::init_from(&found.path).map_err(|e| unusable(e.to_string()))?;
    let environment = builder
        .with_name("inference-server")
        .with_telemetry(false)
        .build()
        .map_err(|e| unusable(e.to_string()))?;
    let providers = available_providers();
    let version = loaded_version(&found);
    tracing::info!(path = %found.path.display(), source = %found.source, %version, ?providers, "loaded ONNX Runtime");
    let runtime = OrtLibrary {
        library: found,
        version,
        providers,
        environment,
    };
    *state = Some(runtime.clone());
    Ok(runtime)
}

/// The providers the loaded library was built with, via each EP's `is_available()`.
fn available_providers() -> Vec<String> {
    use ort::ep::{ExecutionProvider, TensorRT, CPU, CUDA};
    let mut out = Vec::new();
    let mut check = |name: &str, available: ort::Result<bool>| {
        if available.unwrap_or(false) {
            out.push(name.to_string());
        }
    };
    check(CPU::NAME, CPU::is_available());
    check(CUDA::NAME, CUDA::is_available());
    check(TensorRT::NAME, TensorRT::is_available());
    out
}

/// The loaded library's version: from its build string (`git-branch=rel-1.32.0`), else from the
/// wheel or file name, else from the versioned file a `libonnxruntime.so` symlink points to.
fn loaded_version(found: &FoundLibrary) -> String {
    let info = ort::info();
    let from_info = info
        .split([',', ' '])
        .find_map(|part| part.trim().strip_prefix("git-branch=rel-"))
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_string);
    from_info
        .or_else(|| found.version.clone())
        .or_else(|| {
            // `libonnxruntime.so` is usually a symlink to the versioned file.
            let target = std::fs::canonicalize(&found.path).ok()?;
            library::version_from_file_name(ONNXRUNTIME, &target.file_name()?.to_string_lossy())
        })
        .unwrap_or_else(|| "unknown".into())
}
