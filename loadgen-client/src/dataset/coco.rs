//! COCO datasets: `val2017/` images plus `annotations/instances_val2017.json`; QSL index `i` is
//! `images[i]` of the annotation file, as the reference accuracy-coco.py assumes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{DatasetError, GroundTruth, ImageFiles, SampleSource};
use crate::profile::Profile;

/// One image entry of the annotation file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Image {
    pub id: i64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

/// One ground-truth object.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Annotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, width, height]` in pixels.
    pub bbox: [f64; 4],
    /// Object area (segmentation area in COCO), used for the area ranges.
    pub area: f64,
    #[serde(default)]
    pub iscrowd: u8,
}

/// One category.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Category {
    pub id: i64,
}

/// The parts of `instances_val2017.json` the benchmark uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Annotations {
    pub images: Vec<Image>,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    pub categories: Vec<Category>,
}

impl Annotations {
    /// Parses an annotation file.
    pub fn read(path: &Path) -> Result<Self, DatasetError> {
        let text = fs::read(path).map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| DatasetError::Annotations {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A COCO validation folder.
#[derive(Debug)]
pub struct CocoSource {
    images: ImageFiles,
    annotations: Arc<Annotations>,
}

impl CocoSource {
    /// Reads `dir/annotations/instances_val2017.json`, keeps the first `count` images (the
    /// annotations stay whole) and checks that each image exists under `dir/val2017/`.
    pub fn open(dir: &Path, count: Option<usize>, profile: &Profile) -> Result<Self, DatasetError> {
        let path = dir.join("annotations").join("instances_val2017.json");
        let mut annotations = Annotations::read(&path)?;
        annotations.images.truncate(count.unwrap_or(usize::MAX));
        let files = annotations
            .images
            .iter()
            .map(|image| {
                let file = dir.join("val2017").join(&image.file_name);
                if file.is_file() {
                    Ok(file)
                } else {
                    Err(DatasetError::Invalid(format!(
                        "image {} listed in {} does not exist (is --dataset-path the COCO folder?)",
                        file.display(),
                        path.display()
                    )))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            images: ImageFiles {
                files,
                profile: profile.clone(),
            },
            annotations: Arc::new(annotations),
        })
    }
}

impl SampleSource for CocoSource {
    fn name(&self) -> String {
        self.images.name("coco")
    }

    fn len(&self) -> usize {
        self.images.len()
    }

    fn tensor(&self, index: usize) -> Result<Vec<u8>, DatasetError> {
        self.images.tensor(index)
    }

    fn file(&self, index: usize) -> Option<PathBuf> {
        self.images.file(index)
    }

    fn ground_truth(&self) -> GroundTruth {
        GroundTruth::Coco(Arc::clone(&self.annotations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::lookup;

    const ANNOTATIONS: &str = r#"{
        "images": [
            {"id": 42, "file_name": "a.jpg", "width": 40, "height": 30},
            {"id": 7, "file_name": "b.jpg", "width": 20, "height": 10}
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12.0, "iscrowd": 1}
        ],
        "categories": [{"id": 3, "name": "car"}]
    }"#;

    fn folder(with_images: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("annotations")).unwrap();
        fs::create_dir_all(dir.path().join("val2017")).unwrap();
        fs::write(
            dir.path().join("annotations/instances_val2017.json"),
            ANNOTATIONS,
        )
        .unwrap();
        if with_images {
            for (name, w, h) in [("a.jpg", 40, 30), ("b.jpg", 20, 10)] {
                image::RgbImage::new(w, h)
                    .save(dir.path().join("val2017").join(name))
                    .unwrap();
            }
        }
        dir
    }

    #[test]
    fn keeps_image_order_ids_and_sizes() {
        let dir = folder(true);
        let profile = lookup("ssd-mobilenet-onnxruntime").unwrap();
        let src = CocoSource::open(dir.path(), Some(1), profile).unwrap();
        assert_eq!(src.len(), 1);
        let GroundTruth::Coco(ann) = src.ground_truth() else {
            panic!("COCO ground truth expected");
        };
        assert_eq!(ann.images[0].id, 42);
        assert_eq!((ann.images[0].width, ann.images[0].height), (40, 30));
        assert_eq!(ann.annotations[0].iscrowd, 1);
        assert_eq!(src.tensor(0).unwrap().len(), 300 * 300 * 3);
    }

    #[test]
    fn missing_images_and_bad_json_are_clear_errors() {
        let profile = lookup("ssd-mobilenet-onnxruntime").unwrap();
        let dir = folder(false);
        let err = CocoSource::open(dir.path(), None, profile)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.jpg") && err.contains("does not exist"),
            "{err}"
        );
        fs::write(
            dir.path().join("annotations/instances_val2017.json"),
            "{\"images\": 3}",
        )
        .unwrap();
        let err = CocoSource::open(dir.path(), None, profile)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot parse COCO annotations"), "{err}");
    }
}
