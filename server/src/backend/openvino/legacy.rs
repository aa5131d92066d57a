//! The OpenVINO 2022.3 LTS path, for the Intel NCS2 (`device = "MYRIAD"`): the MYRIAD plugin
//! exists only up to 2022.3, which `openvino-sys` 0.11 refuses, and no registry ships a 2022.3
//! build with it. So this is our own small binding of the 2022.3 C API (`ov_*`, "API 2.0"),
//! loaded at run time from the user's install of Intel's 2022.3 archive
//! (`/opt/intel/openvino_2022/runtime/lib/<arch>/libopenvino_c.so`), with the declarations of
//! that release: its element-type numbering, the variadic `ov_core_compile_model`, and
//! `ov_get_error_info` (2022.3 has no `ov_get_last_err_msg`).
//!
//! It reads, reshapes (the NCS2 needs static shapes), compiles and runs models on MYRIAD and the
//! CPU. Input preprocessing and `inference_precision` need OpenVINO ≥ 2025.1 and are refused.
//! **Unverified on a real stick and a real 2022.3 library**: none is available where this was
//! built; the version probe, device selection, the USB probe and the errors are tested.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use openvino_sys::ov_element_type_e as E;

use super::environment::OvLibrary;
use super::ffi::{self, Port};
use super::instance::{preprocessing, require_device, specs, target_shapes};
use super::{OvSettings, NCS2_USB_ID};
use crate::backend::devices::{DeviceStatus, ProbeEnv};
use crate::backend::runtime::LoadRequest;
use crate::backend::{Backend, BackendError, ModelSignature};
use crate::tensor::Tensor;

/// The NCS2 after its firmware is loaded (the "VSC" mode ids).
pub const NCS2_BOOTED_USB_ID: (&str, &str) = ("03e7", "f63b");

type Status = i32;
type Handle = *mut c_void;

