//! Probing the box: [`ProbeEnv`] (where `/dev`, `/sys` and the driver libraries are; tests point
//! it at a fake tree), the helpers the runtimes' probes share, and [`list_devices`], the report
//! behind `inference-server devices`: every runtime's devices and what it found, and for what
//! it cannot use, why.

use std::fmt;
use std::path::PathBuf;

use super::library::{self, LibraryPaths};
use super::registry;

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

    /// Whether a USB device with this (vendor, product) id is plugged in.
    pub fn has_usb_device(&self, (vendor, product): (&str, &str)) -> bool {
        self.usb_ids()
            .iter()
            .any(|(v, p)| v == vendor && p == product)
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

    /// The library folders, comma-separated, for messages.
    pub fn lib_dirs_label(&self) -> String {
        self.lib_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Coral Edge TPU USB ids: before (Global Unichip) and after (Google) its firmware is loaded.
pub const EDGETPU_USB_IDS: [(&str, &str); 2] = [("1a6e", "089a"), ("18d1", "9302")];

/// Every runtime's report lines.
pub fn list_devices(libraries: &LibraryPaths) -> Vec<DeviceReport> {
    probe_all(&ProbeEnv::system(), libraries)
}

/// [`list_devices`] against an explicit environment (testable).
pub fn probe_all(env: &ProbeEnv, libraries: &LibraryPaths) -> Vec<DeviceReport> {
    registry::runtimes()
        .into_iter()
        .flat_map(|runtime| runtime.probe(env, libraries))
        .collect()
}

/// NVIDIA driver presence: `Ok(evidence)` or `Err(why not)`.
pub fn nvidia_driver(env: &ProbeEnv) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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

    #[test]
    fn usb_ids_are_read_case_insensitively() {
        let tmp = tempfile::tempdir().unwrap();
        let env = fake_env(tmp.path());
        add_usb(tmp.path(), "1-2", "03E7", "2485");
        assert!(env.has_usb_device(("03e7", "2485")));
        assert!(!env.has_usb_device(("18d1", "9302")));
    }

    #[test]
    fn nvidia_probe_needs_a_device_node_or_driver_library() {
        let tmp = tempfile::tempdir().unwrap();
        let env = fake_env(tmp.path());
        assert!(nvidia_driver(&env)
            .unwrap_err()
            .contains("/dev/nvidia0 absent"));
        std::fs::write(tmp.path().join("dev/nvidiactl"), b"").unwrap();
        assert!(nvidia_driver(&env).is_err(), "nvidiactl alone is not a GPU");
        std::fs::write(tmp.path().join("dev/nvidia0"), b"").unwrap();
        assert_eq!(nvidia_driver(&env).unwrap(), "/dev/nvidia0");
        std::fs::write(tmp.path().join("lib/libcuda.so.1"), b"").unwrap();
        assert!(nvidia_driver(&env).unwrap().contains("libcuda.so.1"));
    }
}
