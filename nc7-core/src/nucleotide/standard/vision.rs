//! Backbone, neck and head (Verres's split of a vision model), as model plugins a config wires
//! together: a **backbone** turns images into features at several strides (nested keys
//! `features:stride1`, `features:stride2`, ...), an optional **neck** aggregates them
//! ([`Fpn`]), and a task **head** turns one level into the task's outputs. A backbone knows
//! nothing of the task, so a backbone trained for one task starts another by config alone
//! (`load_config` by nucleotide name), and swapping backbones changes one `class_name`.
//!
//! ```json
//! {"class_name": "ConvBackbone", "name": "backbone", "inbound_nodes": ["dataset"],
//!  "filters": [16, 32, 64, 64]},
//! {"class_name": "ClassificationHead", "name": "head", "inbound_nodes": ["backbone"],
//!  "incoming_keys_mapping": {"backbone": {"features:stride8": "feature"}},
//!  "channels": 64, "num_classes": 10}
//! ```
//!
//! A head reads one key, `feature`; its config's mapping names the level. A backbone swapped
//! for one without that level fails `check` with the mapping that fixes it.
//!
//! Input preprocessing: every backbone here expects images standardised per channel by the
//! data processor [`Standardize`](crate::data::Standardize) (Verres's `preprocess_input`),
//! which the data configs put in front of the model (inside a `ProcessedDataset` or a
//! `DataPipe`); [`PREPROCESSING`] names it.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::Backend;
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::layers::{Conv2d, Conv2dConfig, MaxPool2d, upsample2};
use crate::nucleotide::ModelPlugin;
use crate::{BoxError, Build, Generated, Incoming, Mode, nucleotide};

/// The class name of the data processor every backbone here expects in front of it.
pub const PREPROCESSING: &str = "Standardize";

/// The data processor a model plugin type (by its registered path) expects in front of it:
/// nc7's backbones expect [`PREPROCESSING`]. `check` warns (NC0019) when no data config of the
/// run has it.
pub fn expected_preprocessing(path: &str) -> Option<&'static str> {
    let backbones = [
        concat!(module_path!(), "::ConvBackbone"),
        concat!(module_path!(), "::ResidualBackbone"),
    ];
    backbones.contains(&path).then_some(PREPROCESSING)
}

/// Images into a backbone.
#[derive(Incoming)]
pub struct BackboneImages<B: Backend> {
    /// `[N, C, H, W]`, standardised by `Standardize`.
    pub image: Tensor<B, 4>,
}

/// One level of features into a neck-less head, or a head after a neck.
#[derive(Incoming)]
pub struct HeadFeature<B: Backend> {
    /// `[N, channels, h, w]`: one level of a backbone's or a neck's features.
    pub feature: Tensor<B, 4>,
}

/// `ConvBackbone`'s features: the image side divided by 1, 2, 4 and 8.
#[derive(Generated)]
pub struct FineStrides<B: Backend> {
    /// `[N, filters[0], H, W]`.
    pub stride1: Tensor<B, 4>,
    /// `[N, filters[1], H/2, W/2]`.
    pub stride2: Tensor<B, 4>,
    /// `[N, filters[2], H/4, W/4]`.
    pub stride4: Tensor<B, 4>,
    /// `[N, filters[3], H/8, W/8]`.
    pub stride8: Tensor<B, 4>,
}

/// `ConvBackbone`'s output.
#[derive(Generated)]
pub struct FineFeatures<B: Backend> {
    /// The feature pyramid.
    pub features: FineStrides<B>,
}

/// `ResidualBackbone`'s features: the image side divided by 2, 4, 8 and 16.
#[derive(Generated)]
pub struct CoarseStrides<B: Backend> {
    /// `[N, filters[0], H/2, W/2]`.
    pub stride2: Tensor<B, 4>,
    /// `[N, filters[1], H/4, W/4]`.
    pub stride4: Tensor<B, 4>,
    /// `[N, filters[2], H/8, W/8]`.
    pub stride8: Tensor<B, 4>,
    /// `[N, filters[3], H/16, W/16]`.
    pub stride16: Tensor<B, 4>,
}

/// `ResidualBackbone`'s output.
#[derive(Generated)]
pub struct CoarseFeatures<B: Backend> {
    /// The feature pyramid.
    pub features: CoarseStrides<B>,
}

