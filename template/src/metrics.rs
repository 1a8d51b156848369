//! Metrics: accuracy for classification, mean intersection over union for segmentation.

use burn::prelude::Backend;
use burn::tensor::Tensor;
use nc7_core::nucleotide::ModelMetric;
use nc7_core::{BoxError, Build, Generated, Mode, nucleotide};

use crate::losses::{NoConfig, ScoredImages, ScoredPixels, pixel_rows};

/// The fraction of images classified right.
#[derive(Generated)]
pub struct AccuracyOut<B: Backend> {
    /// In [0, 1].
    pub accuracy: Tensor<B, 1>,
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

/// Mean intersection over union.
#[derive(Generated)]
pub struct MeanIouOut<B: Backend> {
    /// In [0, 1].
    pub mean_iou: Tensor<B, 1>,
}

/// The intersection over union of predicted and true pixels of each class, averaged over the
/// classes present in the prediction or the truth.
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
            let is_present = union.clone().greater_elem(0.0).float();
            sum = sum + intersection / union.clamp_min(1.0);
            present = present + is_present;
        }
        MeanIouOut {
            mean_iou: sum / present.clamp_min(1.0),
        }
    }
}
