//! The first batch checked against the saved model's signature.

use super::*;

/// Compares the first batch with the saved model's inputs: every key both have must agree in
/// kind, dtype and the sizes the model was exported with; and they must share a key. Integers
/// of any width fit: each backend holds them in its own (Flex `I32`, NdArray `I64`), so a
/// model exported on one runs on the other.
pub(super) fn check_signature<B: Backend>(
    inputs: &[Value],
    batch: &Nest<B>,
    model_dir: &Path,
) -> Result<(), String> {
    let given = describe(batch);
    let key = |v: &Value| {
        v.get("key")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let show = |v: &Value| {
        let mut s = format!(
            "`{}` {}",
            key(v),
            v.get("kind").and_then(Value::as_str).unwrap_or("?")
        );
        if let Some(d) = v.get("dtype").and_then(Value::as_str) {
            s.push_str(&format!(" {d}"));
        }
        if let Some(shape) = v.get("shape").and_then(Value::as_array) {
            let dims: Vec<String> = shape
                .iter()
                .map(|d| d.as_u64().map_or("_".to_owned(), |d| d.to_string()))
                .collect();
            s.push_str(&format!(" [{}]", dims.join(", ")));
        }
        s
    };
    let fits = |saved: &Value, got: &Value| {
        let same = |field: &str| saved.get(field) == got.get(field);
        let shapes = match (
            saved.get("shape").and_then(Value::as_array),
            got.get("shape").and_then(Value::as_array),
        ) {
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| x.is_null() || y.is_null() || x == y)
            }
            (a, b) => a.is_none() && b.is_none(),
        };
        let int = saved.get("kind").and_then(Value::as_str) == Some("int");
        same("kind") && (same("dtype") || int) && shapes
    };
    let mut problems = Vec::new();
    let mut shared = 0;
    for saved in inputs {
        if let Some(got) = given.iter().find(|g| key(g) == key(saved)) {
            shared += 1;
            if !fits(saved, got) {
                problems.push(format!(
                    "key `{}`: the model was exported with {}, the data feeder gives {}",
                    key(saved),
                    show(saved),
                    show(got)
                ));
            }
        }
    }
    if shared == 0 && !inputs.is_empty() {
        problems.push("the data feeder gives none of the keys the model was exported with".into());
    }
    if problems.is_empty() {
        return Ok(());
    }
    let list = |vs: &[Value]| vs.iter().map(show).collect::<Vec<_>>().join(", ");
    Err(format!(
        "the data feeder's samples do not fit the saved model {}:\n  {}\n  the saved model's inputs: {}\n  the data feeder gives:     {}",
        model_dir.display(),
        problems.join("\n  "),
        list(inputs),
        list(&given)
    ))
}
