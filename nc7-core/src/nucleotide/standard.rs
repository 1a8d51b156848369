//! Standard nucleotides: the losses, metrics and post-processors that classification and
//! segmentation projects all need, written once and registered like any other nucleotide, so
//! a config names them by class name (`CrossEntropy`, `Accuracy`, `ArgMax`, ...).
//!
//! Keys: a classifier's `logits` are `[N, classes]` and its `label` `[N, 1]`; a segmenter's
//! `logits` are `[N, classes, H, W]` and its `mask` `[N, H, W]`, each pixel's class.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::Backend;
use burn::tensor::{Int, Tensor};

pub mod center;
mod detection;
mod kpi;
#[cfg(feature = "notify")]
pub mod notify;
pub mod vision;
pub use center::{CenterDecode, CenterHead, CenterLoss, CenterTargets};
pub use detection::*;
pub use kpi::*;
#[cfg(feature = "notify")]
pub use notify::Notify;
pub use vision::{ClassificationHead, ConvBackbone, Fpn, ResidualBackbone, SegmentationHead};

use crate::nucleotide::{ModelLoss, ModelMetric, ModelPostProcessor, NoConfig};
use crate::{BoxError, Build, Generated, Incoming, Mode, nucleotide};

/// Whether a registered type's full path is one of these standard nucleotides, which a
/// project's own types of the same name shadow.
pub(crate) fn is_standard(path: &str) -> bool {
    path.strip_prefix(module_path!())
        .is_some_and(|rest| rest.starts_with("::"))
}

/// Class scores of images and their true classes.
#[derive(Incoming)]
pub struct ScoredImages<B: Backend> {
    /// `[N, classes]`.
    pub logits: Tensor<B, 2>,
    /// `[N, 1]`.
    pub label: Tensor<B, 2, Int>,
}

/// Class scores of pixels and their true classes.
#[derive(Incoming)]
pub struct ScoredPixels<B: Backend> {
    /// `[N, classes, H, W]`.
    pub logits: Tensor<B, 4>,
    /// `[N, H, W]`.
    pub mask: Tensor<B, 3, Int>,
}

/// Class scores of images.
#[derive(Incoming)]
pub struct ImageScores<B: Backend> {
    /// `[N, classes]`.
    pub logits: Tensor<B, 2>,
}

/// Class scores of pixels.
#[derive(Incoming)]
pub struct PixelScores<B: Backend> {
    /// `[N, classes, H, W]`.
    pub logits: Tensor<B, 4>,
}

/// A loss.
#[derive(Generated)]
pub struct Loss<B: Backend> {
    /// The mean over the batch.
    pub loss: Tensor<B, 1>,
}

/// The accuracy of a batch.
#[derive(Generated)]
pub struct AccuracyOut<B: Backend> {
    /// The fraction of samples whose highest score is the true class.
    pub accuracy: Tensor<B, 1>,
}

/// The mean intersection over union of a batch.
#[derive(Generated)]
pub struct MeanIouOut<B: Backend> {
    /// The mean over the classes present in prediction or truth.
    pub mean_iou: Tensor<B, 1>,
}

/// The predicted class of each image.
#[derive(Generated)]
pub struct Classes<B: Backend> {
    /// `[N]`.
    pub class: Tensor<B, 1, Int>,
}

/// The predicted class of each pixel.
#[derive(Generated)]
pub struct PixelClasses<B: Backend> {
    /// `[N, H, W]`.
    pub predicted_mask: Tensor<B, 3, Int>,
}

/// Each pixel's scores as a row: `[N, C, H, W]` → `[N·H·W, C]`.
pub(crate) fn pixel_rows<B: Backend>(logits: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, h, w] = logits.dims();
    logits.permute([0, 2, 3, 1]).reshape([n * h * w, c])
}

/// The mean cross-entropy of image class scores against the true classes.
#[nucleotide(kind = ModelLoss)]
pub struct CrossEntropy;

impl<B: Backend> Build<B> for CrossEntropy {
    type Config = NoConfig;
    type Input = ScoredImages<B>;
    type Output = Loss<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(CrossEntropy)
    }
}

