//! A nucleotide of every kind in a few lines; its signature, info, sample config and
//! registration.

use std::marker::PhantomData;

use burn::backend::NdArray;
use burn::prelude::Backend;
use burn::tensor::Tensor;
use nc7_core::nucleotide::{CallbackContext, CoordinatorCallback, ModelLoss, ModelPlugin};
use nc7_core::registry::Format;
use nc7_core::{
    BoxError, Build, Generated, Incoming, Kind, Mode, NoKeys, Nucleotide, Registry, RegistryError,
    nucleotide,
};
use serde::{Deserialize, Serialize};

type B = NdArray;

/// Scales its input by a factor.
///
/// A second paragraph of docs.
#[nucleotide(kind = ModelPlugin)]
#[derive(burn::module::Module, Debug)]
pub struct Scale<B: Backend> {
    factor: f64,
    _backend: PhantomData<B>,
}

/// Scale's parameters.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleConfig {
    /// How much to scale by.
    factor: f64,
    /// Layers, with no default in spirit but a default here.
    sizes: Vec<u32>,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig {
            factor: 2.0,
            sizes: vec![8, 16],
        }
    }
}

#[derive(Incoming)]
pub struct ScaleIn<B: Backend> {
    /// The values to scale.
    x: Tensor<B, 2>,
    /// Ignored when absent.
    bias: Option<Tensor<B, 2>>,
}

#[derive(Generated)]
pub struct ScaleOut<B: Backend> {
    /// The scaled values.
    y: Tensor<B, 2>,
}

impl<B: Backend> Build<B> for Scale<B> {
    type Config = ScaleConfig;
    type Input = ScaleIn<B>;
    type Output = ScaleOut<B>;
    fn build(config: &ScaleConfig, _device: &B::Device) -> Result<Self, BoxError> {
        Ok(Scale {
            factor: config.factor,
            _backend: PhantomData,
        })
    }
}

impl<B: Backend> ModelPlugin<B> for Scale<B> {
    fn forward(&self, input: ScaleIn<B>, _mode: Mode) -> ScaleOut<B> {
        let y = input.x.mul_scalar(self.factor);
        ScaleOut {
            y: match input.bias {
                Some(b) => y + b,
                None => y,
            },
        }
    }
}

/// A config with a field that has no default.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NeedsPath {
    /// Where to write.
    path: String,
    /// How often.
    #[serde(default = "one")]
    every: u32,
}

fn one() -> u32 {
    1
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Default)]
pub struct Empty {}

#[derive(Generated)]
pub struct LossOut<B: Backend> {
    loss: Tensor<B, 1>,
}

