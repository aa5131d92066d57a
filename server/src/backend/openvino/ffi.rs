//! A small safe layer over the OpenVINO C API (crate `openvino-sys`, bound at run time to the
//! library [`super::environment`] loaded): the core, models with their ports, reshaping, input
//! preprocessing, compiled models, inference requests and tensors. Every handle frees itself on
//! drop. This is the only module that calls the C API of OpenVINO ≥ 2025.1.
//!
//! The safe `openvino` crate is not used because it cannot pass properties at compile time nor
//! add mean/scale preprocessing steps, and its handles cannot be mixed with raw calls.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

use inference_proto::DataType;
use openvino_sys as sys;

/// A failed OpenVINO call: its status code and the library's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {message} ({status:?})")]
pub struct OvError {
    pub call: &'static str,
    pub status: sys::ov_status_e,
    pub message: String,
}

impl OvError {
    /// The request's input did not fit the model (shape or type mismatch, index out of range).
    pub fn is_input_mismatch(&self) -> bool {
        matches!(
            self.status,
            sys::ov_status_e::PARAMETER_MISMATCH | sys::ov_status_e::OUT_OF_BOUNDS
        )
    }
}

type OvResult<T> = Result<T, OvError>;

/// Turns a status into a result, with the library's last error message.
fn check(status: sys::ov_status_e, call: &'static str) -> OvResult<()> {
    if status == sys::ov_status_e::OK {
        return Ok(());
    }
    // SAFETY: both functions return static or thread-local NUL-terminated strings (or null).
    let message = unsafe {
        let last = sys::ov_get_last_err_msg();
        let text = if last.is_null() {
            sys::ov_get_error_info(status)
        } else {
            last
        };
        if text.is_null() {
            String::new()
        } else {
            CStr::from_ptr(text).to_string_lossy().trim().to_string()
        }
    };
    Err(OvError {
        call,
        status,
        message,
    })
}

fn c_string(text: &str, call: &'static str) -> OvResult<CString> {
    CString::new(text).map_err(|_| OvError {
        call,
        status: sys::ov_status_e::INVALID_C_PARAM,
        message: format!("'{text}' contains a NUL byte"),
    })
}

/// Copies and frees a string the library allocated.
///
/// # Safety
/// `text` must be null or a NUL-terminated string allocated by OpenVINO, not used afterwards.
unsafe fn take_string(text: *mut c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    let owned = CStr::from_ptr(text).to_string_lossy().into_owned();
    sys::ov_free(text);
    owned
}

/// Maps an OpenVINO element type to the protocol's; `None` for types the server cannot carry.
pub fn datatype_of(ty: sys::ov_element_type_e) -> Option<DataType> {
    use sys::ov_element_type_e as E;
    Some(match ty {
        E::OV_BOOLEAN => DataType::Bool,
        E::U8 => DataType::Uint8,
        E::U16 => DataType::Uint16,
        E::U32 => DataType::Uint32,
        E::U64 => DataType::Uint64,
        E::I8 => DataType::Int8,
        E::I16 => DataType::Int16,
        E::I32 => DataType::Int32,
        E::I64 => DataType::Int64,
        E::F16 => DataType::Fp16,
        E::BF16 => DataType::Bf16,
        E::F32 => DataType::Fp32,
        E::F64 => DataType::Fp64,
        _ => return None,
    })
}

/// The OpenVINO element type of a protocol datatype; `None` for BYTES.
pub fn element_type_of(datatype: DataType) -> Option<sys::ov_element_type_e> {
    use sys::ov_element_type_e as E;
    Some(match datatype {
        DataType::Bool => E::OV_BOOLEAN,
        DataType::Uint8 => E::U8,
        DataType::Uint16 => E::U16,
        DataType::Uint32 => E::U32,
        DataType::Uint64 => E::U64,
        DataType::Int8 => E::I8,
        DataType::Int16 => E::I16,
        DataType::Int32 => E::I32,
        DataType::Int64 => E::I64,
        DataType::Fp16 => E::F16,
        DataType::Bf16 => E::BF16,
        DataType::Fp32 => E::F32,
        DataType::Fp64 => E::F64,
        DataType::Bytes => return None,
    })
}