#[repr(C)]
#[derive(Clone, Copy)]
struct Dim {
    min: i64,
    max: i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Shape {
    rank: i64,
    dims: *mut i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PartialShape {
    rank: Dim,
    dims: *mut Dim,
}

#[repr(C)]
struct Version {
    build_number: *const c_char,
    description: *const c_char,
}

#[repr(C)]
struct Devices {
    devices: *mut *mut c_char,
    size: usize,
}

/// 2022.3's `ov_element_type_e` numbering: UNDEFINED, DYNAMIC, BOOLEAN, BF16, F16, F32, F64, I4,
/// I8, I16, I32, I64, U1, U4, U8, U16, U32, U64.
const ELEMENT_TYPES: [(u32, E); 13] = [
    (2, E::OV_BOOLEAN),
    (3, E::BF16),
    (4, E::F16),
    (5, E::F32),
    (6, E::F64),
    (8, E::I8),
    (9, E::I16),
    (10, E::I32),
    (11, E::I64),
    (14, E::U8),
    (15, E::U16),
    (16, E::U32),
    (17, E::U64),
];

fn from_legacy(value: u32) -> E {
    ELEMENT_TYPES
        .iter()
        .find(|(v, _)| *v == value)
        .map_or(E::DYNAMIC, |(_, e)| *e)
}

fn to_legacy(element: E) -> Option<u32> {
    ELEMENT_TYPES
        .iter()
        .find(|(_, e)| *e == element)
        .map(|(v, _)| *v)
}

type VersionFn = unsafe extern "C" fn(*mut Version) -> Status;
type VersionFreeFn = unsafe extern "C" fn(*mut Version);

/// The 2022.3 functions this backend calls.
struct Functions {
    error_info: unsafe extern "C" fn(Status) -> *const c_char,
    free: unsafe extern "C" fn(*const c_char),
    core_create: unsafe extern "C" fn(*mut Handle) -> Status,
    core_free: unsafe extern "C" fn(Handle),
    core_read_model:
        unsafe extern "C" fn(Handle, *const c_char, *const c_char, *mut Handle) -> Status,
    core_compile_model:
        unsafe extern "C" fn(Handle, Handle, *const c_char, usize, *mut Handle, ...) -> Status,
    core_get_available_devices: unsafe extern "C" fn(Handle, *mut Devices) -> Status,
    available_devices_free: unsafe extern "C" fn(*mut Devices),
    model_free: unsafe extern "C" fn(Handle),
    model_inputs_size: unsafe extern "C" fn(Handle, *mut usize) -> Status,
    model_outputs_size: unsafe extern "C" fn(Handle, *mut usize) -> Status,
    model_const_input_by_index: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status,
    model_const_output_by_index: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status,
    model_reshape_input_by_name:
        unsafe extern "C" fn(Handle, *const c_char, PartialShape) -> Status,
    port_get_any_name: unsafe extern "C" fn(Handle, *mut *mut c_char) -> Status,
    port_get_element_type: unsafe extern "C" fn(Handle, *mut u32) -> Status,
    port_get_partial_shape: unsafe extern "C" fn(Handle, *mut PartialShape) -> Status,
    output_const_port_free: unsafe extern "C" fn(Handle),
    partial_shape_create: unsafe extern "C" fn(i64, *const Dim, *mut PartialShape) -> Status,
    partial_shape_free: unsafe extern "C" fn(*mut PartialShape),
    shape_free: unsafe extern "C" fn(*mut Shape) -> Status,
    create_infer_request: unsafe extern "C" fn(Handle, *mut Handle) -> Status,
    compiled_model_free: unsafe extern "C" fn(Handle),
    set_input_tensor_by_index: unsafe extern "C" fn(Handle, usize, Handle) -> Status,
    infer: unsafe extern "C" fn(Handle) -> Status,
    get_output_tensor_by_index: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status,
    infer_request_free: unsafe extern "C" fn(Handle),
    tensor_create_from_host_ptr:
        unsafe extern "C" fn(u32, Shape, *mut c_void, *mut Handle) -> Status,
    tensor_get_shape: unsafe extern "C" fn(Handle, *mut Shape) -> Status,
    tensor_get_element_type: unsafe extern "C" fn(Handle, *mut u32) -> Status,
    tensor_get_byte_size: unsafe extern "C" fn(Handle, *mut usize) -> Status,
    tensor_data: unsafe extern "C" fn(Handle, *mut *mut c_void) -> Status,
    tensor_free: unsafe extern "C" fn(Handle),
}

/// Opens `path` for its symbols (RTLD_LOCAL: nothing leaks into the process).
fn open(path: &Path) -> Result<libloading::Library, String> {
    // SAFETY: loading a shared library runs its initialisers; this is the OpenVINO C library
    // the operator pointed the server at.
    unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot open: {e}"))
}

/// Reads a library's build number with `ov_get_openvino_version`, which every release since
/// 2022.1 exports with the same layout. Used to choose the binding before binding anything.
pub fn library_version(path: &Path) -> Result<String, String> {
    let lib = open(path)?;
    // SAFETY: the symbols have these signatures in every release with the 2.0 C API; the
    // version strings are copied before ov_version_free.
    unsafe {
        let get = *lib
            .get::<VersionFn>(b"ov_get_openvino_version\0")
            .map_err(|e| format!("not an OpenVINO C library (ov_get_openvino_version: {e})"))?;
        let free = *lib
            .get::<VersionFreeFn>(b"ov_version_free\0")
            .map_err(|e| format!("ov_version_free: {e}"))?;
        let mut version = Version {
            build_number: ptr::null(),
            description: ptr::null(),
        };
        if get(&mut version) != 0 || version.build_number.is_null() {
            return Err("ov_get_openvino_version failed".into());
        }
        let text = CStr::from_ptr(version.build_number)
            .to_string_lossy()
            .into_owned();
        free(&mut version);
        Ok(text)
    }
}

/// OpenVINO 2022.3, bound, with one core for the process.
pub struct Library {
    core: Handle,
    fns: Functions,
    // Last: unloaded after the core is freed.
    _lib: libloading::Library,
}

// SAFETY: ov::Core is thread-safe; the core handle is only freed on drop.
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("legacy::Library").finish_non_exhaustive()
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: created in open, freed once.
        unsafe { (self.fns.core_free)(self.core) }
    }
}

