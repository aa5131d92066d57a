//! The model repository on disk (`DIR/<model>/config.toml`, `DIR/<model>/<version>/<files>`,
//! the files its backend takes): discovery, version selection, loading and warming up each
//! model's instances on their devices and starting its scheduler, and the per-model state machine
//! (loading → ready | unavailable → unloaded). A model that fails to load is UNAVAILABLE with the
//! reason; the others keep serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::backend::library::LibraryPaths;
use crate::backend::runtime::{LoadRequest, ModelFiles};
use crate::backend::{Backend, BackendError, BatchSupport, ModelSignature, TensorSpec};
use crate::echo::clip;
use crate::metrics::{self, ModelMetrics};
use crate::model_config::{DeclaredTensor, ModelConfig, ModelConfigError, CONFIG_FILE_NAME};
use crate::scheduler::{BatchingConfig, ModelScheduler};
use crate::statistics::ModelStats;

/// `max_batch_size` used when a config leaves it out and the model file has a batch dimension
/// (Triton's default for auto-completed configs).
pub const DEFAULT_MAX_BATCH_SIZE: usize = 4;

/// Where a model is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    Loading,
    Ready,
    Unavailable,
    Unloaded,
}

impl ModelState {
    /// Label used by the `model_state` metric.
    pub fn metric_label(self) -> &'static str {
        match self {
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Unavailable => "unavailable",
            ModelState::Unloaded => "unloaded",
        }
    }

    /// State string of Triton's RepositoryIndex (an unloaded model is UNAVAILABLE there).
    pub fn index_label(self) -> &'static str {
        match self {
            ModelState::Loading => "LOADING",
            ModelState::Ready => "READY",
            ModelState::Unavailable | ModelState::Unloaded => "UNAVAILABLE",
        }
    }
}

/// How models are loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryOptions {
    /// Runtime libraries the server settings name.
    pub libraries: LibraryPaths,
    /// Time requests queued on a version being replaced by a reload get to finish.
    pub drain_grace: Duration,
    /// How often idle instances check their device.
    pub health_interval: Duration,
}

/// One version of a model that is loaded and taking requests.
#[derive(Debug)]
pub struct ServedModel {
    pub name: String,
    pub version: u64,
    pub config: ModelConfig,
    /// The files it was loaded from.
    pub files: ModelFiles,
    /// Inputs and outputs as clients must send and will receive them (dims without batch).
    pub signature: ModelSignature,
    /// Largest request batch; 0 when the model has no batch dimension.
    pub max_batch_size: usize,
    pub scheduler: ModelScheduler,
    pub stats: ModelStats,
    /// The series its requests update.
    pub metrics: ModelMetrics,
}

impl ServedModel {
    /// The version as the protocol spells it.
    pub fn version_label(&self) -> String {
        self.version.to_string()
    }
}

/// A row of the repository index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub name: String,
    /// Served version, or empty when no version is loaded.
    pub version: String,
    pub state: ModelState,
    pub reason: String,
}

/// Why a model or version cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown model '{name}'; this server has: {known}")]
    UnknownModel { name: String, known: String },
    #[error("model '{name}' has no version '{version}' being served (served: {served})")]
    UnknownVersion {
        name: String,
        version: String,
        served: String,
    },
    #[error("model '{name}' version {version} failed to load: {reason}")]
    VersionUnavailable {
        name: String,
        version: u64,
        reason: String,
    },
    #[error("model '{name}' is not ready ({state}): {reason}")]
    NotReady {
        name: String,
        state: &'static str,
        reason: String,
    },
}

/// Why loading or unloading a model failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RepositoryError {
    #[error("cannot read model repository {path}: {reason}; pass an existing folder to --model-repository")]
    Unreadable { path: PathBuf, reason: String },
    #[error("model '{name}' is not in the repository {root} (no folder {root}/{name})")]
    NoSuchModel { name: String, root: PathBuf },
    #[error("model '{name}' failed to load: {reason}")]
    LoadFailed { name: String, reason: String },
    #[error("model '{name}' was never loaded; nothing to unload")]
    NotLoaded { name: String },
}

