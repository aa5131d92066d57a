//! LiteRT (`libLiteRt.so` from the `ai-edge-litert` wheel), our own binding of its C API loaded at
//! run time: one environment per process, and per instance a model, a compiled model on the CPU
//! accelerator (XNNPACK) and host tensor buffers for its signature's inputs and outputs. This is
//! the CPU TFLite path, on a Raspberry Pi as on a PC. LiteRT has no supported way to attach
//! libedgetpu (its delegate registration is internal), so Edge TPU models go through
//! [`super::classic`].
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use super::{datatype_of, TensorInfo};
use crate::backend::library::FoundLibrary;
use crate::backend::Quantization;

type Status = u32;
type Handle = *mut c_void;

const STATUS_OK: Status = 0;
/// `kLiteRtHwAcceleratorCpu`.
const ACCELERATOR_CPU: c_int = 1;
/// `kLiteRtTensorBufferLockMode{Read,Write}`.
const LOCK_READ: u32 = 0;
const LOCK_WRITE: u32 = 1;
/// `kLiteRtQuantizationPerTensor`.
const QUANTIZATION_PER_TENSOR: u32 = 1;

/// `LiteRtLayout`: rank in the low 7 bits of the first byte, then up to 8 dimensions.
#[repr(C)]
#[derive(Clone, Copy)]
struct Layout {
    rank_and_flags: u8,
    _padding: [u8; 3],
    dimensions: [i32; 8],
    strides: [u32; 8],
}

/// `LiteRtRankedTensorType`.
#[repr(C)]
#[derive(Clone, Copy)]
struct RankedTensorType {
    element_type: u32,
    layout: Layout,
}

const _: () = assert!(std::mem::size_of::<Layout>() == 68);
const _: () = assert!(std::mem::size_of::<RankedTensorType>() == 72);

/// `LiteRtQuantizationPerTensor`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PerTensorQuantization {
    scale: f32,
    zero_point: i64,
}

/// The C API functions this backend calls.
struct Functions {
    create_environment: unsafe extern "C" fn(c_int, *const c_void, *mut Handle) -> Status,
    destroy_environment: unsafe extern "C" fn(Handle),
    create_model_from_file: unsafe extern "C" fn(Handle, *const c_char, *mut Handle) -> Status,
    destroy_model: unsafe extern "C" fn(Handle),
    num_signatures: unsafe extern "C" fn(Handle, *mut usize) -> Status,
    signature: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status,
    num_signature_inputs: unsafe extern "C" fn(Handle, *mut usize) -> Status,
    num_signature_outputs: unsafe extern "C" fn(Handle, *mut usize) -> Status,
    signature_input_name: unsafe extern "C" fn(Handle, usize, *mut *const c_char) -> Status,
    signature_output_name: unsafe extern "C" fn(Handle, usize, *mut *const c_char) -> Status,
    signature_input_tensor: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status,
    signature_output_tensor: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status,
    ranked_tensor_type: unsafe extern "C" fn(Handle, *mut RankedTensorType) -> Status,
    quantization_type: unsafe extern "C" fn(Handle, *mut u32) -> Status,
    per_tensor_quantization: unsafe extern "C" fn(Handle, *mut PerTensorQuantization) -> Status,
    create_options: unsafe extern "C" fn(*mut Handle) -> Status,
    destroy_options: unsafe extern "C" fn(Handle),
    set_accelerators: unsafe extern "C" fn(Handle, c_int) -> Status,
    create_opaque_options: unsafe extern "C" fn(
        *const c_char,
        *mut c_void,
        Option<unsafe extern "C" fn(*mut c_void)>,
        *mut Handle,
    ) -> Status,
    add_opaque_options: unsafe extern "C" fn(Handle, Handle) -> Status,
    create_compiled_model: unsafe extern "C" fn(Handle, Handle, Handle, *mut Handle) -> Status,
    destroy_compiled_model: unsafe extern "C" fn(Handle),
    run_compiled_model:
        unsafe extern "C" fn(Handle, usize, usize, *mut Handle, usize, *mut Handle) -> Status,
    compiled_model_errors: unsafe extern "C" fn(Handle, *mut *mut c_char) -> Status,
    input_requirements: unsafe extern "C" fn(Handle, usize, usize, *mut Handle) -> Status,
    output_requirements: unsafe extern "C" fn(Handle, usize, usize, *mut Handle) -> Status,
    create_buffer_from_requirements:
        unsafe extern "C" fn(Handle, *const RankedTensorType, Handle, *mut Handle) -> Status,
    destroy_buffer: unsafe extern "C" fn(Handle),
    lock_buffer: unsafe extern "C" fn(Handle, *mut *mut c_void, u32) -> Status,
    unlock_buffer: unsafe extern "C" fn(Handle) -> Status,
}