/// The OpenVINO core: reads and compiles models, lists devices. Thread-safe.
#[derive(Debug)]
pub struct Core(*mut sys::ov_core_t);

// SAFETY: ov::Core is documented thread-safe; the handle is only freed on drop.
unsafe impl Send for Core {}
unsafe impl Sync for Core {}

impl Core {
    /// A core with the plugins found next to the library.
    pub fn new() -> OvResult<Self> {
        let mut core = ptr::null_mut();
        // SAFETY: `core` is a valid out-parameter.
        check(unsafe { sys::ov_core_create(&mut core) }, "ov_core_create")?;
        Ok(Core(core))
    }

    /// The devices the plugins see now, e.g. `["CPU", "GPU.0"]`.
    pub fn available_devices(&self) -> OvResult<Vec<String>> {
        let mut devices = sys::ov_available_devices_t {
            devices: ptr::null_mut(),
            size: 0,
        };
        // SAFETY: the list is read within its size, then freed with its own free function.
        unsafe {
            check(
                sys::ov_core_get_available_devices(self.0, &mut devices),
                "ov_core_get_available_devices",
            )?;
            let names = (0..devices.size)
                .map(|i| *devices.devices.add(i))
                .filter(|p| !p.is_null())
                .map(|p| CStr::from_ptr(p).to_string_lossy().into_owned())
                .collect();
            sys::ov_available_devices_free(&mut devices);
            Ok(names)
        }
    }

    /// A device property as text, e.g. `FULL_DEVICE_NAME`.
    pub fn property(&self, device: &str, key: &str) -> OvResult<String> {
        let device = c_string(device, "ov_core_get_property")?;
        let key = c_string(key, "ov_core_get_property")?;
        let mut value = ptr::null_mut();
        // SAFETY: valid C strings and out-parameter; the value is freed by take_string.
        unsafe {
            check(
                sys::ov_core_get_property(self.0, device.as_ptr(), key.as_ptr(), &mut value),
                "ov_core_get_property",
            )?;
            Ok(take_string(value))
        }
    }

    /// Reads a model: IR (`model.xml` with `weights` = `model.bin`), ONNX or TFLite (no weights).
    pub fn read_model(&self, model: &str, weights: Option<&str>) -> OvResult<Model> {
        let model = c_string(model, "ov_core_read_model")?;
        let weights = weights
            .map(|w| c_string(w, "ov_core_read_model"))
            .transpose()?;
        let mut out = ptr::null_mut();
        // SAFETY: valid C strings (null weights = none) and out-parameter.
        check(
            unsafe {
                sys::ov_core_read_model(
                    self.0,
                    model.as_ptr(),
                    weights.as_ref().map_or(ptr::null(), |w| w.as_ptr()),
                    &mut out,
                )
            },
            "ov_core_read_model",
        )?;
        Ok(Model(out))
    }

    /// Compiles `model` for `device` with `properties` (key, value) applied at compile time.
    pub fn compile(
        &self,
        model: &Model,
        device: &str,
        properties: &[(&str, String)],
    ) -> OvResult<CompiledModel> {
        let device = c_string(device, "ov_core_compile_model_props")?;
        let strings = properties
            .iter()
            .map(|(k, v)| {
                Ok((
                    c_string(k, "ov_core_compile_model_props")?,
                    c_string(v, "ov_core_compile_model_props")?,
                ))
            })
            .collect::<OvResult<Vec<_>>>()?;
        let pairs: Vec<sys::ov_property_t> = strings
            .iter()
            .map(|(k, v)| sys::ov_property_t {
                key: k.as_ptr(),
                value: v.as_ptr().cast::<c_void>(),
            })
            .collect();
        let mut out = ptr::null_mut();
        // SAFETY: `pairs` points into `strings`, both alive for the call; valid out-parameter.
        check(
            unsafe {
                sys::ov_core_compile_model_props(
                    self.0,
                    model.0,
                    device.as_ptr(),
                    pairs.len(),
                    pairs.as_ptr(),
                    &mut out,
                )
            },
            "ov_core_compile_model_props",
        )?;
        Ok(CompiledModel(out))
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // SAFETY: created by ov_core_create, freed once.
        unsafe { sys::ov_core_free(self.0) }
    }
}

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub element_type: sys::ov_element_type_e,
    /// Dimensions; -1 for a dynamic one. `None` for a dynamic rank.
    pub dims: Option<Vec<i64>>,
}

