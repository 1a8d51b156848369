//! Round trips through the code `#[derive(Incoming)]` and `#[derive(Generated)]` generate.

use burn::backend::NdArray;
use burn::prelude::Backend;
use burn::tensor::{Int, Tensor};
use nc7_core::glue::At;
use nc7_core::{Generated, Incoming, Keys, Nest, Signature, ValueKind};
use serde_json::json;

type B = NdArray;

#[derive(Incoming, Debug)]
struct Inputs<B: Backend> {
    /// Input images, NCHW.
    images: Tensor<B, 4>,
    /// Where the images are valid.
    ///
    /// Only the first paragraph becomes the doc line.
    mask: Option<Tensor<B, 4>>,
    #[nc7(rename = "class-ids")]
    labels: Tensor<B, 1, Int>,
}

#[derive(Generated, Debug)]
struct Pyramid<B: Backend> {
    low: Tensor<B, 4>,
    high: Option<Tensor<B, 4>>,
}

#[derive(Generated, Debug)]
struct Outputs<B: Backend> {
    logits: Tensor<B, 2>,
    features: Pyramid<B>,
    name: String,
    scores: Vec<f64>,
}

#[derive(Incoming, Debug, PartialEq)]
struct Settings {
    threshold: f64,
    count: i32,
    verbose: Option<bool>,
}

#[derive(Incoming, Debug)]
struct Dynamic<B: Backend> {
    required: f64,
    rest: Nest<B>,
}

fn nest(v: serde_json::Value) -> Nest<B> {
    Nest::from_json(&v).unwrap()
}

#[test]
fn keys_are_const_data_from_field_types() {
    const KEYS: &[nc7_core::KeySpec] = <Inputs<B> as Keys<B>>::KEYS;
    let names: Vec<&str> = KEYS.iter().map(|k| k.name.as_ref()).collect();
    assert_eq!(names, ["images", "mask", "class-ids"]);
    assert_eq!(KEYS[0].kind, ValueKind::float(4));
    assert!(!KEYS[0].optional && KEYS[1].optional);
    assert_eq!(KEYS[2].kind, ValueKind::int(1));
    assert_eq!(KEYS[0].doc, "Input images, NCHW.");
    assert_eq!(KEYS[1].doc, "Where the images are valid.");
    const { assert!(!<Inputs<B> as Keys<B>>::DYNAMIC) };
    const { assert!(<Dynamic<B> as Keys<B>>::DYNAMIC) };
    let sig = Signature::from_keys(
        <Inputs<B> as Keys<B>>::KEYS,
        false,
        <Outputs<B> as Keys<B>>::KEYS,
        false,
    );
    let generated: Vec<&str> = sig.generated.iter().map(|k| k.name.as_ref()).collect();
    assert_eq!(
        generated,
        ["logits", "features:low", "features:high", "name", "scores"]
    );
    assert_eq!(sig.generated[4].kind, ValueKind::List);
}

#[test]
fn round_trip_with_optional_nested_and_renamed_keys() {
    let device = Default::default();
    let mut input = Nest::<B>::map();
    input
        .insert("images", Tensor::<B, 4>::ones([1, 1, 2, 2], &device).into())
        .unwrap();
    input
        .insert(
            "class-ids",
            Tensor::<B, 1, Int>::from_ints([3], &device).into(),
        )
        .unwrap();
    input.insert("unused", Nest::Int(1)).unwrap();
    let typed = Inputs::<B>::from_nest(input, &At::nucleotide("unet")).unwrap();
    assert!(typed.mask.is_none());
    assert_eq!(typed.labels.into_data().to_vec::<i64>().unwrap(), [3]);

    let out = Outputs::<B> {
        logits: Tensor::zeros([1, 3], &device),
        features: Pyramid {
            low: Tensor::zeros([1, 1, 4, 4], &device),
            high: None,
        },
        name: "x".into(),
        scores: vec![0.5, 1.5],
    };
    let n = out.into_nest();
    assert!(n.get("features:low").is_some());
    assert!(
        n.get("features:high").is_none(),
        "absent optional keys are left out"
    );
    assert_eq!(n.get("scores"), Some(&nest(json!([0.5, 1.5]))));
    let back = Outputs::<B>::from_nest(n, &At::nucleotide("unet")).unwrap();
    assert_eq!(back.features.low.dims(), [1, 1, 4, 4]);
    assert_eq!(back.scores, [0.5, 1.5]);

    let s = Settings {
        threshold: 0.5,
        count: 3,
        verbose: Some(true),
    };
    let n: Nest<B> = Keys::<B>::into_nest(s);
    assert_eq!(
        n.to_json().unwrap(),
        json!({"threshold": 0.5, "count": 3, "verbose": true})
    );
    assert_eq!(
        <Settings as Keys<B>>::from_nest(n, &At::nucleotide("s")).unwrap(),
        Settings {
            threshold: 0.5,
            count: 3,
            verbose: Some(true)
        }
    );
}

