//! Standard KPIs, each exact over the whole data (never a mean of batch means), with the
//! definitions scikit-learn uses:
//!
//! - `ClassificationKpi` (accumulator): accuracy, per-class precision / recall / F1 and their
//!   macro and weighted averages, the confusion matrix (also as an image);
//! - `PixelConfusion` (plugin) and `SegmentationKpi` (accumulator): per-class IoU, mean IoU and
//!   pixel accuracy from each sample's confusion matrix.
//!
//! Classes are `0..num_classes`. As in scikit-learn, averages run over the classes present in
//! the labels or the predictions; a class present in neither has NaN as its per-class values
//! (saved as `null`), and a precision, recall or F1 whose denominator is zero is 0.

use burn::prelude::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::nucleotide::{KpiAccumulator, KpiPlugin};
use crate::{AnyValue, BoxError, Build, Generated, Incoming, Nest, nucleotide};

/// The number of classes.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassesConfig {
    /// Classes are `0..num_classes`.
    pub num_classes: usize,
}

fn check_classes(config: &ClassesConfig) -> Result<(), BoxError> {
    if config.num_classes == 0 {
        return Err("`num_classes` must be at least 1".into());
    }
    Ok(())
}

/// One sample's predicted and true class.
#[derive(Incoming)]
pub struct PredictedClass<B: Backend> {
    /// The predicted class: an integer, or an int tensor of one element.
    pub predictions: AnyValue<B>,
    /// The true class, likewise.
    pub labels: AnyValue<B>,
}

/// Classification KPIs over every sample.
#[derive(Generated)]
pub struct ClassificationKpis<B: Backend> {
    /// The fraction of samples whose prediction is right.
    pub accuracy: f64,
    /// Per class: right predictions of the class over predictions of the class.
    pub precision: Vec<f64>,
    /// Per class: right predictions of the class over samples of the class.
    pub recall: Vec<f64>,
    /// Per class: the harmonic mean of precision and recall.
    pub f1: Vec<f64>,
    /// Per class: samples of the class.
    pub support: Vec<i64>,
    /// Precision averaged over the classes present.
    pub precision_macro: f64,
    /// Recall averaged over the classes present.
    pub recall_macro: f64,
    /// F1 averaged over the classes present.
    pub f1_macro: f64,
    /// Precision averaged with each class weighted by its support.
    pub precision_weighted: f64,
    /// Recall averaged with each class weighted by its support.
    pub recall_weighted: f64,
    /// F1 averaged with each class weighted by its support.
    pub f1_weighted: f64,
    /// `[true class, predicted class]` counts.
    pub confusion_matrix: Tensor<B, 2, Int>,
    /// The confusion matrix drawn, each row scaled by its count: `[3, H, W]`.
    pub image_confusion_matrix: Tensor<B, 3>,
}

/// Accuracy, precision, recall, F1 (per class, macro and weighted) and the confusion matrix of
/// a classifier, over every sample it is given.
#[nucleotide(kind = KpiAccumulator)]
pub struct ClassificationKpi {
    classes: usize,
}

impl<B: Backend> Build<B> for ClassificationKpi {
    type Config = ClassesConfig;
    type Input = PredictedClass<B>;
    type Output = ClassificationKpis<B>;
    fn build(config: &ClassesConfig, _: &B::Device) -> Result<Self, BoxError> {
        check_classes(config)?;
        Ok(ClassificationKpi {
            classes: config.num_classes,
        })
    }
}

/// The single integer of a value: an integer or an int tensor of one element.
fn class_of<B: Backend>(value: &Nest<B>, what: &str, classes: usize) -> Result<usize, BoxError> {
    let class = match value {
        Nest::Int(v) => *v,
        Nest::Tensor(t) if t.shape().num_elements() == 1 && t.kind() == crate::TensorDtype::Int => {
            t.clone()
                .into_data()?
                .convert::<i64>()
                .to_vec::<i64>()
                .map_err(|e| format!("{e:?}"))?[0]
        }
        other => {
            return Err(format!(
                "`{what}` must be one class per sample (an integer), got {}",
                other.describe()
            )
            .into());
        }
    };
    usize::try_from(class)
        .ok()
        .filter(|c| *c < classes)
        .ok_or_else(|| {
            format!("`{what}` is {class}, not a class of 0..{classes} (`num_classes`)").into()
        })
}