impl Library {
    /// Binds the 2022.3 C API of the library at `path` and creates a core.
    pub fn open(path: &Path) -> Result<Self, String> {
        let lib = open(path)?;
        // SAFETY: each symbol is declared with its 2022.3 signature; the pointers stay valid
        // while `lib` is loaded, and `lib` is kept in the struct beside them.
        let fns = unsafe {
            bind_functions!(
                lib,
                Functions,
                "is it OpenVINO 2022.3?",
                error_info = "ov_get_error_info",
                free = "ov_free",
                core_create = "ov_core_create",
                core_free = "ov_core_free",
                core_read_model = "ov_core_read_model",
                core_compile_model = "ov_core_compile_model",
                core_get_available_devices = "ov_core_get_available_devices",
                available_devices_free = "ov_available_devices_free",
                model_free = "ov_model_free",
                model_inputs_size = "ov_model_inputs_size",
                model_outputs_size = "ov_model_outputs_size",
                model_const_input_by_index = "ov_model_const_input_by_index",
                model_const_output_by_index = "ov_model_const_output_by_index",
                model_reshape_input_by_name = "ov_model_reshape_input_by_name",
                port_get_any_name = "ov_port_get_any_name",
                port_get_element_type = "ov_port_get_element_type",
                port_get_partial_shape = "ov_port_get_partial_shape",
                output_const_port_free = "ov_output_const_port_free",
                partial_shape_create = "ov_partial_shape_create",
                partial_shape_free = "ov_partial_shape_free",
                shape_free = "ov_shape_free",
                create_infer_request = "ov_compiled_model_create_infer_request",
                compiled_model_free = "ov_compiled_model_free",
                set_input_tensor_by_index = "ov_infer_request_set_input_tensor_by_index",
                infer = "ov_infer_request_infer",
                get_output_tensor_by_index = "ov_infer_request_get_output_tensor_by_index",
                infer_request_free = "ov_infer_request_free",
                tensor_create_from_host_ptr = "ov_tensor_create_from_host_ptr",
                tensor_get_shape = "ov_tensor_get_shape",
                tensor_get_element_type = "ov_tensor_get_element_type",
                tensor_get_byte_size = "ov_tensor_get_byte_size",
                tensor_data = "ov_tensor_data",
                tensor_free = "ov_tensor_free",
            )
        };
        let mut core = ptr::null_mut();
        // SAFETY: valid out-parameter.
        let status = unsafe { (fns.core_create)(&mut core) };
        let library = Library {
            core,
            fns,
            _lib: lib,
        };
        library.check(status, "ov_core_create")?;
        Ok(library)
    }

    fn check(&self, status: Status, call: &str) -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: ov_get_error_info returns a static string for any status.
        let info = unsafe {
            let text = (self.fns.error_info)(status);
            if text.is_null() {
                String::new()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            }
        };
        Err(format!("{call}: {info} (status {status})"))
    }

    /// The devices the 2022.3 plugins see, e.g. `["CPU", "MYRIAD"]`.
    pub fn available_devices(&self) -> Result<Vec<String>, String> {
        let mut devices = Devices {
            devices: ptr::null_mut(),
            size: 0,
        };
        // SAFETY: the list is read within its size, then freed with its own free function.
        unsafe {
            self.check(
                (self.fns.core_get_available_devices)(self.core, &mut devices),
                "ov_core_get_available_devices",
            )?;
            let names = (0..devices.size)
                .map(|i| *devices.devices.add(i))
                .filter(|p| !p.is_null())
                .map(|p| CStr::from_ptr(p).to_string_lossy().into_owned())
                .collect();
            (self.fns.available_devices_free)(&mut devices);
            Ok(names)
        }
    }

    /// Copies and frees a string the library allocated.
    ///
    /// # Safety
    /// `text` must be null or a string allocated by OpenVINO, unused afterwards.
    unsafe fn take_string(&self, text: *mut c_char) -> String {
        if text.is_null() {
            return String::new();
        }
        let owned = CStr::from_ptr(text).to_string_lossy().into_owned();
        (self.fns.free)(text);
        owned
    }

    /// Every input (`inputs`) or output port of `model`.
    ///
    /// # Safety
    /// `model` must be a valid model handle of this library.
    unsafe fn ports(&self, model: Handle, inputs: bool) -> Result<Vec<Port>, String> {
        let mut count = 0usize;
        let (size, by_index) = if inputs {
            (
                self.fns.model_inputs_size,
                self.fns.model_const_input_by_index,
            )
        } else {
            (
                self.fns.model_outputs_size,
                self.fns.model_const_output_by_index,
            )
        };
        self.check(size(model, &mut count), "ov_model_ports_size")?;
        let mut out = Vec::with_capacity(count);
        for index in 0..count {
            let mut port = ptr::null_mut();
            self.check(
                by_index(model, index, &mut port),
                "ov_model_const_port_by_index",
            )?;
            let read = self.read_port(port);
            (self.fns.output_const_port_free)(port);
            out.push(read?);
        }
        Ok(out)
    }

    /// # Safety
    /// `port` must be a valid port handle of this library.
    unsafe fn read_port(&self, port: Handle) -> Result<Port, String> {
        let mut name = ptr::null_mut();
        self.check(
            (self.fns.port_get_any_name)(port, &mut name),
            "ov_port_get_any_name",
        )?;
        let name = self.take_string(name);
        let mut element = 0u32;
        self.check(
            (self.fns.port_get_element_type)(port, &mut element),
            "ov_port_get_element_type",
        )?;
        let mut shape = PartialShape {
            rank: Dim { min: 0, max: 0 },
            dims: ptr::null_mut(),
        };
        self.check(
            (self.fns.port_get_partial_shape)(port, &mut shape),
            "ov_port_get_partial_shape",
        )?;
        let dims = if shape.rank.max < 0 || shape.rank.min != shape.rank.max || shape.dims.is_null()
        {
            None
        } else {
            let rank = usize::try_from(shape.rank.max).unwrap_or(0);
            Some(
                (0..rank)
                    .map(|i| {
                        let d = *shape.dims.add(i);
                        if d.max < 0 || d.min != d.max {
                            -1
                        } else {
                            d.max
                        }
                    })
                    .collect(),
            )
        };
        (self.fns.partial_shape_free)(&mut shape);
        Ok(Port {
            name,
            element_type: from_legacy(element),
            dims,
        })
    }
}

