//! nucleus7's DNA helix cases (spec §3) and every validation error.

use super::*;
use crate::diagnostic::Severity;
use crate::nest::TensorDtype;
use serde_json::json;

fn sig(incoming: &[&str], generated: &[&str]) -> Signature {
    Signature::nucleus7(incoming, generated)
}

/// A plugin that takes `in` and generates `out`, reading `inbound`.
fn plugin(name: &str, inbound: &[&str]) -> NodeSpec {
    NodeSpec::new(name, Kind::ModelPlugin, Signature::default()).inbound(inbound.iter().copied())
}

fn input(name: &str) -> NodeSpec {
    NodeSpec::new(name, Kind::Dataset, sig(&[], &[]))
}

fn order(incoming: Vec<NodeSpec>, nodes: Vec<NodeSpec>) -> Vec<String> {
    let helix = Helix::build(incoming, nodes).unwrap_or_else(|d| panic!("{d}"));
    helix.order_names().into_iter().map(str::to_owned).collect()
}

#[test]
fn spec_topological_orders() {
    let nodes = || {
        vec![
            plugin("first", &["input_node1"]),
            plugin("second", &["first", "input_node2"]),
            plugin("third", &["first", "second"]),
            plugin("fourth", &["first", "third"]),
            plugin("fifth", &["fourth"]),
        ]
    };
    assert_eq!(
        order(vec![input("input_node1"), input("input_node2")], nodes()),
        ["first", "second", "third", "fourth", "fifth"]
    );
    let mut second_free = nodes();
    second_free[1] = plugin("second", &[]);
    assert_eq!(
        order(vec![input("input_node1")], second_free),
        ["second", "first", "third", "fourth", "fifth"]
    );
    let third = vec![
        plugin("input_node", &[]),
        plugin("first", &["input_node"]),
        plugin("second", &[]),
        plugin("third", &[]),
        plugin("fourth", &["first", "third"]),
        plugin("fifth", &["fourth"]),
    ];
    assert_eq!(
        order(vec![], third),
        ["input_node", "second", "third", "first", "fourth", "fifth"]
    );
}

#[test]
fn order_does_not_depend_on_declaration_order() {
    let mut nodes = vec![
        plugin("c", &["a"]),
        plugin("b", &["a"]),
        plugin("a", &[]),
        plugin("d", &["b", "c"]),
    ];
    let expected = order(vec![], nodes.clone());
    assert_eq!(expected, ["a", "b", "c", "d"]);
    nodes.reverse();
    assert_eq!(order(vec![], nodes), expected);
}

fn errors(incoming: Vec<NodeSpec>, nodes: Vec<NodeSpec>) -> Diagnostics {
    Helix::build(incoming, nodes).expect_err("the helix must be refused")
}

#[test]
fn spec_cycle_is_reported_with_its_path() {
    let d = errors(
        vec![input("input_node1")],
        vec![
            plugin("first", &["input_node1"]),
            plugin("second", &["first"]),
            plugin("third", &["first", "second", "third"]),
        ],
    );
    assert_eq!(d.codes(), [Code::CYCLE]);
    let e = &d.0[0];
    assert_eq!(e.nucleotide, "third");
    assert!(e.message.contains("`third` -> `third`"), "{e}");
    let d = errors(
        vec![],
        vec![
            plugin("a", &["c"]),
            plugin("b", &["a"]),
            plugin("c", &["b"]),
            plugin("after", &["c"]),
            plugin("x", &["y"]),
            plugin("y", &["x"]),
        ],
    );
    let messages: Vec<&str> = d.0.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "nucleotides form a cycle: `a` -> `b` -> `c` -> `a`",
            "nucleotides form a cycle: `x` -> `y` -> `x`"
        ]
    );
}

