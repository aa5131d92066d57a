//! COCO bbox evaluation, computing the number pycocotools' `COCOeval.stats[0]` reports: AP
//! averaged over IoU thresholds 0.50:0.05:0.95, 101-point interpolated precision, area range
//! "all", at most 100 detections per image, crowd ground truth matched without penalty.
//! Ordering, tie-breaking and thresholds follow pycocotools so results agree to rounding.

use std::collections::{BTreeSet, HashMap};

use crate::dataset::coco::Annotations;

/// One detection in COCO result form (`bbox` = `[x, y, width, height]` in pixels).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: [f64; 4],
    pub score: f64,
}

const MAX_DETS: usize = 100;
const AREA_ALL: (f64, f64) = (0.0, 1e5 * 1e5);
const RECALL_POINTS: usize = 101;

/// IoU thresholds as `np.linspace(.5, .95, 10)` computes them.
fn iou_thresholds() -> [f64; 10] {
    let step = (0.95 - 0.5) / 9.0;
    let mut t = [0.0; 10];
    for (i, v) in t.iter_mut().enumerate() {
        *v = i as f64 * step + 0.5;
    }
    t[9] = 0.95;
    t
}

/// Recall thresholds as `np.linspace(0, 1, 101)` computes them.
fn recall_thresholds() -> [f64; RECALL_POINTS] {
    let mut r = [0.0; RECALL_POINTS];
    for (i, v) in r.iter_mut().enumerate() {
        *v = i as f64 * 0.01;
    }
    r[RECALL_POINTS - 1] = 1.0;
    r
}

/// pycocotools' `bbIou`: crowd ground truth divides by the detection's area only.
fn iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let (i, da, ga) = (w * h, d[2] * d[3], g[2] * g[3]);
    let u = if crowd { da } else { da + ga - i };
    i / u
}

struct GtBox<'a> {
    bbox: &'a [f64; 4],
    area: f64,
    crowd: bool,
}

/// Per (image, category) result of `evaluateImg`: detection scores in rank order, per IoU
/// threshold whether each detection matched / is ignored, and the ground truth's ignore flags.
struct ImageEval {
    scores: Vec<f64>,
    matched: Vec<Vec<bool>>,
    ignored: Vec<Vec<bool>>,
    gt_ignored: Vec<bool>,
}

fn evaluate_image(
    gts: &[GtBox<'_>],
    dts: &[&Detection],
    thresholds: &[f64; 10],
) -> Option<ImageEval> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    let outside = |area: f64| area < AREA_ALL.0 || area > AREA_ALL.1;
    // Ground truth: not-ignored first (stable); detections by score, highest first (stable).
    let mut gt_order: Vec<usize> = (0..gts.len()).collect();
    gt_order.sort_by_key(|&i| gts[i].crowd || outside(gts[i].area));
    let gt: Vec<&GtBox<'_>> = gt_order.iter().map(|&i| &gts[i]).collect();
    let gt_ignored: Vec<bool> = gt.iter().map(|g| g.crowd || outside(g.area)).collect();
    let mut dt: Vec<&Detection> = dts.to_vec();
    dt.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    dt.truncate(MAX_DETS);

    let ious: Vec<Vec<f64>> = dt
        .iter()
        .map(|d| gt.iter().map(|g| iou(&d.bbox, g.bbox, g.crowd)).collect())
        .collect();
    let t_count = thresholds.len();
    let mut matched = vec![vec![false; dt.len()]; t_count];
    let mut ignored = vec![vec![false; dt.len()]; t_count];
    let mut gt_taken = vec![vec![false; gt.len()]; t_count];
    for (ti, &t) in thresholds.iter().enumerate() {
        for (di, d_ious) in ious.iter().enumerate() {
            let mut best = t.min(1.0 - 1e-10);
            let mut m: Option<usize> = None;
            for (gi, &value) in d_ious.iter().enumerate() {
                if gt_taken[ti][gi] && !gt[gi].crowd {
                    continue;
                }
                if let Some(mi) = m {
                    if !gt_ignored[mi] && gt_ignored[gi] {
                        break;
                    }
                }
                if value < best {
                    continue;
                }
                best = value;
                m = Some(gi);
            }
            if let Some(mi) = m {
                ignored[ti][di] = gt_ignored[mi];
                matched[ti][di] = true;
                gt_taken[ti][mi] = true;
            }
        }
    }
    for (di, d) in dt.iter().enumerate() {
        let area = d.bbox[2] * d.bbox[3];
        if outside(area) {
            for ti in 0..t_count {
                ignored[ti][di] |= !matched[ti][di];
            }
        }
    }
    Some(ImageEval {
        scores: dt.iter().map(|d| d.score).collect(),
        matched,
        ignored,
        gt_ignored,
    })
}