/// One problem found while preparing a model (a config field, a folder or a model file).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelProblem {
    #[error("{0}")]
    Config(#[from] ModelConfigError),
    #[error("{}: {message}", path.display())]
    Layout { path: PathBuf, message: String },
    #[error("{}: {error}", path.display())]
    Backend { path: PathBuf, error: String },
}

/// A model version whose instances are loaded but whose scheduler is not running yet.
struct PreparedVersion {
    version: u64,
    files: ModelFiles,
    signature: ModelSignature,
    max_batch_size: usize,
    instances: Vec<Box<dyn Backend>>,
}

struct PreparedModel {
    config: ModelConfig,
    versions: Vec<PreparedVersion>,
    /// Chosen versions that failed to load, with the reason, beside the ones that did.
    failed: BTreeMap<u64, String>,
    /// The folder's fingerprint before it was read.
    fingerprint: u64,
}

#[derive(Debug)]
struct Slot {
    state: ModelState,
    reason: String,
    /// The server is ready only while this model is (its config's `required`, default true).
    required: bool,
    /// Served versions, highest last.
    versions: BTreeMap<u64, Arc<ServedModel>>,
    /// Chosen versions that failed to load while others serve, with the reason.
    failed_versions: BTreeMap<u64, String>,
    /// What the model's folder held when it was last loaded (see [`fingerprint`]).
    fingerprint: u64,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Models loaded for the first time or with changed files, now serving.
    pub loaded: Vec<String>,
    /// Models whose new files failed to load (the old versions, if any, keep serving).
    pub failed: Vec<(String, String)>,
    /// Models whose folder is gone, now unloaded.
    pub removed: Vec<String>,
    /// Models left as they were.
    pub unchanged: Vec<String>,
}

/// The models found in one repository folder and what became of each.
#[derive(Debug)]
pub struct Repository {
    root: PathBuf,
    options: RepositoryOptions,
    models: RwLock<BTreeMap<String, Slot>>,
    control: tokio::sync::Mutex<()>,
}

impl Repository {
    /// A repository rooted at `root`; nothing is loaded until [`Repository::load_all`].
    pub fn new(root: PathBuf, options: RepositoryOptions) -> Self {
        Repository {
            root,
            options,
            models: RwLock::new(BTreeMap::new()),
            control: tokio::sync::Mutex::new(()),
        }
    }

    /// Finds every model folder and loads all of them in parallel. Returns an error only when
    /// the folder itself cannot be read; failed models become UNAVAILABLE.
    pub async fn load_all(&self) -> Result<(), RepositoryError> {
        let _control = self.control.lock().await;
        let names = model_names(&self.root)?;
        for name in &names {
            self.set_state(name, ModelState::Loading, String::new());
        }
        let loads = names.iter().map(|name| self.load_one(name));
        futures::future::join_all(loads).await;
        Ok(())
    }

    /// Loads (or reloads) one model. On a failed reload the versions already serving stay.
    pub async fn load(&self, name: &str) -> Result<(), RepositoryError> {
        let _control = self.control.lock().await;
        if !is_model_name(name) || !self.root.join(name).is_dir() {
            return Err(RepositoryError::NoSuchModel {
                name: name.to_string(),
                root: self.root.clone(),
            });
        }
        let serving = self.is_ready(name);
        if !serving {
            self.set_state(name, ModelState::Loading, String::new());
        }
        match self.load_one(name).await {
            Ok(()) => Ok(()),
            Err(reason) => Err(RepositoryError::LoadFailed {
                name: name.to_string(),
                reason,
            }),
        }
    }

