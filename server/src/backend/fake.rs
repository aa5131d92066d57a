//! A small fake runtime for tests (`backend = "fake"`, only in builds with the `test-backend`
//! feature, which the crate's own tests enable). It lets repository, scheduler and service tests
//! run without a native runtime, and lets them pull a device out from under a running model.
//!
//! Model file `model.fake` (TOML): full dims, dimension 0 included.
//! ```toml
//! inputs = [{ name = "x", datatype = "FP32", dims = [-1, 4] }]
//! outputs = [{ name = "y", datatype = "FP32", dims = [-1, 4] }]
//! scale = 2.0     # y = x * scale + offset, element by element (FP32 first input → first output)
//! offset = 1.0
//! ```
//! Devices: `cpu`, always there, and `fake:N`, present while the file `fake-N` exists in the
//! table's `presence_dir`. Table:
//! ```toml
//! [fake]
//! presence_dir = "/tmp/devices"   # where fake-N files say a device is plugged in
//! delay_ms = 0                    # time each run takes
//! fail_on = 13.0                  # a run whose first input value is this fails (INTERNAL)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use inference_proto::DataType;
use serde::Deserialize;

use super::devices::{DeviceReport, DeviceStatus, ProbeEnv};
use super::library::LibraryPaths;
use super::runtime::{
    ConfigTable, DeviceInfo, DeviceKind, LoadRequest, ModelLayout, ModelRuntime, Runtime,
};
use super::{Backend, BackendError, ModelSignature, TensorSpec};
use crate::tensor::Tensor;

/// The fake [`Runtime`].
#[derive(Debug)]
pub struct Fake;

/// The `[fake]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeSettings {
    pub presence_dir: Option<PathBuf>,
    #[serde(default)]
    pub delay_ms: u64,
    pub fail_on: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FakeTensor {
    name: String,
    datatype: String,
    dims: Vec<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FakeModel {
    inputs: Vec<FakeTensor>,
    outputs: Vec<FakeTensor>,
    #[serde(default = "one")]
    scale: f32,
    #[serde(default)]
    offset: f32,
}

fn one() -> f32 {
    1.0
}

/// One fake instance.
#[derive(Debug)]
pub struct FakeBackend {
    signature: ModelSignature,
    device: String,
    presence: Option<PathBuf>,
    settings: FakeSettings,
    scale: f32,
    offset: f32,
}

impl FakeBackend {
    fn present(&self) -> Result<(), BackendError> {
        match &self.presence {
            Some(file) if !file.exists() => Err(BackendError::DeviceUnavailable {
                device: self.device.clone(),
                reason: format!("{} is gone", file.display()),
            }),
            _ => Ok(()),
        }
    }
}

fn specs(tensors: &[FakeTensor]) -> Result<Vec<TensorSpec>, String> {
    tensors
        .iter()
        .map(|t| {
            Ok(TensorSpec {
                name: t.name.clone(),
                datatype: t.datatype.parse::<DataType>().map_err(|e| e.to_string())?,
                dims: t.dims.clone(),
            })
        })
        .collect()
}

impl ModelRuntime for FakeSettings {
    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Backend>, BackendError> {
        let path = request.model.model.display().to_string();
        let invalid = |reason: String| BackendError::InvalidModel {
            path: path.clone(),
            reason,
        };
        let text =
            std::fs::read_to_string(&request.model.model).map_err(|e| invalid(e.to_string()))?;
        let model: FakeModel = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let signature = ModelSignature::from_full_dims(
            specs(&model.inputs).map_err(&invalid)?,
            specs(&model.outputs).map_err(&invalid)?,
            request.max_batch_size,
        )
        .map_err(&invalid)?;
        let device = request.device.name.clone();
        let presence = device.strip_prefix("fake:").map(|n| {
            self.presence_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir)
                .join(format!("fake-{n}"))
        });
        let backend = FakeBackend {
            signature,
            device,
            presence,
            settings: self.clone(),
            scale: model.scale,
            offset: model.offset,
        };
        backend.present()?;
        Ok(Box::new(backend))
    }
}

impl Backend for FakeBackend {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn device(&self) -> &str {
        &self.device
    }

    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        self.present()?;
        if inputs.len() != self.signature.inputs.len() {
            return Err(BackendError::InvalidInput(format!(
                "expected {} inputs, got {}",
                self.signature.inputs.len(),
                inputs.len()
            )));
        }
        if let Some((t, s)) = inputs
            .iter()
            .zip(&self.signature.inputs)
            .find(|(t, s)| t.datatype != s.datatype)
        {
            return Err(BackendError::InvalidInput(format!(
                "input '{}' is {}, the model expects {}",
                s.name, t.datatype, s.datatype
            )));
        }
        if self.settings.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.settings.delay_ms));
        }
        let first = inputs
            .first()
            .ok_or_else(|| BackendError::InvalidInput("no inputs".into()))?;
        let values: Vec<f32> = first
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let (Some(fail), Some(v)) = (self.settings.fail_on, values.first()) {
            if *v == fail {
                return Err(BackendError::Internal(format!(
                    "the fake model fails on {fail}"
                )));
            }
        }
        let out = self
            .signature
            .outputs
            .first()
            .ok_or_else(|| BackendError::Internal("no outputs".into()))?;
        let data = values
            .iter()
            .flat_map(|v| (v * self.scale + self.offset).to_le_bytes())
            .collect();
        Ok(vec![Tensor {
            name: out.name.clone(),
            datatype: DataType::Fp32,
            shape: first.shape.clone(),
            data,
        }])
    }

    fn health(&mut self) -> Result<(), BackendError> {
        self.present()
    }
}

const LAYOUTS: &[ModelLayout] = &[ModelLayout {
    files: &["model.fake"],
}];

impl Runtime for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn libraries(&self) -> &'static [&'static str] {
        &[]
    }

    fn platform(&self) -> &'static str {
        "fake"
    }

    fn model_layouts(&self) -> &'static [ModelLayout] {
        LAYOUTS
    }

    fn default_device(&self) -> &'static str {
        "cpu"
    }

    fn device_help(&self) -> &'static str {
        "cpu, fake:N"
    }

    fn parse_device(&self, name: &str) -> Result<DeviceInfo, String> {
        let name = name.trim().to_ascii_lowercase();
        match name.strip_prefix("fake:") {
            None if name == "cpu" => Ok(DeviceInfo {
                name,
                kind: DeviceKind::Cpu,
            }),
            Some(n) if n.parse::<u32>().is_ok() => Ok(DeviceInfo {
                name,
                kind: DeviceKind::Accelerator,
            }),
            _ => Err(format!("unknown device '{name}'")),
        }
    }

    fn configure(
        &self,
        table: Option<ConfigTable<'_>>,
    ) -> Result<Box<dyn ModelRuntime>, toml::de::Error> {
        Ok(Box::new(match table {
            Some(table) => FakeSettings::deserialize(table)?,
            None => FakeSettings::default(),
        }))
    }

    fn probe(&self, _env: &ProbeEnv, _libraries: &LibraryPaths) -> Vec<DeviceReport> {
        vec![DeviceReport {
            backend: "fake",
            device: "cpu".into(),
            status: DeviceStatus::Available {
                library_version: "test".into(),
                detail: "the test build's fake runtime".into(),
            },
        }]
    }
}