impl<B: Backend> KpiAccumulator<B> for ClassificationKpi {
    fn combine(
        &mut self,
        samples: Vec<PredictedClass<B>>,
    ) -> Result<ClassificationKpis<B>, BoxError> {
        let c = self.classes;
        let mut cm = vec![0u64; c * c];
        for s in &samples {
            let p = class_of(&s.predictions.0, "predictions", c)?;
            let t = class_of(&s.labels.0, "labels", c)?;
            cm[t * c + p] += 1;
        }
        let scores = Scores::of(&cm, c);
        let total: u64 = cm.iter().sum();
        let right: u64 = (0..c).map(|i| cm[i * c + i]).sum();
        let support: Vec<u64> = (0..c)
            .map(|i| (0..c).map(|j| cm[i * c + j]).sum())
            .collect();
        let present = scores.present();
        let macro_of = |v: &[f64]| mean(present.iter().map(|&i| v[i]));
        let weighted_of = |v: &[f64]| {
            let n: u64 = support.iter().sum();
            if n == 0 {
                return 0.0;
            }
            present
                .iter()
                .map(|&i| v[i] * support[i] as f64)
                .sum::<f64>()
                / n as f64
        };
        let device = Default::default();
        Ok(ClassificationKpis {
            accuracy: ratio(right, total),
            precision_macro: macro_of(&scores.precision),
            recall_macro: macro_of(&scores.recall),
            f1_macro: macro_of(&scores.f1),
            precision_weighted: weighted_of(&scores.precision),
            recall_weighted: weighted_of(&scores.recall),
            f1_weighted: weighted_of(&scores.f1),
            precision: scores.shown(&scores.precision),
            recall: scores.shown(&scores.recall),
            f1: scores.shown(&scores.f1),
            support: support.iter().map(|&s| s as i64).collect(),
            confusion_matrix: counts_tensor(&cm, c, &device),
            image_confusion_matrix: confusion_image(&cm, c, &device),
        })
    }
}

/// Per-class scores of a confusion matrix `[true, predicted]`.
struct Scores {
    precision: Vec<f64>,
    recall: Vec<f64>,
    f1: Vec<f64>,
    /// Whether the class is among the labels or the predictions.
    is_present: Vec<bool>,
}

impl Scores {
    fn of(cm: &[u64], c: usize) -> Scores {
        let mut s = Scores {
            precision: vec![0.0; c],
            recall: vec![0.0; c],
            f1: vec![0.0; c],
            is_present: vec![false; c],
        };
        for k in 0..c {
            let tp = cm[k * c + k];
            let predicted: u64 = (0..c).map(|i| cm[i * c + k]).sum();
            let actual: u64 = (0..c).map(|j| cm[k * c + j]).sum();
            s.precision[k] = ratio(tp, predicted);
            s.recall[k] = ratio(tp, actual);
            s.f1[k] = ratio(2 * tp, predicted + actual);
            s.is_present[k] = predicted + actual > 0;
        }
        s
    }

    fn present(&self) -> Vec<usize> {
        (0..self.is_present.len())
            .filter(|&k| self.is_present[k])
            .collect()
    }

    /// Per-class values, NaN for the classes present nowhere.
    fn shown(&self, v: &[f64]) -> Vec<f64> {
        v.iter()
            .zip(&self.is_present)
            .map(|(v, p)| if *p { *v } else { f64::NAN })
            .collect()
    }
}

/// `a / b`, 0 when `b` is 0 (scikit-learn's `zero_division=0`).
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

fn counts_tensor<B: Backend>(cm: &[u64], c: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(cm.iter().map(|&v| v as i64).collect::<Vec<_>>(), [c, c]),
        device,
    )
}

