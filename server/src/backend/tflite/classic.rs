//! The classic TensorFlow Lite C API (`libtensorflowlite_c.so`: `TfLiteInterpreterCreate` and
//! friends), our own binding loaded at run time: models, interpreters with an external delegate
//! (the Edge TPU), tensors and the interpreter's error messages. This is the Coral path: LiteRT
//! cannot attach libedgetpu.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::path::Path;
use std::ptr;
use std::sync::{Arc, Mutex};

use super::edgetpu::EdgeTpuDelegate;
use super::{datatype_of, TensorInfo};
use crate::backend::library::FoundLibrary;
use crate::backend::Quantization;

/// `TfLiteStatus`: 0 is `kTfLiteOk`.
type Status = c_int;
type Handle = *mut c_void;

/// `TfLiteQuantizationParams`.
#[repr(C)]
#[derive(Clone, Copy)]
struct QuantizationParams {
    scale: f32,
    zero_point: i32,
}

/// `void (*reporter)(void* user_data, const char* format, va_list args)`: a `va_list` parameter
/// is a pointer on x86-64 and, being a 32-byte struct, is passed by reference on AArch64.
type Reporter = unsafe extern "C" fn(*mut c_void, *const c_char, *mut c_void);

unsafe extern "C" {
    /// libc's, taking the `va_list` as the reporter received it.
    fn vsnprintf(buf: *mut c_char, size: usize, format: *const c_char, args: *mut c_void) -> c_int;
}

/// The C API functions this backend calls.
struct Functions {
    version: unsafe extern "C" fn() -> *const c_char,
    model_create_from_file: unsafe extern "C" fn(*const c_char) -> Handle,
    model_delete: unsafe extern "C" fn(Handle),
    options_create: unsafe extern "C" fn() -> Handle,
    options_delete: unsafe extern "C" fn(Handle),
    options_set_num_threads: unsafe extern "C" fn(Handle, i32),
    options_add_delegate: unsafe extern "C" fn(Handle, *mut c_void),
    options_set_error_reporter: unsafe extern "C" fn(Handle, Option<Reporter>, *mut c_void),
    interpreter_create: unsafe extern "C" fn(Handle, Handle) -> Handle,
    interpreter_delete: unsafe extern "C" fn(Handle),
    input_count: unsafe extern "C" fn(Handle) -> i32,
    input_tensor: unsafe extern "C" fn(Handle, i32) -> Handle,
    output_count: unsafe extern "C" fn(Handle) -> i32,
    output_tensor: unsafe extern "C" fn(Handle, i32) -> Handle,
    allocate_tensors: unsafe extern "C" fn(Handle) -> Status,
    invoke: unsafe extern "C" fn(Handle) -> Status,
    tensor_type: unsafe extern "C" fn(Handle) -> c_int,
    tensor_num_dims: unsafe extern "C" fn(Handle) -> i32,
    tensor_dim: unsafe extern "C" fn(Handle, i32) -> i32,
    tensor_byte_size: unsafe extern "C" fn(Handle) -> usize,
    tensor_name: unsafe extern "C" fn(Handle) -> *const c_char,
    tensor_quantization: unsafe extern "C" fn(Handle) -> QuantizationParams,
    tensor_copy_from_buffer: unsafe extern "C" fn(Handle, *const c_void, usize) -> Status,
    tensor_copy_to_buffer: unsafe extern "C" fn(Handle, *mut c_void, usize) -> Status,
}

/// The TensorFlow Lite C library, bound.
pub struct ClassicLibrary {
    fns: Functions,
    pub found: FoundLibrary,
    /// `TfLiteVersion()`, e.g. `2.5.0`.
    pub version: String,
    // Last: unloaded after everything that used it.
    _lib: libloading::Library,
}

impl fmt::Debug for ClassicLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassicLibrary")
            .field("path", &self.found.path)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

// SAFETY: the C API's functions are safe to call from any thread on distinct interpreters;
// the library handle itself is only read.
unsafe impl Send for ClassicLibrary {}
unsafe impl Sync for ClassicLibrary {}