/// Mean over IoU thresholds and recall points of the interpolated precision of one category,
/// or `None` when the category has no non-ignored ground truth (pycocotools' -1).
fn category_precision(evals: &[ImageEval], thresholds: &[f64; 10]) -> Option<Vec<f64>> {
    if evals.is_empty() {
        return None;
    }
    let positives = evals
        .iter()
        .flat_map(|e| &e.gt_ignored)
        .filter(|ig| !**ig)
        .count();
    if positives == 0 {
        return None;
    }
    // Concatenate images in order, then a stable sort by descending score.
    let mut order: Vec<(usize, usize)> = evals
        .iter()
        .enumerate()
        .flat_map(|(e, ev)| (0..ev.scores.len()).map(move |d| (e, d)))
        .collect();
    order.sort_by(|a, b| {
        let (sa, sb) = (evals[a.0].scores[a.1], evals[b.0].scores[b.1]);
        sb.partial_cmp(&sa).unwrap_or(std::cmp::Ordering::Equal)
    });
    let recalls = recall_thresholds();
    let mut out = Vec::with_capacity(thresholds.len() * RECALL_POINTS);
    for ti in 0..thresholds.len() {
        let (mut tp, mut fp) = (0.0f64, 0.0f64);
        let mut rc = Vec::with_capacity(order.len());
        let mut pr = Vec::with_capacity(order.len());
        for &(e, d) in &order {
            let (m, ig) = (evals[e].matched[ti][d], evals[e].ignored[ti][d]);
            if m && !ig {
                tp += 1.0;
            }
            if !m && !ig {
                fp += 1.0;
            }
            rc.push(tp / positives as f64);
            pr.push(tp / (fp + tp + f64::EPSILON));
        }
        for i in (1..pr.len()).rev() {
            if pr[i] > pr[i - 1] {
                pr[i - 1] = pr[i];
            }
        }
        let mut q = [0.0; RECALL_POINTS];
        for (ri, &r) in recalls.iter().enumerate() {
            let at = rc.partition_point(|&v| v < r);
            match pr.get(at) {
                Some(p) => q[ri] = *p,
                None => break,
            }
        }
        out.extend_from_slice(&q);
    }
    Some(out)
}