/// The confusion matrix as an RGB image: one square per cell, white for none of the row's
/// samples to dark blue for all of them.
fn confusion_image<B: Backend>(cm: &[u64], c: usize, device: &B::Device) -> Tensor<B, 3> {
    let cell = (256 / c).clamp(1, 64);
    let side = cell * c;
    let mut pixels = vec![0f32; 3 * side * side];
    let rgb_low = [1.0f32, 1.0, 1.0];
    let rgb_high = [0.03f32, 0.19, 0.42];
    for t in 0..c {
        let row: u64 = (0..c).map(|p| cm[t * c + p]).sum();
        for p in 0..c {
            let share = ratio(cm[t * c + p], row) as f32;
            for (ch, (lo, hi)) in rgb_low.iter().zip(rgb_high).enumerate() {
                let v = lo + (hi - lo) * share;
                for y in t * cell..(t + 1) * cell {
                    let start = ch * side * side + y * side + p * cell;
                    pixels[start..start + cell].fill(v);
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(pixels, [3, side, side]), device)
}

/// One sample's predicted and true class per pixel.
#[derive(Incoming)]
pub struct PredictedPixels<B: Backend> {
    /// Each pixel's predicted class: an int tensor of any shape.
    pub predictions: AnyValue<B>,
    /// Each pixel's true class: an int tensor of the same shape.
    pub labels: AnyValue<B>,
}

/// One sample's pixel counts by true and predicted class.
#[derive(Generated)]
pub struct Confusion<B: Backend> {
    /// `[true class, predicted class]` pixel counts.
    pub confusion: Tensor<B, 2, Int>,
}

/// The confusion matrix of one sample's pixels: what `SegmentationKpi` adds up.
#[nucleotide(kind = KpiPlugin)]
pub struct PixelConfusion {
    classes: usize,
}

impl<B: Backend> Build<B> for PixelConfusion {
    type Config = ClassesConfig;
    type Input = PredictedPixels<B>;
    type Output = Confusion<B>;
    fn build(config: &ClassesConfig, _: &B::Device) -> Result<Self, BoxError> {
        check_classes(config)?;
        Ok(PixelConfusion {
            classes: config.num_classes,
        })
    }
}

fn pixel_classes<B: Backend>(
    value: &Nest<B>,
    what: &str,
) -> Result<(Vec<usize>, Vec<i64>), BoxError> {
    match value {
        Nest::Tensor(t) if t.kind() == crate::TensorDtype::Int => {
            let shape = t.shape().to_vec();
            let values = t
                .clone()
                .into_data()?
                .convert::<i64>()
                .to_vec::<i64>()
                .map_err(|e| format!("{e:?}"))?;
            Ok((shape, values))
        }
        other => Err(format!(
            "`{what}` must be an int tensor of pixel classes, got {}",
            other.describe()
        )
        .into()),
    }
}

impl<B: Backend> KpiPlugin<B> for PixelConfusion {
    fn evaluate(&mut self, sample: PredictedPixels<B>) -> Result<Confusion<B>, BoxError> {
        let c = self.classes;
        let (p_shape, predicted) = pixel_classes(&sample.predictions.0, "predictions")?;
        let (t_shape, truth) = pixel_classes(&sample.labels.0, "labels")?;
        if p_shape != t_shape {
            return Err(format!(
                "`predictions` has shape {p_shape:?} and `labels` {t_shape:?}; they must match pixel for pixel"
            )
            .into());
        }
        let mut cm = vec![0u64; c * c];
        let class = |v: i64, what: &str| -> Result<usize, BoxError> {
            usize::try_from(v).ok().filter(|k| *k < c).ok_or_else(|| {
                format!("`{what}` has class {v}, not one of 0..{c} (`num_classes`)").into()
            })
        };
        for (p, t) in predicted.iter().zip(&truth) {
            cm[class(*t, "labels")? * c + class(*p, "predictions")?] += 1;
        }
        Ok(Confusion {
            confusion: counts_tensor(&cm, c, &Default::default()),
        })
    }
}

/// Segmentation KPIs over every pixel of every sample.
#[derive(Generated)]
pub struct SegmentationKpis<B: Backend> {
    /// Per class: intersection over union of predicted and true pixels.
    pub iou: Vec<f64>,
    /// IoU averaged over the classes present in the labels or the predictions.
    pub mean_iou: f64,
    /// The fraction of pixels whose prediction is right.
    pub pixel_accuracy: f64,
    /// `[true class, predicted class]` pixel counts.
    pub confusion_matrix: Tensor<B, 2, Int>,
    /// The confusion matrix drawn, each row scaled by its count: `[3, H, W]`.
    pub image_confusion_matrix: Tensor<B, 3>,
}

/// Per-class IoU, mean IoU and pixel accuracy, from each sample's `PixelConfusion`.
#[nucleotide(kind = KpiAccumulator)]
pub struct SegmentationKpi {
    classes: usize,
}

impl<B: Backend> Build<B> for SegmentationKpi {
    type Config = ClassesConfig;
    type Input = Confusion<B>;
    type Output = SegmentationKpis<B>;
    fn build(config: &ClassesConfig, _: &B::Device) -> Result<Self, BoxError> {
        check_classes(config)?;
        Ok(SegmentationKpi {
            classes: config.num_classes,
        })
    }
}

impl<B: Backend> KpiAccumulator<B> for SegmentationKpi {
    fn combine(&mut self, samples: Vec<Confusion<B>>) -> Result<SegmentationKpis<B>, BoxError> {
        let c = self.classes;
        let mut cm = vec![0u64; c * c];
        for s in samples {
            let dims = s.confusion.dims();
            if dims != [c, c] {
                return Err(format!(
                    "`confusion` is {dims:?}, not [{c}, {c}]: `num_classes` must match the `PixelConfusion`'s"
                )
                .into());
            }
            let counts = s
                .confusion
                .into_data()
                .convert::<i64>()
                .to_vec::<i64>()
                .map_err(|e| format!("{e:?}"))?;
            for (sum, v) in cm.iter_mut().zip(counts) {
                *sum += u64::try_from(v)
                    .map_err(|_| format!("`confusion` has a negative count {v}"))?;
            }
        }
        let mut iou = vec![f64::NAN; c];
        let mut present = Vec::new();
        for k in 0..c {
            let tp = cm[k * c + k];
            let predicted: u64 = (0..c).map(|i| cm[i * c + k]).sum();
            let actual: u64 = (0..c).map(|j| cm[k * c + j]).sum();
            let union = predicted + actual - tp;
            if union > 0 {
                iou[k] = ratio(tp, union);
                present.push(k);
            }
        }
        let total: u64 = cm.iter().sum();
        let right: u64 = (0..c).map(|k| cm[k * c + k]).sum();
        let device = Default::default();
        Ok(SegmentationKpis {
            mean_iou: mean(present.iter().map(|&k| iou[k])),
            pixel_accuracy: ratio(right, total),
            iou,
            confusion_matrix: counts_tensor(&cm, c, &device),
            image_confusion_matrix: confusion_image(&cm, c, &device),
        })
    }
}