    /// Stops serving `name`: new requests are refused at once, queued ones get `grace`.
    pub async fn unload(&self, name: &str, grace: Duration) -> Result<(), RepositoryError> {
        let _control = self.control.lock().await;
        let old = {
            let mut models = self.write();
            let Some(slot) = models.get_mut(name) else {
                return Err(RepositoryError::NotLoaded {
                    name: name.to_string(),
                });
            };
            slot.state = ModelState::Unloaded;
            slot.reason = "unloaded".to_string();
            std::mem::take(&mut slot.versions)
        };
        metrics::set_model_state(name, ModelState::Unloaded.metric_label());
        shutdown_versions(old.into_values().collect(), grace).await;
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Re-reads the repository (SIGHUP, `systemctl reload`): new model folders and models whose
    /// files changed are loaded and warmed up beside the versions serving, then swapped in
    /// atomically while the old ones drain; a model whose new files fail keeps serving its old
    /// versions (with the reason logged and in the report); models whose folder is gone are
    /// unloaded; unchanged ready models are left alone.
    pub async fn reload(&self) -> Result<ReloadReport, RepositoryError> {
        let _control = self.control.lock().await;
        let names = model_names(&self.root)?;
        let mut report = ReloadReport::default();
        for name in &names {
            let current = {
                let models = self.read();
                models
                    .get(name)
                    .map(|slot| (slot.state == ModelState::Ready, slot.fingerprint))
            };
            let now = fingerprint(&self.root.join(name));
            if current == Some((true, now)) {
                report.unchanged.push(name.clone());
                continue;
            }
            if current.is_none_or(|(ready, _)| !ready) {
                self.set_state(name, ModelState::Loading, String::new());
            }
            match self.load_one(name).await {
                Ok(()) => report.loaded.push(name.clone()),
                Err(reason) => report.failed.push((name.clone(), reason)),
            }
        }
        let gone: Vec<String> = self
            .read()
            .iter()
            .filter(|(name, slot)| !names.contains(name) && slot.state != ModelState::Unloaded)
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            let old = {
                let mut models = self.write();
                let slot = models.get_mut(&name);
                slot.map(|slot| {
                    slot.state = ModelState::Unloaded;
                    slot.reason = "its folder was removed from the repository".to_string();
                    std::mem::take(&mut slot.versions)
                })
                .unwrap_or_default()
            };
            metrics::set_model_state(&name, ModelState::Unloaded.metric_label());
            shutdown_versions(old.into_values().collect(), self.options.drain_grace).await;
            report.removed.push(name);
        }
        tracing::info!(?report, "repository reloaded");
        Ok(report)
    }

    /// Shuts every model down, giving queued and in-flight requests `grace` to finish.
    pub async fn shutdown(&self, grace: Duration) {
        let _control = self.control.lock().await;
        let mut all: Vec<Arc<ServedModel>> = Vec::new();
        let mut names = Vec::new();
        {
            let mut models = self.write();
            for (name, slot) in models.iter_mut() {
                slot.state = ModelState::Unloaded;
                slot.reason = "server shutting down".to_string();
                all.extend(std::mem::take(&mut slot.versions).into_values());
                names.push(name.clone());
            }
        }
        for name in &names {
            metrics::set_model_state(name, ModelState::Unloaded.metric_label());
        }
        shutdown_versions(all, grace).await;
    }

    /// The served model for `name` and `version` (empty = the highest served version).
    pub fn get(&self, name: &str, version: &str) -> Result<Arc<ServedModel>, LookupError> {
        let models = self.read();
        let Some(slot) = models.get(name) else {
            let known: Vec<&str> = models.keys().map(String::as_str).collect();
            return Err(LookupError::UnknownModel {
                name: clip(name),
                known: if known.is_empty() {
                    "no models".to_string()
                } else {
                    known.join(", ")
                },
            });
        };
        if slot.state != ModelState::Ready {
            return Err(LookupError::NotReady {
                name: name.to_string(),
                state: slot.state.index_label(),
                reason: slot.reason.clone(),
            });
        }
        let found = if version.is_empty() {
            slot.versions.values().next_back()
        } else {
            version
                .parse::<u64>()
                .ok()
                .and_then(|v| slot.versions.get(&v))
        };
        if let Some((&number, reason)) = version
            .parse::<u64>()
            .ok()
            .and_then(|v| slot.failed_versions.get_key_value(&v))
        {
            return Err(LookupError::VersionUnavailable {
                name: name.to_string(),
                version: number,
                reason: reason.clone(),
            });
        }
        found.cloned().ok_or_else(|| LookupError::UnknownVersion {
            name: name.to_string(),
            version: clip(version),
            served: served_list(slot),
        })
    }

