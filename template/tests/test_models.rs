//! Model tests: the weights start finite, the outputs have the right shape, and one step of
//! backpropagation on a fixed batch lowers the loss.

use {{crate_name}} as project;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use nc7_core::data::ShapesConfig;
use nc7_core::data::shapes::draw;
use nc7_core::nucleotide::{ModelLoss, ModelPlugin};
use nc7_core::{Build, Mode};
use project::losses::{CrossEntropy, PixelCrossEntropy, ScoredImages, ScoredPixels};
use project::models::{Classifier, ClassifierConfig, UNet, UNetConfig};

type Train = nc7_core::backend::CpuTrain;

const SIZE: usize = 16;
const BATCH: usize = 6;

/// A fixed batch of shapes: images `[N, 3, S, S]`, labels `[N, 1]`, masks `[N, S, S]`.
fn batch<B: Backend>() -> (Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 3, Int>) {
    let config = ShapesConfig {
        samples: BATCH,
        size: SIZE,
        seed: 11,
        noise: 0.05,
    };
    let (mut pixels, mut labels, mut masks) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..BATCH {
        let d = draw(&config, i);
        pixels.extend(d.pixels);
        labels.push(d.label);
        masks.extend(d.mask);
    }
    let device = Default::default();
    (
        Tensor::from_data(TensorData::new(pixels, [BATCH, 3, SIZE, SIZE]), &device),
        Tensor::from_data(TensorData::new(labels, [BATCH, 1]), &device),
        Tensor::from_data(TensorData::new(masks, [BATCH, SIZE, SIZE]), &device),
    )
}

struct Finite(bool);

impl<B: Backend> ModuleVisitor<B> for Finite {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let values: Vec<f32> = param.val().into_data().convert::<f32>().to_vec().unwrap();
        self.0 &= values.iter().all(|v| v.is_finite());
    }
}

fn finite<B: Backend, M: Module<B>>(module: &M) -> bool {
    let mut v = Finite(true);
    module.visit(&mut v);
    v.0
}

#[test]
fn classifier_weights_shape_and_one_step() {
    let device = Default::default();
    let config = ClassifierConfig {
        filters: vec![8, 16],
        classes: 3,
    };
    let model = <Classifier<Train> as Build<Train>>::build(&config, &device).unwrap();
    let (images, labels, _) = batch::<Train>();
    one_step_lowers_the_loss(model, |model: &Classifier<Train>| {
        let logits = model
            .forward(classifier_input(images.clone()), Mode::Train)
            .logits;
        assert_eq!(logits.dims(), [BATCH, 3]);
        ModelLoss::<Train>::loss(
            &CrossEntropy,
            ScoredImages {
                logits,
                label: labels.clone(),
            },
            Mode::Train,
        )
        .loss
    });
}

#[test]
fn unet_weights_shape_and_one_step() {
    let device = Default::default();
    let config = UNetConfig {
        filters: vec![4, 8],
        classes: 4,
    };
    let model = <UNet<Train> as Build<Train>>::build(&config, &device).unwrap();
    let (images, _, masks) = batch::<Train>();
    one_step_lowers_the_loss(model, |model: &UNet<Train>| {
        let logits = model
            .forward(classifier_input(images.clone()), Mode::Train)
            .logits;
        assert_eq!(logits.dims(), [BATCH, 4, SIZE, SIZE]);
        ModelLoss::<Train>::loss(
            &PixelCrossEntropy,
            ScoredPixels {
                logits,
                mask: masks.clone(),
            },
            Mode::Train,
        )
        .loss
    });
}

/// The model's weights start finite, and one Adam step on the fixed batch lowers `loss`.
fn one_step_lowers_the_loss<M: AutodiffModule<Train>>(
    model: M,
    loss: impl Fn(&M) -> Tensor<Train, 1>,
) {
    assert!(finite(&model), "the weights start finite");
    let before = loss(&model);
    let grads = GradientsParams::from_grads(before.backward(), &model);
    let mut optim = AdamConfig::new().init();
    let model = optim.step(0.01, model, grads);
    let after = loss(&model);
    let (b, a) = (before.into_scalar(), after.into_scalar());
    assert!(a < b, "one step lowers the loss: {b} → {a}");
}

fn classifier_input<B: Backend>(image: Tensor<B, 4>) -> project::models::Images<B> {
    project::models::Images { image }
}
