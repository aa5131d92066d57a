//! The classic TVM C runtime API of the MERA runtime libraries (`libmeratvm.so`,
//! `libmeratvm_runtime.so`), bound at run time: load a deployment's module, create its graph
//! executor, load the params, set inputs, run, read outputs. Used only inside a DNA worker
//! process: the vendor code may abort the process it runs in.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;

use super::graph::GraphTensor;

/// `TVMValue`: 8 bytes, read as the type code says.
#[repr(C)]
#[derive(Clone, Copy)]
union Value {
    int: i64,
    float: f64,
    handle: *mut c_void,
    string: *const c_char,
}

/// `TVMByteArray`.
#[repr(C)]
struct ByteArray {
    data: *const c_char,
    size: usize,
}

/// `TVMArgTypeCode` values used here.
const CODE_INT: c_int = 0;
const CODE_NULL: c_int = 4;
const CODE_DLTENSOR: c_int = 7;
const CODE_MODULE: c_int = 9;
const CODE_STR: c_int = 11;
const CODE_BYTES: c_int = 12;
/// `kDLCPU`.
const DEVICE_CPU: c_int = 1;

type Handle = *mut c_void;

struct Functions {
    mod_load_from_file: unsafe extern "C" fn(*const c_char, *const c_char, *mut Handle) -> c_int,
    mod_get_function: unsafe extern "C" fn(Handle, *const c_char, c_int, *mut Handle) -> c_int,
    mod_free: unsafe extern "C" fn(Handle) -> c_int,
    func_get_global: unsafe extern "C" fn(*const c_char, *mut Handle) -> c_int,
    func_call: unsafe extern "C" fn(
        Handle,
        *mut Value,
        *mut c_int,
        c_int,
        *mut Value,
        *mut c_int,
    ) -> c_int,
    func_free: unsafe extern "C" fn(Handle) -> c_int,
    get_last_error: unsafe extern "C" fn() -> *const c_char,
    array_alloc: unsafe extern "C" fn(
        *const i64,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        *mut Handle,
    ) -> c_int,
    array_free: unsafe extern "C" fn(Handle) -> c_int,
    array_copy_from_bytes: unsafe extern "C" fn(Handle, *mut c_void, usize) -> c_int,
    array_copy_to_bytes: unsafe extern "C" fn(Handle, *mut c_void, usize) -> c_int,
}

/// The runtime library, open for the rest of the process.
pub struct TvmLibrary {
    f: Functions,
    _library: libloading::Library,
}

