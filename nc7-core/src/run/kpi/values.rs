//! What an evaluation gives: each accumulator's KPIs, as JSON for the savers and as scalars
//! named `kpi/<accumulator>/<key>` for summaries, `eval_result.json` and monitors.

use std::collections::BTreeMap;

use burn::tensor::TensorData;
use serde_json::Value;

use crate::backend::Cpu;
use crate::nest::{AnyTensor, Nest, TensorDtype};

/// Vectors up to this length are also given as one scalar per element (`kpi/a/f1/2`).
pub const MAX_SCALAR_ELEMENTS: usize = 64;

/// The KPIs of one evaluation.
#[derive(Debug, Clone, Default)]
pub struct KpiValues {
    /// Each accumulator's last evaluation.
    pub by_accumulator: BTreeMap<String, Nest<Cpu>>,
    /// How many times each KPI nucleotide computed its values (restored ones left out).
    pub computed: BTreeMap<String, u64>,
    /// Samples evaluated.
    pub samples: u64,
}

impl KpiValues {
    /// Every number among the KPIs by its name, `kpi/<accumulator>/<key>` (nested keys joined by
    /// `/`); a vector of up to [`MAX_SCALAR_ELEMENTS`] numbers gives one per element,
    /// `kpi/<accumulator>/<key>/<i>`. Images and larger tensors are left out; values that are not
    /// numbers stay NaN.
    pub fn scalars(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (acc, nest) in &self.by_accumulator {
            for (key, value) in nest.flatten() {
                if key.split(':').any(|k| k.starts_with("image_")) {
                    continue;
                }
                let tag = format!("kpi/{acc}/{}", key.replace(':', "/"));
                match value {
                    Nest::Float(v) => {
                        out.insert(tag, *v);
                    }
                    Nest::Int(v) => {
                        out.insert(tag, *v as f64);
                    }
                    Nest::Bool(v) => {
                        out.insert(tag, f64::from(u8::from(*v)));
                    }
                    Nest::Tensor(t) => {
                        let n = t.shape().num_elements();
                        let Ok(values) = tensor_f64(t) else { continue };
                        if n == 1 {
                            out.insert(tag, values[0]);
                        } else if t.rank() == 1 && n <= MAX_SCALAR_ELEMENTS {
                            for (i, v) in values.into_iter().enumerate() {
                                out.insert(format!("{tag}/{i}"), v);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Every image among the KPIs: `(kpi/<accumulator>/<name>, image)` for each key
    /// `image_<name>`.
    pub fn images(&self) -> Vec<(String, AnyTensor<Cpu>)> {
        self.by_accumulator
            .iter()
            .flat_map(|(acc, nest)| {
                kpi_images(nest)
                    .into_iter()
                    .map(move |(key, t)| (format!("kpi/{acc}/{key}"), t))
            })
            .collect()
    }
}

/// Whether a KPI name is one element of a vector (`kpi/classification/f1/2`): logs leave those
/// out, summaries and `eval_result.json` keep them.
pub(crate) fn is_element(name: &str) -> bool {
    name.starts_with("kpi/")
        && name
            .rsplit('/')
            .next()
            .is_some_and(|last| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

/// The images of one KPI nest: `(name, tensor)` for each key `image_<name>`.
pub(crate) fn kpi_images(nest: &Nest<Cpu>) -> Vec<(String, AnyTensor<Cpu>)> {
    nest.flatten()
        .into_iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix("image_")?;
            match value {
                Nest::Tensor(t) => Some((name.replace(':', "-"), t.clone())),
                _ => None,
            }
        })
        .collect()
}

fn tensor_f64(t: &AnyTensor<Cpu>) -> Result<Vec<f64>, String> {
    let data = t.clone().into_data().map_err(|e| e.to_string())?;
    if t.kind() == TensorDtype::Bool {
        let b = data.to_vec::<bool>().map_err(|e| format!("{e:?}"))?;
        return Ok(b.into_iter().map(|b| f64::from(u8::from(b))).collect());
    }
    data.convert::<f64>()
        .to_vec::<f64>()
        .map_err(|e| format!("{e:?}"))
}

/// A KPI nest as JSON: tensors as nested arrays, images left out (the savers write them as
/// PNG). A value that is not a finite number is `null`, with a warning naming it; `what` names
/// the KPI nucleotide in the warning.
pub fn kpi_json(nest: &Nest<Cpu>, what: &str) -> Value {
    json_at(nest, what, "")
}

fn json_at(nest: &Nest<Cpu>, what: &str, path: &str) -> Value {
    let child = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}:{k}")
        }
    };
    match nest {
        Nest::Map(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with("image_"))
                .map(|(k, v)| (k.clone(), json_at(v, what, &child(k))))
                .collect(),
        ),
        Nest::List(l) => Value::Array(
            l.iter()
                .enumerate()
                .map(|(i, v)| json_at(v, what, &child(&i.to_string())))
                .collect(),
        ),
        Nest::Float(v) => number(*v, what, path),
        Nest::Int(v) => Value::from(*v),
        Nest::Bool(v) => Value::Bool(*v),
        Nest::Str(s) => Value::String(s.clone()),
        Nest::Tensor(t) => {
            let shape = t.shape().to_vec();
            let data = match t.clone().into_data() {
                Ok(d) => d,
                Err(e) => return Value::String(format!("<unreadable: {e}>")),
            };
            let flat: Vec<Value> = match t.kind() {
                TensorDtype::Bool => data
                    .to_vec::<bool>()
                    .unwrap_or_default()
                    .into_iter()
                    .map(Value::Bool)
                    .collect(),
                TensorDtype::Int => ints(&data).into_iter().map(Value::from).collect(),
                TensorDtype::Float => {
                    let floats = data.convert::<f64>().to_vec::<f64>().unwrap_or_default();
                    let bad = floats.iter().filter(|v| !v.is_finite()).count();
                    if bad > 0 {
                        log::warn!(
                            "KPI `{path}` of `{what}` has {bad} value{} that {} not a number; saved as null",
                            if bad == 1 { "" } else { "s" },
                            if bad == 1 { "is" } else { "are" },
                        );
                    }
                    floats
                        .into_iter()
                        .map(|v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
                        .collect()
                }
            };
            nested(&flat, &shape)
        }
    }
}

fn ints(data: &TensorData) -> Vec<i64> {
    data.clone()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap_or_default()
}

fn number(v: f64, what: &str, path: &str) -> Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None => {
            log::warn!("KPI `{path}` of `{what}` is {v}, not a number; saved as null");
            Value::Null
        }
    }
}

/// Values in row-major order as arrays nested by `shape`.
fn nested(flat: &[Value], shape: &[usize]) -> Value {
    match shape {
        [] => flat.first().cloned().unwrap_or(Value::Null),
        [_] => Value::Array(flat.to_vec()),
        [n, rest @ ..] => {
            let size: usize = rest.iter().product();
            Value::Array(
                (0..*n)
                    .map(|i| nested(&flat[i * size..(i + 1) * size], rest))
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tensor(data: TensorData) -> Nest<Cpu> {
        Nest::Tensor(AnyTensor::from_data(data, &Default::default()))
    }

    #[test]
    fn kpis_become_json_and_scalars() {
        let mut kpi = Nest::<Cpu>::map();
        kpi.insert("accuracy", Nest::Float(0.75)).unwrap();
        kpi.insert("f1", tensor(TensorData::new(vec![0.5f32, f32::NAN], [2])))
            .unwrap();
        kpi.insert("cm", tensor(TensorData::new(vec![1i64, 2, 3, 4], [2, 2])))
            .unwrap();
        kpi.insert(
            "image_cm",
            tensor(TensorData::new(vec![0f32; 12], [3, 2, 2])),
        )
        .unwrap();
        kpi.insert("nested:count", Nest::Int(3)).unwrap();
        assert_eq!(
            kpi_json(&kpi, "acc"),
            json!({"accuracy": 0.75, "f1": [0.5, null], "cm": [[1, 2], [3, 4]], "nested": {"count": 3}})
        );
        let values = KpiValues {
            by_accumulator: [("acc".to_string(), kpi)].into_iter().collect(),
            ..KpiValues::default()
        };
        let scalars = values.scalars();
        assert_eq!(
            scalars.keys().collect::<Vec<_>>(),
            [
                "kpi/acc/accuracy",
                "kpi/acc/f1/0",
                "kpi/acc/f1/1",
                "kpi/acc/nested/count"
            ]
        );
        assert!(scalars["kpi/acc/f1/1"].is_nan());
        assert_eq!(values.images().len(), 1);
        assert_eq!(values.images()[0].0, "kpi/acc/cm");
    }
}