fn c_string(text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| format!("'{text}' contains a NUL byte"))
}

/// A model, compiled model and request of the 2022.3 library.
struct Handles {
    model: Handle,
    compiled: Handle,
    request: Handle,
}

/// One OpenVINO 2022.3 instance (MYRIAD or CPU).
pub struct LegacyBackend {
    library: Arc<Library>,
    handles: Handles,
    device: String,
    signature: ModelSignature,
}

// SAFETY: the handles are used only by the instance thread that owns this backend.
unsafe impl Send for LegacyBackend {}

impl Drop for LegacyBackend {
    fn drop(&mut self) {
        let fns = &self.library.fns;
        // SAFETY: each handle was created by this library and is freed once, request first.
        unsafe {
            if !self.handles.request.is_null() {
                (fns.infer_request_free)(self.handles.request);
            }
            if !self.handles.compiled.is_null() {
                (fns.compiled_model_free)(self.handles.compiled);
            }
            if !self.handles.model.is_null() {
                (fns.model_free)(self.handles.model);
            }
        }
    }
}

/// Settings the 2022.3 binding cannot apply; refused rather than ignored.
fn refuse_unsupported(settings: &OvSettings) -> Result<(), String> {
    if !settings.preprocess.is_empty() {
        return Err("[[openvino.preprocess]] needs OpenVINO 2025.1 or newer; with 2022.3, send the model's own input type".into());
    }
    if settings.inference_precision.is_some() {
        return Err(
            "openvino.inference_precision needs OpenVINO 2025.1 or newer (MYRIAD runs FP16 anyway)"
                .into(),
        );
    }
    Ok(())
}