unsafe extern "C" {
    fn free(pointer: *mut c_void);
    fn strdup(text: *const c_char) -> *mut c_char;
}

/// The name of a `LiteRtStatus`.
fn status_name(status: Status) -> &'static str {
    match status {
        1 => "invalid argument",
        2 => "memory allocation failure",
        3 => "runtime failure",
        4 => "missing input tensor",
        5 => "unsupported",
        6 => "not found",
        7 => "timeout expired",
        8 => "wrong version",
        500 => "file I/O error",
        501 => "invalid flatbuffer",
        502 => "dynamic loading error",
        504 => "compilation error",
        1000 => "index out of bounds",
        _ => "error",
    }
}

fn check(status: Status, call: &str) -> Result<(), String> {
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(format!("{call}: {} ({status})", status_name(status)))
    }
}

/// LiteRT, bound, with the process's environment.
pub struct LiteRtLibrary {
    fns: Functions,
    environment: Handle,
    pub found: FoundLibrary,
    // Last: unloaded after the environment is destroyed.
    _lib: libloading::Library,
}

impl fmt::Debug for LiteRtLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiteRtLibrary")
            .field("path", &self.found.path)
            .finish_non_exhaustive()
    }
}

// SAFETY: a LiteRT environment may be shared by compiled models on several threads; the handle
// is only destroyed on drop.
unsafe impl Send for LiteRtLibrary {}
unsafe impl Sync for LiteRtLibrary {}

impl Drop for LiteRtLibrary {
    fn drop(&mut self) {
        // SAFETY: created in open, destroyed once.
        unsafe { (self.fns.destroy_environment)(self.environment) }
    }
}

impl LiteRtLibrary {
    /// Opens `libLiteRt.so` at `found`, binds its C API and creates the environment.
    pub fn open(found: &FoundLibrary) -> Result<Self, String> {
        // SAFETY: loading runs the library's initialisers; this is the LiteRT the operator
        // installed or named.
        let lib = unsafe { libloading::Library::new(&found.path) }
            .map_err(|e| format!("cannot open: {e}"))?;
        // SAFETY: the symbols have these signatures in LiteRT's C API (litert/c/*.h); the
        // pointers stay valid while `lib` is kept in the struct.
        let fns = unsafe {
            bind_functions!(
                lib,
                Functions,
                "is it LiteRT's libLiteRt.so (ai-edge-litert 2.x)?",
                create_environment = "LiteRtCreateEnvironment",
                destroy_environment = "LiteRtDestroyEnvironment",
                create_model_from_file = "LiteRtCreateModelFromFile",
                destroy_model = "LiteRtDestroyModel",
                num_signatures = "LiteRtGetNumModelSignatures",
                signature = "LiteRtGetModelSignature",
                num_signature_inputs = "LiteRtGetNumSignatureInputs",
                num_signature_outputs = "LiteRtGetNumSignatureOutputs",
                signature_input_name = "LiteRtGetSignatureInputName",
                signature_output_name = "LiteRtGetSignatureOutputName",
                signature_input_tensor = "LiteRtGetSignatureInputTensorByIndex",
                signature_output_tensor = "LiteRtGetSignatureOutputTensorByIndex",
                ranked_tensor_type = "LiteRtGetRankedTensorType",
                quantization_type = "LiteRtGetQuantizationTypeId",
                per_tensor_quantization = "LiteRtGetPerTensorQuantization",
                create_options = "LiteRtCreateOptions",
                destroy_options = "LiteRtDestroyOptions",
                set_accelerators = "LiteRtSetOptionsHardwareAccelerators",
                create_opaque_options = "LiteRtCreateOpaqueOptions",
                add_opaque_options = "LiteRtAddOpaqueOptions",
                create_compiled_model = "LiteRtCreateCompiledModel",
                destroy_compiled_model = "LiteRtDestroyCompiledModel",
                run_compiled_model = "LiteRtRunCompiledModel",
                compiled_model_errors = "LiteRtCompiledModelGetErrorMessages",
                input_requirements = "LiteRtGetCompiledModelInputBufferRequirements",
                output_requirements = "LiteRtGetCompiledModelOutputBufferRequirements",
                create_buffer_from_requirements = "LiteRtCreateManagedTensorBufferFromRequirements",
                destroy_buffer = "LiteRtDestroyTensorBuffer",
                lock_buffer = "LiteRtLockTensorBuffer",
                unlock_buffer = "LiteRtUnlockTensorBuffer",
            )
        };
        let mut environment = ptr::null_mut();
        // SAFETY: no environment options; the handle is owned by the struct.
        check(
            unsafe { (fns.create_environment)(0, ptr::null(), &mut environment) },
            "LiteRtCreateEnvironment",
        )?;
        Ok(LiteRtLibrary {
            fns,
            environment,
            found: found.clone(),
            _lib: lib,
        })
    }
}