/// A 3×3 (or 1×1) convolution, batch normalisation when asked, and a ReLU when asked.
#[derive(Module, Debug)]
pub struct ConvNorm<B: Backend> {
    conv: Conv2d<B>,
    norm: Option<BatchNorm<B>>,
    relu: bool,
}

impl<B: Backend> ConvNorm<B> {
    /// `kernel`×`kernel` from `input` to `output` channels, the size kept; without
    /// normalisation the convolution has a bias.
    pub fn new(
        [input, output]: [usize; 2],
        kernel: usize,
        norm: bool,
        relu: bool,
        device: &B::Device,
    ) -> Self {
        ConvNorm {
            conv: Conv2dConfig::new([input, output], [kernel, kernel])
                .with_bias(!norm)
                .init(device),
            norm: norm.then(|| BatchNormConfig::new(output).init(device)),
            relu,
        }
    }

    /// `[N, input, H, W]` → `[N, output, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut y = self.conv.forward(x);
        if let Some(norm) = &self.norm {
            y = norm.forward(y);
        }
        if self.relu { relu(y) } else { y }
    }
}

fn no_smaller_than<B: Backend>(image: &Tensor<B, 4>, side: usize, what: &str) {
    let [_, _, h, w] = image.dims();
    assert!(
        h >= side && w >= side,
        "{what} needs images of at least {side}×{side} pixels; these are {h}×{w} (resize them, or use a backbone with fewer strides)"
    );
}

/// `ConvBackbone`'s and `ResidualBackbone`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackboneConfig {
    /// Channels of the images (3 colour, 1 grey).
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Channels of the four levels, finest first.
    #[serde(default = "backbone_filters")]
    pub filters: [usize; 4],
    /// Convolutions (or residual blocks) per level.
    #[serde(default = "one")]
    pub blocks: usize,
    /// Batch normalisation after every convolution.
    #[serde(default = "yes")]
    pub batch_norm: bool,
}

fn three() -> usize {
    3
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

fn backbone_filters() -> [usize; 4] {
    [16, 32, 64, 64]
}

fn check_backbone(c: &BackboneConfig) -> Result<(), BoxError> {
    if c.in_channels == 0 || c.filters.contains(&0) || c.blocks == 0 {
        return Err(format!(
            "`in_channels` ({}), every one of `filters` ({:?}) and `blocks` ({}) must be at least 1",
            c.in_channels, c.filters, c.blocks
        )
        .into());
    }
    Ok(())
}

/// The layers of a backbone's four levels, `blocks` each, made by `make([input, output])`
/// from `input` channels on.
fn levels<T>(
    c: &BackboneConfig,
    mut input: usize,
    mut make: impl FnMut([usize; 2]) -> T,
) -> Vec<Vec<T>> {
    c.filters
        .iter()
        .map(|&f| {
            (0..c.blocks)
                .map(|_| {
                    let layer = make([input, f]);
                    input = f;
                    layer
                })
                .collect()
        })
        .collect()
}

/// A plain convolutional backbone for small images: four levels of `blocks` × (3×3
/// convolution, batch normalisation, ReLU), the first at the image's size and each next one
/// after a 2×2 max-pooling. Features at strides 1, 2, 4 and 8; images of at least 8×8.
/// Expects `Standardize`d images.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct ConvBackbone<B: Backend> {
    levels: Vec<Vec<ConvNorm<B>>>,
    pool: MaxPool2d,
}

impl<B: Backend> Build<B> for ConvBackbone<B> {
    type Config = BackboneConfig;
    type Input = BackboneImages<B>;
    type Output = FineFeatures<B>;
    fn build(c: &BackboneConfig, device: &B::Device) -> Result<Self, BoxError> {
        check_backbone(c)?;
        let levels = levels(c, c.in_channels, |channels| {
            ConvNorm::new(channels, 3, c.batch_norm, true, device)
        });
        Ok(ConvBackbone {
            levels,
            pool: MaxPool2d::new([2, 2]),
        })
    }
}

impl<B: Backend> ModelPlugin<B> for ConvBackbone<B> {
    fn forward(&self, input: BackboneImages<B>, _: Mode) -> FineFeatures<B> {
        no_smaller_than(&input.image, 8, "ConvBackbone");
        let mut x = input.image;
        let mut out = Vec::with_capacity(4);
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                x = self.pool.forward(x);
            }
            for layer in level {
                x = layer.forward(x);
            }
            out.push(x.clone());
        }
        let [stride1, stride2, stride4, stride8] = <[_; 4]>::try_from(out).expect("four levels");
        FineFeatures {
            features: FineStrides {
                stride1,
                stride2,
                stride4,
                stride8,
            },
        }
    }
}

