//! Object detection by centre points (CenterNet, "Objects as Points"): a head predicts, on one
//! feature level, a heat map per class whose peaks are objects' centres, and at each centre
//! the object's size and the centre's sub-cell offset.
//!
//! - [`CenterTargets`], a data processor (Verres's ground-truth streamer role), turns a
//!   sample's boxes and labels into the head's targets: Gaussian peaks at the centres,
//!   sizes and offsets there, and a mask of the centres.
//! - [`CenterHead`], a model plugin on one feature level: `heatmap` (logits), `size`, `offset`.
//! - [`CenterLoss`]: the penalty-reduced focal loss on the heat map and L1 losses on size
//!   and offset at the centres, each normalised by the number of objects (`loss_heatmap`,
//!   `loss_size`, `loss_offset`; weight them with `loss_weights`, CenterNet: size 0.1).
//! - [`CenterDecode`], a post-processor: peaks of the heat map (a 3×3 max-pooling keeps local
//!   maxima), the `max_detections` highest, boxes from them, and per-class non-maximum
//!   suppression (a suppressed box keeps its place with score 0, so every image has the same
//!   number of detections). Its outputs are what `DetectionKpi` and `DetectionSaver` read.
//!
//! Boxes are `x0, y0, x1, y1` as fractions of the image's width and height; sizes and offsets
//! are in cells of the feature level (`stride` pixels).

use burn::module::{Module, Param};
use burn::prelude::Backend;
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::detection::numbers;
use super::vision::HeadFeature;
use crate::glue::AnyValue;
use crate::layers::{Conv2d, Conv2dConfig, MaxPool2d};
use crate::nucleotide::{DataProcessor, ModelLoss, ModelPlugin, ModelPostProcessor};
use crate::{BoxError, Build, Generated, Incoming, Mode, nucleotide};

/// `CenterTargets`' config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CenterTargetsConfig {
    /// Classes are `0..num_classes` (a `project_global_config` may give it).
    pub num_classes: usize,
    /// The stride of the feature level the head reads: the targets are the image's size
    /// divided by it (rounded down, as 2×2 poolings round).
    #[serde(default = "four")]
    pub stride: usize,
    /// The smallest overlap a box moved within a centre's Gaussian keeps with the true box
    /// (CenterNet: 0.7); it sets each Gaussian's radius.
    #[serde(default = "min_overlap")]
    pub min_overlap: f64,
}

fn four() -> usize {
    4
}

fn min_overlap() -> f64 {
    0.7
}

/// A sample's image, boxes and labels.
#[derive(Incoming)]
pub struct BoxesIn<B: Backend> {
    /// `[C, H, W]`: its size sets the targets'.
    pub image: Tensor<B, 3>,
    /// `[G, 4]` or one box `[4]`: `x0, y0, x1, y1` as fractions.
    pub boxes: AnyValue<B>,
    /// `[G]` or `[1]` ints: each box's class.
    pub labels: AnyValue<B>,
}

/// The head's targets.
#[derive(Generated)]
pub struct CenterTargetsOut<B: Backend> {
    /// `[classes, h, w]`: a Gaussian peak of 1 at each centre.
    pub target_heatmap: Tensor<B, 3>,
    /// `[2, h, w]`: width and height in cells at each centre.
    pub target_size: Tensor<B, 3>,
    /// `[2, h, w]`: the centre's offset from its cell's corner at each centre.
    pub target_offset: Tensor<B, 3>,
    /// `[1, h, w]`: 1 at each centre, else 0.
    pub center_mask: Tensor<B, 3>,
}

/// Makes a sample's centre-point targets from its boxes and labels.
#[nucleotide(kind = DataProcessor)]
pub struct CenterTargets {
    config: CenterTargetsConfig,
}

impl<B: Backend> Build<B> for CenterTargets {
    type Config = CenterTargetsConfig;
    type Input = BoxesIn<B>;
    type Output = CenterTargetsOut<B>;
    fn build(c: &CenterTargetsConfig, _: &B::Device) -> Result<Self, BoxError> {
        if c.num_classes == 0 || c.stride == 0 || !(0.0 < c.min_overlap && c.min_overlap < 1.0) {
            return Err(format!(
                "`num_classes` is {}, `stride` {}, `min_overlap` {}: give at least one class, a stride of at least 1 and an overlap in (0, 1)",
                c.num_classes, c.stride, c.min_overlap
            )
            .into());
        }
        Ok(CenterTargets { config: c.clone() })
    }
}