/// One host tensor buffer of a compiled model's input or output.
struct Buffer {
    handle: Handle,
    info: TensorInfo,
}

/// A model compiled for the CPU, with a buffer per input and output. Released in dependency
/// order on drop: buffers, compiled model, options, model.
pub struct CompiledModel {
    lib: Arc<LiteRtLibrary>,
    inputs: Vec<Buffer>,
    outputs: Vec<Buffer>,
    compiled: Handle,
    options: Handle,
    model: Handle,
}

// SAFETY: a compiled model and its buffers are used by one thread at a time (its instance's
// scheduler thread); LiteRT has no thread affinity.
unsafe impl Send for CompiledModel {}

impl Drop for CompiledModel {
    fn drop(&mut self) {
        let fns = &self.lib.fns;
        // SAFETY: each handle was created once in `new` and is destroyed once, users first.
        unsafe {
            for buffer in self.inputs.iter().chain(&self.outputs) {
                (fns.destroy_buffer)(buffer.handle);
            }
            if !self.compiled.is_null() {
                (fns.destroy_compiled_model)(self.compiled);
            }
            if !self.options.is_null() {
                (fns.destroy_options)(self.options);
            }
            if !self.model.is_null() {
                (fns.destroy_model)(self.model);
            }
        }
    }
}

/// The opaque option that sets XNNPACK's thread count (LiteRT's CPU options payload).
const XNNPACK_OPTIONS: &CStr = c"xnnpack";

/// `free`, as a LiteRT payload destructor.
unsafe extern "C" fn free_payload(payload: *mut c_void) {
    // SAFETY: the payload was allocated with strdup.
    unsafe { free(payload) }
}

