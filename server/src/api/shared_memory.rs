//! Triton's system shared-memory extension: a client on the same box (a camera pipeline, say)
//! registers POSIX shared-memory objects as named regions, then sends inputs that name a region
//! instead of carrying bytes, and asks for outputs to be written into one. Off unless the server
//! is started with `--allow-shared-memory`: it lets a caller name a local shared-memory object.
//!
//! Request parameters on an input or a requested output: `shared_memory_region` (the region's
//! name), `shared_memory_byte_size` and optionally `shared_memory_offset` (within the region).
//! Offsets and sizes are checked against the region. A response whose outputs went to regions
//! still carries one (empty) `raw_output_contents` entry per output, as clients index them.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use inference_proto::inference::infer_parameter::ParameterChoice;
use inference_proto::inference::system_shared_memory_status_response::RegionStatus;
use inference_proto::inference::{InferParameter, ModelInferRequest, ModelInferResponse};
use memmap2::{MmapMut, MmapOptions};
use tonic::Status;

use super::clip;

/// Request parameter naming a region.
pub const REGION_PARAMETER: &str = "shared_memory_region";
/// Request parameter: bytes of the tensor in the region.
pub const BYTE_SIZE_PARAMETER: &str = "shared_memory_byte_size";
/// Request parameter: where the tensor starts in the region.
pub const OFFSET_PARAMETER: &str = "shared_memory_offset";

/// Where POSIX shared-memory objects live on Linux (`shm_open("/name")` is `/dev/shm/name`).
const SHM_DIR: &str = "/dev/shm";

/// Why a shared-memory call or reference failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedMemoryError {
    #[error("system shared memory is disabled on this server: start it with --allow-shared-memory (it lets clients on this box name local shared-memory objects)")]
    Disabled,
    #[error("shared-memory region '{0}' is already registered; unregister it first")]
    AlreadyRegistered(String),
    #[error("no shared-memory region '{0}' is registered")]
    UnknownRegion(String),
    #[error("cannot open shared-memory object '{key}': {reason}")]
    Open { key: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl From<SharedMemoryError> for Status {
    fn from(err: SharedMemoryError) -> Self {
        let message = err.to_string();
        match err {
            SharedMemoryError::Disabled => Status::permission_denied(message),
            SharedMemoryError::AlreadyRegistered(_) => Status::already_exists(message),
            SharedMemoryError::UnknownRegion(_) => Status::not_found(message),
            SharedMemoryError::Open { .. } | SharedMemoryError::Invalid(_) => {
                Status::invalid_argument(message)
            }
        }
    }
}

/// One registered region: a window of a shared-memory object, mapped.
struct Region {
    key: String,
    offset: u64,
    byte_size: u64,
    map: Mutex<MmapMut>,
}

/// Where a requested output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTarget {
    pub output: String,
    pub region: String,
    pub offset: u64,
    pub byte_size: u64,
}

/// The registered regions of the server.
#[derive(Default)]
pub struct SharedMemory {
    enabled: bool,
    regions: RwLock<BTreeMap<String, Arc<Region>>>,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// The object behind a key: `/name` (or `name`) in `/dev/shm`, never a path elsewhere.
fn object_path(key: &str) -> Result<PathBuf, SharedMemoryError> {
    let name = key.strip_prefix('/').unwrap_or(key);
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(SharedMemoryError::Invalid(format!(
            "'{}' is not a POSIX shared-memory key (one name, e.g. /input_0)",
            clip(key)
        )));
    }
    Ok(PathBuf::from(SHM_DIR).join(name))
}

impl SharedMemory {
    /// A registry that accepts regions only when `enabled`.
    pub fn new(enabled: bool) -> Self {
        SharedMemory {
            enabled,
            regions: RwLock::default(),
        }
    }

    fn check_enabled(&self) -> Result<(), SharedMemoryError> {
        if self.enabled {
            Ok(())
        } else {
            Err(SharedMemoryError::Disabled)
        }
    }