/// CenterNet's Gaussian radius: the largest corner shift that keeps a box of `h × w` cells
/// overlapping its true box by at least `overlap`, over the three ways corners can move.
pub fn gaussian_radius(h: f64, w: f64, overlap: f64) -> f64 {
    let root = |a: f64, b: f64, c: f64| (b + (b * b - 4.0 * a * c).max(0.0).sqrt()) / (2.0 * a);
    let r1 = root(1.0, h + w, w * h * (1.0 - overlap) / (1.0 + overlap));
    let r2 = root(4.0, 2.0 * (h + w), (1.0 - overlap) * w * h);
    let r3 = root(
        4.0 * overlap,
        -2.0 * overlap * (h + w),
        (overlap - 1.0) * w * h,
    );
    r1.min(r2).min(r3)
}

impl<B: Backend> DataProcessor<B> for CenterTargets {
    fn process(&mut self, input: BoxesIn<B>) -> Result<CenterTargetsOut<B>, BoxError> {
        let c = &self.config;
        let [_, height, width] = input.image.dims();
        let (h, w) = (height / c.stride, width / c.stride);
        if h == 0 || w == 0 {
            return Err(format!(
                "the image is {height}×{width}: smaller than the stride {}",
                c.stride
            )
            .into());
        }
        let (shape, boxes) = numbers(&input.boxes.0, "boxes")?;
        let count = match shape.as_slice() {
            [4] => 1,
            [g, 4] => *g,
            _ => return Err(format!("`boxes` has shape {shape:?}: give [G, 4] or [4]").into()),
        };
        let (_, labels) = numbers(&input.labels.0, "labels")?;
        if labels.len() != count {
            return Err(format!(
                "{count} boxes but {} labels: give one label per box",
                labels.len()
            )
            .into());
        }
        let mut heat = vec![0f32; c.num_classes * h * w];
        let mut size = vec![0f32; 2 * h * w];
        let mut offset = vec![0f32; 2 * h * w];
        let mut mask = vec![0f32; h * w];
        for (b, &label) in boxes.chunks(4).zip(&labels) {
            if label < 0.0 || label >= c.num_classes as f64 || label.fract() != 0.0 {
                return Err(format!(
                    "label {label} is outside the {} classes (0 to {})",
                    c.num_classes,
                    c.num_classes - 1
                )
                .into());
            }
            if b.iter().any(|v| !(0.0..=1.0).contains(v)) || b[2] < b[0] || b[3] < b[1] {
                return Err(format!(
                    "box {b:.3?} is not x0, y0, x1, y1 as fractions of the image, from 0 to 1 with x0 ≤ x1 and y0 ≤ y1; fix the labels"
                )
                .into());
            }
            let class = label as usize;
            // In cells; a box with no area is no object.
            let (x0, y0) = (b[0] * w as f64, b[1] * h as f64);
            let (x1, y1) = (b[2] * w as f64, b[3] * h as f64);
            let (bw, bh) = (x1 - x0, y1 - y0);
            if bw <= 0.0 || bh <= 0.0 {
                continue;
            }
            let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
            let ix = (cx.floor() as usize).min(w - 1);
            let iy = (cy.floor() as usize).min(h - 1);
            let radius = gaussian_radius(bh.ceil(), bw.ceil(), c.min_overlap)
                .floor()
                .max(0.0);
            let sigma = (2.0 * radius + 1.0) / 6.0;
            let r = radius as isize;
            for dy in -r..=r {
                for dx in -r..=r {
                    let (x, y) = (ix as isize + dx, iy as isize + dy);
                    if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
                        continue;
                    }
                    let g = (-((dx * dx + dy * dy) as f64) / (2.0 * sigma * sigma)).exp() as f32;
                    let at = class * h * w + y as usize * w + x as usize;
                    heat[at] = heat[at].max(g);
                }
            }
            let at = iy * w + ix;
            heat[class * h * w + at] = 1.0;
            size[at] = bw as f32;
            size[h * w + at] = bh as f32;
            offset[at] = (cx - ix as f64) as f32;
            offset[h * w + at] = (cy - iy as f64) as f32;
            mask[at] = 1.0;
        }
        let device = input.image.device();
        let make =
            |v: Vec<f32>, c: usize| Tensor::from_data(TensorData::new(v, [c, h, w]), &device);
        Ok(CenterTargetsOut {
            target_heatmap: make(heat, c.num_classes),
            target_size: make(size, 2),
            target_offset: make(offset, 2),
            center_mask: make(mask, 1),
        })
    }
}