impl CompiledModel {
    /// Reads `model`, compiles it for the CPU (with `threads` XNNPACK threads when given) and
    /// creates the buffers of its first signature.
    pub fn new(
        lib: &Arc<LiteRtLibrary>,
        model: &Path,
        threads: Option<u32>,
    ) -> Result<Self, String> {
        let path = CString::new(model.as_os_str().as_encoded_bytes())
            .map_err(|_| "the model path contains a NUL byte".to_string())?;
        let fns = &lib.fns;
        let mut this = CompiledModel {
            lib: Arc::clone(lib),
            inputs: Vec::new(),
            outputs: Vec::new(),
            compiled: ptr::null_mut(),
            options: ptr::null_mut(),
            model: ptr::null_mut(),
        };
        // SAFETY: every handle is owned by `this` (freed by its drop) or by LiteRT (signatures,
        // tensors, requirements: valid while the model or compiled model lives).
        unsafe {
            check(
                (fns.create_model_from_file)(lib.environment, path.as_ptr(), &mut this.model),
                "LiteRT cannot read it as a .tflite model (LiteRtCreateModelFromFile)",
            )?;
            let mut count = 0usize;
            check(
                (fns.num_signatures)(this.model, &mut count),
                "LiteRtGetNumModelSignatures",
            )?;
            if count == 0 {
                return Err("the model has no signature".into());
            }
            let mut signature = ptr::null_mut();
            check(
                (fns.signature)(this.model, 0, &mut signature),
                "LiteRtGetModelSignature",
            )?;

            check(
                (fns.create_options)(&mut this.options),
                "LiteRtCreateOptions",
            )?;
            check(
                (fns.set_accelerators)(this.options, ACCELERATOR_CPU),
                "LiteRtSetOptionsHardwareAccelerators",
            )?;
            if let Some(n) = threads {
                let payload = CString::new(format!("num_threads = {n}\n"))
                    .map_err(|_| "bad thread count".to_string())?;
                let payload = strdup(payload.as_ptr());
                let mut opaque = ptr::null_mut();
                check(
                    (fns.create_opaque_options)(
                        XNNPACK_OPTIONS.as_ptr(),
                        payload.cast(),
                        Some(free_payload),
                        &mut opaque,
                    ),
                    "LiteRtCreateOpaqueOptions",
                )?;
                check(
                    (fns.add_opaque_options)(this.options, opaque),
                    "LiteRtAddOpaqueOptions",
                )?;
            }
            check(
                (fns.create_compiled_model)(
                    lib.environment,
                    this.model,
                    this.options,
                    &mut this.compiled,
                ),
                "LiteRT cannot compile it for the CPU (LiteRtCreateCompiledModel)",
            )?;

            let mut n_in = 0usize;
            let mut n_out = 0usize;
            check(
                (fns.num_signature_inputs)(signature, &mut n_in),
                "LiteRtGetNumSignatureInputs",
            )?;
            check(
                (fns.num_signature_outputs)(signature, &mut n_out),
                "LiteRtGetNumSignatureOutputs",
            )?;
            for i in 0..n_in {
                let buffer = this.buffer(signature, i, true)?;
                this.inputs.push(buffer);
            }
            for i in 0..n_out {
                let buffer = this.buffer(signature, i, false)?;
                this.outputs.push(buffer);
            }
        }
        Ok(this)
    }

    /// The buffer of input or output `index` of `signature`, and its tensor's description.
    ///
    /// # Safety
    /// `signature` must belong to this model.
    unsafe fn buffer(
        &self,
        signature: Handle,
        index: usize,
        input: bool,
    ) -> Result<Buffer, String> {
        let fns = &self.lib.fns;
        let (name_of, tensor_of, requirements_of, what) = if input {
            (
                fns.signature_input_name,
                fns.signature_input_tensor,
                fns.input_requirements,
                "input",
            )
        } else {
            (
                fns.signature_output_name,
                fns.signature_output_tensor,
                fns.output_requirements,
                "output",
            )
        };
        // SAFETY: LiteRT owns the name, tensor and requirements, valid while the model and the
        // compiled model live; the buffer is owned by the returned Buffer.
        unsafe {
            let mut name = ptr::null();
            check(
                name_of(signature, index, &mut name),
                "LiteRtGetSignature*Name",
            )?;
            let name = if name.is_null() {
                format!("{what}_{index}")
            } else {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            };
            let mut tensor = ptr::null_mut();
            check(
                tensor_of(signature, index, &mut tensor),
                "LiteRtGetSignature*TensorByIndex",
            )?;
            let mut ty = RankedTensorType {
                element_type: 0,
                layout: Layout {
                    rank_and_flags: 0,
                    _padding: [0; 3],
                    dimensions: [0; 8],
                    strides: [0; 8],
                },
            };
            check(
                (fns.ranked_tensor_type)(tensor, &mut ty),
                "LiteRtGetRankedTensorType",
            )?;
            let datatype = datatype_of(ty.element_type).ok_or_else(|| {
                format!(
                    "{what} '{name}' has LiteRT element type {}, which the server cannot carry",
                    ty.element_type
                )
            })?;
            let rank = usize::from(ty.layout.rank_and_flags & 0x7f).min(8);
            let dims: Vec<i64> = ty.layout.dimensions[..rank]
                .iter()
                .map(|&d| i64::from(d))
                .collect();
            let elements: usize = dims.iter().map(|&d| d.max(0) as usize).product();
            let byte_size = elements * datatype.element_size().unwrap_or(0);
            let mut kind = 0u32;
            let mut quantization = None;
            if (fns.quantization_type)(tensor, &mut kind) == STATUS_OK
                && kind == QUANTIZATION_PER_TENSOR
            {
                let mut q = PerTensorQuantization::default();
                if (fns.per_tensor_quantization)(tensor, &mut q) == STATUS_OK && q.scale != 0.0 {
                    quantization = Some(Quantization {
                        scale: q.scale,
                        zero_point: q.zero_point,
                    });
                }
            }
            let mut requirements = ptr::null_mut();
            check(
                requirements_of(self.compiled, 0, index, &mut requirements),
                "LiteRtGetCompiledModel*BufferRequirements",
            )?;
            let mut handle = ptr::null_mut();
            check(
                (fns.create_buffer_from_requirements)(
                    self.lib.environment,
                    &ty,
                    requirements,
                    &mut handle,
                ),
                "LiteRtCreateManagedTensorBufferFromRequirements",
            )?;
            Ok(Buffer {
                handle,
                info: TensorInfo {
                    name,
                    datatype,
                    dims,
                    quantization,
                    byte_size,
                },
            })
        }
    }

