//! COCO-style mean average precision of boxes with scores, as `pycocotools`' `COCOeval`
//! computes it for the area range `all` and 100 detections per image and class: each image's
//! detections of a class are matched greedily by score to its boxes of that class at ten IoU
//! thresholds (0.5 to 0.95), precision is made monotone and read at 101 recall points, and the
//! mean runs over the classes that have ground-truth boxes. Boxes whose area is outside COCO's
//! range (a negative width or height) are ignored as COCO ignores them, and true boxes of all
//! zeros are left out: they are the padding a batch gives images with fewer boxes.

use burn::prelude::Backend;
use serde::{Deserialize, Serialize};

use crate::nucleotide::KpiAccumulator;
use crate::{AnyValue, BoxError, Build, Generated, Incoming, Nest, TensorDtype, nucleotide};

/// How a box's four numbers are laid out.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BoxFormat {
    /// `x0, y0, x1, y1`: two corners.
    #[default]
    Xyxy,
    /// `x, y, width, height`: COCO's layout.
    Xywh,
}

/// `DetectionKpi`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectionConfig {
    /// Classes are `0..num_classes`.
    pub num_classes: usize,
    /// How boxes are laid out.
    #[serde(default)]
    pub box_format: BoxFormat,
    /// Detections kept per image and class, the highest scores first (COCO: 100).
    #[serde(default = "hundred")]
    pub max_detections: usize,
}

fn hundred() -> usize {
    100
}

/// One image's true boxes and detections.
#[derive(Incoming)]
pub struct Detections<B: Backend> {
    /// The true boxes: `[G, 4]` (or `[4]` for one).
    pub boxes: AnyValue<B>,
    /// Their classes: `[G]` ints (or one int).
    pub labels: AnyValue<B>,
    /// The detected boxes: `[D, 4]` (or `[4]`).
    pub detected_boxes: AnyValue<B>,
    /// Their scores: `[D]` floats (or one float).
    pub detected_scores: AnyValue<B>,
    /// Their classes: `[D]` ints (or one int).
    pub detected_labels: AnyValue<B>,
}

/// Detection KPIs over every image.
#[derive(Generated)]
pub struct DetectionKpis {
    /// AP averaged over IoU thresholds 0.5 to 0.95 and the classes with true boxes.
    pub map: f64,
    /// AP at IoU 0.5, averaged over the classes with true boxes.
    pub map_50: f64,
    /// AP at IoU 0.75, averaged over the classes with true boxes.
    pub map_75: f64,
    /// Per class: AP averaged over IoU thresholds 0.5 to 0.95 (NaN without true boxes).
    pub ap: Vec<f64>,
    /// Per class: AP at IoU 0.5 (NaN without true boxes).
    pub ap_50: Vec<f64>,
}

/// COCO mean average precision (mAP@[.5:.95], mAP@.5, mAP@.75 and per class) of detections
/// with scores against true boxes, image by image.
#[nucleotide(kind = KpiAccumulator)]
pub struct DetectionKpi {
    config: DetectionConfig,
}

impl<B: Backend> Build<B> for DetectionKpi {
    type Config = DetectionConfig;
    type Input = Detections<B>;
    type Output = DetectionKpis;
    fn build(config: &DetectionConfig, _: &B::Device) -> Result<Self, BoxError> {
        if config.num_classes == 0 || config.max_detections == 0 {
            return Err("`num_classes` and `max_detections` must be at least 1".into());
        }
        Ok(DetectionKpi {
            config: config.clone(),
        })
    }
}

const THRESHOLDS: usize = 10;
const RECALLS: usize = 101;

/// numpy's `linspace(.5, .95, 10)`.
fn iou_threshold(i: usize) -> f64 {
    if i + 1 == THRESHOLDS {
        0.95
    } else {
        i as f64 * ((0.95 - 0.5) / 9.0) + 0.5
    }
}

/// numpy's `linspace(0, 1, 101)`.
fn recall_threshold(i: usize) -> f64 {
    if i + 1 == RECALLS {
        1.0
    } else {
        i as f64 * 0.01
    }
}

/// The numbers of a value: its shape and its values as `f64`.
pub(super) fn numbers<B: Backend>(
    value: &Nest<B>,
    what: &str,
) -> Result<(Vec<usize>, Vec<f64>), BoxError> {
    match value {
        Nest::Float(v) => Ok((vec![], vec![*v])),
        Nest::Int(v) => Ok((vec![], vec![*v as f64])),
        Nest::Tensor(t) if t.kind() != TensorDtype::Bool => {
            let shape = t.shape().to_vec();
            let data = t.clone().into_data()?;
            let values = data
                .convert::<f64>()
                .to_vec::<f64>()
                .map_err(|e| format!("{e:?}"))?;
            Ok((shape, values))
        }
        other => Err(format!("`{what}` must hold numbers, got {}", other.describe()).into()),
    }
}