/// A model read from disk (or made by preprocessing).
#[derive(Debug)]
pub struct Model(*mut sys::ov_model_t);

// SAFETY: the model is only used by one thread at a time (it moves into an instance thread).
unsafe impl Send for Model {}

impl Model {
    /// The model's inputs, in order.
    pub fn inputs(&self) -> OvResult<Vec<Port>> {
        self.ports(true)
    }

    /// The model's outputs, in order.
    pub fn outputs(&self) -> OvResult<Vec<Port>> {
        self.ports(false)
    }

    fn ports(&self, inputs: bool) -> OvResult<Vec<Port>> {
        let mut count = 0usize;
        // SAFETY: valid model handle and out-parameters; each port is freed after reading.
        unsafe {
            if inputs {
                check(
                    sys::ov_model_inputs_size(self.0, &mut count),
                    "ov_model_inputs_size",
                )?;
            } else {
                check(
                    sys::ov_model_outputs_size(self.0, &mut count),
                    "ov_model_outputs_size",
                )?;
            }
            (0..count)
                .map(|index| {
                    let mut port = ptr::null_mut();
                    if inputs {
                        check(
                            sys::ov_model_const_input_by_index(self.0, index, &mut port),
                            "ov_model_const_input_by_index",
                        )?;
                    } else {
                        check(
                            sys::ov_model_const_output_by_index(self.0, index, &mut port),
                            "ov_model_const_output_by_index",
                        )?;
                    }
                    let read = read_port(port);
                    sys::ov_output_const_port_free(port);
                    read
                })
                .collect()
        }
    }

    /// Gives the input `name` the static or partly dynamic shape `dims` (-1 = dynamic).
    pub fn reshape(&mut self, name: &str, dims: &[i64]) -> OvResult<()> {
        let name = c_string(name, "ov_model_reshape_input_by_name")?;
        let dimensions: Vec<sys::ov_dimension_t> = dims
            .iter()
            .map(|&d| {
                if d < 0 {
                    sys::ov_dimension_t { min: 0, max: -1 }
                } else {
                    sys::ov_dimension_t { min: d, max: d }
                }
            })
            .collect();
        let rank = i64::try_from(dims.len()).unwrap_or(i64::MAX);
        let mut shape = sys::ov_partial_shape_t {
            rank: sys::ov_dimension_t { min: 0, max: 0 },
            dims: ptr::null_mut(),
        };
        // SAFETY: `dimensions` outlives the create call; the shape is freed after the reshape.
        unsafe {
            check(
                sys::ov_partial_shape_create(rank, dimensions.as_ptr(), &mut shape),
                "ov_partial_shape_create",
            )?;
            let result = check(
                sys::ov_model_reshape_input_by_name(self.0, name.as_ptr(), shape),
                "ov_model_reshape_input_by_name",
            );
            sys::ov_partial_shape_free(&mut shape);
            result
        }
    }