    /// Every served model version (for statistics).
    pub fn served(&self) -> Vec<Arc<ServedModel>> {
        self.read()
            .values()
            .flat_map(|slot| slot.versions.values().cloned())
            .collect()
    }

    /// Served version numbers of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        self.read()
            .get(name)
            .map(|slot| slot.versions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// One row per served version, or one row with the state and reason for a model not serving;
    /// model folders added since startup are listed as not loaded.
    pub fn index(&self) -> Vec<IndexEntry> {
        let on_disk = model_names(&self.root).unwrap_or_default();
        let models = self.read();
        let mut rows: Vec<IndexEntry> = on_disk
            .into_iter()
            .filter(|name| !models.contains_key(name))
            .map(|name| IndexEntry {
                name,
                version: String::new(),
                state: ModelState::Unloaded,
                reason: "not loaded; load it with RepositoryModelLoad".to_string(),
            })
            .collect();
        for (name, slot) in models.iter() {
            if slot.versions.is_empty() {
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: slot.state,
                    reason: slot.reason.clone(),
                });
            }
            for (version, model) in &slot.versions {
                let instances = model.scheduler.instances();
                let down: Vec<String> = instances
                    .iter()
                    .filter(|i| !i.in_service)
                    .map(|i| format!("{}: {}", i.device, i.reason))
                    .collect();
                let reason = if down.is_empty() {
                    slot.reason.clone()
                } else {
                    format!(
                        "{} of {} instances in service; out: {}",
                        instances.len() - down.len(),
                        instances.len(),
                        down.join("; ")
                    )
                };
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: version.to_string(),
                    state: slot.state,
                    reason,
                });
            }
            if slot.state == ModelState::Ready {
                rows.extend(
                    slot.failed_versions
                        .iter()
                        .map(|(version, reason)| IndexEntry {
                            name: name.clone(),
                            version: version.to_string(),
                            state: ModelState::Unavailable,
                            reason: reason.clone(),
                        }),
                );
            }
        }
        rows.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| version_order(&a.version, &b.version))
        });
        rows
    }

    /// The required models that cannot serve now (not ready, or no instance in service), each
    /// as `name: why`; the server is ready when this is empty. Unloaded models are not counted:
    /// someone unloaded them on purpose.
    pub fn unready_required(&self) -> Vec<String> {
        let models = self.read();
        models
            .iter()
            .filter(|(_, slot)| slot.required && slot.state != ModelState::Unloaded)
            .filter_map(|(name, slot)| {
                let serving = slot.state == ModelState::Ready
                    && slot.versions.values().any(|m| m.scheduler.in_service() > 0);
                if serving {
                    return None;
                }
                let why = match slot.state {
                    ModelState::Ready => "no instance in service".to_string(),
                    ModelState::Loading => "loading".to_string(),
                    _ => slot.reason.clone(),
                };
                Some(format!("{name}: {why}"))
            })
            .collect()
    }

    fn is_ready(&self, name: &str) -> bool {
        self.read()
            .get(name)
            .is_some_and(|slot| slot.state == ModelState::Ready)
    }

    /// Prepares a model off the async threads and, on success, swaps its versions in.
    async fn load_one(&self, name: &str) -> Result<(), String> {
        let started = Instant::now();
        let dir = self.root.join(name);
        let options = self.options.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare_model(&dir, &options))
            .await
            .map_err(|err| vec![format!("loader thread failed: {err}")])
            .and_then(|result| {
                result.map_err(|problems| problems.iter().map(ToString::to_string).collect())
            });
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(problems) => {
                let reason = problems.join("; ");
                tracing::error!(model = name, %reason, "model failed to load");
                if !self.is_ready(name) {
                    self.set_state(name, ModelState::Unavailable, reason.clone());
                }
                return Err(reason);
            }
        };
        let mut served: BTreeMap<u64, Arc<ServedModel>> = prepared
            .versions
            .into_iter()
            .map(|version| {
                let model = start_version(
                    name,
                    &prepared.config,
                    version,
                    self.options.health_interval,
                );
                (model.version, Arc::new(model))
            })
            .collect();
        let mut failed = prepared.failed;
        let old = {
            let mut models = self.write();
            let slot = models.entry(name.to_string()).or_insert_with(|| Slot {
                state: ModelState::Loading,
                reason: String::new(),
                required: true,
                versions: BTreeMap::new(),
                failed_versions: BTreeMap::new(),
                fingerprint: 0,
            });
            slot.state = ModelState::Ready;
            slot.reason.clear();
            slot.required = prepared.config.raw.required.unwrap_or(true);
            slot.fingerprint = prepared.fingerprint;
            // A serving version whose new files fail keeps serving what it loaded before.
            failed.retain(|&version, reason| match slot.versions.remove(&version) {
                Some(loaded) => {
                    tracing::error!(model = name, version, %reason, "model version failed to reload; the loaded one keeps serving");
                    served.insert(version, loaded);
                    false
                }
                None => {
                    tracing::error!(model = name, version, %reason, "model version failed to load; the other versions serve");
                    true
                }
            });
            slot.failed_versions = failed;
            std::mem::replace(&mut slot.versions, served)
        };
        let versions: Vec<u64> = self.versions(name);
        metrics::set_model_state(name, ModelState::Ready.metric_label());
        metrics::record_model_load(name, started.elapsed());
        tracing::info!(model = name, ?versions, took = ?started.elapsed(), "model ready");
        shutdown_versions(old.into_values().collect(), self.options.drain_grace).await;
        Ok(())
    }

    fn set_state(&self, name: &str, state: ModelState, reason: String) {
        let required = required_by_config(&self.root.join(name));
        let mut models = self.write();
        let slot = models.entry(name.to_string()).or_insert_with(|| Slot {
            state,
            reason: String::new(),
            required,
            versions: BTreeMap::new(),
            failed_versions: BTreeMap::new(),
            fingerprint: 0,
        });
        slot.state = state;
        slot.reason = reason;
        slot.required = required;
        drop(models);
        metrics::set_model_state(name, state.metric_label());
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Slot>> {
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Slot>> {
        self.models.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A model's `required` key, read leniently so that a config with other errors still says it
/// (true when absent or unreadable: an unknown model counts).
fn required_by_config(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(CONFIG_FILE_NAME))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| table.get("required")?.as_bool())
        .unwrap_or(true)
}

/// Validates a repository without serving: reads every config and loads every model file once.
/// Returns one line per problem; empty means the repository is good.
pub fn check(root: &Path, options: &RepositoryOptions) -> Vec<String> {
    let names = match model_names(root) {
        Ok(names) => names,
        Err(err) => return vec![err.to_string()],
    };
    if names.is_empty() {
        return vec![format!(
            "{}: no model folders; each model needs {}/<model>/{CONFIG_FILE_NAME} and its files in {}/<model>/1/",
            root.display(),
            root.display(),
            root.display()
        )];
    }
    let mut problems = Vec::new();
    for name in names {
        if let Err(found) = prepare_model(&root.join(&name), options) {
            problems.extend(found.iter().map(|p| format!("model '{name}': {p}")));
        }
    }
    problems
}

/// A hash of what a model's folder holds: every file's path, size and modification time (the
/// config and each version folder's files), so a reload sees new, changed and removed files.
fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    fn walk(
        dir: &Path,
        depth: usize,
        out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>,
    ) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // Follows symlinks: a linked model file that changes counts as a change.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if depth < 3 {
                    walk(&path, depth + 1, out);
                }
            } else {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, 0, &mut files);
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut hasher);
    hasher.finish()
}