/// An argument of a packed function call.
enum Arg<'a> {
    Int(i64),
    Str(&'a CStr),
    Module(Handle),
    Tensor(Handle),
    Bytes(&'a ByteArray),
}

/// What a packed function returned (what this module reads of it).
enum Returned {
    Str(String),
    Module(Handle),
    Other,
}

impl TvmLibrary {
    /// Opens the library at `path` and binds the C API.
    pub fn open(path: &Path) -> Result<Self, String> {
        // SAFETY: loading the vendor's runtime library runs its initialisers; this is the
        // worker process that exists to take that risk.
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        let hint =
            "it is not a TVM runtime library (MERA's libmeratvm.so or libmeratvm_runtime.so)";
        // SAFETY: the signatures are those of TVM's c_runtime_api.h.
        let f = unsafe {
            bind_functions!(
                library,
                Functions,
                hint,
                mod_load_from_file = "TVMModLoadFromFile",
                mod_get_function = "TVMModGetFunction",
                mod_free = "TVMModFree",
                func_get_global = "TVMFuncGetGlobal",
                func_call = "TVMFuncCall",
                func_free = "TVMFuncFree",
                get_last_error = "TVMGetLastError",
                array_alloc = "TVMArrayAlloc",
                array_free = "TVMArrayFree",
                array_copy_from_bytes = "TVMArrayCopyFromBytes",
                array_copy_to_bytes = "TVMArrayCopyToBytes",
            )
        };
        Ok(Self {
            f,
            _library: library,
        })
    }

    /// The runtime's last error message.
    fn last_error(&self) -> String {
        // SAFETY: TVMGetLastError returns a thread-local NUL-terminated string.
        let message = unsafe { (self.f.get_last_error)() };
        if message.is_null() {
            return "unknown TVM error".into();
        }
        // SAFETY: as above.
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .trim()
            .to_string()
    }

    fn check(&self, status: c_int, what: &str) -> Result<(), String> {
        if status == 0 {
            Ok(())
        } else {
            Err(format!("{what}: {}", self.last_error()))
        }
    }

    /// Calls a packed function.
    fn call(&self, function: Handle, args: &[Arg<'_>], what: &str) -> Result<Returned, String> {
        let mut values: Vec<Value> = Vec::with_capacity(args.len());
        let mut codes: Vec<c_int> = Vec::with_capacity(args.len());
        for arg in args {
            let (value, code) = match arg {
                Arg::Int(v) => (Value { int: *v }, CODE_INT),
                Arg::Str(s) => (Value { string: s.as_ptr() }, CODE_STR),
                Arg::Module(h) => (Value { handle: *h }, CODE_MODULE),
                Arg::Tensor(h) => (Value { handle: *h }, CODE_DLTENSOR),
                Arg::Bytes(b) => (
                    Value {
                        handle: (*b as *const ByteArray).cast_mut().cast(),
                    },
                    CODE_BYTES,
                ),
            };
            values.push(value);
            codes.push(code);
        }
        let mut ret = Value { int: 0 };
        let mut ret_code: c_int = CODE_NULL;
        // SAFETY: the arrays hold `args.len()` values whose pointers live for the call.
        let status = unsafe {
            (self.f.func_call)(
                function,
                values.as_mut_ptr(),
                codes.as_mut_ptr(),
                args.len() as c_int,
                &mut ret,
                &mut ret_code,
            )
        };
        self.check(status, what)?;
        // SAFETY: the union is read as the returned type code says.
        Ok(unsafe {
            match ret_code {
                CODE_STR if !ret.string.is_null() => {
                    Returned::Str(CStr::from_ptr(ret.string).to_string_lossy().into_owned())
                }
                CODE_MODULE => Returned::Module(ret.handle),
                _ => Returned::Other,
            }
        })
    }
}

/// A loaded deployment: its module and graph executor.
pub struct Deployment<'l> {
    tvm: &'l TvmLibrary,
    module: Handle,
    executor: Handle,
    set_input: Handle,
    run: Handle,
    get_output: Handle,
    runtime_metrics: Option<Handle>,
}

impl<'l> Deployment<'l> {
    /// Loads `deploy.so` from `dir` with the deployment's graph (`deploy.json`) and params
    /// (`deploy.params`), and initialises the device `device_code` when the graph runs anything
    /// on the DNA IP (the module has `mera_runtime_init_device`). Errors say which step failed:
    /// `Err((true, _))` is the device's.
    pub fn load(
        tvm: &'l TvmLibrary,
        dir: &Path,
        json: &[u8],
        params: &[u8],
        device_code: i64,
    ) -> Result<Self, (bool, String)> {
        let model = |e: String| (false, e);
        let json = CString::new(json).map_err(|e| model(e.to_string()))?;
        let library = CString::new(dir.join("deploy.so").to_string_lossy().as_bytes())
            .map_err(|e| model(e.to_string()))?;
        let mut module: Handle = std::ptr::null_mut();
        // SAFETY: the path is NUL-terminated; `module` receives the handle.
        let status =
            unsafe { (tvm.f.mod_load_from_file)(library.as_ptr(), c"so".as_ptr(), &mut module) };
        tvm.check(status, "loading deploy.so").map_err(model)?;
        let mut deployment = Deployment {
            tvm,
            module,
            executor: std::ptr::null_mut(),
            set_input: std::ptr::null_mut(),
            run: std::ptr::null_mut(),
            get_output: std::ptr::null_mut(),
            runtime_metrics: None,
        };
        let mut create: Handle = std::ptr::null_mut();
        // SAFETY: a NUL-terminated name; `create` receives the handle (owned by the registry).
        let status =
            unsafe { (tvm.f.func_get_global)(c"tvm.graph_executor.create".as_ptr(), &mut create) };
        tvm.check(status, "finding tvm.graph_executor.create")
            .map_err(model)?;
        if create.is_null() {
            return Err(model("the library has no tvm.graph_executor.create".into()));
        }
        let created = tvm
            .call(
                create,
                &[
                    Arg::Str(&json),
                    Arg::Module(module),
                    Arg::Int(DEVICE_CPU.into()),
                    Arg::Int(0),
                ],
                "creating the graph executor",
            )
            .map_err(model)?;
        let Returned::Module(executor) = created else {
            return Err(model("tvm.graph_executor.create returned no module".into()));
        };
        deployment.executor = executor;
        let load_params = deployment.function("load_params").map_err(model)?;
        let bytes = ByteArray {
            data: params.as_ptr().cast(),
            size: params.len(),
        };
        let loaded = tvm.call(load_params, &[Arg::Bytes(&bytes)], "loading deploy.params");
        deployment.free_function(load_params);
        loaded.map_err(model)?;
        deployment.set_input = deployment.function("set_input").map_err(model)?;
        deployment.run = deployment.function("run").map_err(model)?;
        deployment.get_output = deployment.function("get_output").map_err(model)?;
        deployment.runtime_metrics = deployment.optional_function("get_runtime_metrics");
        if let Some(init) = deployment.optional_function("mera_runtime_init_device") {
            let initialised = tvm.call(
                init,
                &[Arg::Int(device_code)],
                "initialising the DNA device",
            );
            deployment.free_function(init);
            initialised.map_err(|e| (true, e))?;
        }
        Ok(deployment)
    }

    fn optional_function(&self, name: &str) -> Option<Handle> {
        let name = CString::new(name).ok()?;
        let mut out: Handle = std::ptr::null_mut();
        // SAFETY: the executor module is live; `out` receives the handle or stays null.
        let status =
            unsafe { (self.tvm.f.mod_get_function)(self.executor, name.as_ptr(), 0, &mut out) };
        (status == 0 && !out.is_null()).then_some(out)
    }

    fn function(&self, name: &str) -> Result<Handle, String> {
        self.optional_function(name)
            .ok_or_else(|| format!("the graph executor has no {name}"))
    }

    fn free_function(&self, function: Handle) {
        // SAFETY: a handle this deployment got from TVMModGetFunction, freed once.
        unsafe { (self.tvm.f.func_free)(function) };
    }

    /// Runs once: each input's bytes, then the outputs' bytes for `outputs` (shapes and dtypes
    /// from the graph).
    pub fn infer(
        &self,
        inputs: &[(&GraphTensor, &[u8])],
        outputs: &[GraphTensor],
    ) -> Result<Vec<Vec<u8>>, String> {
        for (spec, data) in inputs {
            let array = Array::new(self.tvm, spec)?;
            array.write(data)?;
            let name = CString::new(spec.name.as_str()).map_err(|e| e.to_string())?;
            self.tvm.call(
                self.set_input,
                &[Arg::Str(&name), Arg::Tensor(array.handle)],
                &format!("set_input '{}'", spec.name),
            )?;
        }
        self.tvm.call(self.run, &[], "run")?;
        let mut out = Vec::with_capacity(outputs.len());
        for (i, spec) in outputs.iter().enumerate() {
            let array = Array::new(self.tvm, spec)?;
            self.tvm.call(
                self.get_output,
                &[Arg::Int(i as i64), Arg::Tensor(array.handle)],
                &format!("get_output {i}"),
            )?;
            out.push(array.read()?);
        }
        Ok(out)
    }

    /// `get_runtime_metrics` of the last run (`key=value,...|` per DNA subgraph).
    pub fn runtime_metrics(&self) -> String {
        match self
            .runtime_metrics
            .map(|f| self.tvm.call(f, &[], "get_runtime_metrics"))
        {
            Some(Ok(Returned::Str(text))) => text,
            _ => String::new(),
        }
    }
}

impl Drop for Deployment<'_> {
    fn drop(&mut self) {
        for function in [self.set_input, self.run, self.get_output]
            .into_iter()
            .chain(self.runtime_metrics)
            .filter(|f| !f.is_null())
        {
            self.free_function(function);
        }
        // SAFETY: module handles this deployment owns, freed once.
        unsafe {
            if !self.executor.is_null() {
                (self.tvm.f.mod_free)(self.executor);
            }
            (self.tvm.f.mod_free)(self.module);
        }
    }
}