/// A residual block: two 3×3 convolutions with batch normalisation, added to the input (through
/// a 1×1 convolution when the channels change), then a ReLU.
#[derive(Module, Debug)]
pub struct Residual<B: Backend> {
    first: ConvNorm<B>,
    second: ConvNorm<B>,
    shortcut: Option<ConvNorm<B>>,
}

impl<B: Backend> Residual<B> {
    fn new([input, output]: [usize; 2], norm: bool, device: &B::Device) -> Self {
        Residual {
            first: ConvNorm::new([input, output], 3, norm, true, device),
            second: ConvNorm::new([output, output], 3, norm, false, device),
            shortcut: (input != output)
                .then(|| ConvNorm::new([input, output], 1, norm, false, device)),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let skip = match &self.shortcut {
            Some(s) => s.forward(x.clone()),
            None => x.clone(),
        };
        relu(self.second.forward(self.first.forward(x)) + skip)
    }
}

/// A residual backbone (ResNet's basic blocks, sized for small images): a 3×3 stem at the
/// image's size, then four levels of 2×2 max-pooling and `blocks` residual blocks. Features at
/// strides 2, 4, 8 and 16; images of at least 16×16. Expects `Standardize`d images.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct ResidualBackbone<B: Backend> {
    stem: ConvNorm<B>,
    levels: Vec<Vec<Residual<B>>>,
    pool: MaxPool2d,
}

impl<B: Backend> Build<B> for ResidualBackbone<B> {
    type Config = BackboneConfig;
    type Input = BackboneImages<B>;
    type Output = CoarseFeatures<B>;
    fn build(c: &BackboneConfig, device: &B::Device) -> Result<Self, BoxError> {
        check_backbone(c)?;
        let stem = ConvNorm::new([c.in_channels, c.filters[0]], 3, c.batch_norm, true, device);
        let levels = levels(c, c.filters[0], |channels| {
            Residual::new(channels, c.batch_norm, device)
        });
        Ok(ResidualBackbone {
            stem,
            levels,
            pool: MaxPool2d::new([2, 2]),
        })
    }
}

impl<B: Backend> ModelPlugin<B> for ResidualBackbone<B> {
    fn forward(&self, input: BackboneImages<B>, _: Mode) -> CoarseFeatures<B> {
        no_smaller_than(&input.image, 16, "ResidualBackbone");
        let mut x = self.stem.forward(input.image);
        let mut out = Vec::with_capacity(4);
        for level in &self.levels {
            x = self.pool.forward(x);
            for block in level {
                x = block.forward(x);
            }
            out.push(x.clone());
        }
        let [stride2, stride4, stride8, stride16] = <[_; 4]>::try_from(out).expect("four levels");
        CoarseFeatures {
            features: CoarseStrides {
                stride2,
                stride4,
                stride8,
                stride16,
            },
        }
    }
}

/// `[N, C, h, w]` → `[N, C, height, width]` by nearest neighbour (a 2×2 repeat when the size
/// exactly doubles).
pub fn resize_nearest<B: Backend>(x: Tensor<B, 4>, height: usize, width: usize) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    if (h, w) == (height, width) {
        return x;
    }
    if (2 * h, 2 * w) == (height, width) {
        return upsample2(x);
    }
    let device = x.device();
    let index = |from: usize, to: usize| {
        let rows: Vec<i64> = (0..to).map(|i| (i * from / to) as i64).collect();
        Tensor::<B, 1, Int>::from_data(burn::tensor::TensorData::new(rows, [to]), &device)
    };
    x.select(2, index(h, height)).select(3, index(w, width))
}

/// Features into a neck: up to four levels, each about half the size of the one before.
#[derive(Incoming)]
pub struct NeckLevels<B: Backend> {
    /// The finest level.
    pub level0: Tensor<B, 4>,
    /// The next level, about half its size.
    pub level1: Option<Tensor<B, 4>>,
    /// The next level.
    pub level2: Option<Tensor<B, 4>>,
    /// The coarsest level.
    pub level3: Option<Tensor<B, 4>>,
}

/// A neck's features: the levels it was given, each with `channels` channels.
#[derive(Generated)]
pub struct NeckStrides<B: Backend> {
    /// The finest level.
    pub level0: Tensor<B, 4>,
    /// The next level, when given.
    pub level1: Option<Tensor<B, 4>>,
    /// The next level, when given.
    pub level2: Option<Tensor<B, 4>>,
    /// The coarsest level, when given.
    pub level3: Option<Tensor<B, 4>>,
}

