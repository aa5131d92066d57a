//! Our COCO mAP against pycocotools on a random synthetic COCO set, scored the way
//! accuracy-coco.py scores an MLPerf accuracy log. Needs a Python with numpy and pycocotools:
//! `$LOADGEN_PYTHON`, else the workspace's `.venv/bin/python`; skipped (with a notice) otherwise.

// The LoadGen crate's test helpers (python_unavailable).
#[path = "../../loadgen/tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use loadgen_client::accuracy::{coco_map, AccuracyLog, Score};
use loadgen_client::dataset::coco::Annotations;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SCRIPT: &str = r#"
import json, sys
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

coco_dir, log_path = sys.argv[1], sys.argv[2]
cocoGt = COCO(coco_dir + "/annotations/instances_val2017.json")
images = json.load(open(coco_dir + "/annotations/instances_val2017.json"))["images"]
detections, image_ids, seen = [], set(), set()
for j in json.load(open(log_path)):
    idx = j["qsl_idx"]
    if idx in seen:
        continue
    seen.add(idx)
    data = np.frombuffer(bytes.fromhex(j["data"]), np.float32)
    image = images[idx]
    if len(data) < 7:
        image_ids.add(image["id"])
        continue
    for i in range(0, len(data), 7):
        image_idx, ymin, xmin, ymax, xmax, score, label = data[i:i + 7]
        height, width = image["height"], image["width"]
        ymin *= height; xmin *= width; ymax *= height; xmax *= width
        detections.append({"image_id": image["id"], "category_id": int(label),
                           "bbox": [float(xmin), float(ymin), float(xmax - xmin), float(ymax - ymin)],
                           "score": float(score)})
        image_ids.add(image["id"])
