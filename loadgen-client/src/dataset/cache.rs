//! On-disk cache of preprocessed tensors (`--cache DIR`): one raw file per (profile, source
//! file), named by a hash of the profile, the file's path, size and modification time, so an
//! edited image or another profile never reads a stale tensor.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::DatasetError;
use crate::profile::Profile;

/// A cache directory for one profile.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    sample_bytes: usize,
}

impl Cache {
    /// Uses (and creates) `root/<profile's cache name>/`.
    pub fn new(root: &Path, profile: &Profile) -> Result<Self, DatasetError> {
        let dir = root.join(profile.cache_name());
        fs::create_dir_all(&dir).map_err(|source| DatasetError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            sample_bytes: profile.sample_bytes(),
        })
    }

    fn entry(&self, file: &Path) -> Result<PathBuf, DatasetError> {
        let io = |source| DatasetError::Io {
            path: file.to_path_buf(),
            source,
        };
        let meta = fs::metadata(file).map_err(io)?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let absolute = fs::canonicalize(file).map_err(io)?;
        let mut hash = Sha256::new();
        hash.update(absolute.as_os_str().as_encoded_bytes());
        hash.update(meta.len().to_le_bytes());
        hash.update(modified.to_le_bytes());
        Ok(self.dir.join(format!("{:x}.raw", hash.finalize())))
    }

    /// The cached tensor of `file`, if present and of the right size.
    pub fn get(&self, file: &Path) -> Result<Option<Vec<u8>>, DatasetError> {
        let entry = self.entry(file)?;
        match fs::read(&entry) {
            Ok(bytes) if bytes.len() == self.sample_bytes => Ok(Some(bytes)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DatasetError::Io {
                path: entry,
                source,
            }),
        }
    }

    /// Stores the tensor of `file` (written to a temporary name, then renamed).
    pub fn put(&self, file: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
        let entry = self.entry(file)?;
        let partial = entry.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&partial, bytes)
            .and_then(|()| fs::rename(&partial, &entry))
            .map_err(|source| DatasetError::Io {
                path: entry,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::lookup;

    #[test]
    fn round_trips_and_ignores_wrong_sizes_and_other_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a.png");
        fs::write(&image, b"pretend image").unwrap();
        let digits = lookup("digits-cnn").unwrap();
        let cache = Cache::new(&dir.path().join("cache"), digits).unwrap();
        assert!(cache.get(&image).unwrap().is_none());
        let tensor = vec![7u8; digits.sample_bytes()];
        cache.put(&image, &tensor).unwrap();
        assert_eq!(cache.get(&image).unwrap(), Some(tensor));
        cache.put(&image, &[1, 2, 3]).unwrap();
        assert!(cache.get(&image).unwrap().is_none(), "wrong size is a miss");

        let other = Cache::new(
            &dir.path().join("cache"),
            lookup("mobilenet_coral").unwrap(),
        );
        assert!(other.unwrap().get(&image).unwrap().is_none());
    }
}