/// A neck's output.
#[derive(Generated)]
pub struct NeckFeatures<B: Backend> {
    /// The aggregated pyramid.
    pub features: NeckStrides<B>,
}

/// `Fpn`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FpnConfig {
    /// Channels of the levels it is given (`level0` first): one to four numbers.
    pub inputs: Vec<usize>,
    /// Channels of every output level.
    #[serde(default = "thirty_two")]
    pub channels: usize,
    /// Batch normalisation after the smoothing convolutions.
    #[serde(default = "yes")]
    pub batch_norm: bool,
}

fn thirty_two() -> usize {
    32
}

/// A feature pyramid network: a 1×1 convolution brings every level to `channels`, each
/// level adds the (nearest-neighbour up-sampled) level below it, coarsest first, and a 3×3
/// convolution with a ReLU smooths each sum. Map the backbone's levels to `level0`…`level3`
/// (finest first) in `incoming_keys_mapping`.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct Fpn<B: Backend> {
    lateral: Vec<Conv2d<B>>,
    smooth: Vec<ConvNorm<B>>,
}

impl<B: Backend> Build<B> for Fpn<B> {
    type Config = FpnConfig;
    type Input = NeckLevels<B>;
    type Output = NeckFeatures<B>;
    fn build(c: &FpnConfig, device: &B::Device) -> Result<Self, BoxError> {
        if c.inputs.is_empty() || c.inputs.len() > 4 || c.inputs.contains(&0) || c.channels == 0 {
            return Err(format!(
                "`inputs` is {:?}: give the channels of one to four levels (`level0` first), each at least 1, and `channels` at least 1",
                c.inputs
            )
            .into());
        }
        Ok(Fpn {
            lateral: c
                .inputs
                .iter()
                .map(|&i| {
                    Conv2dConfig::new([i, c.channels], [1, 1])
                        .with_bias(true)
                        .init(device)
                })
                .collect(),
            smooth: c
                .inputs
                .iter()
                .map(|_| ConvNorm::new([c.channels, c.channels], 3, c.batch_norm, true, device))
                .collect(),
        })
    }
}

impl<B: Backend> ModelPlugin<B> for Fpn<B> {
    fn forward(&self, input: NeckLevels<B>, _: Mode) -> NeckFeatures<B> {
        let given: Vec<Tensor<B, 4>> =
            [Some(input.level0), input.level1, input.level2, input.level3]
                .into_iter()
                .map_while(|l| l)
                .collect();
        assert_eq!(
            given.len(),
            self.lateral.len(),
            "Fpn was given {} levels (level0 up, without gaps) but its `inputs` names {}; map as many levels as `inputs` has",
            given.len(),
            self.lateral.len()
        );
        let mut out: Vec<Tensor<B, 4>> = Vec::with_capacity(given.len());
        let mut above: Option<Tensor<B, 4>> = None;
        for (level, lateral) in given.into_iter().zip(&self.lateral).rev() {
            let [_, _, h, w] = level.dims();
            let mut x = lateral.forward(level);
            if let Some(a) = above {
                x = x + resize_nearest(a, h, w);
            }
            above = Some(x.clone());
            out.push(x);
        }
        out.reverse();
        let mut out = out.into_iter().zip(&self.smooth).map(|(x, s)| s.forward(x));
        NeckFeatures {
            features: NeckStrides {
                level0: out.next().expect("at least one level"),
                level1: out.next(),
                level2: out.next(),
                level3: out.next(),
            },
        }
    }
}

/// Class scores of images.
#[derive(Generated)]
pub struct HeadLogits<B: Backend> {
    /// `[N, classes]`.
    pub logits: Tensor<B, 2>,
}

/// `ClassificationHead`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassificationHeadConfig {
    /// Channels of the feature it reads.
    pub channels: usize,
    /// Classes (a `project_global_config` may give it to the head and the KPIs at once).
    pub num_classes: usize,
    /// Dropout before the linear layer, in training (0 for none).
    #[serde(default)]
    pub dropout: f64,
}

/// Global average pooling of one feature level, dropout in training, and a linear layer to
/// class scores.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct ClassificationHead<B: Backend> {
    dropout: Dropout,
    linear: Linear<B>,
}