fn is_model_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\'])
}

/// The model folders directly under `root` (hidden ones skipped), sorted.
fn model_names(root: &Path) -> Result<Vec<String>, RepositoryError> {
    let unreadable = |reason: String| RepositoryError::Unreadable {
        path: root.to_path_buf(),
        reason,
    };
    let entries = std::fs::read_dir(root).map_err(|e| unreadable(e.to_string()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| unreadable(e.to_string()))?;
        if !entry.path().is_dir() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) if is_model_name(&name) => names.push(name),
            Ok(_) => {}
            Err(raw) => {
                tracing::warn!(folder = ?raw, "skipping model folder whose name is not UTF-8")
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Numeric version folders of a model, ascending.
fn version_folders(dir: &Path) -> Result<Vec<u64>, ModelProblem> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelProblem::Layout {
        path: dir.to_path_buf(),
        message: format!("cannot read: {e}"),
    })?;
    let mut versions: Vec<u64> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// Reads the config, picks versions and loads every instance of each; collects every problem.
fn prepare_model(
    dir: &Path,
    options: &RepositoryOptions,
) -> Result<PreparedModel, Vec<ModelProblem>> {
    let fingerprint = fingerprint(dir);
    let config = ModelConfig::load(&dir.join(CONFIG_FILE_NAME)).map_err(|errors| {
        errors
            .into_iter()
            .map(ModelProblem::from)
            .collect::<Vec<_>>()
    })?;
    let available = version_folders(dir).map_err(|p| vec![p])?;
    let chosen: Vec<u64> = match &config.raw.versions {
        Some(wanted) => {
            let missing: Vec<String> = wanted
                .iter()
                .filter(|v| !available.contains(v))
                .map(u64::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(vec![config
                    .error(
                        "versions",
                        format!(
                            "version folder(s) {} do not exist in {} (found: {})",
                            missing.join(", "),
                            dir.display(),
                            list_or_none(&available)
                        ),
                    )
                    .into()]);
            }
            wanted.clone()
        }
        None => match available.last() {
            Some(&highest) => vec![highest],
            None => {
                return Err(vec![ModelProblem::Layout {
                    path: dir.to_path_buf(),
                    message: format!(
                        "no numeric version folder; put the model's files ({}) in {}",
                        config.runtime.model_layouts()[0].files.join(" + "),
                        dir.join("1").display()
                    ),
                }])
            }
        },
    };
    let mut versions = Vec::new();
    let mut failed = BTreeMap::new();
    let mut problems = Vec::new();
    for version in chosen {
        match prepare_version(dir, &config, version, options) {
            Ok(prepared) => versions.push(prepared),
            Err(found) => {
                let reason = found.iter().map(ToString::to_string).collect::<Vec<_>>();
                failed.insert(version, reason.join("; "));
                problems.extend(found);
            }
        }
    }
    // A broken version beside good ones is reported; the good ones serve.
    if versions.is_empty() {
        return Err(problems);
    }
    Ok(PreparedModel {
        config,
        versions,
        failed,
        fingerprint,
    })
}

fn prepare_version(
    dir: &Path,
    config: &ModelConfig,
    version: u64,
    options: &RepositoryOptions,
) -> Result<PreparedVersion, Vec<ModelProblem>> {
    let version_dir = dir.join(version.to_string());
    let files =
        ModelFiles::find(&version_dir, config.runtime.model_layouts()).map_err(|message| {
            vec![ModelProblem::Layout {
                path: version_dir.clone(),
                message: format!("{message} (for the {} backend)", config.runtime.name()),
            }]
        })?;
    let model_path = files.model.clone();
    let requested_max = config.raw.max_batch_size.unwrap_or(DEFAULT_MAX_BATCH_SIZE);
    let backend_problem = |group: usize, error: BackendError| {
        vec![match error {
            // The device is what the config chose: name that field.
            BackendError::DeviceUnavailable { .. } => {
                let field = if config.raw.instance_group.is_empty() {
                    "device".to_string()
                } else {
                    format!("instance_group[{group}].device")
                };
                ModelProblem::from(config.error(&field, error.to_string()))
            }
            _ => ModelProblem::Backend {
                path: model_path.clone(),
                error: error.to_string(),
            },
        }]
    };
    let mut instances: Vec<Box<dyn Backend>> = Vec::with_capacity(config.instance_count());
    for (group_index, group) in config.instance_groups.iter().enumerate() {
        let request = LoadRequest {
            model: &files,
            device: &group.device,
            max_batch_size: requested_max,
            instances_on_device: group.count,
            libraries: &options.libraries,
        };
        for _ in 0..group.count {
            let mut instance = config
                .settings
                .load(&request)
                .map_err(|e| backend_problem(group_index, e))?;
            warm_up(instance.as_mut(), config.warmup_runs)
                .map_err(|e| backend_problem(group_index, e))?;
            instances.push(instance);
        }
    }
    if let Some(problem) = mismatched_instances(config, &instances) {
        return Err(vec![problem]);
    }
    let Some(first) = instances.first() else {
        return Err(vec![ModelProblem::Layout {
            path: model_path,
            message: "no instance was loaded".to_string(),
        }]);
    };
    let mut signature = first.signature().clone();
    let mut problems = Vec::new();
    let max_batch_size = match (signature.batch, config.raw.max_batch_size) {
        (BatchSupport::Unbatched, Some(n)) if n > 0 => {
            problems.push(ModelProblem::from(config.error(
                "max_batch_size",
                format!(
                    "is {n} but {} has no batch dimension (dimension 0 is not dynamic, or differs between inputs); set max_batch_size = 0",
                    model_path.display()
                ),
            )));
            0
        }
        (BatchSupport::Unbatched, _) => 0,
        _ => requested_max,
    };
    if max_batch_size == 0 && config.raw.dynamic_batching.is_some() {
        problems.push(ModelProblem::from(config.error(
            "dynamic_batching",
            format!(
                "{} has no batch dimension, so requests cannot be batched; remove [dynamic_batching]",
                model_path.display()
            ),
        )));
    }
    apply_declarations(
        config,
        "input",
        &config.inputs,
        &mut signature.inputs,
        &model_path,
        &mut problems,
    );
    apply_declarations(
        config,
        "output",
        &config.outputs,
        &mut signature.outputs,
        &model_path,
        &mut problems,
    );
    if problems.is_empty() {
        Ok(PreparedVersion {
            version,
            files,
            signature,
            max_batch_size,
            instances,
        })
    } else {
        Err(problems)
    }
}

/// Index rows of one model: the model-level row (no version) first, then versions ascending.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    (!a.is_empty(), a.parse::<u64>().ok()).cmp(&(!b.is_empty(), b.parse::<u64>().ok()))
}

