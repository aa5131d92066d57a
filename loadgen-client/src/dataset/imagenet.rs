//! ImageNet-layout datasets: a folder of images plus a list file (`val_map.txt` by default) with
//! one `<relative file> <label>` per line; QSL index = line order. A folder without a list file
//! is served unlabelled: its images in file-name order (performance runs, and accuracy logs to be
//! scored elsewhere).

use std::fs;
use std::path::{Path, PathBuf};

use super::{DatasetError, GroundTruth, ImageFiles, SampleSource};
use crate::profile::Profile;

/// File extensions taken as images in a folder without a list file.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// An ImageNet-style image folder, labelled when it has a list file.
#[derive(Debug)]
pub struct ImagenetSource {
    images: ImageFiles,
    labels: Option<Vec<i64>>,
}

/// One line of an ImageNet list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry<'a> {
    /// 1-based line number.
    pub line: usize,
    pub file: &'a str,
    pub label: i64,
}

/// A list file line that is not `<file> <label>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ListLineError {
    pub line: usize,
    pub message: String,
}

/// Parses a list file (`<file> <label>` per line, blank lines skipped, the file name may hold
/// spaces) up to `limit` entries.
pub fn parse_list(text: &str, limit: usize) -> Result<Vec<ListEntry<'_>>, ListLineError> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if entries.len() >= limit {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |message: String| ListLineError {
            line: n + 1,
            message,
        };
        let (file, label) = line
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| bad(format!("expected '<file> <label>', found '{}'", clip(line))))?;
        let label = label.parse::<i64>().map_err(|_| {
            bad(format!(
                "label '{}' is not an integer (expected '<file> <label>')",
                clip(label)
            ))
        })?;
        entries.push(ListEntry {
            line: n + 1,
            file: file.trim(),
            label,
        });
    }
    Ok(entries)
}

/// At most 120 characters of a list line in an error.
fn clip(text: &str) -> String {
    match text.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl ImagenetSource {
    /// Reads the list (`list` or `dir/val_map.txt`), keeps the first `count` entries and checks
    /// that every image exists. Without `list` and without `dir/val_map.txt`, the folder's
    /// images (`.jpg`, `.jpeg`, `.png`) are taken unlabelled, sorted by name.
    pub fn open(
        dir: &Path,
        list: Option<&Path>,
        count: Option<usize>,
        profile: &Profile,
    ) -> Result<Self, DatasetError> {
        let default_list = dir.join("val_map.txt");
        if list.is_none() && !default_list.exists() && dir.is_dir() {
            return Self::unlabelled(dir, count, profile);
        }
        let list_path = list.map_or(default_list, Path::to_path_buf);
        let text = fs::read_to_string(&list_path).map_err(|source| DatasetError::Io {
            path: list_path.clone(),
            source,
        })?;
        let bad = |error: ListLineError| DatasetError::List {
            path: list_path.clone(),
            line: error.line,
            message: error.message,
        };
        let entries = parse_list(&text, count.unwrap_or(usize::MAX)).map_err(bad)?;
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        for entry in entries {
            let path = dir.join(entry.file);
            if !path.is_file() {
                return Err(bad(ListLineError {
                    line: entry.line,
                    message: format!(
                        "image {} does not exist (is --dataset-path the folder the list refers to?)",
                        path.display()
                    ),
                }));
            }
            files.push(path);
            labels.push(entry.label);
        }
        Ok(Self {
            images: ImageFiles {
                files,
                profile: profile.clone(),
            },
            labels: Some(labels),
        })
    }

    fn unlabelled(
        dir: &Path,
        count: Option<usize>,
        profile: &Profile,
    ) -> Result<Self, DatasetError> {
        let entries = fs::read_dir(dir).map_err(|source| DatasetError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
            })
            .collect();
        if files.is_empty() {
            return Err(DatasetError::Invalid(format!(
                "{} has no val_map.txt and no .jpg/.jpeg/.png images; give --dataset-list or a folder of images",
                dir.display()
            )));
        }
        files.sort();
        files.truncate(count.unwrap_or(usize::MAX));
        Ok(Self {
            images: ImageFiles {
                files,
                profile: profile.clone(),
            },
            labels: None,
        })
    }
}

impl SampleSource for ImagenetSource {
    fn name(&self) -> String {
        self.images.name("imagenet")
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
        match &self.labels {
            Some(labels) => GroundTruth::Labels(labels.clone()),
            None => GroundTruth::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::lookup;

    fn folder(list: &str, images: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in images {
            image::GrayImage::from_pixel(8, 8, image::Luma([9]))
                .save(dir.path().join(name))
                .unwrap();
        }
        fs::write(dir.path().join("val_map.txt"), list).unwrap();
        dir
    }

    #[test]
    fn reads_list_in_order_with_count_and_labels() {
        let dir = folder(
            "b.png 3\n\na.png 1\nc.png 0\n",
            &["a.png", "b.png", "c.png"],
        );
        let profile = lookup("digits-cnn").unwrap();
        let src = ImagenetSource::open(dir.path(), None, Some(2), profile).unwrap();
        assert_eq!(src.len(), 2);
        match src.ground_truth() {
            GroundTruth::Labels(labels) => assert_eq!(labels, vec![3, 1]),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(src.file(0).unwrap(), dir.path().join("b.png"));
        assert_eq!(src.tensor(1).unwrap().len(), profile.sample_bytes());
    }

    #[test]
    fn dataset_list_overrides_the_default() {
        let dir = folder("a.png 1\n", &["a.png", "b.png"]);
        let other = dir.path().join("mine.txt");
        fs::write(&other, "b.png 4\na.png 2\n").unwrap();
        let profile = lookup("digits-cnn").unwrap();
        let src = ImagenetSource::open(dir.path(), Some(&other), None, profile).unwrap();
        assert_eq!(src.len(), 2);
    }

    #[test]
    fn list_errors_name_the_line_and_the_fix() {
        let profile = lookup("digits-cnn").unwrap();
        let cases = [
            (
                "a.png 1\nb.png x\n",
                "val_map.txt:2: label 'x' is not an integer",
            ),
            ("a.png\n", "val_map.txt:1: expected '<file> <label>'"),
            ("missing.png 1\n", "does not exist"),
        ];
        for (list, expected) in cases {
            let dir = folder(list, &["a.png", "b.png"]);
            let err = ImagenetSource::open(dir.path(), None, None, profile)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let err = ImagenetSource::open(dir.path(), None, None, profile)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no val_map.txt and no .jpg"), "{err}");
        let err = ImagenetSource::open(
            dir.path(),
            Some(&dir.path().join("list.txt")),
            None,
            profile,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("list.txt"), "{err}");
    }

    #[test]
    fn a_folder_without_a_list_is_served_unlabelled_in_name_order() {
        let dir = folder("", &["b.png", "a.PNG", "c.jpg"]);
        fs::remove_file(dir.path().join("val_map.txt")).unwrap();
        fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let profile = lookup("digits-cnn").unwrap();
        let src = ImagenetSource::open(dir.path(), None, None, profile).unwrap();
        assert_eq!(src.len(), 3);
        assert_eq!(src.file(0).unwrap(), dir.path().join("a.PNG"));
        assert!(matches!(src.ground_truth(), GroundTruth::None));
        let src = ImagenetSource::open(dir.path(), None, Some(1), profile).unwrap();
        assert_eq!(src.len(), 1);
    }
}