/// A CPU tensor allocated by the runtime.
struct Array<'l> {
    tvm: &'l TvmLibrary,
    handle: Handle,
    bytes: usize,
}

impl<'l> Array<'l> {
    fn new(tvm: &'l TvmLibrary, spec: &GraphTensor) -> Result<Self, String> {
        let (code, bits) = dtype_code(&spec.dtype)
            .ok_or_else(|| format!("'{}': dtype {} is not supported", spec.name, spec.dtype))?;
        let elements: usize = spec.dims.iter().map(|&d| d.max(0) as usize).product();
        let mut handle: Handle = std::ptr::null_mut();
        // SAFETY: `dims` holds `ndim` values; `handle` receives the array.
        let status = unsafe {
            (tvm.f.array_alloc)(
                spec.dims.as_ptr(),
                spec.dims.len() as c_int,
                code,
                bits,
                1,
                DEVICE_CPU,
                0,
                &mut handle,
            )
        };
        tvm.check(status, &format!("allocating '{}'", spec.name))?;
        Ok(Self {
            tvm,
            handle,
            bytes: elements * (bits as usize / 8),
        })
    }

    fn write(&self, data: &[u8]) -> Result<(), String> {
        if data.len() != self.bytes {
            return Err(format!(
                "{} bytes for a {}-byte tensor",
                data.len(),
                self.bytes
            ));
        }
        // SAFETY: the array holds exactly `data.len()` bytes; the runtime only reads `data`.
        let status = unsafe {
            (self.tvm.f.array_copy_from_bytes)(
                self.handle,
                data.as_ptr().cast_mut().cast(),
                data.len(),
            )
        };
        self.tvm.check(status, "copying an input")
    }

    fn read(&self) -> Result<Vec<u8>, String> {
        let mut out = vec![0u8; self.bytes];
        // SAFETY: `out` has room for the array's bytes.
        let status = unsafe {
            (self.tvm.f.array_copy_to_bytes)(self.handle, out.as_mut_ptr().cast(), out.len())
        };
        self.tvm.check(status, "copying an output")?;
        Ok(out)
    }
}

impl Drop for Array<'_> {
    fn drop(&mut self) {
        // SAFETY: an array this value owns, freed once.
        unsafe { (self.tvm.f.array_free)(self.handle) };
    }
}

/// DLPack's (type code, bits) of a TVM dtype string.
fn dtype_code(dtype: &str) -> Option<(c_int, c_int)> {
    let (code, bits) = if let Some(bits) = dtype.strip_prefix("float") {
        (2, bits)
    } else if let Some(bits) = dtype.strip_prefix("uint") {
        (1, bits)
    } else if let Some(bits) = dtype.strip_prefix("int") {
        (0, bits)
    } else if let Some(bits) = dtype.strip_prefix("bfloat") {
        (4, bits)
    } else {
        return None;
    };
    Some((code, bits.parse().ok()?))
}
