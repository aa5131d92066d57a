//! OpenVINO itself: found with the generic library search (`[openvino] library` in the server
//! config → `$OPENVINO_LIBRARY` → system locations → an installed Python `openvino` wheel, whose
//! `openvino/libs` has only versioned names), then bound once per process according to its
//! version: OpenVINO ≥ 2025.1 through `openvino-sys` ([`Binding::Current`]), OpenVINO 2022.3
//! LTS (the last with the MYRIAD plugin for the NCS2) through our own binding of its C API
//! ([`Binding::Legacy`]). Anything else is refused with the versions that work.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{ffi, legacy};
use crate::backend::library::{self, FoundLibrary, RuntimeLibrary, Wheel};
use crate::backend::BackendError;

/// OpenVINO's C library as the `openvino` wheel, Intel's archives and system packages ship it.
pub const OPENVINO: RuntimeLibrary = RuntimeLibrary {
    display_name: "OpenVINO",
    env_var: "OPENVINO_LIBRARY",
    file_stem: "libopenvino_c.so",
    wheel: Some(Wheel {
        python_module: "openvino",
        subdir: "libs",
    }),
    install: "`pip install openvino` (in the server's virtualenv or for python3), or install the library system-wide",
};

/// The oldest current OpenVINO the `openvino-sys` binding takes.
pub const CURRENT_MINIMUM: (u32, u32) = (2025, 1);
/// The LTS release that still has the MYRIAD plugin.
pub const LEGACY_RELEASE: (u32, u32) = (2022, 3);

/// How the loaded library is driven.
#[derive(Debug, Clone)]
pub enum Binding {
    /// OpenVINO ≥ 2025.1; one core for the process.
    Current(Arc<ffi::Core>),
    /// OpenVINO 2022.3.
    Legacy(Arc<legacy::Library>),
}

/// OpenVINO, loaded for this process.
#[derive(Debug, Clone)]
pub struct OvLibrary {
    pub library: FoundLibrary,
    /// The library's build number, e.g. `2026.4.1-22982-e213a147257-releases/2026/4`.
    pub version: String,
    pub binding: Binding,
}

impl OvLibrary {
    /// The devices OpenVINO sees now.
    pub fn available_devices(&self) -> Result<Vec<String>, BackendError> {
        match &self.binding {
            Binding::Current(core) => core
                .available_devices()
                .map_err(|e| BackendError::Internal(e.to_string())),
            Binding::Legacy(legacy) => legacy.available_devices().map_err(BackendError::Internal),
        }
    }

    /// A device's full name (`FULL_DEVICE_NAME`), or the device itself when unknown.
    pub fn device_name(&self, device: &str) -> String {
        match &self.binding {
            Binding::Current(core) => core
                .property(device, "FULL_DEVICE_NAME")
                .unwrap_or_else(|_| device.to_string()),
            Binding::Legacy(_) => device.to_string(),
        }
    }
}

static STATE: Mutex<Option<OvLibrary>> = Mutex::new(None);

/// Finds and binds OpenVINO once per process; later calls return the same library (one per
/// process). A failed attempt is not cached, so a later call may retry.
pub fn load(explicit: Option<&Path>) -> Result<OvLibrary, BackendError> {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(loaded) = state.as_ref() {
        return Ok(loaded.clone());
    }
    let found = library::LibrarySearch::standard(OPENVINO, explicit)
        .find()
        .map_err(|e| BackendError::LibraryUnavailable(e.to_string()))?;
    let unusable = |why: String| {
        BackendError::LibraryUnavailable(format!(
            "OpenVINO at {} ({}) cannot be used: {why}",
            found.path.display(),
            found.source
        ))
    };
    let version = legacy::library_version(&found.path).map_err(unusable)?;
    let release = release_of(&version)
        .ok_or_else(|| unusable(format!("unrecognised version '{version}'")))?;
    let binding = if release >= CURRENT_MINIMUM {
        bind_current(&found.path).map_err(unusable)?
    } else if (release.0, release.1) == LEGACY_RELEASE {
        Binding::Legacy(Arc::new(
            legacy::Library::open(&found.path).map_err(unusable)?,
        ))
    } else {
        return Err(unusable(format!(
            "version {version} is not supported: use OpenVINO {}.{} or newer (pip install openvino), \
             or {}.{} LTS for the NCS2 (MYRIAD)",
            CURRENT_MINIMUM.0, CURRENT_MINIMUM.1, LEGACY_RELEASE.0, LEGACY_RELEASE.1
        )));
    };
    tracing::info!(path = %found.path.display(), source = %found.source, %version, "loaded OpenVINO");
    let loaded = OvLibrary {
        library: found,
        version,
        binding,
    };
    *state = Some(loaded.clone());
    Ok(loaded)
}

/// Binds the current C API and creates the process's core.
fn bind_current(path: &Path) -> Result<Binding, String> {
    // openvino-sys parses the version with unwrap(); never let that take the server down.
    let bound = std::panic::catch_unwind(|| openvino_sys::library::load_from(path))
        .map_err(|_| "openvino-sys panicked while binding the library".to_string())?;
    bound?;
    let core = ffi::Core::new().map_err(|e| e.to_string())?;
    Ok(Binding::Current(Arc::new(core)))
}

/// `2026.4.1-22982-…` → `(2026, 4)`.
pub fn release_of(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(['.', '-']);
    let year = parts.next()?.trim().parse().ok()?;
    let minor = parts.next()?.trim().parse().ok()?;
    Some((year, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_read_from_build_numbers() {
        assert_eq!(
            release_of("2026.4.1-22982-e213a147257-releases/2026/4"),
            Some((2026, 4))
        );
        assert_eq!(
            release_of("2022.3.2-9279-e2c7e4d7b4d-releases/2022/3"),
            Some((2022, 3))
        );
        assert_eq!(release_of("custom_master_abcdef"), None);
        assert!((2025, 1) >= CURRENT_MINIMUM && (2024, 6) < CURRENT_MINIMUM);
    }
}