simple_nucleotide!(Sse, ModelLoss, Empty, ScaleOut<B>, LossOut<B>, {
    fn loss(&self, input: ScaleOut<B>, _: Mode) -> LossOut<B> {
        LossOut {
            loss: input.y.powi_scalar(2).mean(),
        }
    }
});
simple_nucleotide!(
    Round,
    ModelPostProcessor,
    Empty,
    ScaleOut<B>,
    ScaleOut<B>,
    {
        fn process(&self, input: ScaleOut<B>, _: Mode) -> ScaleOut<B> {
            ScaleOut { y: input.y.round() }
        }
    }
);
simple_nucleotide!(Hist, ModelSummary, Empty, ScaleOut<B>, NoKeys, {
    fn summarize(&self, _: ScaleOut<B>, _: Mode) -> NoKeys {
        NoKeys
    }
});
simple_nucleotide!(MeanMetric, ModelMetric, Empty, ScaleOut<B>, LossOut<B>, {
    fn metric(&self, input: ScaleOut<B>, _: Mode) -> LossOut<B> {
        LossOut {
            loss: input.y.mean(),
        }
    }
});
simple_nucleotide!(Ones, Dataset, Empty, NoKeys, ScaleOut<B>, {
    fn len(&self) -> usize {
        3
    }
    fn get(&self, _: usize) -> Result<ScaleOut<B>, BoxError> {
        Ok(ScaleOut {
            y: Tensor::ones([1, 1], &Default::default()),
        })
    }
});
simple_nucleotide!(Feeder, DataFeeder, Empty, NoKeys, ScaleOut<B>, {
    fn next_sample(&mut self) -> Result<Option<ScaleOut<B>>, BoxError> {
        Ok(None)
    }
});
simple_nucleotide!(Reader, DataReader, NeedsPath, NoKeys, NoKeys, {
    fn read(&mut self, _: NoKeys) -> Result<NoKeys, BoxError> {
        Ok(NoKeys)
    }
});
simple_nucleotide!(Processor, DataProcessor, Empty, NoKeys, NoKeys, {
    fn process(&mut self, _: NoKeys) -> Result<NoKeys, BoxError> {
        Ok(NoKeys)
    }
});
simple_nucleotide!(
    Saver,
    CoordinatorCallback,
    NeedsPath,
    ScaleOut<B>,
    NoKeys,
    {
        fn on_iteration_end(
            &mut self,
            input: ScaleOut<B>,
            ctx: &CallbackContext,
        ) -> Result<Option<NoKeys>, BoxError> {
            use burn::tensor::ElementConversion;
            let mean: f64 = input.y.mean().into_scalar().elem();
            ctx.summaries.scalar("y_mean", mean, ctx.summary_step);
            Ok(Some(NoKeys))
        }
    }
);
simple_nucleotide!(Kpi, KpiPlugin, Empty, NoKeys, NoKeys, {
    fn evaluate(&mut self, _: NoKeys) -> Result<NoKeys, BoxError> {
        Ok(NoKeys)
    }
});
simple_nucleotide!(Acc, KpiAccumulator, Empty, NoKeys, NoKeys, {
    fn combine(&mut self, _: Vec<NoKeys>) -> Result<NoKeys, BoxError> {
        Ok(NoKeys)
    }
});

mod other {
    use super::*;

    /// Another type named `Sse`, in another module.
    #[nucleotide(kind = ModelLoss)]
    pub struct Sse;
    impl<B: Backend> Build<B> for Sse {
        type Config = Empty;
        type Input = NoKeys;
        type Output = NoKeys;
        fn build(_: &Empty, _: &B::Device) -> Result<Self, BoxError> {
            Ok(Sse)
        }
    }
    impl<B: Backend> ModelLoss<B> for Sse {
        fn loss(&self, _: NoKeys, _: Mode) -> NoKeys {
            NoKeys
        }
    }
}

#[test]
fn every_kind_registers_with_its_constants() {
    assert_eq!(<Scale<B> as Nucleotide>::CLASS_NAME, "Scale");
    assert_eq!(<Scale<B> as Nucleotide>::PATH, "it::nucleotide::Scale");
    assert_eq!(<Scale<B> as Nucleotide>::KIND, Kind::ModelPlugin);
    assert_eq!(
        <Scale<B> as Nucleotide>::DOCS,
        "Scales its input by a factor.\n\nA second paragraph of docs."
    );
    let registry = Registry::global();
    let expected = [
        ("Scale", Kind::ModelPlugin),
        ("Round", Kind::ModelPostProcessor),
        ("Hist", Kind::ModelSummary),
        ("MeanMetric", Kind::ModelMetric),
        ("Ones", Kind::Dataset),
        ("Feeder", Kind::DataFeeder),
        ("Reader", Kind::DataReader),
        ("Processor", Kind::DataProcessor),
        ("Saver", Kind::CoordinatorCallback),
        ("Kpi", Kind::KpiPlugin),
        ("Acc", Kind::KpiAccumulator),
        ("it::nucleotide::Sse", Kind::ModelLoss),
    ];
    for (name, kind) in expected {
        let e = registry
            .resolve(name, Some(kind))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.kind, kind);
    }
}