/// Raises a data error when a class index is outside `0..classes` (burn would index out of
/// bounds); `what` names the key.
pub(crate) fn check_classes<B: Backend, const D: usize>(
    labels: &Tensor<B, D, Int>,
    classes: usize,
    what: &str,
) {
    use burn::tensor::ElementConversion as _;
    // One value read back per step; the bounds only when one is crossed.
    let outside: i64 = labels
        .clone()
        .lower_elem(0)
        .bool_or(labels.clone().greater_equal_elem(classes as i64))
        .any()
        .int()
        .into_scalar()
        .elem();
    if outside != 0 {
        let low: i64 = labels.clone().min().into_scalar().elem();
        let high: i64 = labels.clone().max().into_scalar().elem();
        let bad = if low < 0 { low } else { high };
        crate::failure::raise(crate::data::DataError::from(format!(
            "{what} {bad} is outside the model's {classes} classes (0 to {}); fix the data, or give the model {} classes",
            classes - 1,
            bad.max(0) + 1
        )));
    }
}

impl<B: Backend> ModelLoss<B> for CrossEntropy {
    fn loss(&self, input: ScoredImages<B>, _: Mode) -> Loss<B> {
        check_classes(&input.label, input.logits.dims()[1], "label");
        let loss = CrossEntropyLossConfig::new()
            .init(&input.logits.device())
            .forward(input.logits, input.label.squeeze_dim(1));
        Loss {
            loss: loss.reshape([1]),
        }
    }
}

/// The mean cross-entropy of pixel class scores against the true mask.
#[nucleotide(kind = ModelLoss)]
pub struct PixelCrossEntropy;

impl<B: Backend> Build<B> for PixelCrossEntropy {
    type Config = NoConfig;
    type Input = ScoredPixels<B>;
    type Output = Loss<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(PixelCrossEntropy)
    }
}

impl<B: Backend> ModelLoss<B> for PixelCrossEntropy {
    fn loss(&self, input: ScoredPixels<B>, _: Mode) -> Loss<B> {
        check_classes(&input.mask, input.logits.dims()[1], "mask class");
        let [n, h, w] = input.mask.dims();
        let loss = CrossEntropyLossConfig::new()
            .init(&input.logits.device())
            .forward(pixel_rows(input.logits), input.mask.reshape([n * h * w]));
        Loss {
            loss: loss.reshape([1]),
        }
    }
}

/// The fraction of images whose highest score is the true class.
#[nucleotide(kind = ModelMetric)]
pub struct Accuracy;

impl<B: Backend> Build<B> for Accuracy {
    type Config = NoConfig;
    type Input = ScoredImages<B>;
    type Output = AccuracyOut<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(Accuracy)
    }
}

impl<B: Backend> ModelMetric<B> for Accuracy {
    fn metric(&self, input: ScoredImages<B>, _: Mode) -> AccuracyOut<B> {
        let right = input.logits.argmax(1).equal(input.label).float().mean();
        AccuracyOut {
            accuracy: right.reshape([1]),
        }
    }
}

/// The intersection over union of predicted and true pixels of each class, averaged over the
/// classes present in either (computed on the device).
#[nucleotide(kind = ModelMetric)]
pub struct MeanIou;

impl<B: Backend> Build<B> for MeanIou {
    type Config = NoConfig;
    type Input = ScoredPixels<B>;
    type Output = MeanIouOut<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(MeanIou)
    }
}

impl<B: Backend> ModelMetric<B> for MeanIou {
    fn metric(&self, input: ScoredPixels<B>, _: Mode) -> MeanIouOut<B> {
        let classes = input.logits.dims()[1];
        let predicted = pixel_rows(input.logits).argmax(1).flatten::<1>(0, 1);
        let truth = input.mask.flatten::<1>(0, 2);
        let device = predicted.device();
        let mut sum = Tensor::<B, 1>::zeros([1], &device);
        let mut present = Tensor::<B, 1>::zeros([1], &device);
        for c in 0..classes as i64 {
            let p = predicted.clone().equal_elem(c).float();
            let t = truth.clone().equal_elem(c).float();
            let intersection = (p.clone() * t.clone()).sum();
            let union = (p + t).clamp_max(1.0).sum();
            present = present + union.clone().greater_elem(0.0).float();
            sum = sum + intersection / union.clamp_min(1.0);
        }
        MeanIouOut {
            mean_iou: sum / present.clamp_min(1.0),
        }
    }
}

/// The class with the highest score, per image.
#[nucleotide(kind = ModelPostProcessor)]
pub struct ArgMax;