/// Boxes as `[x, y, w, h]`.
fn boxes<B: Backend>(
    value: &Nest<B>,
    what: &str,
    format: BoxFormat,
) -> Result<Vec<[f64; 4]>, BoxError> {
    let (shape, v) = numbers(value, what)?;
    let count = match shape.as_slice() {
        [4] => 1,
        [n, 4] => *n,
        _ => {
            return Err(
                format!("`{what}` must be boxes, [N, 4] or [4]; got shape {shape:?}").into(),
            );
        }
    };
    Ok((0..count)
        .map(|i| {
            let b = [v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]];
            match format {
                BoxFormat::Xywh => b,
                BoxFormat::Xyxy => [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            }
        })
        .collect())
}

fn classes<B: Backend>(
    value: &Nest<B>,
    what: &str,
    n: usize,
    num_classes: usize,
) -> Result<Vec<usize>, BoxError> {
    let (_, v) = numbers(value, what)?;
    if v.len() != n {
        return Err(format!("`{what}` has {} values for {n} boxes", v.len()).into());
    }
    v.into_iter()
        .map(|c| {
            if c.fract() == 0.0 && c >= 0.0 && (c as usize) < num_classes {
                Ok(c as usize)
            } else {
                Err(
                    format!("`{what}` holds {c}, not a class of 0..{num_classes} (`num_classes`)")
                        .into(),
                )
            }
        })
        .collect()
}

/// pycocotools' IoU of two `[x, y, w, h]` boxes.
fn iou(d: &[f64; 4], g: &[f64; 4]) -> f64 {
    let w = (d[0] + d[2]).min(g[0] + g[2]) - d[0].max(g[0]);
    let h = (d[1] + d[3]).min(g[1] + g[3]) - d[1].max(g[1]);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    inter / (d[2] * d[3] + g[2] * g[3] - inter)
}

/// COCO's area range `all`: boxes whose area (width × height) falls outside are ignored.
const AREA_RANGE: (f64, f64) = (0.0, 1e10);

fn outside_area(b: &[f64; 4]) -> bool {
    let area = b[2] * b[3];
    area < AREA_RANGE.0 || area > AREA_RANGE.1
}

/// One image's evaluation for one class: its kept detections' scores, whether each matched at
/// each threshold and whether it is ignored there, and its true boxes that count.
struct ImageClass {
    scores: Vec<f64>,
    matched: Vec<[bool; THRESHOLDS]>,
    ignored: Vec<[bool; THRESHOLDS]>,
    truths: usize,
}