/// Loads one instance on the 2022.3 library.
pub fn load(
    library: &Arc<Library>,
    loaded: &OvLibrary,
    request: &LoadRequest<'_>,
    settings: &OvSettings,
) -> Result<Box<dyn Backend>, BackendError> {
    let device = request.device.name.clone();
    let path = request.model.model.display().to_string();
    let invalid = |reason: String| BackendError::InvalidModel {
        path: path.clone(),
        reason,
    };
    refuse_unsupported(settings).map_err(&invalid)?;
    let available = library
        .available_devices()
        .map_err(BackendError::LibraryUnavailable)?;
    require_device(&available, &device, &loaded.version)?;

    let mut backend = LegacyBackend {
        library: Arc::clone(library),
        handles: Handles {
            model: ptr::null_mut(),
            compiled: ptr::null_mut(),
            request: ptr::null_mut(),
        },
        device: device.clone(),
        signature: ModelSignature {
            inputs: Vec::new(),
            outputs: Vec::new(),
            batch: crate::backend::BatchSupport::Unbatched,
            quantization: Default::default(),
        },
    };
    let lib = library.as_ref();
    let model_file = c_string(&path).map_err(&invalid)?;
    let weights = request
        .model
        .files
        .get(1)
        .map(|w| c_string(&w.display().to_string()))
        .transpose()
        .map_err(&invalid)?;
    // SAFETY: valid core and C strings; the handles are stored in `backend`, which frees them
    // even when a later step fails.
    unsafe {
        lib.check(
            (lib.fns.core_read_model)(
                lib.core,
                model_file.as_ptr(),
                weights.as_ref().map_or(ptr::null(), |w| w.as_ptr()),
                &mut backend.handles.model,
            ),
            "ov_core_read_model",
        )
        .map_err(&invalid)?;
        let model = backend.handles.model;
        let inputs = lib.ports(model, true).map_err(&invalid)?;
        // Checks the names; the steps themselves were refused above.
        preprocessing(&inputs, settings, &path)?;
        for (name, dims) in target_shapes(&inputs, settings, &device, &path)? {
            let current = inputs
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.dims.as_ref());
            if current == Some(&dims) {
                continue;
            }
            let dimensions: Vec<Dim> = dims
                .iter()
                .map(|&d| {
                    if d < 0 {
                        Dim { min: 0, max: -1 }
                    } else {
                        Dim { min: d, max: d }
                    }
                })
                .collect();
            let mut shape = PartialShape {
                rank: Dim { min: 0, max: 0 },
                dims: ptr::null_mut(),
            };
            lib.check(
                (lib.fns.partial_shape_create)(dims.len() as i64, dimensions.as_ptr(), &mut shape),
                "ov_partial_shape_create",
            )
            .map_err(&invalid)?;
            let name = c_string(&name).map_err(&invalid)?;
            let reshaped = lib.check(
                (lib.fns.model_reshape_input_by_name)(model, name.as_ptr(), shape),
                "ov_model_reshape_input_by_name",
            );
            (lib.fns.partial_shape_free)(&mut shape);
            reshaped.map_err(&invalid)?;
        }
        let inputs = specs(&lib.ports(model, true).map_err(&invalid)?, |p| {
            ffi::datatype_of(p.element_type)
        })
        .map_err(&invalid)?;
        let outputs = specs(&lib.ports(model, false).map_err(&invalid)?, |p| {
            ffi::datatype_of(p.element_type)
        })
        .map_err(&invalid)?;
        backend.signature = ModelSignature::from_full_dims(inputs, outputs, request.max_batch_size)
            .map_err(&invalid)?;

        let properties: Vec<(CString, CString)> = settings
            .properties(&device)
            .into_iter()
            .filter(|(key, _)| *key != "INFERENCE_PRECISION_HINT")
            .map(|(k, v)| Ok((c_string(k)?, c_string(&v)?)))
            .collect::<Result<_, String>>()
            .map_err(&invalid)?;
        let device_c = c_string(&device).map_err(&invalid)?;
        let p = |i: usize| -> (*const c_char, *const c_char) {
            (properties[i].0.as_ptr(), properties[i].1.as_ptr())
        };
        let compiled = &mut backend.handles.compiled;
        let f = lib.fns.core_compile_model;
        let status = match properties.len() {
            0 => f(lib.core, model, device_c.as_ptr(), 0, compiled),
            1 => f(
                lib.core,
                model,
                device_c.as_ptr(),
                2,
                compiled,
                p(0).0,
                p(0).1,
            ),
            2 => f(
                lib.core,
                model,
                device_c.as_ptr(),
                4,
                compiled,
                p(0).0,
                p(0).1,
                p(1).0,
                p(1).1,
            ),
            3 => f(
                lib.core,
                model,
                device_c.as_ptr(),
                6,
                compiled,
                p(0).0,
                p(0).1,
                p(1).0,
                p(1).1,
                p(2).0,
                p(2).1,
            ),
            _ => f(
                lib.core,
                model,
                device_c.as_ptr(),
                8,
                compiled,
                p(0).0,
                p(0).1,
                p(1).0,
                p(1).1,
                p(2).0,
                p(2).1,
                p(3).0,
                p(3).1,
            ),
        };
        lib.check(status, "ov_core_compile_model")
            .map_err(|e| invalid(format!("compiling for {device}: {e}")))?;
        lib.check(
            (lib.fns.create_infer_request)(backend.handles.compiled, &mut backend.handles.request),
            "ov_compiled_model_create_infer_request",
        )
        .map_err(BackendError::Internal)?;
    }
    tracing::debug!(model = %path, %device, signature = ?backend.signature, "loaded OpenVINO 2022.3 instance");
    Ok(Box::new(backend))
}