    /// Builds input preprocessing into the model: the client sends `step.element_type` in
    /// `step.tensor_layout`; the model gets its own type and layout, with mean subtracted and the
    /// result divided by scale (per channel when several values are given).
    pub fn with_preprocessing(self, steps: &[InputPreprocessing]) -> OvResult<Model> {
        if steps.is_empty() {
            return Ok(self);
        }
        let mut ppp = ptr::null_mut();
        // SAFETY: every handle obtained below is freed before returning, the model last; layouts
        // are freed after use; value arrays outlive the calls that read them.
        unsafe {
            check(
                sys::ov_preprocess_prepostprocessor_create(self.0, &mut ppp),
                "ov_preprocess_prepostprocessor_create",
            )?;
            let built = (|| -> OvResult<Model> {
                for step in steps {
                    apply_input_step(ppp, step)?;
                }
                let mut model = ptr::null_mut();
                check(
                    sys::ov_preprocess_prepostprocessor_build(ppp, &mut model),
                    "ov_preprocess_prepostprocessor_build",
                )?;
                Ok(Model(model))
            })();
            sys::ov_preprocess_prepostprocessor_free(ppp);
            built
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: created by read_model or the preprocessor's build, freed once.
        unsafe { sys::ov_model_free(self.0) }
    }
}

/// Reads a port's name, type and partial shape.
///
/// # Safety
/// `port` must be a valid port handle.
unsafe fn read_port(port: *mut sys::ov_output_const_port_t) -> OvResult<Port> {
    let mut name = ptr::null_mut();
    check(
        sys::ov_port_get_any_name(port, &mut name),
        "ov_port_get_any_name",
    )?;
    let name = take_string(name);
    let mut element_type = sys::ov_element_type_e::DYNAMIC;
    check(
        sys::ov_port_get_element_type(port, &mut element_type),
        "ov_port_get_element_type",
    )?;
    let mut shape = sys::ov_partial_shape_t {
        rank: sys::ov_dimension_t { min: 0, max: 0 },
        dims: ptr::null_mut(),
    };
    check(
        sys::ov_port_get_partial_shape(port, &mut shape),
        "ov_port_get_partial_shape",
    )?;
    let dims = if shape.rank.max < 0 || shape.rank.min != shape.rank.max || shape.dims.is_null() {
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
    sys::ov_partial_shape_free(&mut shape);
    Ok(Port {
        name,
        element_type,
        dims,
    })
}

/// Preprocessing built into the model for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputPreprocessing {
    pub input: usize,
    /// What the client sends.
    pub element_type: sys::ov_element_type_e,
    /// Layout of what the client sends, e.g. `NHWC`.
    pub tensor_layout: Option<String>,
    /// The model's own layout, e.g. `NCHW`.
    pub model_layout: Option<String>,
    /// Subtracted, per channel or one value.
    pub mean: Vec<f32>,
    /// Divided by, per channel or one value.
    pub scale: Vec<f32>,
}

/// Adds one input's preprocessing to `ppp`.
///
/// # Safety
/// `ppp` must be a valid preprocessor handle.
unsafe fn apply_input_step(
    ppp: *mut sys::ov_preprocess_prepostprocessor_t,
    step: &InputPreprocessing,
) -> OvResult<()> {
    let mut info = ptr::null_mut();
    check(
        sys::ov_preprocess_prepostprocessor_get_input_info_by_index(ppp, step.input, &mut info),
        "ov_preprocess_prepostprocessor_get_input_info_by_index",
    )?;
    let result = (|| -> OvResult<()> {
        let mut tensor = ptr::null_mut();
        check(
            sys::ov_preprocess_input_info_get_tensor_info(info, &mut tensor),
            "ov_preprocess_input_info_get_tensor_info",
        )?;
        let tensor_result = (|| -> OvResult<()> {
            check(
                sys::ov_preprocess_input_tensor_info_set_element_type(tensor, step.element_type),
                "ov_preprocess_input_tensor_info_set_element_type",
            )?;
            if let Some(layout) = &step.tensor_layout {
                with_layout(layout, |l| {
                    sys::ov_preprocess_input_tensor_info_set_layout(tensor, l)
                })?;
            }
            Ok(())
        })();
        sys::ov_preprocess_input_tensor_info_free(tensor);
        tensor_result?;

        if let Some(layout) = &step.model_layout {
            let mut model_info = ptr::null_mut();
            check(
                sys::ov_preprocess_input_info_get_model_info(info, &mut model_info),
                "ov_preprocess_input_info_get_model_info",
            )?;
            let set = with_layout(layout, |l| {
                sys::ov_preprocess_input_model_info_set_layout(model_info, l)
            });
            sys::ov_preprocess_input_model_info_free(model_info);
            set?;
        }

        let mut steps = ptr::null_mut();
        check(
            sys::ov_preprocess_input_info_get_preprocess_steps(info, &mut steps),
            "ov_preprocess_input_info_get_preprocess_steps",
        )?;
        let steps_result = (|| -> OvResult<()> {
            check(
                sys::ov_preprocess_preprocess_steps_convert_element_type(
                    steps,
                    sys::ov_element_type_e::F32,
                ),
                "ov_preprocess_preprocess_steps_convert_element_type",
            )?;
            if !step.mean.is_empty() {
                check(
                    sys::ov_preprocess_preprocess_steps_mean_multi_channels(
                        steps,
                        step.mean.as_ptr(),
                        i32::try_from(step.mean.len()).unwrap_or(i32::MAX),
                    ),
                    "ov_preprocess_preprocess_steps_mean_multi_channels",
                )?;
            }
            if !step.scale.is_empty() {
                check(
                    sys::ov_preprocess_preprocess_steps_scale_multi_channels(
                        steps,
                        step.scale.as_ptr(),
                        i32::try_from(step.scale.len()).unwrap_or(i32::MAX),
                    ),
                    "ov_preprocess_preprocess_steps_scale_multi_channels",
                )?;
            }
            Ok(())
        })();
        sys::ov_preprocess_preprocess_steps_free(steps);
        steps_result
    })();
    sys::ov_preprocess_input_info_free(info);
    result
}

/// Calls `f` with a layout made from `text`, then frees it.
///
/// # Safety
/// `f` must not keep the layout pointer.
unsafe fn with_layout(
    text: &str,
    f: impl FnOnce(*mut sys::ov_layout_t) -> sys::ov_status_e,
) -> OvResult<()> {
    let text = c_string(text, "ov_layout_create")?;
    let mut layout = ptr::null_mut();
    check(
        sys::ov_layout_create(text.as_ptr(), &mut layout),
        "ov_layout_create",
    )?;
    let result = check(f(layout), "set layout");
    sys::ov_layout_free(layout);
    result
}

/// A model compiled for a device.
#[derive(Debug)]
pub struct CompiledModel(*mut sys::ov_compiled_model_t);

// SAFETY: compiled models are thread-safe in OpenVINO; the handle is only freed on drop.
unsafe impl Send for CompiledModel {}

impl CompiledModel {
    /// A new inference request on this compiled model.
    pub fn create_request(&self) -> OvResult<InferRequest> {
        let mut out = ptr::null_mut();
        // SAFETY: valid handle and out-parameter.
        check(
            unsafe { sys::ov_compiled_model_create_infer_request(self.0, &mut out) },
            "ov_compiled_model_create_infer_request",
        )?;
        Ok(InferRequest(out))
    }