#[test]
fn signature_comes_from_the_key_structs() {
    let e = Registry::global()
        .resolve("Scale", Some(Kind::ModelPlugin))
        .unwrap();
    let sig = (e.signature)();
    let incoming: Vec<(&str, bool)> = sig
        .incoming
        .iter()
        .map(|k| (k.name.as_ref(), k.optional))
        .collect();
    assert_eq!(incoming, [("x", false), ("bias", true)]);
    assert_eq!(sig.generated[0].name, "y");
    assert_eq!(sig.generated[0].doc, "The scaled values.");
}

#[test]
fn registry_errors_name_the_problem_and_the_fix() {
    let registry = Registry::global();
    let err = registry
        .resolve("Scal", Some(Kind::ModelPlugin))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown class_name `Scal`; did you mean `Scale`?; registered ModelPlugin nucleotides: `Brightness`, `CenterHead`, `ClassificationHead`, `ConvBackbone`, `ConvNet`, `Fpn`, `Line`, `Mix`, `Net`, `ResidualBackbone`, `Scale`, `SegmentationHead`, `Twice`"
    );
    let err = registry
        .resolve("Round", Some(Kind::ModelLoss))
        .unwrap_err();
    assert!(matches!(
        err,
        RegistryError::WrongKind {
            found: Kind::ModelPostProcessor,
            ..
        }
    ));
    assert!(
        err.to_string()
            .contains("`Round` is a ModelPostProcessor, but a ModelLoss is expected here"),
        "{err}"
    );
    let err = registry.resolve("Sse", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "class_name `Sse` is ambiguous: `it::nucleotide::Sse`, `it::nucleotide::other::Sse` all register it; write the full path in `class_name`"
    );
    assert!(
        registry
            .resolve("it::nucleotide::other::Sse", Some(Kind::ModelLoss))
            .is_ok()
    );
    // Projects' own types of a standard nucleotide's name are duplicates too (they shadow it).
    assert!(
        registry.duplicates().contains(&(
            "Sse",
            vec!["it::nucleotide::Sse", "it::nucleotide::other::Sse"]
        )),
        "{:?}",
        registry.duplicates()
    );
}

#[test]
fn info_lists_kind_docs_keys_and_config() {
    let info = Registry::global().info("Scale").unwrap();
    for expected in [
        "Scale (ModelPlugin, it::nucleotide::Scale)",
        "Scales its input by a factor.",
        "  x: float tensor of rank 2 — The values to scale.",
        "  bias (optional): float tensor of rank 2 — Ignored when absent.",
        "  y: float tensor of rank 2 — The scaled values.",
        "  factor: number = 2.0 — How much to scale by.",
        "  sizes: array of integer = [8,16]",
    ] {
        assert!(info.contains(expected), "missing {expected:?} in:\n{info}");
    }
    let info = Registry::global().info("Reader").unwrap();
    assert!(
        info.contains("  path: string (required) — Where to write."),
        "{info}"
    );
    assert!(info.contains("  every: integer = 1"), "{info}");
}

#[test]
fn sample_configs_are_valid_json_and_toml() {
    let json = Registry::global()
        .sample_config("Saver", Format::Json)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["class_name"], "Saver");
    assert_eq!(v["name"], "saver");
    assert_eq!(v["path"], "TODO");
    assert_eq!(v["every"], 1);
    assert_eq!(v["inbound_nodes"], serde_json::json!(["TODO_INBOUND_NODE"]));
    assert_eq!(
        v["incoming_keys_mapping"]["TODO_INBOUND_NODE"]["TODO_GENERATED_KEY_FOR_y"],
        "y"
    );
    let toml_text = Registry::global()
        .sample_config("Scale", Format::Toml)
        .unwrap();
    let t: toml::Table = toml_text.parse().unwrap();
    assert_eq!(t["factor"].as_float(), Some(2.0));
    assert_eq!(t["trainable"].as_bool(), Some(true));
    // The sample's config part deserializes into the config struct once TODOs are filled.
    let mut cfg = v.as_object().unwrap().clone();
    for common in [
        "class_name",
        "name",
        "inbound_nodes",
        "incoming_keys_mapping",
    ] {
        cfg.remove(common);
    }
    cfg.insert("path".into(), "out".into());
    let parsed: NeedsPath = serde_json::from_value(cfg.into()).unwrap();
    assert_eq!((parsed.path.as_str(), parsed.every), ("out", 1));
}