/// `COCOeval(gt, dt, "bbox")` with `params.imgIds = image_ids`, then `stats[0]`: the mean
/// precision over all evaluated categories, IoU thresholds and recall points; -1 when no
/// category has ground truth among the images.
pub fn mean_average_precision(
    gt: &Annotations,
    detections: &[Detection],
    image_ids: &BTreeSet<i64>,
) -> f64 {
    let thresholds = iou_thresholds();
    let categories: BTreeSet<i64> = gt.categories.iter().map(|c| c.id).collect();
    let mut gts: HashMap<(i64, i64), Vec<GtBox<'_>>> = HashMap::new();
    for a in &gt.annotations {
        if image_ids.contains(&a.image_id) && categories.contains(&a.category_id) {
            gts.entry((a.image_id, a.category_id))
                .or_default()
                .push(GtBox {
                    bbox: &a.bbox,
                    area: a.area,
                    crowd: a.iscrowd != 0,
                });
        }
    }
    let mut dts: HashMap<(i64, i64), Vec<&Detection>> = HashMap::new();
    for d in detections {
        if image_ids.contains(&d.image_id) && categories.contains(&d.category_id) {
            dts.entry((d.image_id, d.category_id)).or_default().push(d);
        }
    }
    let mut sum = 0.0;
    let mut n = 0usize;
    for &category in &categories {
        let evals: Vec<ImageEval> = image_ids
            .iter()
            .filter_map(|&image| {
                let key = (image, category);
                evaluate_image(
                    gts.get(&key).map_or(&[][..], Vec::as_slice),
                    dts.get(&key).map_or(&[][..], Vec::as_slice),
                    &thresholds,
                )
            })
            .collect();
        if let Some(values) = category_precision(&evals, &thresholds) {
            sum += values.iter().sum::<f64>();
            n += values.len();
        }
    }
    if n == 0 {
        -1.0
    } else {
        sum / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::coco::{Annotation, Category, Image};

    fn gt(annotations: Vec<Annotation>) -> Annotations {
        Annotations {
            images: vec![Image {
                id: 1,
                file_name: "a.jpg".into(),
                width: 100,
                height: 100,
            }],
            annotations,
            categories: vec![Category { id: 1 }, Category { id: 2 }],
        }
    }

    fn ann(id: i64, category_id: i64, bbox: [f64; 4], iscrowd: u8) -> Annotation {
        Annotation {
            id,
            image_id: 1,
            category_id,
            bbox,
            area: bbox[2] * bbox[3],
            iscrowd,
        }
    }

    fn det(category_id: i64, bbox: [f64; 4], score: f64) -> Detection {
        Detection {
            image_id: 1,
            category_id,
            bbox,
            score,
        }
    }

    #[test]
    fn thresholds_match_numpy_linspace() {
        let t = iou_thresholds();
        assert_eq!(t[0], 0.5);
        assert_eq!(t[9], 0.95);
        assert_eq!(t[5], 5.0 * ((0.95 - 0.5) / 9.0) + 0.5);
        assert_eq!(recall_thresholds()[7], 0.07);
    }

    #[test]
    fn perfect_detection_is_one_and_a_miss_is_zero() {
        let ids = BTreeSet::from([1]);
        let truth = gt(vec![ann(1, 1, [10.0, 10.0, 20.0, 20.0], 0)]);
        let perfect = [det(1, [10.0, 10.0, 20.0, 20.0], 0.9)];
        assert!((mean_average_precision(&truth, &perfect, &ids) - 1.0).abs() < 1e-12);
        let wrong_class = [det(2, [10.0, 10.0, 20.0, 20.0], 0.9)];
        assert_eq!(mean_average_precision(&truth, &wrong_class, &ids), 0.0);
        assert_eq!(mean_average_precision(&truth, &[], &BTreeSet::new()), -1.0);
    }

    #[test]
    fn crowd_regions_absorb_detections_without_false_positives() {
        let ids = BTreeSet::from([1]);
        let truth = gt(vec![
            ann(1, 1, [0.0, 0.0, 10.0, 10.0], 0),
            ann(2, 1, [50.0, 50.0, 40.0, 40.0], 1),
        ]);
        // Two detections inside the crowd box do not count against precision.
        let dets = [
            det(1, [55.0, 55.0, 10.0, 10.0], 0.95),
            det(1, [70.0, 70.0, 10.0, 10.0], 0.94),
            det(1, [0.0, 0.0, 10.0, 10.0], 0.5),
        ];
        assert!((mean_average_precision(&truth, &dets, &ids) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn iou_thresholds_grade_a_shifted_box() {
        let ids = BTreeSet::from([1]);
        let truth = gt(vec![ann(1, 1, [0.0, 0.0, 10.0, 10.0], 0)]);
        // IoU = 80 / 120 = 0.667: a hit at 0.50, 0.55, 0.60, 0.65 only.
        let dets = [det(1, [2.0, 0.0, 10.0, 10.0], 0.9)];
        let ap = mean_average_precision(&truth, &dets, &ids);
        assert!((ap - 0.4).abs() < 1e-12, "{ap}");
    }
}
