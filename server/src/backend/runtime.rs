//! What one runtime module gives the generic server: a [`Runtime`] (the runtime itself) and, per
//! model, a [`ModelRuntime`] (its settings from the model's `config.toml`, able to load instances).

use std::fmt;
use std::path::{Path, PathBuf};

use super::devices::{DeviceReport, ProbeEnv};
use super::library::LibraryPaths;
use super::{Backend, BackendError};

/// The deserializer of a runtime's own table in a model's `config.toml` (`[onnxruntime]`, ...).
/// Its errors carry spans into the file's text, so they name the key and line.
pub type ConfigTable<'a> = toml::de::ValueDeserializer<'a>;

/// One set of files a runtime accepts in a version folder, e.g. `["model.xml", "model.bin"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLayout {
    /// Names that must all exist in the version folder: the model first, then its companions.
    pub files: &'static [&'static str],
}

/// A model version's files, found in its version folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The version folder.
    pub dir: PathBuf,
    /// The model file: the first file of the layout that matched.
    pub model: PathBuf,
    /// Every file of that layout, the model first.
    pub files: Vec<PathBuf>,
}

impl ModelFiles {
    /// The first of `layouts` whose files all exist in `dir`; the error lists what was looked for.
    pub fn find(dir: &Path, layouts: &[ModelLayout]) -> Result<ModelFiles, String> {
        for layout in layouts {
            let files: Vec<PathBuf> = layout.files.iter().map(|f| dir.join(f)).collect();
            if files.iter().all(|f| f.exists()) {
                return Ok(ModelFiles {
                    dir: dir.to_path_buf(),
                    model: files[0].clone(),
                    files,
                });
            }
        }
        let wanted: Vec<String> = layouts.iter().map(|l| l.files.join(" + ")).collect();
        Err(format!("no model file: expected {}", wanted.join(", or ")))
    }

    /// The model file's name, as Triton's `default_model_filename` reports it.
    pub fn model_file_name(&self) -> String {
        self.model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// How a device is reported in Triton's ModelConfig instance groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    /// A GPU with this index (`KIND_GPU`, `gpus = [n]`).
    Gpu(u32),
    /// Any other accelerator (`KIND_MODEL`: the runtime places the model).
    Accelerator,
}

/// A device name from a config, checked and made canonical by its runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The runtime's own name for it, canonical (`cpu`, `cuda:0`, `GPU.0`, `MYRIAD`, ...).
    pub name: String,
    pub kind: DeviceKind,
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// What a runtime needs to load one instance.
#[derive(Debug, Clone, Copy)]
pub struct LoadRequest<'a> {
    pub model: &'a ModelFiles,
    pub device: &'a DeviceInfo,
    /// Largest batch (samples along dimension 0) the scheduler will send; 0 = the model does not
    /// batch (Triton's convention): inputs go as they are, one request per run.
    pub max_batch_size: usize,
    /// Instances of this model loaded on the same device, which share its threads.
    pub instances_on_device: usize,
    /// The runtime libraries the server config names (`[<library>] library`), each tried before
    /// its usual search.
    pub libraries: &'a LibraryPaths,
}

/// A runtime's settings for one model (its `config.toml` table), which loads the instances.
pub trait ModelRuntime: Send + Sync + fmt::Debug {
    /// Loads one instance of the model on `request.device`.
    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Backend>, BackendError>;
}

/// A runtime: everything the generic server knows about it.
pub trait Runtime: Sync + fmt::Debug {
    /// The name `backend =` and the config table use, e.g. `onnxruntime`.
    fn name(&self) -> &'static str;

    /// Other names accepted for `backend =`, e.g. `ort`.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// The names of the native libraries it loads (`onnxruntime`, ...): each may be given in the
    /// server config (`[NAME] library = PATH`) or with `--runtime-library NAME=PATH`.
    fn libraries(&self) -> &'static [&'static str];

    /// Triton's platform string, reported by ModelMetadata and ModelConfig.
    fn platform(&self) -> &'static str;

    /// The model files it takes in a version folder, in order of preference.
    fn model_layouts(&self) -> &'static [ModelLayout];

    /// The device a model runs on when its config names none.
    fn default_device(&self) -> &'static str;

    /// The device names it accepts, for error messages (`cpu, cuda[:N], tensorrt[:N]`).
    fn device_help(&self) -> &'static str;

    /// Checks a device name from a config and makes it canonical.
    fn parse_device(&self, name: &str) -> Result<DeviceInfo, String>;

    /// Reads its table of a model's `config.toml` (`None` when the file has none). Unknown keys
    /// must be refused.
    fn configure(
        &self,
        table: Option<ConfigTable<'_>>,
    ) -> Result<Box<dyn ModelRuntime>, toml::de::Error>;

    /// The lines of `inference-server devices` for this runtime: its library and version, and
    /// each device it can or cannot use, with why.
    fn probe(&self, env: &ProbeEnv, libraries: &LibraryPaths) -> Vec<DeviceReport>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_complete_layout_wins_and_a_miss_lists_what_was_wanted() {
        const LAYOUTS: &[ModelLayout] = &[
            ModelLayout {
                files: &["model.xml", "model.bin"],
            },
            ModelLayout {
                files: &["model.onnx"],
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.xml"), "").unwrap();
        let err = ModelFiles::find(dir.path(), LAYOUTS).unwrap_err();
        assert_eq!(
            err,
            "no model file: expected model.xml + model.bin, or model.onnx"
        );
        std::fs::write(dir.path().join("model.onnx"), "").unwrap();
        let found = ModelFiles::find(dir.path(), LAYOUTS).unwrap();
        assert_eq!(found.model_file_name(), "model.onnx");
        std::fs::write(dir.path().join("model.bin"), "").unwrap();
        let found = ModelFiles::find(dir.path(), LAYOUTS).unwrap();
        assert_eq!(found.files.len(), 2);
        assert_eq!(found.model, dir.path().join("model.xml"));
    }
}
