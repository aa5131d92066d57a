//! The Coral Edge TPU runtime (`libedgetpu.so.1`): its device list (`edgetpu_list_devices`), its
//! version, and its external-delegate entry points (`tflite_plugin_create_delegate` /
//! `tflite_plugin_destroy_delegate`), which attach it to a classic TensorFlow Lite interpreter.
//! Also the device names (`edgetpu`, `edgetpu:N`, `edgetpu:usb[:N]`, `edgetpu:pci[:N]`) and the
//! check that libedgetpu and the TensorFlow Lite library it is loaded into were built from the
//! same TensorFlow release: libedgetpu passes TensorFlow Lite structs by value, so a mismatch
//! fails at run time (or worse) rather than at load.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::sync::Arc;

use crate::backend::library::FoundLibrary;

/// `enum edgetpu_device_type`.
const APEX_PCI: c_int = 0;
const APEX_USB: c_int = 1;

/// `struct edgetpu_device`.
#[repr(C)]
struct RawDevice {
    kind: c_int,
    path: *const c_char,
}

type ErrorCallback = unsafe extern "C" fn(*const c_char);

/// The libedgetpu functions this backend calls.
struct Functions {
    list_devices: unsafe extern "C" fn(*mut usize) -> *mut RawDevice,
    free_devices: unsafe extern "C" fn(*mut RawDevice),
    version: unsafe extern "C" fn() -> *const c_char,
    create_delegate: unsafe extern "C" fn(
        *mut *mut c_char,
        *mut *mut c_char,
        usize,
        Option<ErrorCallback>,
    ) -> *mut c_void,
    destroy_delegate: unsafe extern "C" fn(*mut c_void),
}

/// How an Edge TPU is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bus {
    Usb,
    Pci,
}

impl Bus {
    fn name(self) -> &'static str {
        match self {
            Bus::Usb => "usb",
            Bus::Pci => "pci",
        }
    }
}

/// One Edge TPU the runtime sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeTpu {
    pub bus: Bus,
    /// Its sysfs path (USB) or device node (`/dev/apex_0`).
    pub path: String,
}

/// A device name from a config: which Edge TPU to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeTpuSpec {
    /// Only this bus, or any.
    pub bus: Option<Bus>,
    /// The Nth device (of that bus, or of all), counted from 0.
    pub index: usize,
}

impl EdgeTpuSpec {
    /// `edgetpu`, `edgetpu:N`, `edgetpu:usb`, `edgetpu:usb:N`, `edgetpu:pci`, `edgetpu:pci:N`.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.trim().to_ascii_lowercase();
        let rest = rest.strip_prefix("edgetpu")?;
        let index = |text: &str| text.parse::<usize>().ok();
        let (bus, index) = match rest.split(':').collect::<Vec<_>>().as_slice() {
            [""] => (None, 0),
            ["", part] => match bus_of(part) {
                Some(bus) => (Some(bus), 0),
                None => (None, index(part)?),
            },
            ["", bus, n] => (Some(bus_of(bus)?), index(n)?),
            _ => return None,
        };
        Some(EdgeTpuSpec { bus, index })
    }

    /// The canonical name: `edgetpu:usb:0`, or `edgetpu:0` for any bus.
    pub fn canonical(&self) -> String {
        match self.bus {
            Some(bus) => format!("edgetpu:{}:{}", bus.name(), self.index),
            None => format!("edgetpu:{}", self.index),
        }
    }

    /// The device among `devices` this names.
    pub fn pick<'a>(&self, devices: &'a [EdgeTpu]) -> Option<&'a EdgeTpu> {
        devices
            .iter()
            .filter(|d| self.bus.is_none_or(|bus| d.bus == bus))
            .nth(self.index)
    }

    /// libedgetpu's `device` option for it: `usb:N`, `pci:N` or `:N` (an index is always given,
    /// since libedgetpu applies its other options only to an indexed device).
    pub fn plugin_option(&self) -> String {
        match self.bus {
            Some(bus) => format!("{}:{}", bus.name(), self.index),
            None => format!(":{}", self.index),
        }
    }
}