impl Backend for LegacyBackend {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn device(&self) -> &str {
        &self.device
    }

    fn infer(&mut self, mut inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let lib = self.library.as_ref();
        if inputs.len() != self.signature.inputs.len() {
            return Err(BackendError::InvalidInput(format!(
                "expected {} inputs, got {}",
                self.signature.inputs.len(),
                inputs.len()
            )));
        }
        let mut tensors: Vec<Handle> = Vec::with_capacity(inputs.len());
        let run = (|| -> Result<Vec<Tensor>, BackendError> {
            for (index, tensor) in inputs.iter_mut().enumerate() {
                let element = ffi::element_type_of(tensor.datatype)
                    .and_then(to_legacy)
                    .ok_or_else(|| {
                        BackendError::InvalidInput(format!(
                            "input '{}' is {}, which OpenVINO 2022.3 cannot take",
                            tensor.name, tensor.datatype
                        ))
                    })?;
                let shape = Shape {
                    rank: tensor.shape.len() as i64,
                    dims: tensor.shape.as_mut_ptr(),
                };
                let mut handle = ptr::null_mut();
                // SAFETY: the shape is read during the call; the data outlives the tensor,
                // which is freed after the inference.
                unsafe {
                    lib.check(
                        (lib.fns.tensor_create_from_host_ptr)(
                            element,
                            shape,
                            tensor.data.as_mut_ptr().cast(),
                            &mut handle,
                        ),
                        "ov_tensor_create_from_host_ptr",
                    )
                    .map_err(BackendError::InvalidInput)?;
                    tensors.push(handle);
                    lib.check(
                        (lib.fns.set_input_tensor_by_index)(self.handles.request, index, handle),
                        "ov_infer_request_set_input_tensor_by_index",
                    )
                    .map_err(BackendError::InvalidInput)?;
                }
            }
            // SAFETY: valid request with its inputs set.
            unsafe {
                lib.check(
                    (lib.fns.infer)(self.handles.request),
                    "ov_infer_request_infer",
                )
            }
            .map_err(BackendError::Internal)?;
            (0..self.signature.outputs.len())
                .map(|i| self.output(i))
                .collect()
        })();
        for handle in tensors {
            // SAFETY: created above, freed once.
            unsafe { (lib.fns.tensor_free)(handle) }
        }
        run
    }

    /// MYRIAD must still be among the devices the library sees (a pulled stick is not).
    fn health(&mut self) -> Result<(), BackendError> {
        if self.device == "CPU" {
            return Ok(());
        }
        let available =
            self.library
                .available_devices()
                .map_err(|reason| BackendError::DeviceUnavailable {
                    device: self.device.clone(),
                    reason,
                })?;
        require_device(&available, &self.device, "2022.3")
    }
}

impl LegacyBackend {
    fn output(&self, index: usize) -> Result<Tensor, BackendError> {
        let lib = self.library.as_ref();
        let spec = &self.signature.outputs[index];
        let internal = BackendError::Internal;
        let mut handle = ptr::null_mut();
        // SAFETY: the tensor handle is read, copied out and freed; the shape is freed too.
        unsafe {
            lib.check(
                (lib.fns.get_output_tensor_by_index)(self.handles.request, index, &mut handle),
                "ov_infer_request_get_output_tensor_by_index",
            )
            .map_err(internal)?;
            let read = (|| -> Result<Tensor, String> {
                let mut element = 0u32;
                lib.check(
                    (lib.fns.tensor_get_element_type)(handle, &mut element),
                    "ov_tensor_get_element_type",
                )?;
                let mut shape = Shape {
                    rank: 0,
                    dims: ptr::null_mut(),
                };
                lib.check(
                    (lib.fns.tensor_get_shape)(handle, &mut shape),
                    "ov_tensor_get_shape",
                )?;
                let dims = if shape.dims.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(shape.dims, usize::try_from(shape.rank).unwrap_or(0))
                        .to_vec()
                };
                (lib.fns.shape_free)(&mut shape);
                let mut size = 0usize;
                lib.check(
                    (lib.fns.tensor_get_byte_size)(handle, &mut size),
                    "ov_tensor_get_byte_size",
                )?;
                let mut data = ptr::null_mut();
                lib.check((lib.fns.tensor_data)(handle, &mut data), "ov_tensor_data")?;
                let bytes = if size == 0 || data.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(data.cast::<u8>(), size).to_vec()
                };
                let datatype = ffi::datatype_of(from_legacy(element))
                    .ok_or_else(|| format!("output '{}' has element type {element}", spec.name))?;
                Ok(Tensor {
                    name: spec.name.clone(),
                    datatype,
                    shape: dims,
                    data: bytes,
                })
            })();
            (lib.fns.tensor_free)(handle);
            read.map_err(internal)
        }
    }
}

