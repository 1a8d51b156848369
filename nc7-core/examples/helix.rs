//! A tour of the foundation: build a model's DNA helix from nucleotide descriptions, run one
//! step on the CPU with burn, print the outputs and the graph, then show how a broken wiring is
//! reported.
//!
//! Run with `cargo run -p nc7-core --example helix`.

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, activation};
use nc7_core::gene::MODEL_GENES;
use nc7_core::{GeneHandler, KeysMapping, Kind, Nest, NodeSpec, Signature};
use serde_json::json;

type B = NdArray;

fn describe(broken: bool) -> (Vec<NodeSpec>, Vec<NodeSpec>) {
    let dataset = NodeSpec::new(
        "dataset",
        Kind::Dataset,
        Signature::nucleus7(&[], &["images", "labels"]),
    );
    let net = NodeSpec::new(
        "net",
        Kind::ModelPlugin,
        Signature::nucleus7(&["inputs"], &["logits"]),
    )
    .inbound(["dataset"])
    .mapping(KeysMapping::from_json(&json!({"dataset": {"images": "inputs"}})).unwrap());
    let softmax = NodeSpec::new(
        "softmax",
        Kind::ModelPlugin,
        Signature::nucleus7(&["logits"], &["probs"]),
    )
    .inbound(["net"]);
    let loss_inputs = if broken { "prob" } else { "probs" };
    let loss = NodeSpec::new(
        "nll_loss",
        Kind::ModelLoss,
        Signature::nucleus7(&[loss_inputs, "labels"], &["loss"]),
    )
    .inbound(["softmax", "dataset"])
    .file("training/configs/losses/nll.json");
    let accuracy = NodeSpec::new(
        "accuracy",
        Kind::ModelMetric,
        Signature::nucleus7(&["probs", "labels"], &["accuracy"]),
    )
    .inbound(if broken {
        vec!["softmax", "datset"]
    } else {
        vec!["softmax", "dataset"]
    });
    (vec![dataset], vec![accuracy, loss, softmax, net])
}

/// A map with one key.
fn one(key: &str, value: impl Into<Nest<B>>) -> Nest<B> {
    [(key.to_owned(), value.into())].into_iter().collect()
}

fn main() {
    let (incoming, nodes) = describe(false);
    let handler = GeneHandler::new("model", MODEL_GENES, incoming, nodes).expect("valid wiring");
    println!("run order: {:?}\n", handler.helix().order_names());

    let device = Default::default();
    let weights = Tensor::<B, 2>::from_floats([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0]], &device);
    let mut batch = Nest::<B>::map();
    batch
        .insert(
            "images",
            Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 2.0]], &device).into(),
        )
        .unwrap();
    batch
        .insert(
            "labels",
            Tensor::<B, 1, Int>::from_ints([0, 1], &device).into(),
        )
        .unwrap();

    let outputs = handler
        .run(vec![Some(batch)], |node, input| {
            let get2 = |key: &str| -> Tensor<B, 2> {
                input.get(key).unwrap().clone().into_tensor().unwrap()
            };
            let labels = || -> Tensor<B, 1, Int> {
                input.get("labels").unwrap().clone().into_tensor().unwrap()
            };
            let out = match node.spec.name.as_str() {
                "net" => one("logits", get2("inputs").matmul(weights.clone())),
                "softmax" => one("probs", activation::softmax(get2("logits"), 1)),
                "nll_loss" => {
                    let picked = get2("probs").gather(1, labels().unsqueeze_dim(1));
                    one("loss", picked.log().neg().mean())
                }
                "accuracy" => {
                    let predicted = get2("probs").argmax(1).squeeze_dim::<1>(1);
                    one("accuracy", predicted.equal(labels()).float().mean())
                }
                other => unreachable!("no nucleotide {other}"),
            };
            Ok(Some(out))
        })
        .expect("one step runs");
    for (name, output) in outputs.into_map() {
        let output = output.expect("no nucleotide was skipped");
        println!("{name:>10}: {output:?}");
        for key in ["loss", "accuracy"] {
            if let Some(value) = output.get(key) {
                let value: Tensor<B, 1> = value.clone().into_tensor().unwrap();
                println!("{:>10}  {key} = {:.4}", "", value.into_scalar());
            }
        }
    }
    println!("\nthe helix as Graphviz DOT:\n{}", handler.helix().to_dot());

    let (incoming, nodes) = describe(true);
    let errors = GeneHandler::new("model", MODEL_GENES, incoming, nodes).unwrap_err();
    println!("a broken wiring is refused, every problem at once:\n{errors}");
}