    /// A property of the compiled model as text (e.g. the `NUM_STREAMS` it chose).
    pub fn property(&self, key: &str) -> OvResult<String> {
        let key = c_string(key, "ov_compiled_model_get_property")?;
        let mut value = ptr::null_mut();
        // SAFETY: valid C string and out-parameter; the value is freed by take_string.
        unsafe {
            check(
                sys::ov_compiled_model_get_property(self.0, key.as_ptr(), &mut value),
                "ov_compiled_model_get_property",
            )?;
            Ok(take_string(value))
        }
    }
}

impl Drop for CompiledModel {
    fn drop(&mut self) {
        // SAFETY: created by compile, freed once.
        unsafe { sys::ov_compiled_model_free(self.0) }
    }
}

/// An output read back from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTensor {
    pub element_type: sys::ov_element_type_e,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

/// One inference request: set inputs, infer, read outputs.
#[derive(Debug)]
pub struct InferRequest(*mut sys::ov_infer_request_t);

// SAFETY: a request is used by one thread at a time (its instance thread).
unsafe impl Send for InferRequest {}

impl InferRequest {
    /// Runs the model on `inputs` (element type, shape, bytes), by input index, and returns
    /// every output. The input bytes are wrapped, not copied.
    pub fn infer(
        &mut self,
        inputs: &mut [(sys::ov_element_type_e, Vec<i64>, &mut [u8])],
        outputs: usize,
    ) -> OvResult<Vec<OutputTensor>> {
        let mut tensors = Vec::with_capacity(inputs.len());
        let result = (|| -> OvResult<Vec<OutputTensor>> {
            for (index, (element_type, shape, data)) in inputs.iter_mut().enumerate() {
                let shape = sys::ov_shape_t {
                    rank: i64::try_from(shape.len()).unwrap_or(i64::MAX),
                    dims: shape.as_mut_ptr(),
                };
                let mut tensor = ptr::null_mut();
                // SAFETY: the shape is only read during the call; `data` outlives the tensor,
                // which is freed below, after the inference.
                unsafe {
                    check(
                        sys::ov_tensor_create_from_host_ptr(
                            *element_type,
                            shape,
                            data.as_mut_ptr().cast::<c_void>(),
                            &mut tensor,
                        ),
                        "ov_tensor_create_from_host_ptr",
                    )?;
                    tensors.push(tensor);
                    check(
                        sys::ov_infer_request_set_input_tensor_by_index(self.0, index, tensor),
                        "ov_infer_request_set_input_tensor_by_index",
                    )?;
                }
            }
            // SAFETY: valid request whose inputs are set.
            check(
                unsafe { sys::ov_infer_request_infer(self.0) },
                "ov_infer_request_infer",
            )?;
            (0..outputs).map(|i| self.output(i)).collect()
        })();
        for tensor in tensors {
            // SAFETY: each tensor was created above and is freed once.
            unsafe { sys::ov_tensor_free(tensor) }
        }
        result
    }