fn bus_of(name: &str) -> Option<Bus> {
    match name {
        "usb" => Some(Bus::Usb),
        "pci" => Some(Bus::Pci),
        _ => None,
    }
}

/// libedgetpu, bound.
pub struct EdgeTpuLibrary {
    fns: Functions,
    pub found: FoundLibrary,
    /// `edgetpu_version()`, e.g. `BuildLabel(…), RuntimeVersion(14)`.
    pub version: String,
    // Last: unloaded after everything that used it.
    _lib: libloading::Library,
}

impl fmt::Debug for EdgeTpuLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeTpuLibrary")
            .field("path", &self.found.path)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

// SAFETY: libedgetpu's C API and plugin entry points are thread-safe (its device manager is a
// locked singleton); the library handle is only read.
unsafe impl Send for EdgeTpuLibrary {}
unsafe impl Sync for EdgeTpuLibrary {}

impl EdgeTpuLibrary {
    /// Opens libedgetpu at `found` and binds its entry points.
    pub fn open(found: &FoundLibrary) -> Result<Self, String> {
        // SAFETY: loading runs the library's initialisers; this is the libedgetpu the operator
        // installed or named.
        let lib = unsafe { libloading::Library::new(&found.path) }
            .map_err(|e| format!("cannot open: {e}"))?;
        // SAFETY: the symbols have these signatures in libedgetpu's public headers
        // (tflite/public/edgetpu_c.h and the external-delegate plugin interface); the pointers
        // stay valid while `lib` is kept in the struct.
        let fns = unsafe {
            bind_functions!(
                lib,
                Functions,
                "is it libedgetpu?",
                list_devices = "edgetpu_list_devices",
                free_devices = "edgetpu_free_devices",
                version = "edgetpu_version",
                create_delegate = "tflite_plugin_create_delegate",
                destroy_delegate = "tflite_plugin_destroy_delegate",
            )
        };
        // SAFETY: edgetpu_version returns a static NUL-terminated string.
        let version = unsafe { c_text((fns.version)()) };
        Ok(EdgeTpuLibrary {
            fns,
            found: found.clone(),
            version,
            _lib: lib,
        })
    }

    /// The Edge TPUs present now, in libedgetpu's order.
    pub fn devices(&self) -> Vec<EdgeTpu> {
        let mut count = 0usize;
        // SAFETY: edgetpu_list_devices returns an array of `count` entries (or null), which
        // edgetpu_free_devices frees once; the paths are copied before that.
        unsafe {
            let raw = (self.fns.list_devices)(&mut count);
            if raw.is_null() {
                return Vec::new();
            }
            let devices = std::slice::from_raw_parts(raw, count)
                .iter()
                .filter_map(|d| {
                    let bus = match d.kind {
                        APEX_USB => Bus::Usb,
                        APEX_PCI => Bus::Pci,
                        _ => return None,
                    };
                    Some(EdgeTpu {
                        bus,
                        path: c_text(d.path),
                    })
                })
                .collect();
            (self.fns.free_devices)(raw);
            devices
        }
    }

    /// A delegate for one Edge TPU, with libedgetpu's options (`device`, `Performance`, ...).
    pub fn create_delegate(
        self: &Arc<Self>,
        options: &[(&str, String)],
    ) -> Result<EdgeTpuDelegate, String> {
        let to_c = |text: &str| {
            CString::new(text).map_err(|_| format!("option '{text}' contains a NUL byte"))
        };
        let keys = options
            .iter()
            .map(|(k, _)| to_c(k))
            .collect::<Result<Vec<_>, _>>()?;
        let values = options
            .iter()
            .map(|(_, v)| to_c(v))
            .collect::<Result<Vec<_>, _>>()?;
        let mut key_ptrs: Vec<*mut c_char> = keys.iter().map(|k| k.as_ptr().cast_mut()).collect();
        let mut value_ptrs: Vec<*mut c_char> =
            values.iter().map(|v| v.as_ptr().cast_mut()).collect();
        PLUGIN_ERRORS.with(|e| e.borrow_mut().clear());
        // SAFETY: the arrays hold `options.len()` NUL-terminated strings that outlive the call;
        // the plugin copies what it keeps. The callback only appends to a thread-local.
        let delegate = unsafe {
            (self.fns.create_delegate)(
                key_ptrs.as_mut_ptr(),
                value_ptrs.as_mut_ptr(),
                options.len(),
                Some(record_plugin_error),
            )
        };
        let reported = PLUGIN_ERRORS.with(|e| e.borrow_mut().drain(..).collect::<Vec<_>>());
        if delegate.is_null() {
            let why = if reported.is_empty() {
                "libedgetpu returned no delegate (is the Edge TPU plugged in and free?)".to_string()
            } else {
                reported.join("; ")
            };
            return Err(why);
        }
        Ok(EdgeTpuDelegate {
            raw: delegate,
            library: Arc::clone(self),
        })
    }
}