cocoDt = cocoGt.loadRes(json.loads(json.dumps(detections)))
cocoEval = COCOeval(cocoGt, cocoDt, iouType="bbox")
cocoEval.params.imgIds = list(image_ids)
cocoEval.evaluate(); cocoEval.accumulate(); cocoEval.summarize()
print("STATS0", repr(float(cocoEval.stats[0])))
"#;

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("LOADGEN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let ok = Command::new(&candidate)
        .args(["-c", "import numpy, pycocotools"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(candidate)
}

fn hex_f32(values: &[f32]) -> String {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Writes a random COCO folder and accuracy log; returns (coco dir, log path).
fn synthetic_set(dir: &Path, seed: u64) -> (PathBuf, PathBuf) {
    let mut rng = StdRng::seed_from_u64(seed);
    let categories = [1i64, 2, 3, 7];
    let n_images = 14;
    let (mut images, mut anns) = (Vec::new(), Vec::new());
    let mut gt_boxes: Vec<Vec<(i64, [f64; 4])>> = Vec::new();
    let mut next_ann = 1;
    for i in 0..n_images {
        let (w, h) = (rng.random_range(60..640u32), rng.random_range(60..480u32));
        images.push(format!(
            r#"{{"id": {}, "file_name": "{i:03}.jpg", "width": {w}, "height": {h}}}"#,
            100 + i * 3
        ));
        let mut boxes = Vec::new();
        for _ in 0..rng.random_range(0..7) {
            let bw = rng.random_range(2.0..f64::from(w) * 0.6);
            let bh = rng.random_range(2.0..f64::from(h) * 0.6);
            let x = rng.random_range(0.0..f64::from(w) - bw);
            let y = rng.random_range(0.0..f64::from(h) - bh);
            let cat = categories[rng.random_range(0..categories.len())];
            let crowd = u8::from(rng.random_bool(0.1));
            let area = bw * bh * rng.random_range(0.5..1.0);
            anns.push(format!(
                r#"{{"id": {next_ann}, "image_id": {}, "category_id": {cat}, "bbox": [{x}, {y}, {bw}, {bh}], "area": {area}, "iscrowd": {crowd}}}"#,
                100 + i * 3
            ));
            next_ann += 1;
            boxes.push((cat, [x, y, bw, bh]));
        }
        gt_boxes.push(boxes);
    }
    let cats: Vec<String> = categories
        .iter()
        .map(|c| format!(r#"{{"id": {c}, "name": "c{c}"}}"#))
        .collect();
    let coco = dir.join("coco");
    fs::create_dir_all(coco.join("annotations")).unwrap();
    fs::write(
        coco.join("annotations/instances_val2017.json"),
        format!(
            r#"{{"images": [{}], "annotations": [{}], "categories": [{}]}}"#,
            images.join(","),
            anns.join(","),
            cats.join(",")
        ),
    )
    .unwrap();

    let mut log = String::from("[");
    let mut seq = 0;
    let mut entry = |log: &mut String, idx: usize, data: &[f32]| {
        if seq > 0 {
            log.push(',');
        }
        write!(
            log,
            "\n{{ \"seq_id\" : {seq}, \"qsl_idx\" : {idx}, \"data\" : \"{}\" }}",
            hex_f32(data)
        )
        .unwrap();
        seq += 1;
    };
    for (idx, boxes) in gt_boxes.iter().enumerate() {
        if idx == 3 {
            entry(&mut log, idx, &[]);
            continue;
        }
        let size = |i: usize| {
            let v: serde_json::Value = serde_json::from_str(&images[i]).unwrap();
            (v["width"].as_f64().unwrap(), v["height"].as_f64().unwrap())
        };
        let (w, h) = size(idx);
        let mut data = Vec::new();
        let mut push = |cat: i64, b: [f64; 4], score: f32| {
            data.extend_from_slice(&[
                idx as f32,
                (b[1] / h) as f32,
                (b[0] / w) as f32,
                ((b[1] + b[3]) / h) as f32,
                ((b[0] + b[2]) / w) as f32,
                score,
                cat as f32,
            ]);
        };
        for &(cat, b) in boxes {
            if rng.random_bool(0.8) {
                let mut j = |v: f64, s: f64| v + rng.random_range(-0.08..0.08) * s;
                let jittered = [j(b[0], b[2]), j(b[1], b[3]), j(b[2], b[2]), j(b[3], b[3])];
                let wrong = rng.random_bool(0.1);
                let cat = if wrong { categories[0] } else { cat };
                // Scores on a coarse grid so that ties occur.
                push(cat, jittered, f32::from(rng.random_range(1..20u8)) / 20.0);
            }
        }
        let false_positives = if idx == 5 {
            130
        } else {
            rng.random_range(0..4)
        };
        for _ in 0..false_positives {
            let bw = rng.random_range(1.0..w * 0.5);
            let bh = rng.random_range(1.0..h * 0.5);
            let b = [
                rng.random_range(0.0..w - bw),
                rng.random_range(0.0..h - bh),
                bw,
                bh,
            ];
            let cat = categories[rng.random_range(0..categories.len())];
            push(cat, b, f32::from(rng.random_range(1..20u8)) / 20.0);
        }
        entry(&mut log, idx, &data);
    }
    // A repeated qsl_idx: the first entry wins, this one is ignored.
    entry(&mut log, 0, &[0.0, 0.0, 0.0, 1.0, 1.0, 0.99, 1.0]);
    log.push_str("\n]\n");
    let log_path = dir.join("mlperf_log_accuracy.json");
    fs::write(&log_path, log).unwrap();
    (coco, log_path)
}

#[test]
fn coco_map_equals_pycocotools() {
    let Some(python) = python() else {
        common::python_unavailable("no Python with numpy and pycocotools (set LOADGEN_PYTHON)");
        return;
    };
    for seed in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let (coco, log_path) = synthetic_set(dir.path(), seed);
        let gt = Annotations::read(&coco.join("annotations/instances_val2017.json")).unwrap();
        let log = AccuracyLog::read(&log_path).unwrap();
        let Score::Map { map: ours, .. } = coco_map(&log, &gt).unwrap() else {
            panic!("COCO scoring returns mAP");
        };
        let out = Command::new(&python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(&coco)
            .arg(&log_path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pycocotools failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: f64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("STATS0 "))
            .expect("stats line")
            .trim()
            .parse()
            .unwrap();
        assert!(
            (ours - theirs).abs() < 1e-9,
            "seed {seed}: ours {ours} vs pycocotools {theirs}"
        );
        assert!(
            theirs > 0.05 && theirs < 0.95,
            "a non-trivial case: {theirs}"
        );
    }
}
