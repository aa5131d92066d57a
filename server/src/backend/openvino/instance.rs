//! One OpenVINO instance on the current (≥ 2025.1) binding: the model read from its files,
//! reshaped and given its preprocessing as configured, compiled for its device with the
//! configured properties, and one inference request.

use std::sync::Arc;

use super::environment::OvLibrary;
use super::ffi::{self, Core, InputPreprocessing, Port};
use super::{is_virtual, needs_static_shapes, OvSettings};
use crate::backend::runtime::{LoadRequest, ModelFiles};
use crate::backend::{Backend, BackendError, ModelSignature, TensorSpec};
use crate::tensor::Tensor;

/// One compiled OpenVINO model with its request.
pub struct OpenVinoBackend {
    // Dropped in this order: the request before the model it runs.
    request: ffi::InferRequest,
    _compiled: ffi::CompiledModel,
    core: Arc<Core>,
    device: String,
    signature: ModelSignature,
}

impl std::fmt::Debug for OpenVinoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenVinoBackend")
            .field("device", &self.device)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// The model's input name → full shape (dimension 0 included) it should be compiled for.
pub(super) fn target_shapes(
    inputs: &[Port],
    settings: &OvSettings,
    device: &str,
    path: &str,
) -> Result<Vec<(String, Vec<i64>)>, BackendError> {
    let invalid = |reason: String| BackendError::InvalidModel {
        path: path.to_string(),
        reason,
    };
    let names: Vec<&str> = inputs.iter().map(|p| p.name.as_str()).collect();
    if let Some(unknown) = settings
        .reshape
        .keys()
        .find(|k| !names.contains(&k.as_str()))
    {
        return Err(invalid(format!(
            "openvino.reshape names input '{unknown}'; the model's inputs are {names:?}"
        )));
    }
    let mut out = Vec::new();
    for port in inputs {
        let mut dims = match (settings.reshape.get(&port.name), &port.dims) {
            (Some(dims), _) => dims.clone(),
            (None, Some(dims)) => dims.clone(),
            (None, None) => {
                return Err(invalid(format!(
                    "input '{}' has a dynamic rank; give its shape with openvino.reshape",
                    port.name
                )))
            }
        };
        if needs_static_shapes(device) {
            if let Some(first) = dims.first_mut().filter(|d| **d < 0) {
                *first = 1;
            }
            if dims.iter().any(|&d| d < 0) {
                return Err(invalid(format!(
                    "{device} needs static shapes and input '{}' has {dims:?}; set its shape with \
                     openvino.reshape = {{ {} = [...] }}",
                    port.name, port.name
                )));
            }
        }
        out.push((port.name.clone(), dims));
    }
    Ok(out)
}

/// The `[[openvino.preprocess]]` entries as steps on input indices.
pub(super) fn preprocessing(
    inputs: &[Port],
    settings: &OvSettings,
    path: &str,
) -> Result<Vec<InputPreprocessing>, BackendError> {
    settings
        .preprocess
        .iter()
        .map(|p| {
            let input = match &p.input {
                None => 0,
                Some(name) => inputs
                    .iter()
                    .position(|port| &port.name == name)
                    .ok_or_else(|| BackendError::InvalidModel {
                        path: path.to_string(),
                        reason: format!(
                            "openvino.preprocess names input '{name}'; the model's inputs are {:?}",
                            inputs.iter().map(|p| &p.name).collect::<Vec<_>>()
                        ),
                    })?,
            };
            // Checked when the config was read.
            let datatype = p
                .datatype
                .parse()
                .unwrap_or(inference_proto::DataType::Uint8);
            Ok(InputPreprocessing {
                input,
                element_type: ffi::element_type_of(datatype)
                    .unwrap_or(openvino_sys::ov_element_type_e::U8),
                tensor_layout: p.layout.clone(),
                model_layout: p.model_layout.clone(),
                mean: p.mean.clone(),
                scale: p.scale.clone(),
            })
        })
        .collect()
}

/// Full-dims tensor specs of ports, or why a port cannot be served.
pub(super) fn specs(
    ports: &[Port],
    datatype_of: impl Fn(&Port) -> Option<inference_proto::DataType>,
) -> Result<Vec<TensorSpec>, String> {
    ports
        .iter()
        .map(|port| {
            let datatype = datatype_of(port).ok_or_else(|| {
                format!(
                    "'{}' has element type {:?}, which the server does not support",
                    port.name, port.element_type
                )
            })?;
            let dims = port
                .dims
                .clone()
                .ok_or_else(|| format!("'{}' has a dynamic rank", port.name))?;
            Ok(TensorSpec {
                name: port.name.clone(),
                datatype,
                dims,
            })
        })
        .collect()
}

