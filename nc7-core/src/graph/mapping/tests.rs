//! nucleus7's key-mapping cases (spec §2) as a table, plus property tests.

use super::*;
use burn::backend::NdArray;
use proptest::prelude::*;
use serde_json::{Value, json};

type N = Nest<NdArray>;

fn nest(v: &Value) -> N {
    N::from_json(v).unwrap()
}

/// Runs inputs `[{..}, {..}]` with per-node mappings `[{..}, {..}]` through a plan whose
/// inbound nodes are `n0`, `n1`, ... and which accepts every key.
fn route(inputs: Value, mappings: Value) -> Result<Value, MappingError> {
    let inputs: Vec<N> = inputs.as_array().unwrap().iter().map(nest).collect();
    let names: Vec<String> = (0..inputs.len()).map(|i| format!("n{i}")).collect();
    let mut per_node = serde_json::Map::new();
    for (name, m) in names.iter().zip(mappings.as_array().unwrap()) {
        per_node.insert(name.clone(), m.clone());
    }
    let mapping = KeysMapping::from_json(&Value::Object(per_node)).unwrap();
    let plan = RoutePlan::compile(&names, &mapping, None).unwrap();
    let refs: Vec<Option<&N>> = inputs.iter().map(Some).collect();
    Ok(plan.route(&refs)?.unwrap().to_json().unwrap())
}

#[test]
fn spec_remap_and_collapse_table() {
    let cases = [
        (
            json!([{"a": [1], "b": 2}, {"a": 3, "c": 4}]),
            json!([{}, {"a": "d"}]),
            json!({"a": [1], "b": 2, "c": 4, "d": 3}),
        ),
        (
            json!([{"a": [1], "b": 2}, {"a": 3, "c": 4}]),
            json!([{}, {"a": "_"}]),
            json!({"a": [1], "b": 2, "c": 4}),
        ),
        (
            json!([{"a": [1], "b": 2, "c": 10}, {"a": 3, "c": 4}]),
            json!([{"a": "alist:1", "b": "alist:2", "c": "dict:a"}, {"a": "alist:3", "c": "dict:c"}]),
            json!({"alist": [[1], 2, 3], "dict": {"a": 10, "c": 4}}),
        ),
        (
            json!([{"a": [1, 2, 3], "b": 2, "c": {"a": 5}}, {"a": 3, "c": 4}]),
            json!([{"a": "_", "a:0": "a", "c:a": "e"}, {"c": "e"}]),
            json!({"a": [1, 3], "b": 2, "e": [5, 4]}),
        ),
        (
            json!([{"a": [1, 2, 3], "b": 2, "c": {"a": 5}}, {"a": 3, "c": 4}]),
            json!([{"a": "d", "a:0": "a", "c:a": "e"}, {"c": "e"}]),
            json!({"a": [1, 3], "b": 2, "e": [5, 4], "d": [1, 2, 3]}),
        ),
        (
            json!([{"a": [1, 2, 3], "ab": 2, "c": {"a": 5}}, {"a": 3, "c": 4}]),
            json!([{"a": "d", "a:0": "a", "c:a": "e"}, {"c": "e"}]),
            json!({"a": [1, 3], "ab": 2, "e": [5, 4], "d": [1, 2, 3]}),
        ),
        (
            json!([{"a": [1, 2, 3], "ab": 2, "c": {"a": 5}}, {"a": 3, "c": 4}]),
            json!([{"ab": "d", "*": "_"}, {"c": "d", "*": "_"}]),
            json!({"d": [2, 4]}),
        ),
        (
            json!([{"a": [1, 2, 3], "ab": 2, "c": {"a": 5}}, {"e": 3, "c": 4}]),
            json!([{"ab": "d", "*": "other"}, {"c": "d", "*": "other"}]),
            json!({"d": [2, 4], "other": {"a": [1, 2, 3], "c": {"a": 5}, "e": 3}}),
        ),
        (
            json!([{"a": [1, 2, 3], "ab": 2, "c": {"a": 5}, "d": {"e": {"f": 10, "k": 20}}}, {"e": 3, "c": 4}]),
            json!([{"ab": "d", "*": "_", "d:e:*": "other"}, {"c": "d", "*": "_"}]),
            json!({"d": [2, 4], "other": {"f": 10, "k": 20}}),
        ),
    ];
    for (i, (inputs, mappings, expected)) in cases.into_iter().enumerate() {
        let got = route(inputs.clone(), mappings.clone()).unwrap();
        assert_eq!(
            got, expected,
            "case {i}: inputs {inputs}, mappings {mappings}"
        );
    }
}

fn collapse_json(inputs: Value) -> Result<Value, MappingError> {
    let inputs: Vec<(&str, N)> = inputs
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, v)| (["n0", "n1", "n2"][i], nest(v)))
        .collect();
    Ok(collapse(inputs)?.to_json().unwrap())
}