    /// Registers `byte_size` bytes at `offset` of the object `key` as region `name`.
    pub fn register(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), SharedMemoryError> {
        self.check_enabled()?;
        if name.is_empty() {
            return Err(SharedMemoryError::Invalid("a region needs a name".into()));
        }
        if byte_size == 0 {
            return Err(SharedMemoryError::Invalid(format!(
                "region '{}' has byte_size 0",
                clip(name)
            )));
        }
        let path = object_path(key)?;
        let open_error = |reason: String| SharedMemoryError::Open {
            key: clip(key),
            reason,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| open_error(e.to_string()))?;
        let length = file
            .metadata()
            .map_err(|e| open_error(e.to_string()))?
            .len();
        if offset.checked_add(byte_size).is_none_or(|end| end > length) {
            return Err(SharedMemoryError::Invalid(format!(
                "region '{}' ({byte_size} bytes at offset {offset}) does not fit in '{}' ({length} bytes)",
                clip(name),
                clip(key)
            )));
        }
        let len = usize::try_from(byte_size).map_err(|_| {
            SharedMemoryError::Invalid(format!("byte_size {byte_size} is too large"))
        })?;
        // SAFETY: the object is shared with the client by design; the mapping stays valid while
        // the region is registered (the file handle is not needed after mmap). Bytes are only
        // copied in and out under the region's lock.
        let map = unsafe { MmapOptions::new().offset(offset).len(len).map_mut(&file) }
            .map_err(|e| open_error(format!("mmap failed: {e}")))?;
        let mut regions = self.regions.write().unwrap_or_else(|e| e.into_inner());
        if regions.contains_key(name) {
            return Err(SharedMemoryError::AlreadyRegistered(clip(name)));
        }
        regions.insert(
            name.to_string(),
            Arc::new(Region {
                key: key.to_string(),
                offset,
                byte_size,
                map: Mutex::new(map),
            }),
        );
        tracing::info!(
            region = name,
            key,
            offset,
            byte_size,
            "shared-memory region registered"
        );
        Ok(())
    }

    /// Unregisters `name`, or every region when `name` is empty (nothing registered is fine).
    pub fn unregister(&self, name: &str) -> Result<(), SharedMemoryError> {
        self.check_enabled()?;
        let mut regions = self.regions.write().unwrap_or_else(|e| e.into_inner());
        if name.is_empty() {
            regions.clear();
        } else if regions.remove(name).is_none() {
            return Err(SharedMemoryError::UnknownRegion(clip(name)));
        }
        Ok(())
    }

    /// The status of `name`, or of every region when `name` is empty.
    pub fn status(&self, name: &str) -> Result<HashMap<String, RegionStatus>, SharedMemoryError> {
        self.check_enabled()?;
        let regions = self.regions.read().unwrap_or_else(|e| e.into_inner());
        let status = |name: &str, r: &Region| RegionStatus {
            name: name.to_string(),
            key: r.key.clone(),
            offset: r.offset,
            byte_size: r.byte_size,
        };
        if name.is_empty() {
            return Ok(regions
                .iter()
                .map(|(n, r)| (n.clone(), status(n, r)))
                .collect());
        }
        let region = regions
            .get(name)
            .ok_or_else(|| SharedMemoryError::UnknownRegion(clip(name)))?;
        Ok(HashMap::from([(name.to_string(), status(name, region))]))
    }

    fn region(&self, name: &str) -> Result<Arc<Region>, SharedMemoryError> {
        self.regions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| SharedMemoryError::UnknownRegion(clip(name)))
    }

    /// Replaces the request's inputs that name a region by raw bytes read from it (at most
    /// `max_bytes` in all), and takes the shared-memory parameters off the requested outputs,
    /// returning where each of those goes. Inputs not in shared memory must then be raw.
    pub fn resolve(
        &self,
        request: &mut ModelInferRequest,
        max_bytes: usize,
    ) -> Result<Vec<OutputTarget>, SharedMemoryError> {
        let any_input = request
            .inputs
            .iter()
            .any(|i| i.parameters.contains_key(REGION_PARAMETER));
        let any_output = request
            .outputs
            .iter()
            .any(|o| o.parameters.contains_key(REGION_PARAMETER));
        if !any_input && !any_output {
            return Ok(Vec::new());
        }
        self.check_enabled()?;
        if any_input {
            let in_memory = request
                .inputs
                .iter()
                .filter(|i| i.parameters.contains_key(REGION_PARAMETER))
                .count();
            let others = request.inputs.len() - in_memory;
            if request.raw_input_contents.len() != others {
                return Err(SharedMemoryError::Invalid(format!(
                    "{in_memory} input(s) are in shared memory, so the other {others} must each have one raw_input_contents entry (got {})",
                    request.raw_input_contents.len()
                )));
            }
            let mut raw = std::mem::take(&mut request.raw_input_contents).into_iter();
            let mut total = 0usize;
            let mut resolved = Vec::with_capacity(request.inputs.len());
            for input in &mut request.inputs {
                match take_reference(&mut input.parameters, &input.name)? {
                    Some((region, offset, size)) => {
                        total = total.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
                        if total > max_bytes {
                            return Err(SharedMemoryError::Invalid(format!(
                                "shared-memory inputs of more than {max_bytes} bytes (the server's message limit)"
                            )));
                        }
                        resolved.push(self.read(&region, offset, size)?);
                    }
                    None => resolved.push(raw.next().unwrap_or_default()),
                }
            }
            request.raw_input_contents = resolved;
        }
        let mut targets = Vec::new();
        for output in &mut request.outputs {
            if let Some((region, offset, byte_size)) =
                take_reference(&mut output.parameters, &output.name)?
            {
                let r = self.region(&region)?;
                check_window(&region, &r, offset, byte_size)?;
                targets.push(OutputTarget {
                    output: output.name.clone(),
                    region,
                    offset,
                    byte_size,
                });
            }
        }
        Ok(targets)
    }

    fn read(&self, name: &str, offset: u64, size: u64) -> Result<Vec<u8>, SharedMemoryError> {
        let region = self.region(name)?;
        let (start, end) = check_window(name, &region, offset, size)?;
        let map = region.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map[start..end].to_vec())
    }

    /// Writes the outputs that go to regions there; their `raw_output_contents` entries become
    /// empty and the output says where its bytes went.
    pub fn write_outputs(
        &self,
        response: &mut ModelInferResponse,
        targets: &[OutputTarget],
    ) -> Result<(), SharedMemoryError> {
        for target in targets {
            let Some(index) = response
                .outputs
                .iter()
                .position(|o| o.name == target.output)
            else {
                continue;
            };
            let bytes = response
                .raw_output_contents
                .get_mut(index)
                .map(std::mem::take)
                .unwrap_or_default();
            if bytes.len() as u64 > target.byte_size {
                return Err(SharedMemoryError::Invalid(format!(
                    "output '{}' has {} bytes but its shared-memory window in '{}' holds {}",
                    target.output,
                    bytes.len(),
                    target.region,
                    target.byte_size
                )));
            }
            let region = self.region(&target.region)?;
            let (start, _) =
                check_window(&target.region, &region, target.offset, target.byte_size)?;
            let mut map = region.map.lock().unwrap_or_else(|e| e.into_inner());
            map[start..start + bytes.len()].copy_from_slice(&bytes);
            let output = &mut response.outputs[index];
            output
                .parameters
                .insert(REGION_PARAMETER.into(), string(&target.region));
            output
                .parameters
                .insert(BYTE_SIZE_PARAMETER.into(), int64(bytes.len() as i64));
        }
        Ok(())
    }
}