/// The MYRIAD line of `inference-server devices` when the loaded library does not list it: is a
/// stick plugged in, and what it needs.
pub fn probe_ncs2(env: &ProbeEnv) -> DeviceStatus {
    let found = [NCS2_USB_ID, NCS2_BOOTED_USB_ID]
        .into_iter()
        .find(|id| env.has_usb_device(*id));
    match found {
        Some((v, p)) => DeviceStatus::Detected {
            detail: format!(
                "Intel NCS2 on USB {v}:{p}; MYRIAD needs OpenVINO 2022.3 LTS: set `library` under \
                 [openvino] in the server config to its libopenvino_c.so"
            ),
        },
        None => DeviceStatus::Unavailable {
            reason: format!(
                "no Intel NCS2 found (no USB device {}:{} or {}:{})",
                NCS2_USB_ID.0, NCS2_USB_ID.1, NCS2_BOOTED_USB_ID.0, NCS2_BOOTED_USB_ID.1
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_types_follow_the_2022_3_numbering() {
        assert_eq!(from_legacy(5), E::F32);
        assert_eq!(from_legacy(4), E::F16);
        assert_eq!(from_legacy(14), E::U8);
        assert_eq!(from_legacy(0), E::DYNAMIC, "UNDEFINED");
        assert_eq!(to_legacy(E::F16), Some(4));
        assert_eq!(to_legacy(E::I64), Some(11));
        assert_eq!(to_legacy(E::NF4), None, "not in 2022.3");
        for (value, element) in ELEMENT_TYPES {
            assert_eq!(to_legacy(element), Some(value));
        }
    }

    #[test]
    fn a_file_that_is_not_openvino_is_refused_by_the_version_probe() {
        let dir = tempfile::tempdir().unwrap();
        let missing = library_version(&dir.path().join("libopenvino_c.so")).unwrap_err();
        assert!(missing.contains("cannot open"), "{missing}");
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if libc.exists() {
            let err = library_version(libc).unwrap_err();
            assert!(err.contains("not an OpenVINO C library"), "{err}");
            let err = Library::open(libc).unwrap_err();
            assert!(err.contains("lacks ov_get_error_info"), "{err}");
        }
    }

    #[test]
    fn settings_the_2022_3_binding_cannot_apply_are_refused() {
        assert!(refuse_unsupported(&OvSettings::default()).is_ok());
        let precision = OvSettings {
            inference_precision: Some(super::super::Precision::F16),
            ..OvSettings::default()
        };
        assert!(refuse_unsupported(&precision)
            .unwrap_err()
            .contains("2025.1"));
    }

    #[test]
    fn the_usb_probe_finds_the_stick_before_and_after_its_firmware_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let env = ProbeEnv {
            root: tmp.path().to_path_buf(),
            lib_dirs: vec![],
        };
        assert!(probe_ncs2(&env).to_string().contains("no Intel NCS2 found"));
        for (port, (vendor, product)) in [("1-1", NCS2_USB_ID), ("1-2", NCS2_BOOTED_USB_ID)] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("sys/bus/usb/devices").join(port);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("idVendor"), vendor).unwrap();
            std::fs::write(dir.join("idProduct"), product).unwrap();
            let env = ProbeEnv {
                root: tmp.path().to_path_buf(),
                lib_dirs: vec![],
            };
            let status = probe_ncs2(&env);
            assert!(
                matches!(&status, DeviceStatus::Detected { detail } if detail.contains("2022.3")),
                "{status}"
            );
        }
    }
}
