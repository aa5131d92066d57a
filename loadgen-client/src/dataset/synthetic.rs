//! Synthetic samples: random 8-bit pixels of the profile's size, pushed through the profile's
//! normalisation and element type. Each sample is seeded by (seed, index), so any load order
//! gives the same bytes. No labels.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::{preprocess, DatasetError, GroundTruth, SampleSource};
use crate::profile::Profile;

/// Random tensors shaped like the profile's input.
#[derive(Debug)]
pub struct SyntheticSource {
    profile: Profile,
    count: usize,
    seed: u64,
}

impl SyntheticSource {
    /// `count` samples generated from `seed`.
    pub fn new(profile: &Profile, count: usize, seed: u64) -> Self {
        Self {
            profile: profile.clone(),
            count,
            seed,
        }
    }
}

impl SampleSource for SyntheticSource {
    fn name(&self) -> String {
        format!("synthetic ({} samples, {})", self.count, self.profile.name)
    }

    fn len(&self) -> usize {
        self.count
    }

    fn tensor(&self, index: usize) -> Result<Vec<u8>, DatasetError> {
        if index >= self.count {
            return Err(DatasetError::Invalid(format!(
                "sample index {index} is out of range"
            )));
        }
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut pixels = vec![0u8; self.profile.sample_elements()];
        rng.fill_bytes(&mut pixels);
        Ok(preprocess::encode_pixels(&pixels, &self.profile))
    }

    fn file(&self, _index: usize) -> Option<PathBuf> {
        None
    }

    fn ground_truth(&self) -> GroundTruth {
        GroundTruth::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::lookup;

    #[test]
    fn deterministic_per_seed_and_index() {
        let profile = lookup("mobilenet_ncs2").unwrap();
        let a = SyntheticSource::new(profile, 3, 1);
        let b = SyntheticSource::new(profile, 3, 1);
        let c = SyntheticSource::new(profile, 3, 2);
        assert_eq!(a.tensor(2).unwrap(), b.tensor(2).unwrap());
        assert_ne!(a.tensor(2).unwrap(), a.tensor(1).unwrap());
        assert_ne!(a.tensor(2).unwrap(), c.tensor(2).unwrap());
        assert_eq!(a.tensor(0).unwrap().len(), profile.sample_bytes());
        assert!(a.tensor(3).is_err());
        assert!(matches!(a.ground_truth(), GroundTruth::None));
    }
}