    /// The inputs' and outputs' descriptions.
    pub fn tensors(&self) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        (
            self.inputs.iter().map(|b| b.info.clone()).collect(),
            self.outputs.iter().map(|b| b.info.clone()).collect(),
        )
    }

    /// Copies `data` (exactly the tensor's size) into input `index`.
    pub fn set_input(&mut self, index: usize, data: &[u8]) -> Result<(), String> {
        let buffer = &self.inputs[index];
        let fns = &self.lib.fns;
        let mut address = ptr::null_mut();
        // SAFETY: the locked buffer holds at least the tensor's bytes (its requirements' size);
        // `data.len()` equals that size (checked by the caller).
        unsafe {
            check(
                (fns.lock_buffer)(buffer.handle, &mut address, LOCK_WRITE),
                "LiteRtLockTensorBuffer",
            )?;
            ptr::copy_nonoverlapping(data.as_ptr(), address.cast::<u8>(), data.len());
            check(
                (fns.unlock_buffer)(buffer.handle),
                "LiteRtUnlockTensorBuffer",
            )
        }
    }

    /// Runs the compiled model; the error carries LiteRT's messages when it has any.
    pub fn run(&mut self) -> Result<(), String> {
        let fns = &self.lib.fns;
        let mut inputs: Vec<Handle> = self.inputs.iter().map(|b| b.handle).collect();
        let mut outputs: Vec<Handle> = self.outputs.iter().map(|b| b.handle).collect();
        // SAFETY: the buffers belong to this compiled model's signature 0.
        let status = unsafe {
            (fns.run_compiled_model)(
                self.compiled,
                0,
                inputs.len(),
                inputs.as_mut_ptr(),
                outputs.len(),
                outputs.as_mut_ptr(),
            )
        };
        if status == STATUS_OK {
            return Ok(());
        }
        let mut text = ptr::null_mut();
        // SAFETY: LiteRT allocates the message with malloc; we free it.
        let detail = unsafe {
            if (fns.compiled_model_errors)(self.compiled, &mut text) == STATUS_OK && !text.is_null()
            {
                let copy = CStr::from_ptr(text).to_string_lossy().trim().to_string();
                free(text.cast());
                copy
            } else {
                String::new()
            }
        };
        let base = format!("LiteRtRunCompiledModel: {} ({status})", status_name(status));
        Err(if detail.is_empty() {
            base
        } else {
            format!("{base}: {detail}")
        })
    }

    /// Output `index`'s bytes.
    pub fn output_bytes(&self, index: usize) -> Result<Vec<u8>, String> {
        let buffer = &self.outputs[index];
        let fns = &self.lib.fns;
        let mut address = ptr::null_mut();
        let mut out = vec![0u8; buffer.info.byte_size];
        // SAFETY: the locked buffer holds at least the tensor's bytes.
        unsafe {
            check(
                (fns.lock_buffer)(buffer.handle, &mut address, LOCK_READ),
                "LiteRtLockTensorBuffer",
            )?;
            ptr::copy_nonoverlapping(address.cast::<u8>(), out.as_mut_ptr(), out.len());
            check(
                (fns.unlock_buffer)(buffer.handle),
                "LiteRtUnlockTensorBuffer",
            )?;
        }
        Ok(out)
    }
}
