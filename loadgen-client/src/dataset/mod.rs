//! Query sample libraries: where samples come from (ImageNet-layout folders, COCO, synthetic
//! tensors), and the [`DatasetQsl`] that preprocesses them into RAM before timing starts.

mod cache;
pub mod coco;
pub mod imagenet;
pub mod preprocess;
pub mod synthetic;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rayon::prelude::*;

pub use cache::Cache;

use crate::profile::Profile;
use loadgen::sut::{Qsl, QslError};

/// Why a dataset could not be opened or a sample not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot decode image {path}: {source} (expected a JPEG or PNG file)")]
    Decode {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("{path}:{line}: {message}")]
    List {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot parse COCO annotations {path}: {source}")]
    Annotations {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What an accuracy run compares the responses with.
#[derive(Debug, Clone)]
pub enum GroundTruth {
    /// Class label per QSL index.
    Labels(Vec<i64>),
    /// COCO annotations; QSL index `i` is `images[i]`.
    Coco(Arc<coco::Annotations>),
    /// Synthetic data has no labels.
    None,
}

/// A source of preprocessed samples, indexed by QSL index.
pub trait SampleSource: Send + Sync {
    /// Name reported as the QSL name.
    fn name(&self) -> String;
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The preprocessed tensor bytes of one sample.
    fn tensor(&self, index: usize) -> Result<Vec<u8>, DatasetError>;
    /// The file the sample comes from, for the on-disk cache; `None` when not cacheable.
    fn file(&self, index: usize) -> Option<PathBuf>;
    /// Labels or annotations for accuracy.
    fn ground_truth(&self) -> GroundTruth;
}

/// Image files preprocessed with one profile: the samples of the file-backed sources.
#[derive(Debug)]
struct ImageFiles {
    files: Vec<PathBuf>,
    profile: Profile,
}

impl ImageFiles {
    /// The QSL name of a `kind` dataset of these files.
    fn name(&self, kind: &str) -> String {
        format!(
            "{kind} ({} images, {})",
            self.files.len(),
            self.profile.name
        )
    }

    fn len(&self) -> usize {
        self.files.len()
    }

    fn tensor(&self, index: usize) -> Result<Vec<u8>, DatasetError> {
        let path = self.files.get(index).ok_or_else(|| {
            DatasetError::Invalid(format!("sample index {index} is out of range"))
        })?;
        preprocess::load_image(path, &self.profile)
    }

    fn file(&self, index: usize) -> Option<PathBuf> {
        self.files.get(index).cloned()
    }
}

/// Preprocessed samples currently in RAM, shared by the QSL (which fills it) and the SUT
/// (which reads it when issuing).
#[derive(Debug, Default)]
pub struct SampleStore {
    samples: RwLock<HashMap<usize, Arc<Vec<u8>>>>,
}

impl SampleStore {
    /// The tensor bytes of a loaded sample.
    pub fn get(&self, index: usize) -> Option<Arc<Vec<u8>>> {
        self.samples
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&index)
            .cloned()
    }

    fn insert_all(&self, loaded: Vec<(usize, Vec<u8>)>) {
        let mut samples = self.samples.write().unwrap_or_else(|e| e.into_inner());
        for (index, bytes) in loaded {
            samples.insert(index, Arc::new(bytes));
        }
    }

    fn remove_all(&self, indices: &[usize]) {
        let mut samples = self.samples.write().unwrap_or_else(|e| e.into_inner());
        for index in indices {
            samples.remove(index);
        }
    }
}

/// The QSL over a [`SampleSource`]: loads (in parallel, optionally through a cache) into a
/// [`SampleStore`].
pub struct DatasetQsl {
    source: Box<dyn SampleSource>,
    store: Arc<SampleStore>,
    cache: Option<Cache>,
    performance_sample_count: usize,
}

impl DatasetQsl {
    /// Wraps `source`; the performance sample count is `min(total, performance_sample_count)`.
    pub fn new(
        source: Box<dyn SampleSource>,
        performance_sample_count: usize,
        cache: Option<Cache>,
    ) -> Result<Self, DatasetError> {
        if source.is_empty() {
            return Err(DatasetError::Invalid(format!(
                "dataset '{}' has no samples; check --dataset-path, --dataset-list and --count",
                source.name()
            )));
        }
        if performance_sample_count == 0 {
            return Err(DatasetError::Invalid(
                "--performance-sample-count must be at least 1".into(),
            ));
        }
        Ok(Self {
            performance_sample_count: performance_sample_count.min(source.len()),
            source,
            store: Arc::default(),
            cache,
        })
    }

    /// The store the SUT reads loaded samples from.
    pub fn store(&self) -> Arc<SampleStore> {
        Arc::clone(&self.store)
    }

    /// Labels or annotations for accuracy.
    pub fn ground_truth(&self) -> GroundTruth {
        self.source.ground_truth()
    }

    fn prepare(&self, index: usize) -> Result<Vec<u8>, DatasetError> {
        let (Some(cache), Some(file)) = (&self.cache, self.source.file(index)) else {
            return self.source.tensor(index);
        };
        if let Some(bytes) = cache.get(&file)? {
            return Ok(bytes);
        }
        let bytes = self.source.tensor(index)?;
        cache.put(&file, &bytes)?;
        Ok(bytes)
    }
}

impl Qsl for DatasetQsl {
    fn name(&self) -> String {
        self.source.name()
    }

    fn total_sample_count(&self) -> usize {
        self.source.len()
    }

    fn performance_sample_count(&self) -> usize {
        self.performance_sample_count
    }

    fn load_samples_to_ram(&self, indices: &[usize]) -> Result<(), QslError> {
        let total = self.source.len();
        if let Some(bad) = indices.iter().find(|i| **i >= total) {
            return Err(QslError(format!(
                "sample index {bad} is outside the dataset of {total} samples"
            )));
        }
        let loaded = indices
            .par_iter()
            .map(|&index| self.prepare(index).map(|bytes| (index, bytes)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QslError(e.to_string()))?;
        self.store.insert_all(loaded);
        Ok(())
    }

    fn unload_samples_from_ram(&self, indices: &[usize]) {
        self.store.remove_all(indices);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::lookup;

    #[test]
    fn qsl_loads_unloads_and_caps_the_performance_count() {
        let profile = lookup("digits-cnn").unwrap();
        let source = synthetic::SyntheticSource::new(profile, 5, 7);
        let qsl = DatasetQsl::new(Box::new(source), 1024, None).unwrap();
        assert_eq!(
            (qsl.total_sample_count(), qsl.performance_sample_count()),
            (5, 5)
        );
        qsl.load_samples_to_ram(&[0, 3]).unwrap();
        let store = qsl.store();
        assert_eq!(store.get(3).unwrap().len(), profile.sample_bytes());
        assert!(store.get(1).is_none());
        qsl.unload_samples_from_ram(&[3]);
        assert!(store.get(3).is_none() && store.get(0).is_some());
        let err = qsl.load_samples_to_ram(&[5]).unwrap_err().to_string();
        assert!(err.contains("outside the dataset of 5"), "{err}");
    }

    #[test]
    fn cache_is_filled_on_first_load_and_read_afterwards() {
        let profile = lookup("digits-cnn").unwrap();
        let dir = tempfile::tempdir().unwrap();
        image::GrayImage::from_pixel(8, 8, image::Luma([255]))
            .save(dir.path().join("a.png"))
            .unwrap();
        std::fs::write(dir.path().join("val_map.txt"), "a.png 1\n").unwrap();
        let cache_root = dir.path().join("cache");
        let open = || {
            let source = imagenet::ImagenetSource::open(dir.path(), None, None, profile).unwrap();
            let cache = Cache::new(&cache_root, profile).unwrap();
            DatasetQsl::new(Box::new(source), 8, Some(cache)).unwrap()
        };
        let first = open();
        first.load_samples_to_ram(&[0]).unwrap();
        let entries: Vec<_> = std::fs::read_dir(cache_root.join(profile.cache_name()))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1);
        // A second run reads the cached tensor (here deliberately altered) instead of the image.
        std::fs::write(&entries[0], vec![0u8; profile.sample_bytes()]).unwrap();
        let second = open();
        second.load_samples_to_ram(&[0]).unwrap();
        assert_eq!(
            *second.store().get(0).unwrap(),
            vec![0u8; profile.sample_bytes()]
        );
        assert_ne!(
            *first.store().get(0).unwrap(),
            vec![0u8; profile.sample_bytes()]
        );
    }

    #[test]
    fn empty_dataset_and_zero_performance_count_are_rejected() {
        let profile = lookup("digits-cnn").unwrap();
        let empty = synthetic::SyntheticSource::new(profile, 0, 1);
        let err = DatasetQsl::new(Box::new(empty), 10, None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no samples"), "{err}");
        let one = synthetic::SyntheticSource::new(profile, 1, 1);
        assert!(DatasetQsl::new(Box::new(one), 0, None).is_err());
    }
}