fn evaluate_image(truth: &[[f64; 4]], detected: &[([f64; 4], f64)], max: usize) -> ImageClass {
    // True boxes outside the area range are ignored and come last (a stable sort).
    let mut truth: Vec<([f64; 4], bool)> = truth.iter().map(|b| (*b, outside_area(b))).collect();
    truth.sort_by_key(|(_, ignored)| *ignored);
    let mut order: Vec<usize> = (0..detected.len()).collect();
    // A stable sort by descending score, as numpy's mergesort.
    order.sort_by(|&a, &b| {
        detected[b]
            .1
            .partial_cmp(&detected[a].1)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order.truncate(max);
    let mut matched = vec![[false; THRESHOLDS]; order.len()];
    let mut ignored = vec![[false; THRESHOLDS]; order.len()];
    for (t, threshold) in (0..THRESHOLDS).map(|t| (t, iou_threshold(t))) {
        let mut taken = vec![false; truth.len()];
        for (k, &d) in order.iter().enumerate() {
            let mut best = threshold.min(1.0 - 1e-10);
            let mut m: Option<usize> = None;
            for (g, (b, g_ignored)) in truth.iter().enumerate() {
                if taken[g] {
                    continue;
                }
                // Once matched to a box that counts, ignored boxes (sorted last) do not compete.
                if m.is_some_and(|m| !truth[m].1) && *g_ignored {
                    break;
                }
                let o = iou(&detected[d].0, b);
                if o < best {
                    continue;
                }
                best = o;
                m = Some(g);
            }
            match m {
                Some(g) => {
                    taken[g] = true;
                    matched[k][t] = true;
                    ignored[k][t] = truth[g].1;
                }
                None => ignored[k][t] = outside_area(&detected[d].0),
            }
        }
    }
    ImageClass {
        scores: order.iter().map(|&d| detected[d].1).collect(),
        matched,
        ignored,
        truths: truth.iter().filter(|(_, ignored)| !ignored).count(),
    }
}

/// Precision at the 101 recall points for one class and threshold, from the detections of
/// every image in descending score order (`(matched, ignored)`); `None` without true boxes.
fn precisions(detections: &[(bool, bool)], truths: usize) -> Option<[f64; RECALLS]> {
    if truths == 0 {
        return None;
    }
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let mut recall = Vec::with_capacity(detections.len());
    let mut precision = Vec::with_capacity(detections.len());
    for &(matched, ignored) in detections {
        match (matched, ignored) {
            (_, true) => {}
            (true, false) => tp += 1.0,
            (false, false) => fp += 1.0,
        }
        recall.push(tp / truths as f64);
        precision.push(tp / (fp + tp + f64::EPSILON));
    }
    for i in (1..precision.len()).rev() {
        if precision[i] > precision[i - 1] {
            precision[i - 1] = precision[i];
        }
    }
    let mut q = [0.0; RECALLS];
    for (r, slot) in q.iter_mut().enumerate() {
        let at = recall.partition_point(|&x| x < recall_threshold(r));
        match precision.get(at) {
            Some(p) => *slot = *p,
            None => break,
        }
    }
    Some(q)
}

impl<B: Backend> KpiAccumulator<B> for DetectionKpi {
    fn combine(&mut self, samples: Vec<Detections<B>>) -> Result<DetectionKpis, BoxError> {
        let c = &self.config;
        let n = c.num_classes;
        // Per class: every image's evaluation, in image order.
        let mut per_class: Vec<Vec<ImageClass>> = (0..n).map(|_| Vec::new()).collect();
        for s in &samples {
            let truth = boxes(&s.boxes.0, "boxes", c.box_format)?;
            let truth_classes = classes(&s.labels.0, "labels", truth.len(), n)?;
            // Batches pad images with fewer boxes with all-zero boxes: not objects.
            let (truth, truth_classes): (Vec<[f64; 4]>, Vec<usize>) = truth
                .into_iter()
                .zip(truth_classes)
                .filter(|(b, _)| *b != [0.0; 4])
                .unzip();
            let found = boxes(&s.detected_boxes.0, "detected_boxes", c.box_format)?;
            let found_classes = classes(&s.detected_labels.0, "detected_labels", found.len(), n)?;
            let (_, scores) = numbers(&s.detected_scores.0, "detected_scores")?;
            if scores.len() != found.len() {
                return Err(format!(
                    "`detected_scores` has {} values for {} detected boxes",
                    scores.len(),
                    found.len()
                )
                .into());
            }
            for (k, images) in per_class.iter_mut().enumerate() {
                let t: Vec<[f64; 4]> = truth
                    .iter()
                    .zip(&truth_classes)
                    .filter(|(_, c)| **c == k)
                    .map(|(b, _)| *b)
                    .collect();
                let d: Vec<([f64; 4], f64)> = found
                    .iter()
                    .zip(&found_classes)
                    .zip(&scores)
                    .filter(|((_, c), _)| **c == k)
                    .map(|((b, _), s)| (*b, *s))
                    .collect();
                if !t.is_empty() || !d.is_empty() {
                    images.push(evaluate_image(&t, &d, c.max_detections));
                }
            }
        }
        let mut ap = vec![f64::NAN; n];
        let mut ap_50 = vec![f64::NAN; n];
        let mut ap_75 = vec![f64::NAN; n];
        for (k, images) in per_class.iter().enumerate() {
            let truths: usize = images.iter().map(|i| i.truths).sum();
            let mut all: Vec<(f64, [bool; THRESHOLDS], [bool; THRESHOLDS])> = images
                .iter()
                .flat_map(|i| {
                    (0..i.scores.len()).map(|d| (i.scores[d], i.matched[d], i.ignored[d]))
                })
                .collect();
            all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
            let mut sums = [0.0; THRESHOLDS];
            let mut any = false;
            for (t, sum) in sums.iter_mut().enumerate() {
                let detections: Vec<(bool, bool)> =
                    all.iter().map(|(_, m, i)| (m[t], i[t])).collect();
                if let Some(q) = precisions(&detections, truths) {
                    any = true;
                    *sum = q.iter().sum::<f64>() / RECALLS as f64;
                }
            }
            if any {
                ap[k] = sums.iter().sum::<f64>() / THRESHOLDS as f64;
                ap_50[k] = sums[0];
                ap_75[k] = sums[5];
            }
        }
        let mean = |v: &[f64]| {
            let present: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
            if present.is_empty() {
                f64::NAN
            } else {
                present.iter().sum::<f64>() / present.len() as f64
            }
        };
        Ok(DetectionKpis {
            map: mean(&ap),
            map_50: mean(&ap_50),
            map_75: mean(&ap_75),
            ap,
            ap_50,
        })
    }
}