/// Checks that a plain (not virtual) device is among those OpenVINO sees.
pub(super) fn require_device(
    available: &[String],
    device: &str,
    version: &str,
) -> Result<(), BackendError> {
    if device == "CPU" || is_virtual(device) {
        return Ok(());
    }
    let present = available
        .iter()
        .any(|d| d == device || d.split('.').next() == Some(device));
    if present {
        Ok(())
    } else {
        Err(BackendError::DeviceUnavailable {
            device: device.to_string(),
            reason: format!("OpenVINO {version} sees only {available:?}"),
        })
    }
}

fn model_paths(files: &ModelFiles) -> (String, Option<String>) {
    let model = files.model.display().to_string();
    let weights = files
        .files
        .get(1)
        .filter(|f| f.extension().is_some_and(|e| e == "bin"))
        .map(|f| f.display().to_string());
    (model, weights)
}

impl OpenVinoBackend {
    /// Reads, reshapes, preprocesses and compiles the model for `request.device`.
    pub fn load(
        core: &Arc<Core>,
        library: &OvLibrary,
        request: &LoadRequest<'_>,
        settings: &OvSettings,
    ) -> Result<Self, BackendError> {
        let device = request.device.name.clone();
        if device.starts_with("MYRIAD") {
            return Err(BackendError::DeviceUnavailable {
                device,
                reason: format!(
                    "the NCS2 (MYRIAD) needs OpenVINO 2022.3 LTS, and the loaded library is {} ({}); \
                     point `library` under [openvino] in the server config at a 2022.3 libopenvino_c.so",
                    library.version,
                    library.library.path.display()
                ),
            });
        }
        let available = core
            .available_devices()
            .map_err(|e| BackendError::LibraryUnavailable(e.to_string()))?;
        require_device(&available, &device, &library.version)?;

        let path = request.model.model.display().to_string();
        let invalid = |reason: String| BackendError::InvalidModel {
            path: path.clone(),
            reason,
        };
        let (model_path, weights) = model_paths(request.model);
        let mut model = core
            .read_model(&model_path, weights.as_deref())
            .map_err(|e| invalid(e.to_string()))?;
        let inputs = model.inputs().map_err(|e| invalid(e.to_string()))?;
        for (name, dims) in target_shapes(&inputs, settings, &device, &path)? {
            let current = inputs
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.dims.as_ref());
            if current != Some(&dims) {
                model
                    .reshape(&name, &dims)
                    .map_err(|e| invalid(e.to_string()))?;
            }
        }
        let steps = preprocessing(&inputs, settings, &path)?;
        let model = model
            .with_preprocessing(&steps)
            .map_err(|e| invalid(e.to_string()))?;

        let inputs = specs(&model.inputs().map_err(|e| invalid(e.to_string()))?, |p| {
            ffi::datatype_of(p.element_type)
        })
        .map_err(&invalid)?;
        let outputs = specs(&model.outputs().map_err(|e| invalid(e.to_string()))?, |p| {
            ffi::datatype_of(p.element_type)
        })
        .map_err(&invalid)?;
        let signature = ModelSignature::from_full_dims(inputs, outputs, request.max_batch_size)
            .map_err(&invalid)?;

        let properties = settings.properties(&device);
        let compiled = core
            .compile(&model, &device, &properties)
            .map_err(|e| invalid(format!("compiling for {device}: {e}")))?;
        let ov_request = compiled
            .create_request()
            .map_err(|e| BackendError::Internal(e.to_string()))?;
        tracing::debug!(
            model = %path,
            %device,
            ?properties,
            streams = compiled.property("NUM_STREAMS").unwrap_or_default(),
            ?signature,
            "loaded OpenVINO model instance"
        );
        Ok(OpenVinoBackend {
            request: ov_request,
            _compiled: compiled,
            core: Arc::clone(core),
            device,
            signature,
        })
    }
}

impl Backend for OpenVinoBackend {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn device(&self) -> &str {
        &self.device
    }