thread_local! {
    /// Messages the plugin reported during the current `tflite_plugin_create_delegate` call.
    static PLUGIN_ERRORS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The plugin's error callback.
unsafe extern "C" fn record_plugin_error(message: *const c_char) {
    // SAFETY: the plugin passes a NUL-terminated message (or null).
    let text = unsafe { c_text(message) };
    PLUGIN_ERRORS.with(|e| e.borrow_mut().push(text));
}

/// A copy of a C string; empty for null.
///
/// # Safety
/// `text` must be null or point to a NUL-terminated string.
unsafe fn c_text(text: *const c_char) -> String {
    if text.is_null() {
        String::new()
    } else {
        // SAFETY: the caller's promise.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .trim()
            .to_string()
    }
}

/// One Edge TPU delegate (`TfLiteDelegate*`), destroyed with the plugin's destroy function.
pub struct EdgeTpuDelegate {
    raw: *mut c_void,
    library: Arc<EdgeTpuLibrary>,
}

// SAFETY: the delegate is used by one interpreter on one thread at a time; libedgetpu's device
// context behind it is thread-safe.
unsafe impl Send for EdgeTpuDelegate {}

impl EdgeTpuDelegate {
    /// The `TfLiteDelegate*` to add to interpreter options.
    pub fn as_ptr(&self) -> *mut c_void {
        self.raw
    }
}

impl Drop for EdgeTpuDelegate {
    fn drop(&mut self) {
        // SAFETY: created by tflite_plugin_create_delegate, destroyed once, after the
        // interpreter that used it (the owner drops the interpreter first).
        unsafe { (self.library.fns.destroy_delegate)(self.raw) }
    }
}

/// The TensorFlow release a libedgetpu build names in its version string (`…TENSORFLOW=1.15.5…`,
/// `…tf2.17.1…`), or, for Google's official builds, which name none: 2.5 (libedgetpu 16.0 pairs
/// with tflite_runtime 2.5.0.post1).
pub fn tensorflow_release_of(edgetpu_version: &str) -> (String, bool) {
    let lower = edgetpu_version.to_ascii_lowercase();
    for marker in ["tensorflow=", "tensorflow ", "tf="] {
        if let Some(at) = lower.find(marker) {
            if let Some(release) = major_minor(&lower[at + marker.len()..]) {
                return (release, true);
            }
        }
    }
    // `tf2.17.1`, as a word of its own (not the `tf` inside `platform`).
    for (at, _) in lower.match_indices("tf") {
        let word_start = at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric();
        if word_start {
            if let Some(release) = major_minor(&lower[at + 2..]) {
                return (release, true);
            }
        }
    }
    ("2.5".to_string(), false)
}

/// `2.17.1…` → `2.17`.
fn major_minor(text: &str) -> Option<String> {
    let digits: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = digits.split('.').filter(|p| !p.is_empty());
    let major = parts.next()?;
    let minor = parts.next()?;
    Some(format!("{major}.{minor}"))
}

/// Refuses a libedgetpu and a TensorFlow Lite C library from different TensorFlow releases.
pub fn check_pairing(edgetpu_version: &str, tflite_version: &str) -> Result<(), String> {
    let (wanted, named) = tensorflow_release_of(edgetpu_version);
    let have = major_minor(tflite_version).unwrap_or_else(|| tflite_version.to_string());
    if wanted == have {
        return Ok(());
    }
    let origin = if named {
        format!("this libedgetpu was built against TensorFlow {wanted}")
    } else {
        format!(
            "this libedgetpu names no TensorFlow release, as Google's official builds do: \
             libedgetpu 16.0 is built against TensorFlow {wanted} (tflite_runtime 2.5.0.post1)"
        )
    };
    Err(format!(
        "{origin}, but the TensorFlow Lite C library is {tflite_version}: libedgetpu passes \
         TensorFlow Lite structs by value, so the two must come from the same TensorFlow release. \
         Use a TensorFlow Lite {wanted} C library, or a libedgetpu built for TensorFlow {have}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_pick_an_edge_tpu() {
        let parse = |n| EdgeTpuSpec::parse(n).map(|s| s.canonical());
        assert_eq!(parse("edgetpu").as_deref(), Some("edgetpu:0"));
        assert_eq!(parse("EdgeTPU:2").as_deref(), Some("edgetpu:2"));
        assert_eq!(parse("edgetpu:usb").as_deref(), Some("edgetpu:usb:0"));
        assert_eq!(parse("edgetpu:pci:1").as_deref(), Some("edgetpu:pci:1"));
        for bad in [
            "edgetpu:",
            "edgetpu:x",
            "edgetpu:usb:x",
            "edgetpu:sata:0",
            "tpu",
            "edgetpuu",
            "edgetpu:usb:0:1",
        ] {
            assert_eq!(EdgeTpuSpec::parse(bad), None, "{bad}");
        }
        let devices = [
            EdgeTpu {
                bus: Bus::Pci,
                path: "/dev/apex_0".into(),
            },
            EdgeTpu {
                bus: Bus::Usb,
                path: "/sys/bus/usb/devices/2-1".into(),
            },
            EdgeTpu {
                bus: Bus::Usb,
                path: "/sys/bus/usb/devices/2-2".into(),
            },
        ];
        let pick = |n| {
            EdgeTpuSpec::parse(n)
                .unwrap()
                .pick(&devices)
                .map(|d| d.path.as_str())
        };
        assert_eq!(pick("edgetpu"), Some("/dev/apex_0"));
        assert_eq!(pick("edgetpu:2"), Some("/sys/bus/usb/devices/2-2"));
        assert_eq!(pick("edgetpu:usb:1"), Some("/sys/bus/usb/devices/2-2"));
        assert_eq!(pick("edgetpu:pci:1"), None);
        assert_eq!(
            EdgeTpuSpec::parse("edgetpu:usb:1").unwrap().plugin_option(),
            "usb:1"
        );
        assert_eq!(EdgeTpuSpec::parse("edgetpu").unwrap().plugin_option(), ":0");
    }

    #[test]
    fn libedgetpu_and_tflite_must_come_from_one_tensorflow_release() {
        let official =
            "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted), RuntimeVersion(14)";
        assert_eq!(tensorflow_release_of(official), ("2.5".into(), false));
        assert!(check_pairing(official, "2.5.0").is_ok());
        let err = check_pairing(official, "2.17.1").unwrap_err();
        assert!(
            err.contains("TensorFlow 2.5") && err.contains("2.17.1"),
            "{err}"
        );
        let community = "BuildLabel(COMPILER=12.2 tf2.17.1), RuntimeVersion(14)";
        assert_eq!(tensorflow_release_of(community), ("2.17".into(), true));
        assert!(check_pairing(community, "2.17.0").is_ok());
        let ours = "BuildLabel(COMPILER=FAKE,TENSORFLOW=1.15.5), RuntimeVersion(14)";
        assert!(check_pairing(ours, "1.15.5").is_ok());
        assert!(check_pairing(ours, "2.5.0")
            .unwrap_err()
            .contains("built against TensorFlow 1.15"));
    }
}
