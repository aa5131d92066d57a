//! Accuracy of an accuracy-mode run, computed the way MLPerf's reference scripts do
//! (accuracy-imagenet.py: top-1; accuracy-coco.py: COCO mAP), and `accuracy.txt` in their
//! formats plus the `hash=` line the submission checker wants.

mod cocoeval;

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use cocoeval::{mean_average_precision, Detection};

use crate::dataset::coco::Annotations;
use crate::dataset::GroundTruth;

/// Why accuracy could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum AccuracyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an MLPerf accuracy log: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("accuracy log entry {seq_id}: 'data' is not hexadecimal: {source}")]
    Hex {
        seq_id: u64,
        source: hex::FromHexError,
    },
    #[error("accuracy log entry for qsl_idx {qsl_idx} is outside the dataset of {total} samples; was the log made with the same dataset and --count?")]
    UnknownSample { qsl_idx: usize, total: usize },
    #[error(
        "accuracy log entry for qsl_idx {qsl_idx}: {len} data bytes are not whole float32 values"
    )]
    Ragged { qsl_idx: usize, len: usize },
    #[error(
        "the dataset has no labels (synthetic data, or images without val_map.txt); nothing to score against"
    )]
    NoGroundTruth,
}

/// One entry of `mlperf_log_accuracy.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq_id: u64,
    pub qsl_idx: usize,
    pub data: Vec<u8>,
}

#[derive(Deserialize)]
struct RawEntry {
    seq_id: u64,
    qsl_idx: usize,
    data: String,
}

/// The parsed accuracy log and the SHA-256 (lowercase hex) of its bytes.
#[derive(Debug, Clone)]
pub struct AccuracyLog {
    pub entries: Vec<Entry>,
    pub sha256: String,
}

impl AccuracyLog {
    /// Reads and hashes `mlperf_log_accuracy.json`.
    pub fn read(path: &Path) -> Result<Self, AccuracyError> {
        let bytes = fs::read(path).map_err(|source| AccuracyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: Vec<RawEntry> =
            serde_json::from_slice(&bytes).map_err(|source| AccuracyError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let entries = raw
            .into_iter()
            .map(|e| {
                let data = hex::decode(&e.data).map_err(|source| AccuracyError::Hex {
                    seq_id: e.seq_id,
                    source,
                })?;
                Ok(Entry {
                    seq_id: e.seq_id,
                    qsl_idx: e.qsl_idx,
                    data,
                })
            })
            .collect::<Result<_, AccuracyError>>()?;
        Ok(Self {
            entries,
            sha256: format!("{:x}", Sha256::digest(&bytes)),
        })
    }

    /// Entries with repeated `qsl_idx` dropped (the first one wins), as the reference scripts do.
    fn distinct(&self) -> impl Iterator<Item = &Entry> {
        let mut seen = HashSet::new();
        self.entries.iter().filter(move |e| seen.insert(e.qsl_idx))
    }
}

/// A computed accuracy figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Score {
    /// Top-1 classification accuracy.
    Top1 { good: usize, total: usize },
    /// COCO mAP (a fraction; pycocotools' `stats[0]`).
    Map { map: f64, detections: usize },
}

impl fmt::Display for Score {
    /// The reference scripts' result line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Score::Top1 { good, total } => {
                let pct = if *total == 0 {
                    0.0
                } else {
                    100.0 * *good as f64 / *total as f64
                };
                write!(f, "accuracy={pct:.3}%, good={good}, total={total}")
            }
            Score::Map { map, .. } => write!(f, "mAP={:.3}%", 100.0 * map),
        }
    }
}