    fn infer(&mut self, mut inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let specs = &self.signature.inputs;
        if inputs.len() != specs.len() {
            return Err(BackendError::InvalidInput(format!(
                "expected {} inputs, got {}",
                specs.len(),
                inputs.len()
            )));
        }
        let mut wrapped = Vec::with_capacity(inputs.len());
        for (tensor, spec) in inputs.iter_mut().zip(specs) {
            let element_type = ffi::element_type_of(tensor.datatype)
                .filter(|_| tensor.datatype == spec.datatype)
                .ok_or_else(|| {
                    BackendError::InvalidInput(format!(
                        "input '{}' is {}, the model expects {}",
                        spec.name, tensor.datatype, spec.datatype
                    ))
                })?;
            wrapped.push((
                element_type,
                tensor.shape.clone(),
                tensor.data.as_mut_slice(),
            ));
        }
        let outputs = self
            .request
            .infer(&mut wrapped, self.signature.outputs.len())
            .map_err(|e| {
                if e.is_input_mismatch() {
                    BackendError::InvalidInput(e.to_string())
                } else {
                    BackendError::Internal(e.to_string())
                }
            })?;
        outputs
            .into_iter()
            .zip(&self.signature.outputs)
            .map(|(out, spec)| {
                let datatype = ffi::datatype_of(out.element_type).ok_or_else(|| {
                    BackendError::Internal(format!(
                        "output '{}' came back as {:?}",
                        spec.name, out.element_type
                    ))
                })?;
                Ok(Tensor {
                    name: spec.name.clone(),
                    datatype,
                    shape: out.shape,
                    data: out.data,
                })
            })
            .collect()
    }

    /// A plain device must still be among those OpenVINO sees (a GPU reset, an NPU gone).
    fn health(&mut self) -> Result<(), BackendError> {
        if self.device == "CPU" || is_virtual(&self.device) {
            return Ok(());
        }
        let available =
            self.core
                .available_devices()
                .map_err(|e| BackendError::DeviceUnavailable {
                    device: self.device.clone(),
                    reason: e.to_string(),
                })?;
        require_device(&available, &self.device, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openvino_sys::ov_element_type_e as E;

    fn port(name: &str, dims: Option<Vec<i64>>) -> Port {
        Port {
            name: name.into(),
            element_type: E::F32,
            dims,
        }
    }

    #[test]
    fn static_devices_get_a_fixed_batch_and_named_reshapes_win() {
        let inputs = [port("x", Some(vec![-1, 3, 224, 224]))];
        let settings = OvSettings::default();
        assert_eq!(
            target_shapes(&inputs, &settings, "CPU", "m").unwrap(),
            [("x".to_string(), vec![-1, 3, 224, 224])]
        );
        assert_eq!(
            target_shapes(&inputs, &settings, "MYRIAD", "m").unwrap(),
            [("x".to_string(), vec![1, 3, 224, 224])]
        );
        let ragged = [port("x", Some(vec![-1, -1]))];
        let err = target_shapes(&ragged, &settings, "NPU", "m")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("NPU needs static shapes") && err.contains("openvino.reshape"),
            "{err}"
        );
        let mut reshaped = OvSettings::default();
        reshaped.reshape.insert("x".into(), vec![2, 8]);
        assert_eq!(
            target_shapes(&ragged, &reshaped, "NPU", "m").unwrap(),
            [("x".to_string(), vec![2, 8])]
        );
        reshaped.reshape.insert("y".into(), vec![1]);
        let err = target_shapes(&ragged, &reshaped, "CPU", "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("names input 'y'"), "{err}");
        assert!(target_shapes(&[port("x", None)], &settings, "CPU", "m").is_err());
    }

    #[test]
    fn plain_devices_must_be_present_and_virtual_ones_pass() {
        let seen = ["CPU".to_string(), "GPU.0".to_string()];
        assert!(require_device(&seen, "GPU", "v").is_ok());
        assert!(require_device(&seen, "GPU.0", "v").is_ok());
        assert!(require_device(&seen, "AUTO", "v").is_ok());
        let err = require_device(&seen, "NPU", "2026.4").unwrap_err();
        assert!(matches!(err, BackendError::DeviceUnavailable { .. }));
        assert!(
            err.to_string().contains("sees only [\"CPU\", \"GPU.0\"]"),
            "{err}"
        );
    }

    #[test]
    fn preprocessing_finds_its_input_by_name() {
        let inputs = [port("a", Some(vec![1])), port("b", Some(vec![1]))];
        let mut settings = OvSettings::default();
        settings.preprocess.push(super::super::Preprocess {
            input: Some("b".into()),
            datatype: "UINT8".into(),
            layout: Some("NHWC".into()),
            model_layout: Some("NCHW".into()),
            mean: vec![1.0],
            scale: vec![2.0],
        });
        let steps = preprocessing(&inputs, &settings, "m").unwrap();
        assert_eq!(steps[0].input, 1);
        assert_eq!(steps[0].element_type, E::U8);
        settings.preprocess[0].input = Some("c".into());
        assert!(preprocessing(&inputs, &settings, "m").is_err());
    }
}