#[test]
fn dynamic_fields_take_every_other_key() {
    let d = Dynamic::<B>::from_nest(
        nest(json!({"required": 1.0, "a": 1, "b": {"c": 2}})),
        &At::nucleotide("d"),
    )
    .unwrap();
    assert_eq!(d.rest.to_json().unwrap(), json!({"a": 1, "b": {"c": 2}}));
    assert_eq!(
        d.into_nest().to_json().unwrap(),
        json!({"required": 1.0, "a": 1, "b": {"c": 2}})
    );
    // The dynamic field names no key of its own: the helix must not ask for a key `rest`.
    let sig = nc7_core::glue::signature_of::<B, Dynamic<B>, nc7_core::NoKeys>();
    let names: Vec<&str> = sig.incoming.iter().map(|k| k.name.as_ref()).collect();
    assert_eq!(names, ["required"]);
    assert!(sig.dynamic_incoming);
}

#[test]
fn mismatches_name_nucleotide_key_and_kinds() {
    let device = Default::default();
    let at = At::nucleotide("unet");
    let mut input = Nest::<B>::map();
    input
        .insert(
            "images",
            Tensor::<B, 3, Int>::zeros([1, 2, 2], &device).into(),
        )
        .unwrap();
    input
        .insert("class-ids", Tensor::<B, 1, Int>::zeros([1], &device).into())
        .unwrap();
    let err = Inputs::<B>::from_nest(input, &at).unwrap_err().to_string();
    assert_eq!(
        err,
        "key `images` of nucleotide `unet`: expected float tensor of rank 4, got int tensor of rank 3"
    );

    let err = <Settings as Keys<B>>::from_nest(nest(json!({"threshold": 1.0, "cont": 3})), &at)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "missing required key `count` for nucleotide `unet`; present: `cont`; did you mean `cont`?"
    );

    let err = Outputs::<B>::from_nest(nest(json!({"logits": 1})), &at)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("key `logits`") && err.contains("expected float tensor of rank 2, got int"),
        "{err}"
    );

    let err = <Settings as Keys<B>>::from_nest(
        nest(json!({"threshold": 1.0, "count": 1, "verbose": "yes"})),
        &at,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "key `verbose` of nucleotide `unet`: expected bool, got string"
    );

    let err = <Settings as Keys<B>>::from_nest(
        nest(json!({"threshold": 1.0, "count": 5_000_000_000i64})),
        &at,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("key `count`"), "{err}");

    let mut bad = Nest::<B>::map();
    bad.insert("features", Nest::Int(1)).unwrap();
    bad.insert("logits", Tensor::<B, 2>::zeros([1, 1], &device).into())
        .unwrap();
    let err = Outputs::<B>::from_nest(bad, &at).unwrap_err().to_string();
    assert_eq!(
        err,
        "key `features` of nucleotide `unet`: expected a map of keys, got int"
    );

    let err = Settings::from_nest(Nest::<B>::Int(3), &at)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "inputs of nucleotide `unet`: expected a map of keys, got int"
    );
}