/// Runs the configured warm-up on one instance before it serves.
fn warm_up(instance: &mut dyn Backend, runs: usize) -> Result<(), BackendError> {
    let started = Instant::now();
    instance.warm_up(runs)?;
    if runs > 0 {
        tracing::debug!(device = instance.device(), runs, took = ?started.elapsed(), "warmed up");
    }
    Ok(())
}

/// Instances on different devices must agree on inputs, outputs and whether the model batches;
/// batch sizes may differ (a fixed-batch accelerator beside a dynamic CPU instance).
fn mismatched_instances(
    config: &ModelConfig,
    instances: &[Box<dyn Backend>],
) -> Option<ModelProblem> {
    let first = instances.first()?.signature();
    let batched = |s: &ModelSignature| s.batch != BatchSupport::Unbatched;
    let other = instances.iter().find(|i| {
        let s = i.signature();
        s.inputs != first.inputs || s.outputs != first.outputs || batched(s) != batched(first)
    })?;
    Some(ModelProblem::from(config.error(
        "instance_group",
        format!(
            "the instance on {} sees inputs {:?}, outputs {:?} ({:?}) but the one on {} sees {:?}, {:?} ({:?}); \
             give every device the same shapes ([[input]] dims, or the runtime's reshape settings)",
            other.device(),
            other.signature().inputs,
            other.signature().outputs,
            other.signature().batch,
            instances[0].device(),
            first.inputs,
            first.outputs,
            first.batch
        ),
    )))
}