/// The `[start, end)` bytes of the mapping a window covers, checked against the region.
fn check_window(
    name: &str,
    region: &Region,
    offset: u64,
    size: u64,
) -> Result<(usize, usize), SharedMemoryError> {
    match offset.checked_add(size) {
        Some(end) if end <= region.byte_size => Ok((offset as usize, end as usize)),
        _ => Err(SharedMemoryError::Invalid(format!(
            "{size} bytes at offset {offset} do not fit in shared-memory region '{}' ({} bytes)",
            clip(name),
            region.byte_size
        ))),
    }
}

/// Takes the shared-memory parameters of one tensor: (region, offset, byte size).
fn take_reference(
    parameters: &mut HashMap<String, InferParameter>,
    tensor: &str,
) -> Result<Option<(String, u64, u64)>, SharedMemoryError> {
    let Some(region) = parameters.remove(REGION_PARAMETER) else {
        return Ok(None);
    };
    let region = match region.parameter_choice {
        Some(ParameterChoice::StringParam(name)) => name,
        _ => {
            return Err(SharedMemoryError::Invalid(format!(
                "tensor '{tensor}': {REGION_PARAMETER} must be a string"
            )))
        }
    };
    let number =
        |parameter: Option<InferParameter>, key: &str| -> Result<Option<u64>, SharedMemoryError> {
            match parameter.and_then(|p| p.parameter_choice) {
                None => Ok(None),
                Some(ParameterChoice::Int64Param(v)) if v >= 0 => Ok(Some(v as u64)),
                Some(ParameterChoice::Uint64Param(v)) => Ok(Some(v)),
                Some(_) => Err(SharedMemoryError::Invalid(format!(
                    "tensor '{tensor}': {key} must be a non-negative integer"
                ))),
            }
        };
    let size =
        number(parameters.remove(BYTE_SIZE_PARAMETER), BYTE_SIZE_PARAMETER)?.ok_or_else(|| {
            SharedMemoryError::Invalid(format!(
                "tensor '{tensor}' names region '{}' without {BYTE_SIZE_PARAMETER}",
                clip(&region)
            ))
        })?;
    let offset = number(parameters.remove(OFFSET_PARAMETER), OFFSET_PARAMETER)?.unwrap_or(0);
    Ok(Some((region, offset, size)))
}

fn string(value: &str) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(value.to_string())),
    }
}