#[test]
fn spec_missing_required_keys_unless_dynamic() {
    let n3 = NodeSpec::new("n3", Kind::ModelPlugin, sig(&[], &["w"]));
    let n4 = NodeSpec::new("n4", Kind::ModelPlugin, sig(&["y", "z", "w"], &[])).inbound(["n3"]);
    let d = errors(vec![], vec![n3.clone(), n4.clone()]);
    assert_eq!(d.codes(), [Code::MISSING_KEY, Code::MISSING_KEY]);
    let keys: Vec<_> = d.0.iter().map(|e| e.key.clone().unwrap()).collect();
    assert_eq!(keys, ["y", "z"]);
    assert!(d.0[0].message.contains("nucleotide `n4`"), "{}", d.0[0]);
    assert!(
        d.0[0].message.contains("inbound nodes generate: `w`"),
        "{}",
        d.0[0]
    );
    let mut dynamic = n3;
    dynamic.signature = dynamic.signature.with_dynamic_generated();
    assert!(Helix::build(vec![], vec![dynamic, n4]).is_ok());
}

#[test]
fn missing_key_suggests_the_mapping_that_fixes_it() {
    let logits = NodeSpec::new("net", Kind::ModelPlugin, sig(&[], &["logits", "probs"]))
        .file("training/configs/plugins/net.json");
    let loss = NodeSpec::new(
        "ce_loss",
        Kind::ModelLoss,
        sig(&["prob", "labels"], &["loss"]),
    )
    .inbound(["net", "dataset"])
    .file("training/configs/losses/ce.json");
    let dataset = NodeSpec::new("dataset", Kind::Dataset, sig(&[], &["images", "label"]));
    let d = errors(vec![dataset], vec![logits, loss]);
    let text = d.to_string();
    assert_eq!(d.codes(), [Code::MISSING_KEY, Code::MISSING_KEY], "{text}");
    assert!(
        text.contains(
            "error[NC0003]: missing required incoming key `prob` for nucleotide `ce_loss`; \
         inbound nodes generate: `images`, `label`, `logits`, `probs`. Did you mean `probs`? \
         (training/configs/losses/ce.json)"
        ),
        "{text}"
    );
    assert!(text.contains(r#"{"net": {"probs": "prob"}}"#), "{text}");
    assert!(
        text.contains(r#"{"dataset": {"label": "labels"}}"#),
        "{text}"
    );
}

#[test]
fn mapped_keys_satisfy_incoming_keys() {
    let net = NodeSpec::new(
        "net",
        Kind::ModelPlugin,
        sig(&[], &["logits", "features:low"]),
    );
    let mapping =
        KeysMapping::from_json(&json!({"net": {"logits": "predictions", "features": "f"}}))
            .unwrap();
    let loss = NodeSpec::new("loss", Kind::ModelLoss, sig(&["predictions", "f:low"], &[]))
        .inbound(["net"])
        .mapping(mapping);
    let helix = Helix::build(vec![], vec![net, loss]).unwrap();
    assert!(helix.warnings().0.is_empty());
    let edges = helix.edge_keys();
    assert_eq!(
        edges[0].keys,
        [
            ("logits".to_string(), "predictions".to_string()),
            ("features:low".to_string(), "f:low".to_string())
        ]
    );
}

#[test]
fn an_optional_key_left_out_of_an_explicit_mapping_is_no_warning() {
    let net = NodeSpec::new("net", Kind::ModelPlugin, sig(&[], &["low", "high"]));
    let mapping = crate::mapping::KeysMapping::from_json(&serde_json::json!(
        {"net": {"low": "level0", "high": "level1"}}
    ))
    .unwrap();
    let neck = NodeSpec::new(
        "neck",
        Kind::ModelPlugin,
        sig(&["level0", "_level1", "_level2"], &["out"]),
    )
    .inbound(["net"])
    .mapping(mapping);
    let helix = Helix::build(vec![], vec![net, neck]).unwrap();
    assert_eq!(
        helix.warnings().warnings().count(),
        0,
        "{}",
        helix.warnings()
    );
}

#[test]
fn missing_optional_key_is_a_warning() {
    let net = NodeSpec::new("net", Kind::ModelPlugin, sig(&[], &["logits"]));
    let loss =
        NodeSpec::new("loss", Kind::ModelLoss, sig(&["logits", "_weights"], &[])).inbound(["net"]);
    let helix = Helix::build(vec![], vec![net, loss]).unwrap();
    let w: Vec<_> = helix.warnings().warnings().collect();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].code, Code::MISSING_OPTIONAL_KEY);
    assert_eq!(w[0].severity, Severity::Warning);
    assert!(
        w[0].message.contains("optional incoming key `weights`"),
        "{}",
        w[0]
    );
}

#[test]
fn spec_duplicate_names() {
    let d = errors(
        vec![input("dataset")],
        vec![
            plugin("net", &[]).file("plugins/a.json"),
            NodeSpec::new("net", Kind::ModelLoss, sig(&[], &[])).file("losses/b.json"),
            plugin("dataset", &[]),
        ],
    );
    assert_eq!(d.codes(), [Code::DUPLICATE_NAME, Code::DUPLICATE_NAME]);
    assert!(
        d.0[0]
            .message
            .contains("`net` is used twice; it is also a ModelPlugin in plugins/a.json"),
        "{}",
        d.0[0]
    );
    assert_eq!(d.0[0].file.as_deref(), Some("losses/b.json"));
    assert!(
        d.0[1].message.contains("an input of this handler"),
        "{}",
        d.0[1]
    );
}

#[test]
fn unknown_inbound_node_with_did_you_mean() {
    let d = errors(vec![input("dataset")], vec![plugin("net", &["datset"])]);
    assert_eq!(d.codes(), [Code::UNKNOWN_INBOUND]);
    let text = d.to_string();
    assert!(
        text.contains("unknown inbound node `datset` of nucleotide `net`; did you mean `dataset`?"),
        "{text}"
    );
    assert!(text.contains("`dataset`, `net`"), "{text}");
}

#[test]
fn spec_mapping_for_a_node_that_is_not_inbound() {
    let mapping =
        KeysMapping::from_json(&json!({"node4": {"a": "b"}, "node1": {"x": "y"}})).unwrap();
    let node = plugin("n", &["node1"]).mapping(mapping);
    let node1 = NodeSpec::new("node1", Kind::Dataset, sig(&[], &["x"]));
    let d = errors(vec![node1], vec![node]);
    assert_eq!(d.codes(), [Code::MAPPING_NOT_INBOUND]);
    assert!(d.0[0].message.contains("rules for `node4`"), "{}", d.0[0]);
    assert!(
        d.0[0].help.contains("add `node4` to `inbound_nodes`"),
        "{}",
        d.0[0]
    );
}

#[test]
fn spec_gene_dependencies() {
    let node = |name: &str, kind, inbound: &[&str]| {
        NodeSpec::new(name, kind, Signature::default()).inbound(inbound.iter().copied())
    };
    let base = || {
        vec![
            node("net", Kind::ModelPlugin, &["dataset"]),
            node("metric", Kind::ModelMetric, &["net"]),
            node("pp", Kind::ModelPostProcessor, &["net"]),
        ]
    };
    // ModelLoss <- ModelMetric: refused.
    let mut nodes = base();
    nodes.push(node("loss", Kind::ModelLoss, &["metric"]));
    let d = errors(vec![input("dataset")], nodes);
    assert_eq!(d.codes(), [Code::GENE_DEPENDENCY]);
    assert!(d.0[0].message.contains(
        "ModelLoss `loss` has inbound nucleotide `metric` of kind ModelMetric, which is not allowed"
    ), "{}", d.0[0]);
    assert!(
        d.0[0].help.contains("`ModelPlugin`, `ModelLoss`"),
        "{}",
        d.0[0]
    );
    // ModelSummary <- ModelLoss: fine; ModelPlugin <- dataset: fine.
    let mut nodes = base();
    nodes.push(node("loss", Kind::ModelLoss, &["net"]));
    nodes.push(node("summary", Kind::ModelSummary, &["loss", "metric"]));
    assert!(Helix::build(vec![input("dataset")], nodes).is_ok());
    // ModelPlugin <- ModelPostProcessor: refused.
    let mut nodes = base();
    nodes.push(node("net2", Kind::ModelPlugin, &["pp"]));
    assert_eq!(
        errors(vec![input("dataset")], nodes).codes(),
        [Code::GENE_DEPENDENCY]
    );
    // DataReader takes nothing from other nucleotides.
    let nodes = vec![
        node("r1", Kind::DataReader, &[]),
        node("r2", Kind::DataReader, &["r1"]),
    ];
    let d = errors(vec![], nodes);
    assert!(
        d.0[0].help.contains("only from the handler's inputs"),
        "{}",
        d.0[0]
    );
}

#[test]
fn bad_mapping_rules_are_errors() {
    let mapping = KeysMapping::from_json(&json!({"net": {"a:*:b": "x"}})).unwrap();
    let d = errors(
        vec![input("net")],
        vec![plugin("p", &["net"]).mapping(mapping)],
    );
    assert_eq!(d.codes(), [Code::BAD_MAPPING]);
    assert!(
        d.0[0].message.contains("nucleotide `p`") && d.0[0].message.contains("`a:*:b`"),
        "{}",
        d.0[0]
    );
}

#[test]
fn all_problems_are_reported_in_one_build() {
    let d = errors(
        vec![input("dataset")],
        vec![
            plugin("a", &["missing"]),
            plugin("a", &[]),
            plugin("c", &["c"]),
            NodeSpec::new("l", Kind::ModelLoss, sig(&["x"], &[])).inbound(["dataset"]),
        ],
    );
    let mut codes = d.codes();
    codes.sort();
    assert_eq!(
        codes,
        [
            Code::DUPLICATE_NAME,
            Code::UNKNOWN_INBOUND,
            Code::MISSING_KEY,
            Code::CYCLE
        ]
    );
}

#[test]
fn dot_shows_kinds_and_keys() {
    let net =
        NodeSpec::new("net", Kind::ModelPlugin, sig(&["images"], &["logits"])).inbound(["dataset"]);
    let mapping = KeysMapping::from_json(&json!({"net": {"logits": "predictions"}})).unwrap();
    let loss = NodeSpec::new(
        "loss",
        Kind::ModelLoss,
        sig(&["predictions", "labels"], &["loss"]),
    )
    .inbound(["net", "dataset"])
    .mapping(mapping);
    let dataset = NodeSpec::new("dataset", Kind::Dataset, sig(&[], &["images", "labels"]));
    let helix = Helix::build(vec![dataset], vec![loss, net]).unwrap();
    let dot = helix.to_dot();
    assert!(dot.starts_with("digraph helix {"), "{dot}");
    assert!(
        dot.contains(r##""net" [label="net\nModelPlugin", fillcolor="#8ecae6"];"##),
        "{dot}"
    );
    assert!(
        dot.contains(r#""net" -> "loss" [label="logits → predictions"];"#),
        "{dot}"
    );
    assert!(
        dot.contains(r#""dataset" -> "loss" [label="labels"];"#),
        "{dot}"
    );
    assert!(
        dot.contains(r#""dataset" -> "net" [label="images"];"#),
        "{dot}"
    );
}

/// A node with typed keys: `(name, kind)` pairs for what it takes and what it generates.
fn typed(
    name: &str,
    inbound: &[&str],
    incoming: &[(&str, ValueKind)],
    generated: &[(&str, ValueKind)],
) -> NodeSpec {
    let keys = |ks: &[(&str, ValueKind)]| -> Vec<KeySpec> {
        ks.iter()
            .map(|(k, kind)| KeySpec::required(k.to_string()).with_kind(*kind))
            .collect()
    };
    let signature = Signature {
        incoming: keys(incoming).into(),
        generated: keys(generated).into(),
        dynamic_incoming: false,
        dynamic_generated: false,
    };
    NodeSpec::new(name, Kind::ModelPlugin, signature).inbound(inbound.iter().copied())
}

#[test]
fn tensor_dtypes_and_ranks_must_agree_on_every_edge() {
    let source = |kind| typed("src", &[], &[], &[("x", kind)]);
    let sink = |kind| typed("sink", &["src"], &[("x", kind)], &[]);
    let any_rank = ValueKind::Tensor {
        dtype: TensorDtype::Float,
        rank: None,
    };
    // (generated, taken, fits)
    let cases = [
        (ValueKind::float(2), ValueKind::float(2), true),
        (ValueKind::int(1), ValueKind::float(2), false),
        (ValueKind::float(1), ValueKind::float(2), false),
        (ValueKind::int(2), ValueKind::float(2), false),
        (ValueKind::bool(1), ValueKind::int(1), false),
        (any_rank, ValueKind::float(3), true),
        (ValueKind::float(3), any_rank, true),
        (ValueKind::Any, ValueKind::float(2), true),
        (ValueKind::float(2), ValueKind::Any, true),
        (ValueKind::Str, ValueKind::float(1), false),
        (ValueKind::Float, ValueKind::float(1), true),
        (ValueKind::Nested, ValueKind::float(1), true),
    ];
    for (gives, wants, fits) in cases {
        let built = Helix::build(vec![], vec![source(gives), sink(wants)]);
        match (built, fits) {
            (Ok(_), true) => {}
            (Err(d), false) => {
                assert_eq!(d.codes(), [Code::KEY_KIND], "{d}");
                let text = d.to_string();
                assert!(
                    text.contains(&format!(
                        "incoming key `x` of nucleotide `sink` takes a {wants}, but `src` generates it as {gives}"
                    )),
                    "{text}"
                );
            }
            (Ok(_), false) => panic!("{gives} into {wants} must be refused"),
            (Err(d), true) => panic!("{gives} into {wants} must be taken: {d}"),
        }
    }
    // Through a mapping rule, the message names the generated key.
    let mapping = KeysMapping::from_json(&json!({"src": {"labels": "x"}})).unwrap();
    let d = errors(
        vec![],
        vec![
            typed("src", &[], &[], &[("labels", ValueKind::int(1))]),
            typed("sink", &["src"], &[("x", ValueKind::float(2))], &[]).mapping(mapping),
        ],
    );
    assert!(
        d.to_string()
            .contains("it is mapped from `src`'s `labels`, a int tensor of rank 1"),
        "{d}"
    );
}

#[test]
fn a_mapping_rule_for_a_key_never_generated_is_a_warning() {
    let mapping = KeysMapping::from_json(&json!({"src": {"logit": "y"}})).unwrap();
    let helix = Helix::build(
        vec![],
        vec![
            typed(
                "src",
                &[],
                &[],
                &[("logits", ValueKind::Any), ("x", ValueKind::Any)],
            ),
            typed("sink", &["src"], &[("x", ValueKind::Any)], &[]).mapping(mapping),
        ],
    )
    .unwrap();
    let w = helix.warnings();
    assert_eq!(w.codes(), [Code::MAPPING_UNUSED_KEY], "{w}");
    assert_eq!(w.0[0].severity, Severity::Warning);
    assert!(
        w.to_string()
            .contains("maps `logit` of `src`, which `src` never generates; did you mean `logits`?"),
        "{w}"
    );
    // A node whose keys are dynamic may generate anything.
    let mapping = KeysMapping::from_json(&json!({"src": {"anything": "x"}})).unwrap();
    let mut src = typed("src", &[], &[], &[]);
    src.signature.dynamic_generated = true;
    let helix = Helix::build(
        vec![],
        vec![
            src,
            typed("sink", &["src"], &[("x", ValueKind::Any)], &[]).mapping(mapping),
        ],
    )
    .unwrap();
    assert!(helix.warnings().0.is_empty());
}