/// Checks `[[input]]`/`[[output]]` declarations against the model file and narrows dynamic
/// dimensions the config fixes.
fn apply_declarations(
    config: &ModelConfig,
    section: &str,
    declared: &[DeclaredTensor],
    actual: &mut [TensorSpec],
    model_path: &Path,
    problems: &mut Vec<ModelProblem>,
) {
    let names: Vec<String> = actual.iter().map(|t| format!("'{}'", t.name)).collect();
    for (i, declaration) in declared.iter().enumerate() {
        let Some(spec) = actual.iter_mut().find(|t| t.name == declaration.name) else {
            problems.push(
                config
                    .error(
                        &format!("{section}[{i}].name"),
                        format!(
                            "{} has no {section} '{}'; its {section}s are {}",
                            model_path.display(),
                            declaration.name,
                            names.join(", ")
                        ),
                    )
                    .into(),
            );
            continue;
        };
        if let Some(datatype) = declaration.datatype {
            if datatype != spec.datatype {
                problems.push(
                    config
                        .error(
                            &format!("{section}[{i}].datatype"),
                            format!("is {datatype} but the model file says {}", spec.datatype),
                        )
                        .into(),
                );
            }
        }
        if let Some(dims) = &declaration.dims {
            let fits = dims.len() == spec.dims.len()
                && dims
                    .iter()
                    .zip(&spec.dims)
                    .all(|(&want, &have)| have < 0 || want == have);
            if fits {
                spec.dims = dims.clone();
            } else {
                problems.push(
                    config
                        .error(
                            &format!("{section}[{i}].dims"),
                            format!(
                                "{dims:?} does not match the model file's {:?} (dims exclude the batch dimension)",
                                spec.dims
                            ),
                        )
                        .into(),
                );
            }
        }
    }
}