#[test]
fn typed_step_through_the_glue() {
    use nc7_core::glue::At;
    use nc7_core::{Keys, Nest};
    let device = Default::default();
    let scale = <Scale<B> as Build<B>>::build(&ScaleConfig::default(), &device).unwrap();
    let mut input = Nest::<B>::map();
    input
        .insert("x", Tensor::<B, 2>::ones([1, 2], &device).into())
        .unwrap();
    let typed = ScaleIn::from_nest(input, &At::nucleotide("scale")).unwrap();
    let out = scale.forward(typed, Mode::Train).into_nest();
    let y: Tensor<B, 2> = out.get("y").unwrap().clone().into_tensor().unwrap();
    assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [2.0, 2.0]);
}

#[test]
fn configs_split_common_fields_and_catch_unknown_ones() {
    use nc7_core::CommonConfig;
    let registry = Registry::global();
    let config = serde_json::json!({
        "class_name": "Scale", "name": "scale", "inbound_nodes": ["dataset"],
        "factr": 3.0, "sizes": [1]
    });
    let common = CommonConfig::split(&config).unwrap();
    let entry = registry
        .resolve(&common.class_name, Some(Kind::ModelPlugin))
        .unwrap();
    let unknown = common.unknown_fields(entry);
    assert_eq!(unknown.len(), 1);
    assert_eq!(
        unknown[0].to_string(),
        "field `factr` of nucleotide config `scale`: `Scale` has no such field; did you mean `factor`?; \
         its fields are `factor`, `sizes`, `class_name`, `name`, `inbound_nodes`, `incoming_keys_mapping`, `trainable`, \
         `optimization_config`"
    );
    let spec = common
        .node_spec(registry, Kind::ModelPlugin, Some("plugins/scale.json"))
        .unwrap();
    assert_eq!(spec.name, "scale");
    assert_eq!(spec.inbound_nodes, ["dataset"]);
    assert_eq!(spec.signature.incoming[0].name, "x");
    let err = common
        .node_spec(registry, Kind::ModelLoss, None)
        .unwrap_err();
    assert!(
        err.contains("is a ModelPlugin, but a ModelLoss is expected"),
        "{err}"
    );
}

#[test]
fn callbacks_get_their_context_and_write_summaries() {
    use nc7_core::nucleotide::{IterationInfo, MemorySummaries};
    use std::sync::Arc;
    let summaries = Arc::new(MemorySummaries::default());
    let ctx = CallbackContext {
        mode: Mode::Eval,
        log_dir: "callbacks/eval".into(),
        summaries: summaries.clone(),
        summary_step: 12,
        iteration: IterationInfo {
            epoch: 2,
            iteration: 3,
            execution_time: 0.1,
            is_last: true,
        },
        iterations_per_epoch: 3,
        control: Default::default(),
        run: Default::default(),
    };
    let device = Default::default();
    let mut saver = <Saver as Build<B>>::build(
        &NeedsPath {
            path: "x".into(),
            every: 1,
        },
        &device,
    )
    .unwrap();
    let input = ScaleOut::<B> {
        y: Tensor::from_floats([[1.0, 3.0]], &device),
    };
    let out = CoordinatorCallback::<B>::on_iteration_end(&mut saver, input, &ctx).unwrap();
    assert!(out.is_some());
    assert_eq!(summaries.scalars(), [("y_mean".to_string(), 2.0, 12)]);
    assert!(format!("{ctx:?}").contains("summary_step: 12"));
}