impl ClassicLibrary {
    /// Opens the library at `found` and binds the C API.
    pub fn open(found: &FoundLibrary) -> Result<Self, String> {
        // SAFETY: loading runs the library's initialisers; this is the library the operator
        // installed or named.
        let lib = unsafe { libloading::Library::new(&found.path) }
            .map_err(|e| format!("cannot open: {e}"))?;
        // SAFETY: the symbols have these signatures in TensorFlow Lite's C API (c_api.h, the
        // same from TensorFlow 1.15 to 2.x); the pointers stay valid while `lib` is kept.
        let fns = unsafe {
            bind_functions!(
                lib,
                Functions,
                "is it TensorFlow Lite's C API (libtensorflowlite_c.so)?",
                version = "TfLiteVersion",
                model_create_from_file = "TfLiteModelCreateFromFile",
                model_delete = "TfLiteModelDelete",
                options_create = "TfLiteInterpreterOptionsCreate",
                options_delete = "TfLiteInterpreterOptionsDelete",
                options_set_num_threads = "TfLiteInterpreterOptionsSetNumThreads",
                options_add_delegate = "TfLiteInterpreterOptionsAddDelegate",
                options_set_error_reporter = "TfLiteInterpreterOptionsSetErrorReporter",
                interpreter_create = "TfLiteInterpreterCreate",
                interpreter_delete = "TfLiteInterpreterDelete",
                input_count = "TfLiteInterpreterGetInputTensorCount",
                input_tensor = "TfLiteInterpreterGetInputTensor",
                output_count = "TfLiteInterpreterGetOutputTensorCount",
                output_tensor = "TfLiteInterpreterGetOutputTensor",
                allocate_tensors = "TfLiteInterpreterAllocateTensors",
                invoke = "TfLiteInterpreterInvoke",
                tensor_type = "TfLiteTensorType",
                tensor_num_dims = "TfLiteTensorNumDims",
                tensor_dim = "TfLiteTensorDim",
                tensor_byte_size = "TfLiteTensorByteSize",
                tensor_name = "TfLiteTensorName",
                tensor_quantization = "TfLiteTensorQuantizationParams",
                tensor_copy_from_buffer = "TfLiteTensorCopyFromBuffer",
                tensor_copy_to_buffer = "TfLiteTensorCopyToBuffer",
            )
        };
        // SAFETY: TfLiteVersion returns a static NUL-terminated string.
        let version = unsafe { c_text((fns.version)()) };
        Ok(ClassicLibrary {
            fns,
            found: found.clone(),
            version,
            _lib: lib,
        })
    }
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

/// The interpreter's error reporter: formats the message into the `Mutex<Vec<String>>` that
/// `user_data` points to.
unsafe extern "C" fn report(user_data: *mut c_void, format: *const c_char, args: *mut c_void) {
    let mut buffer = [0 as c_char; 1024];
    // SAFETY: TensorFlow Lite passes a printf format and its arguments; vsnprintf writes at most
    // `buffer.len()` bytes, NUL included.
    let text = unsafe {
        vsnprintf(buffer.as_mut_ptr(), buffer.len(), format, args);
        c_text(buffer.as_ptr())
    };
    // SAFETY: user_data is the interpreter's boxed message list, alive as long as the
    // interpreter (which is the only caller).
    let messages = unsafe { &*(user_data as *const Mutex<Vec<String>>) };
    let mut messages = messages.lock().unwrap_or_else(|e| e.into_inner());
    if messages.len() < 32 {
        messages.push(text);
    }
}

/// A model, its interpreter (with the delegate, if any) and the messages it reported. Handles
/// are released in dependency order on drop: interpreter, delegate, options, model.
pub struct Interpreter {
    lib: Arc<ClassicLibrary>,
    interpreter: Handle,
    delegate: Option<EdgeTpuDelegate>,
    options: Handle,
    model: Handle,
    messages: Box<Mutex<Vec<String>>>,
}

// SAFETY: an interpreter is used by one thread at a time (its instance's scheduler thread);
// the C API has no thread affinity.
unsafe impl Send for Interpreter {}

impl Drop for Interpreter {
    fn drop(&mut self) {
        // SAFETY: each handle was created once in `new` and is freed once, the interpreter before
        // the delegate it uses and the model it reads.
        unsafe {
            if !self.interpreter.is_null() {
                (self.lib.fns.interpreter_delete)(self.interpreter);
            }
            self.delegate = None;
            if !self.options.is_null() {
                (self.lib.fns.options_delete)(self.options);
            }
            if !self.model.is_null() {
                (self.lib.fns.model_delete)(self.model);
            }
        }
    }
}

impl Interpreter {
    /// Reads `model`, builds an interpreter with `threads` and `delegate`, and allocates its
    /// tensors. The error names the step and carries TensorFlow Lite's own messages.
    pub fn new(
        lib: &Arc<ClassicLibrary>,
        model: &Path,
        threads: Option<u32>,
        delegate: Option<EdgeTpuDelegate>,
    ) -> Result<Self, String> {
        let path = CString::new(model.as_os_str().as_encoded_bytes())
            .map_err(|_| "the model path contains a NUL byte".to_string())?;
        let mut this = Interpreter {
            lib: Arc::clone(lib),
            interpreter: ptr::null_mut(),
            delegate,
            options: ptr::null_mut(),
            model: ptr::null_mut(),
            messages: Box::new(Mutex::new(Vec::new())),
        };
        let fns = &lib.fns;
        // SAFETY: every handle is checked for null before use and owned by `this`, whose drop
        // frees it; the message box outlives the interpreter that reports into it.
        unsafe {
            this.model = (fns.model_create_from_file)(path.as_ptr());
            if this.model.is_null() {
                return Err(format!(
                    "TensorFlow Lite cannot read it as a .tflite model{}",
                    this.messages_suffix()
                ));
            }
            this.options = (fns.options_create)();
            if this.options.is_null() {
                return Err("TfLiteInterpreterOptionsCreate failed".into());
            }
            let user_data = ptr::from_ref::<Mutex<Vec<String>>>(&this.messages)
                .cast_mut()
                .cast::<c_void>();
            (fns.options_set_error_reporter)(this.options, Some(report), user_data);
            if let Some(n) = threads {
                (fns.options_set_num_threads)(this.options, i32::try_from(n).unwrap_or(i32::MAX));
            }
            if let Some(delegate) = &this.delegate {
                (fns.options_add_delegate)(this.options, delegate.as_ptr());
            }
            this.interpreter = (fns.interpreter_create)(this.model, this.options);
            if this.interpreter.is_null() {
                return Err(format!(
                    "TensorFlow Lite cannot build an interpreter for it{}",
                    this.messages_suffix()
                ));
            }
            if (fns.allocate_tensors)(this.interpreter) != 0 {
                return Err(format!(
                    "TensorFlow Lite cannot allocate its tensors{}",
                    this.messages_suffix()
                ));
            }
        }
        Ok(this)
    }