fn floats(entry: &Entry) -> Result<Vec<f32>, AccuracyError> {
    if !entry.data.len().is_multiple_of(4) {
        return Err(AccuracyError::Ragged {
            qsl_idx: entry.qsl_idx,
            len: entry.data.len(),
        });
    }
    Ok(entry
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Top-1 as accuracy-imagenet.py: predicted class = `int(float32 element 0)`; an empty payload
/// (a failed sample) counts as wrong.
pub fn top1(log: &AccuracyLog, labels: &[i64]) -> Result<Score, AccuracyError> {
    let (mut good, mut total) = (0, 0);
    for entry in log.distinct() {
        let label = labels
            .get(entry.qsl_idx)
            .ok_or(AccuracyError::UnknownSample {
                qsl_idx: entry.qsl_idx,
                total: labels.len(),
            })?;
        total += 1;
        if floats(entry)?.first().map(|v| *v as i64) == Some(*label) {
            good += 1;
        }
    }
    Ok(Score::Top1 { good, total })
}

/// Detections in COCO result form, as accuracy-coco.py builds them from the log (box corners
/// scaled by the image size in float32; class used as the category id), and the ids of the
/// images seen (also those without detections).
pub fn coco_detections(
    log: &AccuracyLog,
    gt: &Annotations,
) -> Result<(Vec<Detection>, BTreeSet<i64>), AccuracyError> {
    let mut detections = Vec::new();
    let mut image_ids = BTreeSet::new();
    for entry in log.distinct() {
        let image = gt
            .images
            .get(entry.qsl_idx)
            .ok_or(AccuracyError::UnknownSample {
                qsl_idx: entry.qsl_idx,
                total: gt.images.len(),
            })?;
        image_ids.insert(image.id);
        let (h, w) = (image.height as f32, image.width as f32);
        for g in floats(entry)?.chunks_exact(7) {
            let (ymin, xmin, ymax, xmax) = (g[1] * h, g[2] * w, g[3] * h, g[4] * w);
            detections.push(Detection {
                image_id: image.id,
                category_id: g[6] as i64,
                bbox: [
                    f64::from(xmin),
                    f64::from(ymin),
                    f64::from(xmax - xmin),
                    f64::from(ymax - ymin),
                ],
                score: f64::from(g[5]),
            });
        }
    }
    Ok((detections, image_ids))
}

/// COCO mAP as accuracy-coco.py reports it.
pub fn coco_map(log: &AccuracyLog, gt: &Annotations) -> Result<Score, AccuracyError> {
    let (detections, image_ids) = coco_detections(log, gt)?;
    Ok(Score::Map {
        map: mean_average_precision(gt, &detections, &image_ids),
        detections: detections.len(),
    })
}

/// Scores the log against the dataset's ground truth.
pub fn score(log: &AccuracyLog, truth: &GroundTruth) -> Result<Score, AccuracyError> {
    match truth {
        GroundTruth::Labels(labels) => top1(log, labels),
        GroundTruth::Coco(gt) => coco_map(log, gt),
        GroundTruth::None => Err(AccuracyError::NoGroundTruth),
    }
}

/// Writes `accuracy.txt`: the result line, then `hash=<sha256 of the accuracy log>`.
pub fn write_accuracy_txt(
    path: &Path,
    score: &Score,
    log: &AccuracyLog,
) -> Result<(), AccuracyError> {
    fs::write(path, format!("{score}\nhash={}\n", log.sha256)).map_err(|source| AccuracyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::coco::{Annotation, Category, Image};

    fn hex_f32(values: &[f32]) -> String {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    fn write_log(dir: &Path, entries: &[(usize, &[f32])]) -> PathBuf {
        let body: Vec<String> = entries
            .iter()
            .enumerate()
            .map(|(seq, (idx, data))| {
                format!(
                    "\n{{ \"seq_id\" : {seq}, \"qsl_idx\" : {idx}, \"data\" : \"{}\" }}",
                    hex_f32(data)
                )
            })
            .collect();
        let path = dir.join("mlperf_log_accuracy.json");
        fs::write(&path, format!("[{}\n]\n", body.join(","))).unwrap();
        path
    }

    #[test]
    fn top1_dedupes_first_wins_and_formats_like_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(
            dir.path(),
            &[(0, &[3.0]), (1, &[5.0]), (0, &[9.0]), (2, &[]), (3, &[1.0])],
        );
        let log = AccuracyLog::read(&path).unwrap();
        let score = top1(&log, &[3, 4, 0, 1]).unwrap();
        assert_eq!(score, Score::Top1 { good: 2, total: 4 });
        assert_eq!(score.to_string(), "accuracy=50.000%, good=2, total=4");
        let bytes = fs::read(&path).unwrap();
        assert_eq!(log.sha256, format!("{:x}", Sha256::digest(&bytes)));
        let out = dir.path().join("accuracy.txt");
        write_accuracy_txt(&out, &score, &log).unwrap();
        let text = fs::read_to_string(out).unwrap();
        assert_eq!(
            text,
            format!("accuracy=50.000%, good=2, total=4\nhash={}\n", log.sha256)
        );
        assert!(matches!(
            top1(&log, &[1]),
            Err(AccuracyError::UnknownSample {
                qsl_idx: 1,
                total: 1
            })
        ));
    }

    #[test]
    fn malformed_logs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        fs::write(&path, "[{\"seq_id\": 0, \"qsl_idx\": 0, \"data\": \"ZZ\"}]").unwrap();
        assert!(matches!(
            AccuracyLog::read(&path),
            Err(AccuracyError::Hex { .. })
        ));
        fs::write(&path, "{}").unwrap();
        let err = AccuracyLog::read(&path).unwrap_err().to_string();
        assert!(err.contains("not an MLPerf accuracy log"), "{err}");
        fs::write(
            &path,
            "[{\"seq_id\": 0, \"qsl_idx\": 0, \"data\": \"0000\"}]",
        )
        .unwrap();
        let log = AccuracyLog::read(&path).unwrap();
        assert!(matches!(
            top1(&log, &[0]),
            Err(AccuracyError::Ragged { .. })
        ));
        assert!(matches!(
            score(&log, &GroundTruth::None),
            Err(AccuracyError::NoGroundTruth)
        ));
    }

    #[test]
    fn coco_payloads_scale_boxes_and_count_empty_images() {
        let gt = Annotations {
            images: vec![
                Image {
                    id: 10,
                    file_name: "a".into(),
                    width: 200,
                    height: 100,
                },
                Image {
                    id: 20,
                    file_name: "b".into(),
                    width: 50,
                    height: 50,
                },
            ],
            annotations: vec![Annotation {
                id: 1,
                image_id: 10,
                category_id: 3,
                bbox: [20.0, 10.0, 40.0, 30.0],
                area: 1200.0,
                iscrowd: 0,
            }],
            categories: vec![Category { id: 3 }],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(
            dir.path(),
            &[(0, &[0.0, 0.1, 0.1, 0.4, 0.3, 0.8, 3.0]), (1, &[])],
        );
        let log = AccuracyLog::read(&path).unwrap();
        let (dets, ids) = coco_detections(&log, &gt).unwrap();
        assert_eq!(ids, BTreeSet::from([10, 20]));
        assert_eq!(dets.len(), 1);
        let b = dets[0].bbox;
        assert!((b[0] - 20.0).abs() < 1e-4 && (b[1] - 10.0).abs() < 1e-4);
        assert!((b[2] - 40.0).abs() < 1e-4 && (b[3] - 30.0).abs() < 1e-4);
        let score = coco_map(&log, &gt).unwrap();
        assert_eq!(score.to_string(), "mAP=100.000%");
    }
}