fn int64(value: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_proto::inference::model_infer_request::{
        InferInputTensor, InferRequestedOutputTensor,
    };
    use inference_proto::inference::model_infer_response::InferOutputTensor;

    /// A shared-memory object of `bytes`, removed on drop.
    struct Object(PathBuf, String);

    impl Object {
        fn new(tag: &str, bytes: &[u8]) -> Self {
            let name = format!("inference-server-test-{}-{tag}", std::process::id());
            let path = PathBuf::from(SHM_DIR).join(&name);
            std::fs::write(&path, bytes).expect("/dev/shm is writable");
            Object(path, format!("/{name}"))
        }
    }

    impl Drop for Object {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn param(key: &str, value: ParameterChoice) -> (String, InferParameter) {
        (
            key.to_string(),
            InferParameter {
                parameter_choice: Some(value),
            },
        )
    }

    #[test]
    fn disabled_refuses_every_call_and_reference() {
        let shm = SharedMemory::new(false);
        assert_eq!(
            shm.register("r", "/k", 0, 4),
            Err(SharedMemoryError::Disabled)
        );
        assert_eq!(shm.unregister(""), Err(SharedMemoryError::Disabled));
        let mut request = ModelInferRequest {
            inputs: vec![InferInputTensor {
                name: "x".into(),
                parameters: HashMap::from([param(
                    REGION_PARAMETER,
                    ParameterChoice::StringParam("r".into()),
                )]),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            shm.resolve(&mut request, 1 << 20),
            Err(SharedMemoryError::Disabled)
        );
        assert!(Status::from(SharedMemoryError::Disabled)
            .message()
            .contains("--allow-shared-memory"));
    }

    #[test]
    fn regions_are_checked_registered_read_written_and_unregistered() {
        let object = Object::new("rw", &[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0]);
        let shm = SharedMemory::new(true);
        assert!(matches!(
            shm.register("big", &object.1, 8, 8),
            Err(SharedMemoryError::Invalid(_))
        ));
        assert!(matches!(
            shm.register("bad", "../etc/passwd", 0, 4),
            Err(SharedMemoryError::Invalid(_))
        ));
        assert!(matches!(
            shm.register("gone", "/no-such-object-xyz", 0, 4),
            Err(SharedMemoryError::Open { .. })
        ));
        shm.register("in", &object.1, 0, 8).expect("registers");
        shm.register("out", &object.1, 8, 4).expect("registers");
        assert_eq!(
            shm.register("in", &object.1, 0, 8),
            Err(SharedMemoryError::AlreadyRegistered("in".into()))
        );
        assert_eq!(shm.status("").expect("status").len(), 2);
        assert_eq!(shm.status("out").expect("status")["out"].offset, 8);

        let mut request = ModelInferRequest {
            inputs: vec![
                InferInputTensor {
                    name: "a".into(),
                    parameters: HashMap::from([
                        param(REGION_PARAMETER, ParameterChoice::StringParam("in".into())),
                        param(BYTE_SIZE_PARAMETER, ParameterChoice::Int64Param(4)),
                        param(OFFSET_PARAMETER, ParameterChoice::Int64Param(4)),
                    ]),
                    ..Default::default()
                },
                InferInputTensor {
                    name: "b".into(),
                    ..Default::default()
                },
            ],
            outputs: vec![InferRequestedOutputTensor {
                name: "y".into(),
                parameters: HashMap::from([
                    param(REGION_PARAMETER, ParameterChoice::StringParam("out".into())),
                    param(BYTE_SIZE_PARAMETER, ParameterChoice::Int64Param(4)),
                ]),
            }],
            raw_input_contents: vec![vec![9, 9]],
            ..Default::default()
        };
        let targets = shm.resolve(&mut request, 1 << 20).expect("resolves");
        assert_eq!(request.raw_input_contents, [vec![5, 6, 7, 8], vec![9, 9]]);
        assert!(
            request.inputs[0].parameters.is_empty(),
            "parameters taken off"
        );
        assert_eq!(targets.len(), 1);

        let mut response = ModelInferResponse {
            outputs: vec![InferOutputTensor {
                name: "y".into(),
                ..Default::default()
            }],
            raw_output_contents: vec![vec![42, 43, 44, 45]],
            ..Default::default()
        };
        shm.write_outputs(&mut response, &targets).expect("written");
        assert_eq!(
            response.raw_output_contents,
            [Vec::<u8>::new()],
            "one empty entry per output"
        );
        assert_eq!(std::fs::read(&object.0).unwrap()[8..], [42, 43, 44, 45]);

        let mut too_big = response.clone();
        too_big.raw_output_contents = vec![vec![0; 5]];
        assert!(shm.write_outputs(&mut too_big, &targets).is_err());

        shm.unregister("in").expect("unregisters");
        assert_eq!(
            shm.unregister("in"),
            Err(SharedMemoryError::UnknownRegion("in".into()))
        );
        shm.unregister("").expect("all");
        assert!(shm.status("").expect("status").is_empty());
    }
}
