//! A batch split into its samples, on the CPU: what KPI plugins and accumulators take.

use std::collections::BTreeMap;

use burn::prelude::Backend;

use crate::backend::Cpu;
use crate::nest::{AnyTensor, Nest, TensorDtype};

/// Splits a batch of `n` samples into one nest per sample, on the CPU. A tensor whose first
/// dimension is `n` gives each sample its slice (an `[n]` tensor a scalar: float, int or
/// bool); a list of `n` items gives each sample its item; every other value (a scalar, a tensor
/// of another first dimension) is given whole to each sample.
pub fn split_samples<B: Backend>(
    nest: &Nest<B>,
    n: usize,
    device: &burn::tensor::Device<Cpu>,
) -> Result<Vec<Nest<Cpu>>, String> {
    Ok(match nest {
        Nest::Map(m) => {
            let mut out = vec![BTreeMap::new(); n];
            for (key, value) in m {
                let parts =
                    split_samples(value, n, device).map_err(|e| format!("key `{key}`: {e}"))?;
                for (sample, part) in out.iter_mut().zip(parts) {
                    sample.insert(key.clone(), part);
                }
            }
            out.into_iter().map(Nest::Map).collect()
        }
        Nest::List(items) if items.len() == n => items
            .iter()
            .map(|item| to_host(item, device))
            .collect::<Result<_, _>>()?,
        Nest::Tensor(t) if t.shape().to_vec().first() == Some(&n) => split_tensor(t, n, device)?,
        other => vec![to_host(other, device)?; n],
    })
}

fn split_tensor<B: Backend>(
    t: &AnyTensor<B>,
    n: usize,
    device: &burn::tensor::Device<Cpu>,
) -> Result<Vec<Nest<Cpu>>, String> {
    let kind = t.kind();
    let shape = t.shape().to_vec();
    let data = t.clone().into_data().map_err(|e| e.to_string())?;
    if shape.len() == 1 {
        return Ok(match kind {
            TensorDtype::Float => data
                .convert::<f64>()
                .to_vec::<f64>()
                .map_err(|e| format!("{e:?}"))?
                .into_iter()
                .map(Nest::Float)
                .collect(),
            TensorDtype::Int => data
                .convert::<i64>()
                .to_vec::<i64>()
                .map_err(|e| format!("{e:?}"))?
                .into_iter()
                .map(Nest::Int)
                .collect(),
            TensorDtype::Bool => data
                .to_vec::<bool>()
                .map_err(|e| format!("{e:?}"))?
                .into_iter()
                .map(Nest::Bool)
                .collect(),
        });
    }
    Ok(crate::callbacks::split_rows(&data, n)
        .into_iter()
        .map(|row| Nest::Tensor(AnyTensor::from_data(row, device)))
        .collect())
}

/// A nest's values on the CPU.
fn to_host<B: Backend>(
    nest: &Nest<B>,
    device: &burn::tensor::Device<Cpu>,
) -> Result<Nest<Cpu>, String> {
    Ok(match nest {
        Nest::Map(m) => Nest::Map(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), to_host(v, device)?)))
                .collect::<Result<_, String>>()?,
        ),
        Nest::List(l) => Nest::List(
            l.iter()
                .map(|v| to_host(v, device))
                .collect::<Result<_, _>>()?,
        ),
        Nest::Tensor(t) => Nest::Tensor(AnyTensor::from_data(
            t.clone().into_data().map_err(|e| e.to_string())?,
            device,
        )),
        Nest::Float(v) => Nest::Float(*v),
        Nest::Int(v) => Nest::Int(*v),
        Nest::Bool(v) => Nest::Bool(*v),
        Nest::Str(s) => Nest::Str(s.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn batches_split_into_samples_on_the_cpu() {
        let d = Default::default();
        let t = |data: TensorData| Nest::<Cpu>::Tensor(AnyTensor::from_data(data, &d));
        let mut batch = Nest::<Cpu>::map();
        batch
            .insert("x", t(TensorData::new(vec![1f32, 2., 3., 4.], [2, 2])))
            .unwrap();
        batch
            .insert("class", t(TensorData::new(vec![3i64, 5], [2])))
            .unwrap();
        batch
            .insert("table", t(TensorData::new(vec![9f32; 3], [3])))
            .unwrap();
        batch
            .insert(
                "name",
                Nest::List(vec![Nest::Str("a".into()), Nest::Str("b".into())]),
            )
            .unwrap();
        batch.insert("step", Nest::Int(7)).unwrap();
        let samples = split_samples(&batch, 2, &d).unwrap();
        assert_eq!(samples.len(), 2);
        let second = &samples[1];
        let x: burn::tensor::Tensor<Cpu, 1> =
            second.get("x").unwrap().clone().into_tensor().unwrap();
        assert_eq!(x.to_data().to_vec::<f32>().unwrap(), [3.0, 4.0]);
        assert_eq!(second.get("class"), Some(&Nest::Int(5)));
        assert_eq!(second.get("name"), Some(&Nest::Str("b".into())));
        assert_eq!(second.get("step"), Some(&Nest::Int(7)));
        let table = second.get("table").unwrap().as_tensor().unwrap();
        assert_eq!(table.shape().to_vec(), [3]);
    }
}