#[test]
fn spec_collapse_table() {
    let cases = [
        (
            json!([{"a": [1], "b": 2}, {"a": 3, "c": 4}]),
            json!({"a": [[1], 3], "b": 2, "c": 4}),
        ),
        (
            json!([{"a": 1, "b": 2}, {"a": 3, "c": 4}]),
            json!({"a": [1, 3], "b": 2, "c": 4}),
        ),
        (
            json!([{"alist": [[1], 2], "dict": {"a": 10}}, {"alist": [3], "dict": {"c": 4}}]),
            json!({"alist": [[1], 2, 3], "dict": {"a": 10, "c": 4}}),
        ),
    ];
    for (inputs, expected) in cases {
        assert_eq!(collapse_json(inputs.clone()).unwrap(), expected, "{inputs}");
    }
}

#[test]
fn spec_collapse_errors_name_key_and_nodes() {
    let err = collapse_json(json!([{"a": [3, 4], "b": 4}, {"a": {"c": "d"}, "b": 6}]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`a`") && err.contains("`n0`, `n1`") && err.contains("list"),
        "{err}"
    );
    let err = collapse_json(json!([{"m": {"x": 1}}, {"m": {"x": 2}}]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`m:x`") && err.contains("both `n0` and `n1`") && err.contains("`_`"),
        "{err}"
    );
}

/// spec §2, "Nucleotide input filtering".
fn filtering_plan() -> RoutePlan {
    let mapping = KeysMapping::from_json(&json!({
        "node1": {"out11:out111": "inp11", "out12": "inp12"},
        "node2": {"out22:2": "inp22"}
    }))
    .unwrap();
    let inbound: Vec<String> = ["node1", "node2", "node3"].map(String::from).into();
    let accept = ["inp11", "inp12", "inp22", "out31"]
        .map(String::from)
        .into_iter()
        .collect();
    RoutePlan::compile(&inbound, &mapping, Some(accept)).unwrap()
}

#[test]
fn spec_input_filtering() {
    let plan = filtering_plan();
    let outputs = json!({
        "node1": {"out11": {"out111": "value11", "out112": "value112"}, "out12": "value12"},
        "node2": {"out21": "value21", "out22": ["value220", "value221", "value22", "value223"]},
        "node3": {"out31": "value31"},
        "node4": {"out41": "value41"}
    });
    let by_name = |n: &str| nest(&outputs[n]);
    let values: Vec<N> = plan.inbound().map(by_name).collect();
    let refs: Vec<Option<&N>> = values.iter().map(Some).collect();
    let got = plan.route(&refs).unwrap().unwrap().to_json().unwrap();
    assert_eq!(
        got,
        json!({"inp11": "value11", "inp12": "value12", "inp22": "value22", "out31": "value31"})
    );
    // An absent inbound output skips the nucleotide.
    let skipped = plan.route(&[refs[0], refs[1], None]).unwrap();
    assert!(skipped.is_none());
}

#[test]
fn spec_global_wildcard_applies_to_nodes_without_their_own() {
    let mapping =
        KeysMapping::from_json(&json!({"n0": {"a": "x"}, "n1": {"*": "kept"}, "*": "_"})).unwrap();
    let names = vec!["n0".to_string(), "n1".to_string()];
    let plan = RoutePlan::compile(&names, &mapping, None).unwrap();
    let (a, b) = (nest(&json!({"a": 1, "b": 2})), nest(&json!({"c": 3})));
    let got = plan
        .route(&[Some(&a), Some(&b)])
        .unwrap()
        .unwrap()
        .to_json()
        .unwrap();
    assert_eq!(got, json!({"x": 1, "kept": {"c": 3}}));
}

#[test]
fn rules_match_whole_levels_only() {
    let got = route(
        json!([{"a": 1, "ab": 2, "b": {"a": 3}}]),
        json!([{"a": "z"}]),
    )
    .unwrap();
    assert_eq!(got, json!({"z": 1, "ab": 2, "b": {"a": 3}}));
}

#[test]
fn nested_rule_maps_are_flattened() {
    let got = route(json!([{"c": {"a": 5, "b": 6}}]), json!([{"c": {"a": "e"}}])).unwrap();
    assert_eq!(got, json!({"e": 5, "c": {"b": 6}}));
}

#[test]
fn malformed_rules_are_reported_all_at_once() {
    let mapping = KeysMapping::from_json(&json!({
        "n0": {"a::b": "x", "a:*:c": "y", "q": "r:*", "ok": "fine", "e": ""}
    }))
    .unwrap();
    let errs = RoutePlan::compile(&["n0".into()], &mapping, None).unwrap_err();
    assert_eq!(errs.len(), 4, "{errs:?}");
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        text[0].contains("`a::b`") && text[0].contains("empty level"),
        "{}",
        text[0]
    );
    assert!(text[1].contains("last level"), "{}", text[1]);
    assert!(text[2].contains("cannot contain `*`"), "{}", text[2]);
    assert!(
        text[3].contains("`e`") && text[3].contains("`_` to drop"),
        "{}",
        text[3]
    );
    for bad in [
        json!("x"),
        json!({"n0": 3}),
        json!({"n0": {"a": 1}}),
        json!({"*": {"a": "b"}}),
    ] {
        let err = KeysMapping::from_json(&bad).unwrap_err().to_string();
        assert!(
            err.contains("expected") || err.contains("target"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn static_keys_follow_the_rules() {
    let plan = filtering_plan();
    let mapped = |i, keys: &[&str]| {
        plan.static_keys(i, keys.iter().copied())
            .into_iter()
            .map(|(_, m)| m)
            .collect::<Vec<_>>()
    };
    assert_eq!(mapped(0, &["out11", "out12"]), ["out11", "inp11", "inp12"]);
    // `out22` is a list whose element 2 is mapped: both the list and the element may exist.
    assert_eq!(mapped(1, &["out21", "out22"]), ["out21", "out22", "inp22"]);
    assert_eq!(mapped(2, &["out31"]), ["out31"]);
}

#[test]
fn tensors_are_routed_without_copies() {
    use burn::tensor::Tensor;
    let device = Default::default();
    let t = Tensor::<NdArray, 2>::ones([2, 2], &device);
    let mut input = N::map();
    input.insert("logits", t.clone().into()).unwrap();
    let mapping = KeysMapping::from_json(&json!({"n0": {"logits": "predictions"}})).unwrap();
    let plan = RoutePlan::compile(&["n0".into()], &mapping, None).unwrap();
    let out = plan.route(&[Some(&input)]).unwrap().unwrap();
    let routed: Tensor<NdArray, 2> = out
        .get("predictions")
        .unwrap()
        .clone()
        .into_tensor()
        .unwrap();
    assert_eq!(routed.to_data(), t.to_data());
}

fn arb_nest() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(|i| json!(i)),
        "[a-z]{1,3}".prop_map(|s| json!(s))
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]{1,2}", inner, 1..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .prop_map(|v| match v {
        Value::Object(_) => v,
        other => json!({"root": other}),
    })
}

proptest! {
    #[test]
    fn empty_mapping_with_one_node_is_identity(v in arb_nest()) {
        prop_assert_eq!(route(json!([v.clone()]), json!([{}])).unwrap(), v);
    }

    #[test]
    fn renaming_a_top_level_key_keeps_every_leaf(v in arb_nest()) {
        let first = v.as_object().unwrap().keys().next().unwrap().clone();
        let got = route(json!([v.clone()]), json!([{first.clone(): "renamed_key"}])).unwrap();
        let count = |v: &Value| nest(v).flatten().len();
        prop_assert_eq!(count(&got), count(&v));
        prop_assert_eq!(&got["renamed_key"], &v[&first]);
    }

    #[test]
    fn wildcard_nesting_keeps_every_leaf(v in arb_nest()) {
        let got = route(json!([v.clone()]), json!([{"*": "all"}])).unwrap();
        prop_assert_eq!(got, json!({"all": v}));
    }

    #[test]
    fn dropping_one_key_loses_only_that_key(v in arb_nest()) {
        let first = v.as_object().unwrap().keys().next().unwrap().clone();
        let got = route(json!([v.clone()]), json!([{first.clone(): "_"}])).unwrap();
        let mut expected = v.clone();
        expected.as_object_mut().unwrap().remove(&first);
        prop_assert_eq!(got, expected);
    }
}

/// Rule text as people mistype it: keys, `:` paths, `*` wildcards, `_` drops, brackets.
fn arb_rule() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z0-9_*:.\\[\\]{} -]{0,12}").unwrap()
}

proptest! {
    // Fuzzing (the reliability issue): any mapping text gives rules or an error, never a
    // panic, and routing with what compiles never panics either.
    #[test]
    fn any_mapping_text_compiles_or_is_refused(
        rules in proptest::collection::vec((arb_rule(), arb_rule()), 0..6),
        v in arb_nest(),
    ) {
        let mut mapping = serde_json::Map::new();
        for (from, to) in &rules {
            mapping.insert(from.clone(), Value::String(to.clone()));
        }
        let per_node = json!({"n0": Value::Object(mapping)});
        if let Ok(m) = KeysMapping::from_json(&per_node) {
            let _ = NodeRules::compile("n0", m.rules_for("n0"));
            if let Ok(plan) = RoutePlan::compile(&["n0".to_owned()], &m, None) {
                let input = nest(&v);
                let _ = plan.route(&[Some(&input)]);
            }
        }
    }

    #[test]
    fn any_json_as_a_mapping_is_taken_or_refused(v in arb_nest()) {
        let _ = KeysMapping::from_json(&v);
        let _ = KeysMapping::from_json(&json!({"n0": v}));
    }
}