impl<B: Backend> Build<B> for ClassificationHead<B> {
    type Config = ClassificationHeadConfig;
    type Input = HeadFeature<B>;
    type Output = HeadLogits<B>;
    fn build(c: &ClassificationHeadConfig, device: &B::Device) -> Result<Self, BoxError> {
        if c.channels == 0 || c.num_classes < 2 || !(0.0..1.0).contains(&c.dropout) {
            return Err(format!(
                "`channels` is {}, `num_classes` {}, `dropout` {}: give at least one channel, two classes and a dropout in [0, 1)",
                c.channels, c.num_classes, c.dropout
            )
            .into());
        }
        Ok(ClassificationHead {
            dropout: DropoutConfig::new(c.dropout).init(),
            linear: LinearConfig::new(c.channels, c.num_classes).init(device),
        })
    }
}

fn expect_channels<B: Backend>(x: &Tensor<B, 4>, channels: usize, what: &str) {
    let c = x.dims()[1];
    assert_eq!(
        c, channels,
        "{what} reads a `feature` of {channels} channels (its `channels`); the one mapped to it has {c}: set `channels` to {c}, or map another level"
    );
}

impl<B: Backend> ModelPlugin<B> for ClassificationHead<B> {
    fn forward(&self, input: HeadFeature<B>, _: Mode) -> HeadLogits<B> {
        expect_channels(
            &input.feature,
            self.linear.weight.dims()[0],
            "ClassificationHead",
        );
        let [n, c, h, w] = input.feature.dims();
        let pooled = input
            .feature
            .reshape([n, c, h * w])
            .mean_dim(2)
            .reshape([n, c]);
        HeadLogits {
            logits: self.linear.forward(self.dropout.forward(pooled)),
        }
    }
}

/// Class scores of pixels.
#[derive(Generated)]
pub struct HeadPixelLogits<B: Backend> {
    /// `[N, classes, H, W]`.
    pub logits: Tensor<B, 4>,
}

/// `SegmentationHead`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentationHeadConfig {
    /// Channels of the feature it reads.
    pub channels: usize,
    /// Classes, background included (a `project_global_config` may give it to the head and
    /// the KPIs at once).
    pub num_classes: usize,
    /// Channels of its hidden 3×3 convolution.
    #[serde(default = "thirty_two")]
    pub hidden: usize,
    /// The stride of the feature it reads (1, 2, 4, ...): the scores are up-sampled by it to
    /// the image's size.
    #[serde(default = "one")]
    pub stride: usize,
    /// Batch normalisation after the hidden convolution.
    #[serde(default = "yes")]
    pub batch_norm: bool,
}

/// A 3×3 convolution with a ReLU, a 1×1 convolution to class scores, and a nearest-neighbour
/// up-sampling by the feature's `stride` to the image's size.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct SegmentationHead<B: Backend> {
    hidden: ConvNorm<B>,
    scores: Conv2d<B>,
    stride: usize,
    channels: usize,
}

impl<B: Backend> Build<B> for SegmentationHead<B> {
    type Config = SegmentationHeadConfig;
    type Input = HeadFeature<B>;
    type Output = HeadPixelLogits<B>;
    fn build(c: &SegmentationHeadConfig, device: &B::Device) -> Result<Self, BoxError> {
        if c.channels == 0 || c.hidden == 0 || c.num_classes < 2 || c.stride == 0 {
            return Err(format!(
                "`channels` is {}, `hidden` {}, `num_classes` {}, `stride` {}: give at least one channel, two classes (background included) and a stride of at least 1",
                c.channels, c.hidden, c.num_classes, c.stride
            )
            .into());
        }
        Ok(SegmentationHead {
            hidden: ConvNorm::new([c.channels, c.hidden], 3, c.batch_norm, true, device),
            scores: Conv2dConfig::new([c.hidden, c.num_classes], [1, 1]).init(device),
            stride: c.stride,
            channels: c.channels,
        })
    }
}

impl<B: Backend> ModelPlugin<B> for SegmentationHead<B> {
    fn forward(&self, input: HeadFeature<B>, _: Mode) -> HeadPixelLogits<B> {
        expect_channels(&input.feature, self.channels, "SegmentationHead");
        let [_, _, h, w] = input.feature.dims();
        let scores = self.scores.forward(self.hidden.forward(input.feature));
        HeadPixelLogits {
            logits: resize_nearest(scores, h * self.stride, w * self.stride),
        }
    }
}
