//! Model tests of the model the configs wire (`project/training/configs/plugins/`, read here):
//! the weights start finite, the outputs have the right shape, and one step of
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
use project::losses::*;
use project::models::*;
use serde_json::Value;

type Train = nc7_core::backend::CpuTrain;

const SIZE: usize = 16;
const BATCH: usize = 6;

/// A fixed batch of shapes, standardised as the data configs do: images `[N, 3, S, S]`,
/// labels `[N, 1]`, masks `[N, S, S]`.
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
        pixels.extend(d.pixels.iter().map(|p| (p - 0.5) / 0.25));
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

/// The fields of nucleotide `name` in `plugins/<file>`, as its config type reads them, with
/// the project global config's `num_classes` where the type takes it.
fn config<T: serde::de::DeserializeOwned>(file: &str, name: &str) -> T {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/project/training/configs");
    let read = |path: String| -> Value {
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let configs = match read(format!("{dir}/plugins/{file}")) {
        Value::Array(all) => all,
        one => vec![one],
    };
    let mut own = configs
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no nucleotide `{name}` in plugins/{file}"));
    let fields = own.as_object_mut().unwrap();
    for common in [
        "class_name",
        "name",
        "inbound_nodes",
        "incoming_keys_mapping",
        "trainable",
    ] {
        fields.remove(common);
    }
    let global = read(format!("{dir}/project_global_config.json"));
    let mut with_classes = Value::Object(fields.clone());
    with_classes["num_classes"] = global["num_classes"].clone();
    serde_json::from_value(with_classes)
        .or_else(|_| serde_json::from_value(Value::Object(fields.clone())))
        .unwrap_or_else(|e| panic!("`{name}` in plugins/{file}: {e}"))
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
{% if task == "classification" %}
/// The configured model: backbone and classification head.
#[derive(Module, Debug)]
struct Starter<B: Backend> {
    backbone: ConvBackbone<B>,
    head: ClassificationHead<B>,
}

impl<B: Backend> Starter<B> {
    fn build(device: &B::Device) -> Self {
        // The same starting weights in every run.
        B::seed(device, 7);
        let backbone: BackboneConfig = config("backbone.json", "backbone");
        let head: ClassificationHeadConfig = config("head.json", "head");
        Starter {
            backbone: <ConvBackbone<B> as Build<B>>::build(&backbone, device).unwrap(),
            head: <ClassificationHead<B> as Build<B>>::build(&head, device).unwrap(),
        }
    }

    fn forward(&self, image: Tensor<B, 4>) -> Tensor<B, 2> {
        let features = self.backbone.forward(BackboneImages { image }, Mode::Train);
        // The head reads the level its config maps: the coarsest.
        let feature = features.features.stride8;
        self.head
            .forward(HeadFeature { feature }, Mode::Train)
            .logits
    }
}

#[test]
fn the_configured_classifier_has_finite_weights_the_right_shape_and_learns_in_one_step() {
    let model = Starter::<Train>::build(&Default::default());
    let (images, labels, _) = batch::<Train>();
    one_step_lowers_the_loss(model, |model: &Starter<Train>| {
        let logits = model.forward(images.clone());
        assert_eq!(logits.dims()[0], BATCH);
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
{% elsif task == "segmentation" %}
/// The configured model: backbone, FPN neck and segmentation head.
#[derive(Module, Debug)]
struct Starter<B: Backend> {
    backbone: ConvBackbone<B>,
    neck: Fpn<B>,
    head: SegmentationHead<B>,
}

impl<B: Backend> Starter<B> {
    fn build(device: &B::Device) -> Self {
        // The same starting weights in every run.
        B::seed(device, 7);
        let backbone: BackboneConfig = config("backbone.json", "backbone");
        let neck: FpnConfig = config("head.json", "neck");
        let head: SegmentationHeadConfig = config("head.json", "head");
        Starter {
            backbone: <ConvBackbone<B> as Build<B>>::build(&backbone, device).unwrap(),
            neck: <Fpn<B> as Build<B>>::build(&neck, device).unwrap(),
            head: <SegmentationHead<B> as Build<B>>::build(&head, device).unwrap(),
        }
    }

    fn forward(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        let f = self
            .backbone
            .forward(BackboneImages { image }, Mode::Train)
            .features;
        // The levels the neck's config maps: strides 1, 2 and 4.
        let levels = NeckLevels {
            level0: f.stride1,
            level1: Some(f.stride2),
            level2: Some(f.stride4),
            level3: None,
        };
        let feature = self.neck.forward(levels, Mode::Train).features.level0;
        self.head
            .forward(HeadFeature { feature }, Mode::Train)
            .logits
    }
}

#[test]
fn the_configured_segmenter_has_finite_weights_the_right_shape_and_learns_in_one_step() {
    let model = Starter::<Train>::build(&Default::default());
    let (images, _, masks) = batch::<Train>();
    one_step_lowers_the_loss(model, |model: &Starter<Train>| {
        let logits = model.forward(images.clone());
        assert_eq!(logits.dims()[0], BATCH);
        assert_eq!(logits.dims()[2..], [SIZE, SIZE]);
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
{% else %}
/// The configured model: backbone, FPN neck and centre-point head.
#[derive(Module, Debug)]
struct Starter<B: Backend> {
    backbone: ConvBackbone<B>,
    neck: Fpn<B>,
    head: CenterHead<B>,
}

impl<B: Backend> Starter<B> {
    fn build(device: &B::Device) -> Self {
        // The same starting weights in every run.
        B::seed(device, 7);
        let backbone: BackboneConfig = config("backbone.json", "backbone");
        let neck: FpnConfig = config("head.json", "neck");
        let head: CenterHeadConfig = config("head.json", "head");
        Starter {
            backbone: <ConvBackbone<B> as Build<B>>::build(&backbone, device).unwrap(),
            neck: <Fpn<B> as Build<B>>::build(&neck, device).unwrap(),
            head: <CenterHead<B> as Build<B>>::build(&head, device).unwrap(),
        }
    }

    fn forward(&self, image: Tensor<B, 4>) -> CenterMaps<B> {
        let f = self
            .backbone
            .forward(BackboneImages { image }, Mode::Train)
            .features;
        // The levels the neck's config maps: strides 4 and 8.
        let levels = NeckLevels {
            level0: f.stride4,
            level1: Some(f.stride8),
            level2: None,
            level3: None,
        };
        let feature = self.neck.forward(levels, Mode::Train).features.level0;
        self.head.forward(HeadFeature { feature }, Mode::Train)
    }
}

/// A tensor as a value of any kind, as data processors take boxes and labels.
fn value<B: Backend>(data: TensorData) -> nc7_core::AnyValue<B> {
    let tensor = nc7_core::AnyTensor::from_data(data, &Default::default());
    nc7_core::AnyValue(nc7_core::Nest::Tensor(tensor))
}

/// The batch's centre-point targets, as the data configs make them (`CenterTargets`, stride 4).
fn targets<B: Backend>() -> [Tensor<B, 4>; 4] {
    let config = ShapesConfig {
        samples: BATCH,
        size: SIZE,
        seed: 11,
        noise: 0.05,
    };
    let device = Default::default();
    let c = CenterTargetsConfig {
        num_classes: 3,
        stride: 4,
        min_overlap: 0.7,
    };
    let mut make = <CenterTargets as Build<B>>::build(&c, &device).unwrap();
    let mut parts: [Vec<Tensor<B, 3>>; 4] = Default::default();
    for i in 0..BATCH {
        let d = draw(&config, i);
        let input = BoxesIn {
            image: Tensor::zeros([3, SIZE, SIZE], &device),
            boxes: value(TensorData::new(d.bbox.to_vec(), [4])),
            labels: value(TensorData::new(vec![d.label], [1])),
        };
        let out = nc7_core::nucleotide::DataProcessor::process(&mut make, input).unwrap();
        parts[0].push(out.target_heatmap);
        parts[1].push(out.target_size);
        parts[2].push(out.target_offset);
        parts[3].push(out.center_mask);
    }
    parts.map(|p| Tensor::stack(p, 0))
}

#[test]
fn the_configured_detector_has_finite_weights_the_right_shape_and_learns_in_one_step() {
    let model = Starter::<Train>::build(&Default::default());
    let (images, _, _) = batch::<Train>();
    let [heat, size, offset, mask] = targets::<Train>();
    one_step_lowers_the_loss(model, |model: &Starter<Train>| {
        let maps = model.forward(images.clone());
        assert_eq!(maps.heatmap.dims(), [BATCH, 3, SIZE / 4, SIZE / 4]);
        let losses = ModelLoss::<Train>::loss(
            &CenterLoss,
            CenterLossIn {
                heatmap: maps.heatmap,
                size: maps.size,
                offset: maps.offset,
                target_heatmap: heat.clone(),
                target_size: size.clone(),
                target_offset: offset.clone(),
                center_mask: mask.clone(),
            },
            Mode::Train,
        );
        losses.loss_heatmap + losses.loss_size.mul_scalar(0.1) + losses.loss_offset
    });
}
{% endif %}
/// The model's weights start finite, and one small Adam step on the fixed batch lowers `loss`.
fn one_step_lowers_the_loss<M: AutodiffModule<Train>>(
    model: M,
    loss: impl Fn(&M) -> Tensor<Train, 1>,
) {
    assert!(finite(&model), "the weights start finite");
    let before = loss(&model);
    let grads = GradientsParams::from_grads(before.backward(), &model);
    let mut optim = AdamConfig::new().init();
    // A small step: the loss falls along the gradient whatever the weights' scale.
    let model = optim.step(1e-3, model, grads);
    let after = loss(&model);
    let (b, a) = (before.into_scalar(), after.into_scalar());
    assert!(a < b, "one step lowers the loss: {b} → {a}");
}