/// Starts the scheduler of one prepared version.
fn start_version(
    name: &str,
    config: &ModelConfig,
    prepared: PreparedVersion,
    health_interval: Duration,
) -> ServedModel {
    let defaults = BatchingConfig::default();
    let batching = match &config.raw.dynamic_batching {
        Some(batching) => BatchingConfig {
            max_batch_size: prepared.max_batch_size,
            max_queue_delay: Duration::from_micros(batching.max_queue_delay_us),
            preferred_batch_sizes: batching.preferred_batch_sizes.clone(),
            max_queue_requests: batching
                .max_queue_size
                .unwrap_or(defaults.max_queue_requests),
            max_queue_bytes: batching.max_queue_bytes.unwrap_or(defaults.max_queue_bytes),
            health_interval,
        },
        // Without [dynamic_batching] nothing waits: whatever is queued runs when an instance is free.
        None => BatchingConfig {
            max_batch_size: prepared.max_batch_size,
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: Vec::new(),
            health_interval,
            ..defaults
        },
    };
    let scheduler =
        ModelScheduler::start(name, config.runtime.name(), batching, prepared.instances);
    if let Some(ms) = config.raw.latency_objective_ms {
        metrics::set_latency_objective(name, Duration::from_secs_f64(ms / 1000.0));
    }
    let devices: Vec<String> = scheduler
        .instances()
        .into_iter()
        .map(|i| i.device)
        .collect();
    let metrics = ModelMetrics::new(
        name,
        config.runtime.name(),
        devices.iter().map(String::as_str),
    );
    ServedModel {
        name: name.to_string(),
        version: prepared.version,
        config: config.clone(),
        files: prepared.files,
        signature: prepared.signature,
        max_batch_size: prepared.max_batch_size,
        scheduler,
        stats: ModelStats::default(),
        metrics,
    }
}

/// Drains the schedulers of `versions` in parallel, each on a blocking thread.
async fn shutdown_versions(versions: Vec<Arc<ServedModel>>, grace: Duration) {
    let stops = versions
        .into_iter()
        .map(|model| tokio::task::spawn_blocking(move || model.scheduler.shutdown(grace)));
    for result in futures::future::join_all(stops).await {
        if let Err(err) = result {
            tracing::error!(error = %err, "a model scheduler failed to shut down");
        }
    }
}

fn served_list(slot: &Slot) -> String {
    list_or_none(&slot.versions.keys().copied().collect::<Vec<_>>())
}

fn list_or_none(versions: &[u64]) -> String {
    if versions.is_empty() {
        "none".to_string()
    } else {
        versions
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