impl<B: Backend> Build<B> for ArgMax {
    type Config = NoConfig;
    type Input = ImageScores<B>;
    type Output = Classes<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(ArgMax)
    }
}

impl<B: Backend> ModelPostProcessor<B> for ArgMax {
    fn process(&self, input: ImageScores<B>, _: Mode) -> Classes<B> {
        Classes {
            class: input.logits.argmax(1).squeeze_dim(1),
        }
    }
}

/// The class with the highest score, per pixel.
#[nucleotide(kind = ModelPostProcessor)]
pub struct PixelArgMax;

impl<B: Backend> Build<B> for PixelArgMax {
    type Config = NoConfig;
    type Input = PixelScores<B>;
    type Output = PixelClasses<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(PixelArgMax)
    }
}

impl<B: Backend> ModelPostProcessor<B> for PixelArgMax {
    fn process(&self, input: PixelScores<B>, _: Mode) -> PixelClasses<B> {
        PixelClasses {
            predicted_mask: input.logits.argmax(1).squeeze_dim(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray;

    fn logits() -> Tensor<B, 2> {
        // Three images, three classes: the highest scores are classes 2, 0 and 1.
        Tensor::from_data(
            TensorData::new(vec![0.1f32, 0.2, 3.0, 2.0, 0.0, 0.0, 0.0, 1.0, 0.5], [3, 3]),
            &Default::default(),
        )
    }

    fn labels(classes: [i64; 3]) -> Tensor<B, 2, Int> {
        Tensor::from_data(
            TensorData::new(classes.to_vec(), [3, 1]),
            &Default::default(),
        )
    }

    fn value(t: Tensor<B, 1>) -> f32 {
        t.into_data().to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn classification() {
        let d = Default::default();
        let scored = |l| ScoredImages {
            logits: logits(),
            label: labels(l),
        };
        let acc = |l| value(Accuracy.metric(scored(l), Mode::Eval).accuracy);
        assert_eq!(acc([2, 0, 1]), 1.0);
        assert!((acc([2, 1, 1]) - 2.0 / 3.0).abs() < 1e-6);
        let classes = ArgMax
            .process(ImageScores { logits: logits() }, Mode::Infer)
            .class;
        assert_eq!(classes.into_data().to_vec::<i64>().unwrap(), [2, 0, 1]);
        // Cross-entropy of uniform scores is ln(classes).
        let uniform = Tensor::<B, 2>::zeros([2, 4], &d);
        let loss = CrossEntropy
            .loss(
                ScoredImages {
                    logits: uniform,
                    label: Tensor::from_data(TensorData::new(vec![0i64, 3], [2, 1]), &d),
                },
                Mode::Train,
            )
            .loss;
        assert!((value(loss) - 4f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn segmentation() {
        let d = Default::default();
        // One 1×2 image, two classes: pixel 0 predicted 1 (true 1), pixel 1 predicted 1 (true 0).
        let logits = Tensor::<B, 4>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 1.0, 1.0], [1, 2, 1, 2]),
            &d,
        );
        let mask = Tensor::<B, 3, Int>::from_data(TensorData::new(vec![1i64, 0], [1, 1, 2]), &d);
        let iou = MeanIou
            .metric(
                ScoredPixels {
                    logits: logits.clone(),
                    mask: mask.clone(),
                },
                Mode::Eval,
            )
            .mean_iou;
        // Class 0: no pixel predicted, one true: IoU 0. Class 1: 1 of 2: 0.5.
        assert!((value(iou) - 0.25).abs() < 1e-6);
        let predicted = PixelArgMax
            .process(
                PixelScores {
                    logits: logits.clone(),
                },
                Mode::Infer,
            )
            .predicted_mask;
        assert_eq!(predicted.into_data().to_vec::<i64>().unwrap(), [1, 1]);
        let loss = PixelCrossEntropy
            .loss(ScoredPixels { logits, mask }, Mode::Train)
            .loss;
        // Pixel 0: -ln(e/(1+e)); pixel 1: -ln(1/(1+e)).
        let e = 1f32.exp();
        let expected = (-(e / (1.0 + e)).ln() - (1.0 / (1.0 + e)).ln()) / 2.0;
        assert!((value(loss) - expected).abs() < 1e-5);
    }
}