/// `CenterHead`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CenterHeadConfig {
    /// Channels of the feature it reads.
    pub channels: usize,
    /// Classes (a `project_global_config` may give it).
    pub num_classes: usize,
    /// Channels of each branch's hidden 3×3 convolution.
    #[serde(default = "sixty_four")]
    pub hidden: usize,
}

fn sixty_four() -> usize {
    64
}

/// The head's outputs, at the feature level's size.
#[derive(Generated)]
pub struct CenterMaps<B: Backend> {
    /// `[N, classes, h, w]`: logits of a centre of each class in each cell.
    pub heatmap: Tensor<B, 4>,
    /// `[N, 2, h, w]`: width and height in cells.
    pub size: Tensor<B, 4>,
    /// `[N, 2, h, w]`: the centre's offset within its cell.
    pub offset: Tensor<B, 4>,
}

/// A 3×3 convolution with a ReLU and a 1×1 convolution.
#[derive(Module, Debug)]
pub struct Branch<B: Backend> {
    hidden: Conv2d<B>,
    out: Conv2d<B>,
}

impl<B: Backend> Branch<B> {
    fn new([input, hidden, output]: [usize; 3], device: &B::Device) -> Self {
        Branch {
            hidden: Conv2dConfig::new([input, hidden], [3, 3]).init(device),
            out: Conv2dConfig::new([hidden, output], [1, 1]).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.out.forward(relu(self.hidden.forward(x)))
    }
}

/// The centre-point head: three branches on one feature level (heat map, size, offset). The
/// heat map's bias starts at −2.19, a prior of 0.1 per cell, as CenterNet's.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct CenterHead<B: Backend> {
    heatmap: Branch<B>,
    size: Branch<B>,
    offset: Branch<B>,
}

impl<B: Backend> Build<B> for CenterHead<B> {
    type Config = CenterHeadConfig;
    type Input = HeadFeature<B>;
    type Output = CenterMaps<B>;
    fn build(c: &CenterHeadConfig, device: &B::Device) -> Result<Self, BoxError> {
        if c.channels == 0 || c.num_classes == 0 || c.hidden == 0 {
            return Err(format!(
                "`channels` is {}, `num_classes` {}, `hidden` {}: each must be at least 1",
                c.channels, c.num_classes, c.hidden
            )
            .into());
        }
        let mut heatmap = Branch::new([c.channels, c.hidden, c.num_classes], device);
        heatmap.out.bias = Some(Param::from_tensor(Tensor::full(
            [c.num_classes],
            -2.19,
            device,
        )));
        Ok(CenterHead {
            heatmap,
            size: Branch::new([c.channels, c.hidden, 2], device),
            offset: Branch::new([c.channels, c.hidden, 2], device),
        })
    }
}

impl<B: Backend> ModelPlugin<B> for CenterHead<B> {
    fn forward(&self, input: HeadFeature<B>, _: Mode) -> CenterMaps<B> {
        let x = input.feature;
        CenterMaps {
            heatmap: self.heatmap.forward(x.clone()),
            size: self.size.forward(x.clone()),
            offset: self.offset.forward(x),
        }
    }
}

/// The head's outputs and the targets.
#[derive(Incoming)]
pub struct CenterLossIn<B: Backend> {
    /// `[N, classes, h, w]` logits.
    pub heatmap: Tensor<B, 4>,
    /// `[N, 2, h, w]`.
    pub size: Tensor<B, 4>,
    /// `[N, 2, h, w]`.
    pub offset: Tensor<B, 4>,
    /// `[N, classes, h, w]`.
    pub target_heatmap: Tensor<B, 4>,
    /// `[N, 2, h, w]`.
    pub target_size: Tensor<B, 4>,
    /// `[N, 2, h, w]`.
    pub target_offset: Tensor<B, 4>,
    /// `[N, 1, h, w]`.
    pub center_mask: Tensor<B, 4>,
}

/// The three terms of the centre-point loss.
#[derive(Generated)]
pub struct CenterLosses<B: Backend> {
    /// The penalty-reduced focal loss of the heat map, per object.
    pub loss_heatmap: Tensor<B, 1>,
    /// The L1 loss of the sizes at the centres, per object.
    pub loss_size: Tensor<B, 1>,
    /// The L1 loss of the offsets at the centres, per object.
    pub loss_offset: Tensor<B, 1>,
}

