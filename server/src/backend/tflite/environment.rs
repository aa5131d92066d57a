//! The TFLite backend's three native libraries, each found with the generic library search and
//! opened once per process: LiteRT (`libLiteRt.so`, from the `ai-edge-litert` wheel), the
//! classic TensorFlow Lite C API (`libtensorflowlite_c.so`) and the Edge TPU runtime
//! (`libedgetpu.so.1`). A failed attempt is not cached, so a later load may retry.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::classic::ClassicLibrary;
use super::edgetpu::EdgeTpuLibrary;
use super::litert::LiteRtLibrary;
use crate::backend::library::{FoundLibrary, LibrarySearch, RuntimeLibrary, Wheel};
use crate::backend::BackendError;

/// LiteRT's C API library, as the `ai-edge-litert` wheel ships it.
pub const LITERT: RuntimeLibrary = RuntimeLibrary {
    display_name: "LiteRT",
    env_var: "LITERT_LIBRARY",
    file_stem: "libLiteRt.so",
    wheel: Some(Wheel {
        python_module: "ai_edge_litert",
        subdir: "",
    }),
    install: "`pip install ai-edge-litert` (in the server's virtualenv or for python3)",
};

/// The classic TensorFlow Lite C API library (`TfLiteInterpreterCreate`, external delegates).
pub const TFLITE_C: RuntimeLibrary = RuntimeLibrary {
    display_name: "TensorFlow Lite C API",
    env_var: "TFLITE_LIBRARY",
    file_stem: "libtensorflowlite_c.so",
    wheel: None,
    install: "install a libtensorflowlite_c.so built from the TensorFlow release your libedgetpu \
              was built against (no package registry ships one; see the README's Coral section)",
};

/// The Edge TPU runtime (Coral's `libedgetpu1-std` or `libedgetpu1-max` package).
pub const EDGETPU: RuntimeLibrary = RuntimeLibrary {
    display_name: "Edge TPU runtime",
    env_var: "EDGETPU_LIBRARY",
    file_stem: "libedgetpu.so",
    wheel: None,
    install: "install Coral's libedgetpu1-std (or libedgetpu1-max) package from \
              packages.cloud.google.com/apt, or a libedgetpu built for your TensorFlow Lite",
};

/// Finds a library and opens it with `open`, once per process.
fn load_once<T: Clone>(
    state: &Mutex<Option<T>>,
    library: RuntimeLibrary,
    explicit: Option<&Path>,
    open: impl FnOnce(&FoundLibrary) -> Result<T, String>,
) -> Result<T, BackendError> {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(loaded) = state.as_ref() {
        return Ok(loaded.clone());
    }
    let found = LibrarySearch::standard(library, explicit)
        .find()
        .map_err(|e| BackendError::LibraryUnavailable(e.to_string()))?;
    let loaded = open(&found).map_err(|why| {
        BackendError::LibraryUnavailable(format!(
            "{} at {} ({}) cannot be used: {why}",
            library.display_name,
            found.path.display(),
            found.source
        ))
    })?;
    tracing::info!(library = library.display_name, path = %found.path.display(), source = %found.source, "loaded");
    *state = Some(loaded.clone());
    Ok(loaded)
}

static LITERT_STATE: Mutex<Option<Arc<LiteRtLibrary>>> = Mutex::new(None);
static CLASSIC_STATE: Mutex<Option<Arc<ClassicLibrary>>> = Mutex::new(None);
static EDGETPU_STATE: Mutex<Option<Arc<EdgeTpuLibrary>>> = Mutex::new(None);

/// LiteRT, loaded for this process.
pub fn litert(explicit: Option<&Path>) -> Result<Arc<LiteRtLibrary>, BackendError> {
    load_once(&LITERT_STATE, LITERT, explicit, |found| {
        LiteRtLibrary::open(found).map(Arc::new)
    })
}

/// The classic TensorFlow Lite C API, loaded for this process.
pub fn classic(explicit: Option<&Path>) -> Result<Arc<ClassicLibrary>, BackendError> {
    load_once(&CLASSIC_STATE, TFLITE_C, explicit, |found| {
        ClassicLibrary::open(found).map(Arc::new)
    })
}

/// The Edge TPU runtime, loaded for this process.
pub fn edgetpu(explicit: Option<&Path>) -> Result<Arc<EdgeTpuLibrary>, BackendError> {
    load_once(&EDGETPU_STATE, EDGETPU, explicit, |found| {
        EdgeTpuLibrary::open(found).map(Arc::new)
    })
}