    fn output(&self, index: usize) -> OvResult<OutputTensor> {
        let mut tensor = ptr::null_mut();
        // SAFETY: the tensor handle is read, then freed; the data is copied out before.
        unsafe {
            check(
                sys::ov_infer_request_get_output_tensor_by_index(self.0, index, &mut tensor),
                "ov_infer_request_get_output_tensor_by_index",
            )?;
            let read = read_tensor(tensor);
            sys::ov_tensor_free(tensor);
            read
        }
    }
}

impl Drop for InferRequest {
    fn drop(&mut self) {
        // SAFETY: created by create_request, freed once.
        unsafe { sys::ov_infer_request_free(self.0) }
    }
}

/// Copies a tensor's type, shape and bytes.
///
/// # Safety
/// `tensor` must be a valid tensor handle.
unsafe fn read_tensor(tensor: *mut sys::ov_tensor_t) -> OvResult<OutputTensor> {
    let mut element_type = sys::ov_element_type_e::DYNAMIC;
    check(
        sys::ov_tensor_get_element_type(tensor, &mut element_type),
        "ov_tensor_get_element_type",
    )?;
    let mut shape = sys::ov_shape_t {
        rank: 0,
        dims: ptr::null_mut(),
    };
    check(
        sys::ov_tensor_get_shape(tensor, &mut shape),
        "ov_tensor_get_shape",
    )?;
    let rank = usize::try_from(shape.rank).unwrap_or(0);
    let dims = if shape.dims.is_null() {
        Vec::new()
    } else {
        std::slice::from_raw_parts(shape.dims, rank).to_vec()
    };
    sys::ov_shape_free(&mut shape);
    let mut size = 0usize;
    check(
        sys::ov_tensor_get_byte_size(tensor, &mut size),
        "ov_tensor_get_byte_size",
    )?;
    let mut data = ptr::null_mut();
    check(sys::ov_tensor_data(tensor, &mut data), "ov_tensor_data")?;
    let bytes = if size == 0 || data.is_null() {
        Vec::new()
    } else {
        std::slice::from_raw_parts(data.cast::<u8>(), size).to_vec()
    };
    Ok(OutputTensor {
        element_type,
        shape: dims,
        data: bytes,
    })
}