/// CenterNet's loss: the focal loss (α 2, β 4) of the heat map and L1 losses of size and offset
/// at the centres, each divided by the number of objects in the batch.
#[nucleotide(kind = ModelLoss)]
pub struct CenterLoss;

impl<B: Backend> Build<B> for CenterLoss {
    type Config = crate::nucleotide::NoConfig;
    type Input = CenterLossIn<B>;
    type Output = CenterLosses<B>;
    fn build(_: &crate::nucleotide::NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(CenterLoss)
    }
}

impl<B: Backend> ModelLoss<B> for CenterLoss {
    fn loss(&self, i: CenterLossIn<B>, _: Mode) -> CenterLosses<B> {
        assert_eq!(
            i.heatmap.dims(),
            i.target_heatmap.dims(),
            "CenterLoss: the head's heat map and the targets' differ in shape; give `CenterTargets` the head's `num_classes` and the `stride` of the level the head reads"
        );
        let objects = i.center_mask.clone().sum().clamp_min(1.0);
        let p = sigmoid(i.heatmap.clone());
        let positive = i.target_heatmap.clone().greater_equal_elem(1.0).float();
        let negative = positive.clone().neg().add_scalar(1.0);
        let pos = log_sigmoid(i.heatmap.clone())
            * p.clone().neg().add_scalar(1.0).powi_scalar(2)
            * positive;
        let neg = log_sigmoid(i.heatmap.neg())
            * p.powi_scalar(2)
            * i.target_heatmap.neg().add_scalar(1.0).powi_scalar(4)
            * negative;
        let heat = (pos.sum() + neg.sum()).neg() / objects.clone();
        let l1 = |pred: Tensor<B, 4>, target: Tensor<B, 4>| {
            ((pred - target).abs() * i.center_mask.clone()).sum() / objects.clone()
        };
        CenterLosses {
            loss_heatmap: heat,
            loss_size: l1(i.size, i.target_size),
            loss_offset: l1(i.offset, i.target_offset),
        }
    }
}

/// `CenterDecode`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CenterDecodeConfig {
    /// Detections per image: the highest peaks.
    #[serde(default = "twenty")]
    pub max_detections: usize,
    /// Boxes of a class overlapping a higher-scored one by more than this IoU are suppressed.
    #[serde(default = "half")]
    pub nms_iou: f64,
}

fn twenty() -> usize {
    20
}

fn half() -> f64 {
    0.5
}

/// The head's outputs to decode.
#[derive(Incoming)]
pub struct CenterDecodeIn<B: Backend> {
    /// `[N, classes, h, w]` logits.
    pub heatmap: Tensor<B, 4>,
    /// `[N, 2, h, w]`.
    pub size: Tensor<B, 4>,
    /// `[N, 2, h, w]`.
    pub offset: Tensor<B, 4>,
}

/// Detections, `max_detections` per image, highest score first.
#[derive(Generated)]
pub struct DecodedBoxes<B: Backend> {
    /// `[N, K, 4]`: `x0, y0, x1, y1` as fractions of the image.
    pub detected_boxes: Tensor<B, 3>,
    /// `[N, K]`: the peak's probability; 0 for a box suppressed by a better one.
    pub detected_scores: Tensor<B, 2>,
    /// `[N, K]`: classes.
    pub detected_labels: Tensor<B, 2, Int>,
}

/// Decodes the head's maps into boxes: local maxima of the heat map (3×3), the highest
/// `max_detections`, each a box from its size and offset, then per-class non-maximum
/// suppression.
#[nucleotide(kind = ModelPostProcessor)]
pub struct CenterDecode {
    config: CenterDecodeConfig,
}

impl<B: Backend> Build<B> for CenterDecode {
    type Config = CenterDecodeConfig;
    type Input = CenterDecodeIn<B>;
    type Output = DecodedBoxes<B>;
    fn build(c: &CenterDecodeConfig, _: &B::Device) -> Result<Self, BoxError> {
        if c.max_detections == 0 || !(0.0..=1.0).contains(&c.nms_iou) {
            return Err(format!(
                "`max_detections` is {}, `nms_iou` {}: give at least one detection and an IoU in [0, 1]",
                c.max_detections, c.nms_iou
            )
            .into());
        }
        Ok(CenterDecode { config: c.clone() })
    }
}

