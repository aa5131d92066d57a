//! NVIDIA's management library (`libnvidia-ml.so.1`, installed with the driver), bound at run
//! time for `inference-server devices`: the driver version and each GPU's name and memory.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

use super::devices::ProbeEnv;

/// The library's file name.
pub const LIBRARY: &str = "libnvidia-ml.so.1";

/// One GPU as NVML sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub memory_bytes: u64,
}

/// The driver and its GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInventory {
    pub driver: String,
    pub gpus: Vec<Gpu>,
}

/// `nvmlMemory_t`.
#[repr(C)]
#[derive(Default)]
struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

type Device = *mut c_void;

struct Functions {
    init: unsafe extern "C" fn() -> c_int,
    shutdown: unsafe extern "C" fn() -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    driver_version: unsafe extern "C" fn(*mut c_char, c_uint) -> c_int,
    device_count: unsafe extern "C" fn(*mut c_uint) -> c_int,
    device_by_index: unsafe extern "C" fn(c_uint, *mut Device) -> c_int,
    device_name: unsafe extern "C" fn(Device, *mut c_char, c_uint) -> c_int,
    device_memory: unsafe extern "C" fn(Device, *mut Memory) -> c_int,
}

/// The GPUs the driver reports, from the NVML library in `env`'s library folders.
pub fn inventory(env: &ProbeEnv) -> Result<GpuInventory, String> {
    let path = env.find_library(LIBRARY).ok_or_else(|| {
        format!(
            "no NVIDIA driver: {LIBRARY} not found in {}",
            env.lib_dirs_label()
        )
    })?;
    // SAFETY: NVML's initialisers only set up its own state.
    let library = unsafe { libloading::Library::new(&path) }
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    let hint = "it is not NVIDIA's management library";
    // SAFETY: the signatures are those of nvml.h.
    let f = unsafe {
        bind_functions!(
            library,
            Functions,
            hint,
            init = "nvmlInit_v2",
            shutdown = "nvmlShutdown",
            error_string = "nvmlErrorString",
            driver_version = "nvmlSystemGetDriverVersion",
            device_count = "nvmlDeviceGetCount_v2",
            device_by_index = "nvmlDeviceGetHandleByIndex_v2",
            device_name = "nvmlDeviceGetName",
            device_memory = "nvmlDeviceGetMemoryInfo",
        )
    };
    let check = |status: c_int, what: &str| -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: nvmlErrorString returns a static string for any code.
        let text = unsafe { (f.error_string)(status) };
        let text = if text.is_null() {
            format!("error {status}")
        } else {
            // SAFETY: as above.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        Err(format!("NVML {what}: {text}"))
    };
    // SAFETY: every call below passes buffers of the lengths it names, after a successful init.
    unsafe {
        check((f.init)(), "init")?;
        let result = (|| {
            let mut text = [0 as c_char; 96];
            check((f.driver_version)(text.as_mut_ptr(), 96), "driver version")?;
            let driver = CStr::from_ptr(text.as_ptr()).to_string_lossy().into_owned();
            let mut count: c_uint = 0;
            check((f.device_count)(&mut count), "device count")?;
            let mut gpus = Vec::new();
            for index in 0..count {
                let mut device: Device = std::ptr::null_mut();
                check((f.device_by_index)(index, &mut device), "device handle")?;
                let mut name = [0 as c_char; 96];
                check(
                    (f.device_name)(device, name.as_mut_ptr(), 96),
                    "device name",
                )?;
                let mut memory = Memory::default();
                check((f.device_memory)(device, &mut memory), "device memory")?;
                gpus.push(Gpu {
                    index,
                    name: CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
                    memory_bytes: memory.total,
                });
            }
            Ok(GpuInventory { driver, gpus })
        })();
        (f.shutdown)();
        result
    }
}