    /// The messages reported since the last call, as `: msg; msg` (empty when none).
    fn messages_suffix(&self) -> String {
        let taken: Vec<String> =
            std::mem::take(&mut *self.messages.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            String::new()
        } else {
            format!(": {}", taken.join("; "))
        }
    }

    fn input(&self, index: usize) -> Handle {
        // SAFETY: index < input_count (callers iterate over the counts).
        unsafe { (self.lib.fns.input_tensor)(self.interpreter, index as i32) }
    }

    fn output(&self, index: usize) -> Handle {
        // SAFETY: index < output_count.
        unsafe { (self.lib.fns.output_tensor)(self.interpreter, index as i32) }
    }

    fn count(&self, inputs: bool) -> usize {
        // SAFETY: a live interpreter.
        let n = unsafe {
            if inputs {
                (self.lib.fns.input_count)(self.interpreter)
            } else {
                (self.lib.fns.output_count)(self.interpreter)
            }
        };
        usize::try_from(n).unwrap_or(0)
    }

    fn info(&self, tensor: Handle) -> Result<TensorInfo, String> {
        let fns = &self.lib.fns;
        // SAFETY: a tensor of this live interpreter; its name is NUL-terminated.
        unsafe {
            let name = c_text((fns.tensor_name)(tensor));
            let code = (fns.tensor_type)(tensor);
            let datatype = datatype_of(code as u32)
                .ok_or_else(|| format!("tensor '{name}' has TensorFlow Lite type {code}, which the server cannot carry"))?;
            let dims = (0..(fns.tensor_num_dims)(tensor))
                .map(|i| i64::from((fns.tensor_dim)(tensor, i)))
                .collect();
            let q = (fns.tensor_quantization)(tensor);
            let quantization = (q.scale != 0.0).then_some(Quantization {
                scale: q.scale,
                zero_point: i64::from(q.zero_point),
            });
            Ok(TensorInfo {
                name,
                datatype,
                dims,
                quantization,
                byte_size: (fns.tensor_byte_size)(tensor),
            })
        }
    }

    /// The inputs' and outputs' names, types, shapes, quantization and sizes.
    pub fn tensors(&self) -> Result<(Vec<TensorInfo>, Vec<TensorInfo>), String> {
        let inputs = (0..self.count(true))
            .map(|i| self.info(self.input(i)))
            .collect::<Result<_, _>>()?;
        let outputs = (0..self.count(false))
            .map(|i| self.info(self.output(i)))
            .collect::<Result<_, _>>()?;
        Ok((inputs, outputs))
    }

    /// Copies `data` into input `index` (its size already checked against the tensor's).
    pub fn set_input(&mut self, index: usize, data: &[u8]) -> Result<(), String> {
        // SAFETY: `data` holds `data.len()` readable bytes; the C API checks the size.
        let status = unsafe {
            (self.lib.fns.tensor_copy_from_buffer)(
                self.input(index),
                data.as_ptr().cast(),
                data.len(),
            )
        };
        if status == 0 {
            Ok(())
        } else {
            Err(format!(
                "input {index}: TfLiteTensorCopyFromBuffer failed{}",
                self.messages_suffix()
            ))
        }
    }

    /// Runs the model; the error carries TensorFlow Lite's (and the delegate's) messages.
    pub fn invoke(&mut self) -> Result<(), String> {
        // SAFETY: a live interpreter with allocated tensors.
        if unsafe { (self.lib.fns.invoke)(self.interpreter) } == 0 {
            Ok(())
        } else {
            Err(format!(
                "TfLiteInterpreterInvoke failed{}",
                self.messages_suffix()
            ))
        }
    }

    /// Output `index`'s bytes, `size` of them.
    pub fn output_bytes(&self, index: usize, size: usize) -> Result<Vec<u8>, String> {
        let mut out = vec![0u8; size];
        // SAFETY: `out` has `size` writable bytes; the C API checks the size.
        let status = unsafe {
            (self.lib.fns.tensor_copy_to_buffer)(self.output(index), out.as_mut_ptr().cast(), size)
        };
        if status == 0 {
            Ok(out)
        } else {
            Err(format!(
                "output {index}: TfLiteTensorCopyToBuffer failed{}",
                self.messages_suffix()
            ))
        }
    }
}