/// The IoU of two `x0, y0, x1, y1` boxes.
pub fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Sets to 0 the score of every box whose IoU with a higher-scored box of its class is above
/// `threshold`; the boxes come in descending order of score.
pub fn suppress(boxes: &[[f32; 4]], labels: &[i64], scores: &mut [f32], threshold: f32) {
    for i in 0..boxes.len() {
        if scores[i] <= 0.0 {
            continue;
        }
        for j in i + 1..boxes.len() {
            if labels[j] == labels[i]
                && scores[j] > 0.0
                && box_iou(&boxes[i], &boxes[j]) > threshold
            {
                scores[j] = 0.0;
            }
        }
    }
}

impl<B: Backend> ModelPostProcessor<B> for CenterDecode {
    fn process(&self, input: CenterDecodeIn<B>, _: Mode) -> DecodedBoxes<B> {
        let [n, classes, h, w] = input.heatmap.dims();
        let device = input.heatmap.device();
        let heat = sigmoid(input.heatmap);
        let peaks = MaxPool2d::new([3, 3])
            .with_stride([1, 1])
            .with_padding([1, 1])
            .forward(heat.clone());
        let heat = heat.clone() * heat.equal(peaks).float();
        let k = self.config.max_detections.min(classes * h * w);
        let (scores, index) = heat.reshape([n, classes * h * w]).topk_with_indices(k, 1);
        let read = |t: Tensor<B, 4>| -> Vec<f32> {
            t.into_data().convert::<f32>().to_vec().expect("floats")
        };
        let size = read(input.size);
        let offset = read(input.offset);
        let mut scores: Vec<f32> = scores
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("floats");
        let index: Vec<i64> = index.into_data().convert::<i64>().to_vec().expect("ints");
        let (mut boxes, mut labels) = (Vec::with_capacity(n * k * 4), Vec::with_capacity(n * k));
        for image in 0..n {
            let mut own = Vec::with_capacity(k);
            let mut own_labels = Vec::with_capacity(k);
            for j in 0..k {
                let at = index[image * k + j] as usize;
                let (class, cell) = (at / (h * w), at % (h * w));
                let (y, x) = (cell / w, cell % w);
                let map = |c: usize, v: &[f32]| v[((image * 2 + c) * h + y) * w + x];
                let cx = x as f32 + map(0, &offset);
                let cy = y as f32 + map(1, &offset);
                let (bw, bh) = (map(0, &size).max(0.0), map(1, &size).max(0.0));
                own.push([
                    ((cx - bw / 2.0) / w as f32).clamp(0.0, 1.0),
                    ((cy - bh / 2.0) / h as f32).clamp(0.0, 1.0),
                    ((cx + bw / 2.0) / w as f32).clamp(0.0, 1.0),
                    ((cy + bh / 2.0) / h as f32).clamp(0.0, 1.0),
                ]);
                own_labels.push(class as i64);
            }
            suppress(
                &own,
                &own_labels,
                &mut scores[image * k..(image + 1) * k],
                self.config.nms_iou as f32,
            );
            boxes.extend(own.into_iter().flatten());
            labels.extend(own_labels);
        }
        DecodedBoxes {
            detected_boxes: Tensor::from_data(TensorData::new(boxes, [n, k, 4]), &device),
            detected_scores: Tensor::from_data(TensorData::new(scores, [n, k]), &device),
            detected_labels: Tensor::from_data(TensorData::new(labels, [n, k]), &device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_radius_grows_with_the_box_and_shrinks_with_the_overlap() {
        let r = gaussian_radius(4.0, 4.0, 0.7);
        assert!(r > 0.0 && r < 2.0, "{r}");
        assert!(gaussian_radius(8.0, 8.0, 0.7) > r);
        assert!(gaussian_radius(4.0, 4.0, 0.9) < r);
    }

    #[test]
    fn suppression_keeps_the_best_of_overlapping_boxes_of_a_class() {
        let boxes = [
            [0.0, 0.0, 0.5, 0.5],
            [0.02, 0.0, 0.52, 0.5],
            [0.02, 0.0, 0.52, 0.5],
            [0.6, 0.6, 0.9, 0.9],
        ];
        let labels = [0, 0, 1, 0];
        let mut scores = [0.9, 0.8, 0.7, 0.6];
        suppress(&boxes, &labels, &mut scores, 0.5);
        // The second overlaps the first (same class): suppressed; the third is another class.
        assert_eq!(scores, [0.9, 0.0, 0.7, 0.6]);
        assert!((box_iou(&boxes[0], &boxes[0]) - 1.0).abs() < 1e-6);
        assert_eq!(box_iou(&boxes[0], &boxes[3]), 0.0);
    }
}
