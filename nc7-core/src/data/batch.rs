//! Batching: samples (nests of the same keys) stacked into one nest along a new first
//! dimension, ragged tensors zero-padded to the largest shape, and batches read ahead on a
//! background thread while the model computes.

use std::collections::BTreeMap;
use std::sync::mpsc;

use burn::prelude::Backend;
use burn::tensor::{DType, Shape, TensorData, TensorPrimitive};

use crate::handler::BoxError;
use crate::nest::{AnyTensor, Nest, TensorDtype};
use crate::runtime::DynDataset;

mod collator;
mod concat;
pub use collator::*;
pub use concat::*;

/// Samples that do not stack.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot batch key `{key}`: {problem}")]
pub struct BatchError {
    /// The key path (`image`, `boxes:0`).
    pub key: String,
    /// What differs.
    pub problem: String,
}

/// Stacks samples into a batch: tensors along a new first dimension (zero-padded at the end of
/// each dimension to the largest sample when their shapes differ), numbers and booleans into
/// 1-D tensors, strings and lists element-wise into lists.
pub fn collate<B: Backend>(
    samples: Vec<Nest<B>>,
    device: &B::Device,
) -> Result<Nest<B>, BatchError> {
    collate_at(samples, "", device)
}

fn err(key: &str, problem: impl Into<String>) -> BatchError {
    BatchError {
        key: if key.is_empty() {
            "(sample)".into()
        } else {
            key.to_owned()
        },
        problem: problem.into(),
    }
}

fn child(key: &str, name: &str) -> String {
    if key.is_empty() {
        name.to_owned()
    } else {
        format!("{key}:{name}")
    }
}

fn collate_at<B: Backend>(
    samples: Vec<Nest<B>>,
    key: &str,
    device: &B::Device,
) -> Result<Nest<B>, BatchError> {
    let Some(first) = samples.first() else {
        return Err(err(key, "no samples"));
    };
    match first {
        Nest::Map(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let mut columns: BTreeMap<String, Vec<Nest<B>>> =
                keys.iter().map(|k| (k.clone(), Vec::new())).collect();
            for (i, s) in samples.into_iter().enumerate() {
                let Nest::Map(m) = s else {
                    return Err(err(key, format!("sample {i} is not a map like sample 0")));
                };
                if m.len() != keys.len() || !m.keys().all(|k| columns.contains_key(k)) {
                    let got: Vec<&String> = m.keys().collect();
                    return Err(err(
                        key,
                        format!("sample {i} has keys {got:?}, sample 0 has {keys:?}"),
                    ));
                }
                for (k, v) in m {
                    columns.get_mut(&k).expect("checked above").push(v);
                }
            }
            let mut out = BTreeMap::new();
            for (k, column) in columns {
                let value = collate_at(column, &child(key, &k), device)?;
                out.insert(k, value);
            }
            Ok(Nest::Map(out))
        }
        Nest::List(l) => {
            let n = l.len();
            let mut columns: Vec<Vec<Nest<B>>> = (0..n).map(|_| Vec::new()).collect();
            for (i, s) in samples.into_iter().enumerate() {
                match s {
                    Nest::List(items) if items.len() == n => {
                        for (c, v) in columns.iter_mut().zip(items) {
                            c.push(v);
                        }
                    }
                    _ => {
                        return Err(err(
                            key,
                            format!("sample {i} is not a list of {n} items like sample 0"),
                        ));
                    }
                }
            }
            columns
                .into_iter()
                .enumerate()
                .map(|(i, c)| collate_at(c, &child(key, &i.to_string()), device))
                .collect::<Result<Vec<_>, _>>()
                .map(Nest::List)
        }
        Nest::Str(_) => samples
            .into_iter()
            .enumerate()
            .map(|(i, s)| match s {
                Nest::Str(_) => Ok(s),
                _ => Err(err(
                    key,
                    format!("sample {i} is not a string like sample 0"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Nest::List),
        Nest::Float(_) | Nest::Int(_) | Nest::Bool(_) => scalars(samples, key, device),
        Nest::Tensor(_) => {
            let mut tensors = Vec::with_capacity(samples.len());
            for (i, s) in samples.into_iter().enumerate() {
                match s {
                    Nest::Tensor(t) => tensors.push(t),
                    _ => {
                        return Err(err(
                            key,
                            format!("sample {i} is not a tensor like sample 0"),
                        ));
                    }
                }
            }
            stack(tensors, key).map(Nest::Tensor)
        }
    }
}

fn scalars<B: Backend>(
    samples: Vec<Nest<B>>,
    key: &str,
    device: &B::Device,
) -> Result<Nest<B>, BatchError> {
    let n = samples.len();
    let shape = [n];
    let data = match &samples[0] {
        Nest::Float(_) => TensorData::new(
            samples
                .iter()
                .map(|s| match s {
                    Nest::Float(x) => Ok(*x as f32),
                    _ => Err(()),
                })
                .collect::<Result<Vec<f32>, ()>>()
                .map_err(|_| err(key, "samples mix numbers with other values"))?,
            shape,
        ),
        Nest::Int(_) => TensorData::new(
            samples
                .iter()
                .map(|s| match s {
                    Nest::Int(x) => Ok(*x),
                    _ => Err(()),
                })
                .collect::<Result<Vec<i64>, ()>>()
                .map_err(|_| err(key, "samples mix integers with other values"))?,
            shape,
        ),
        _ => TensorData::new(
            samples
                .iter()
                .map(|s| match s {
                    Nest::Bool(x) => Ok(*x),
                    _ => Err(()),
                })
                .collect::<Result<Vec<bool>, ()>>()
                .map_err(|_| err(key, "samples mix booleans with other values"))?,
            shape,
        ),
    };
    Ok(Nest::Tensor(AnyTensor::from_data(data, device)))
}

/// Stacks tensors of one kind along a new first dimension, zero-padding ragged ones.
pub fn stack<B: Backend>(
    tensors: Vec<AnyTensor<B>>,
    key: &str,
) -> Result<AnyTensor<B>, BatchError> {
    let first_kind = tensors[0].kind();
    let rank = tensors[0].rank();
    let mut max: Vec<usize> = tensors[0].shape().to_vec();
    let mut ragged = false;
    for (i, t) in tensors.iter().enumerate() {
        if t.kind() != first_kind {
            return Err(err(
                key,
                format!(
                    "sample {i} holds a {} tensor, sample 0 a {first_kind} one",
                    t.kind()
                ),
            ));
        }
        if t.rank() != rank {
            return Err(err(
                key,
                format!("sample {i} has rank {}, sample 0 rank {rank}", t.rank()),
            ));
        }
        for (m, d) in max.iter_mut().zip(t.shape().to_vec()) {
            if d != *m {
                ragged = true;
                *m = (*m).max(d);
            }
        }
    }
    let n = tensors.len();
    let mut batch_shape = vec![n];
    batch_shape.extend(&max);
    if ragged {
        return pad_stack(tensors, &max, batch_shape, key);
    }
    if crate::backend::on_host::<B>() {
        return stack_on_host(tensors, key);
    }
    Ok(stack_by_cat(tensors))
}

/// Stacks same-shaped tensors with the backend's `cat`, each given a first dimension of 1.
fn stack_by_cat<B: Backend>(tensors: Vec<AnyTensor<B>>) -> AnyTensor<B> {
    cat0(
        tensors
            .into_iter()
            .map(|t| {
                let mut s = vec![1];
                s.extend(t.shape().to_vec());
                t.reshape(Shape::from(s))
            })
            .collect(),
    )
}

/// Stacks same-shaped tensors of one kind held in host memory: each sample's values are
/// copied once into the batch's buffer. (The backend's `cat` copies element by element and
/// then once more.) Samples whose dtypes differ from the first one's are converted to it.
fn stack_on_host<B: Backend>(
    tensors: Vec<AnyTensor<B>>,
    key: &str,
) -> Result<AnyTensor<B>, BatchError> {
    let device = tensors[0].device();
    let n = tensors.len();
    let mut column: Option<Column> = None;
    for t in tensors {
        let data = t.into_data().map_err(|e| err(key, e.to_string()))?;
        match &mut column {
            Some(c) => c.push(data, key)?,
            None => column = Some(Column::new(data, n, key)?),
        }
    }
    column
        .expect("stack is given at least one sample")
        .stack(key, &device)
}

/// Joins tensors of one kind along their first dimension (checked by the callers).
fn cat0<B: Backend>(tensors: Vec<AnyTensor<B>>) -> AnyTensor<B> {
    match tensors[0].kind() {
        crate::nest::TensorDtype::Float => AnyTensor::Float(TensorPrimitive::Float(B::float_cat(
            tensors
                .into_iter()
                .map(|t| match t {
                    AnyTensor::Float(p) => p.tensor(),
                    _ => unreachable!("one kind"),
                })
                .collect(),
            0,
        ))),
        crate::nest::TensorDtype::Int => AnyTensor::Int(B::int_cat(
            tensors
                .into_iter()
                .map(|t| match t {
                    AnyTensor::Int(p) => p,
                    _ => unreachable!("one kind"),
                })
                .collect(),
            0,
        )),
        crate::nest::TensorDtype::Bool => AnyTensor::Bool(B::bool_cat(
            tensors
                .into_iter()
                .map(|t| match t {
                    AnyTensor::Bool(p) => p,
                    _ => unreachable!("one kind"),
                })
                .collect(),
            0,
        )),
    }
}

/// Pads on the host: ragged batches are the exception (boxes, variable-length labels).
fn pad_stack<B: Backend>(
    tensors: Vec<AnyTensor<B>>,
    max: &[usize],
    batch_shape: Vec<usize>,
    key: &str,
) -> Result<AnyTensor<B>, BatchError> {
    let device = tensors[0].device();
    let dtype = tensors[0].dtype();
    let per_sample: usize = max.iter().product();
    let datas: Vec<TensorData> = tensors
        .into_iter()
        .map(|t| t.into_data().map_err(|e| err(key, e.to_string())))
        .collect::<Result<_, _>>()?;
    fn fill<T: Copy + Default>(
        datas: &[TensorData],
        values: impl Fn(&TensorData) -> Vec<T>,
        max: &[usize],
        per_sample: usize,
    ) -> Vec<T> {
        let mut out = vec![T::default(); datas.len() * per_sample];
        for (i, d) in datas.iter().enumerate() {
            let shape = d.shape.to_vec();
            let v = values(d);
            for (flat, x) in v.into_iter().enumerate() {
                // The sample's index in its own shape, placed in the padded shape.
                let mut rest = flat;
                let mut target = 0;
                let mut stride = 1;
                for dim in (0..shape.len()).rev() {
                    let idx = rest % shape[dim];
                    rest /= shape[dim];
                    target += idx * stride;
                    stride *= max[dim];
                }
                out[i * per_sample + target] = x;
            }
        }
        out
    }
    let data = match dtype {
        DType::Bool(_) => TensorData::new(
            fill(
                &datas,
                |d| d.to_vec::<bool>().unwrap_or_default(),
                max,
                per_sample,
            ),
            batch_shape,
        ),
        d if d.is_float() => TensorData::new(
            fill(
                &datas,
                |d| {
                    d.clone()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .unwrap_or_default()
                },
                max,
                per_sample,
            ),
            batch_shape,
        )
        .convert_dtype(dtype),
        _ => TensorData::new(
            fill(
                &datas,
                |d| {
                    d.clone()
                        .convert::<i64>()
                        .to_vec::<i64>()
                        .unwrap_or_default()
                },
                max,
                per_sample,
            ),
            batch_shape,
        )
        .convert_dtype(dtype),
    };
    Ok(AnyTensor::from_data(data, &device))
}

/// A batch to read: the data epoch it belongs to (0 outside training) and its samples'
/// indices.
pub(crate) type EpochBatch = (u64, Vec<usize>);

/// Reads the batches `batches` (each its epoch and sample indices; the samples' keys carry
/// the run's `seed`) from `dataset` and gives them to `consume` in order. With `prefetch > 0` a background thread reads up to `prefetch` batches ahead
/// while `consume` runs (its parallel work on that one thread); `consume` returning `false`
/// stops early. The first error, of
/// reading or of `consume`, is returned.
pub(crate) fn for_each_batch<B: Backend, E: From<BoxError>>(
    dataset: &dyn DynDataset<B>,
    batches: Vec<EpochBatch>,
    seed: u64,
    prefetch: usize,
    device: &B::Device,
    profiler: Option<&crate::tracking::profile::Profiler>,
    mut consume: impl FnMut(Nest<B>) -> Result<bool, E>,
) -> Result<(), E> {
    let read = |(epoch, indices): &EpochBatch| -> Result<Nest<B>, BoxError> {
        let _span = profiler.map(|p| p.span("read batch", "data"));
        let mut batch = Collator::new(indices.len(), device);
        for &i in indices {
            let key = crate::data::SampleKey {
                index: i,
                epoch: *epoch,
                seed,
            };
            // A data set that panics on a sample fails the run naming the sample, as one
            // that returns an error does.
            let got = crate::failure::catch(|| dataset.get_for(key)).unwrap_or_else(|payload| {
                Err(format!(
                    "panicked: {}",
                    crate::failure::panic_message(payload.as_ref())
                )
                .into())
            });
            let sample = got.map_err(|e| -> BoxError {
                Box::new(crate::data::DataError::caused(
                    format!("sample {i}: {e}"),
                    e,
                ))
            })?;
            batch.push(sample)?;
        }
        Ok(batch.finish()?)
    };
    if prefetch == 0 {
        for indices in &batches {
            if !consume(read(indices).map_err(E::from)?)? {
                break;
            }
        }
        return Ok(());
    }
    std::thread::scope(|scope| {
        // The reader holds one finished batch while it waits to hand it over, so a channel of
        // `prefetch - 1` keeps at most `prefetch` batches ahead of the consumer.
        let (tx, rx) = mpsc::sync_channel::<Result<Nest<B>, BoxError>>(prefetch - 1);
        // The read-ahead computes on its own one thread, beside the run's compute threads.
        let reader = scope.spawn(move || {
            crate::threads::serial(move || {
                for indices in &batches {
                    let batch = read(indices);
                    let failed = batch.is_err();
                    // A closed channel means the consumer stopped early.
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            })
        });
        let mut result = Ok(());
        for batch in rx.iter() {
            match batch.map_err(E::from).and_then(&mut consume) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(rx);
        if reader.join().is_err() {
            return Err(E::from("the data reading thread panicked".into()));
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Int, Tensor};

    type B = crate::backend::Cpu;

    fn sample(x: Vec<f32>, label: i64, name: &str) -> Nest<B> {
        let d = Default::default();
        let n = x.len();
        let mut m = Nest::map();
        m.insert(
            "x",
            Tensor::<B, 1>::from_data(TensorData::new(x, [n]), &d).into(),
        )
        .unwrap();
        m.insert("label", Nest::Int(label)).unwrap();
        m.insert("name", Nest::Str(name.into())).unwrap();
        m
    }

    /// One sample's tensor of `data`, on backend `C`.
    fn tensor_of<C: Backend>(data: TensorData) -> AnyTensor<C> {
        AnyTensor::from_data(data, &Default::default())
    }

    /// `stack` on the host (one copy into the batch buffer) agrees with the backend's `cat`
    /// in values, shape and dtype, for each dtype it joins itself, with and without autodiff.
    #[test]
    fn host_stacking_agrees_with_the_backends_cat() {
        fn check<C: Backend>(samples: Vec<TensorData>) {
            assert!(crate::backend::on_host::<C>());
            let tensors: Vec<AnyTensor<C>> = samples.iter().cloned().map(tensor_of).collect();
            let fast = stack(tensors.clone(), "x").unwrap().into_data().unwrap();
            let by_cat = stack_by_cat(tensors).into_data().unwrap();
            assert_eq!(fast.shape, by_cat.shape);
            assert_eq!(fast.dtype, by_cat.dtype);
            assert_eq!(fast.as_bytes(), by_cat.as_bytes(), "{:?}", samples[0].dtype);
        }
        let cases: Vec<Vec<TensorData>> = vec![
            (0..3)
                .map(|i| TensorData::new(vec![i as f32, 0.5, -1.0, 2.0, 3.0, 4.0], [2, 3]))
                .collect(),
            (0..3)
                .map(|i| TensorData::new(vec![i as f64, 1e-300], [2]))
                .collect(),
            (0..4)
                .map(|i| TensorData::new(vec![i as i64, -i as i64, 7], [3]))
                .collect(),
            (0..2)
                .map(|i| TensorData::new(vec![i % 2 == 0, true, false, false], [2, 2]))
                .collect(),
            vec![TensorData::new(vec![5.0f32], [1]); 5],
        ];
        for samples in cases {
            check::<B>(samples.clone());
            check::<burn::backend::Autodiff<B>>(samples);
        }
        // A sample of another float dtype is converted to the first one's.
        let mixed = stack(
            vec![
                tensor_of::<B>(TensorData::new(vec![1.5f32, 2.0], [2])),
                tensor_of::<B>(TensorData::new(vec![3.25f64, -4.0], [2])),
            ],
            "x",
        )
        .unwrap()
        .into_data()
        .unwrap();
        assert_eq!(mixed.dtype, DType::F32);
        assert_eq!(mixed.shape.to_vec(), [2, 2]);
        assert_eq!(mixed.to_vec::<f32>().unwrap(), [1.5, 2.0, 3.25, -4.0]);
    }

    #[test]
    fn stacks_pads_and_collects() {
        let d = Default::default();
        let batch = collate(
            vec![sample(vec![1.0, 2.0], 3, "a"), sample(vec![4.0], 5, "b")],
            &d,
        )
        .unwrap();
        let x: Tensor<B, 2> = batch.get("x").unwrap().clone().into_tensor().unwrap();
        assert_eq!(
            x.to_data().to_vec::<f32>().unwrap(),
            vec![1.0, 2.0, 4.0, 0.0]
        );
        let labels: Tensor<B, 1, Int> = batch.get("label").unwrap().clone().into_tensor().unwrap();
        assert_eq!(labels.to_data().to_vec::<i64>().unwrap(), vec![3, 5]);
        assert_eq!(
            batch.get("name").unwrap(),
            &Nest::List(vec![Nest::Str("a".into()), Nest::Str("b".into())])
        );
        let same = collate(
            vec![
                sample(vec![1.0, 2.0], 3, "a"),
                sample(vec![4.0, 5.0], 5, "b"),
            ],
            &d,
        )
        .unwrap();
        let x: Tensor<B, 2> = same.get("x").unwrap().clone().into_tensor().unwrap();
        assert_eq!(x.dims(), [2, 2]);
    }

    #[test]
    fn mismatched_samples_name_the_key() {
        let d = Default::default();
        let mut other = sample(vec![1.0], 1, "a");
        other.remove("label");
        let e = collate(vec![sample(vec![1.0], 1, "a"), other], &d).unwrap_err();
        assert!(e.to_string().contains("sample 1 has keys"), "{e}");
        let mut wrong = sample(vec![1.0], 1, "a");
        wrong.insert("label", Nest::Str("x".into())).unwrap();
        let e = collate(vec![sample(vec![1.0], 1, "a"), wrong], &d).unwrap_err();
        assert_eq!(e.key, "label");
    }

    /// A nest as comparable text: every leaf with its path, tensors with dtype, shape and
    /// values.
    fn describe_all<C: Backend>(nest: &Nest<C>) -> Vec<String> {
        nest.flatten()
            .into_iter()
            .map(|(k, v)| match v {
                Nest::Tensor(t) => {
                    let d = t.clone().into_data().unwrap();
                    format!("{k}: {:?} {:?} {:?}", d.dtype, d.shape, d.as_bytes())
                }
                other => format!("{k}: {other:?}"),
            })
            .collect()
    }

    /// The collator, which copies each sample into the batch as it comes, gives what
    /// `collate` gives, errors included, on the CPU backend (with and without autodiff).
    #[test]
    fn the_collator_agrees_with_collate() {
        fn t<C: Backend>(data: TensorData) -> Nest<C> {
            Nest::Tensor(tensor_of(data))
        }
        fn cases<C: Backend>() -> Vec<(&'static str, Vec<Nest<C>>)> {
            let map = |x: TensorData, label: i64, name: &str, boxes: Vec<Nest<C>>| {
                let mut m = Nest::map();
                m.insert("x", t(x)).unwrap();
                m.insert("label", Nest::Int(label)).unwrap();
                m.insert("name", Nest::Str(name.into())).unwrap();
                m.insert("boxes", Nest::List(boxes)).unwrap();
                m
            };
            let f32s = |v: Vec<f32>| {
                let n = v.len();
                TensorData::new(v, [n])
            };
            vec![
                (
                    "same shapes, nested",
                    (0..4)
                        .map(|i| {
                            map(
                                f32s(vec![i as f32, 2.0]),
                                i,
                                "s",
                                vec![t(TensorData::new(vec![i, 1], [1, 2])), t(f32s(vec![0.5]))],
                            )
                        })
                        .collect(),
                ),
                (
                    "ragged",
                    vec![
                        map(f32s(vec![1.0, 2.0]), 1, "a", vec![]),
                        map(f32s(vec![3.0]), 2, "b", vec![]),
                        map(f32s(vec![4.0, 5.0, 6.0]), 3, "c", vec![]),
                    ],
                ),
                (
                    "bare tensors of two float dtypes",
                    vec![
                        t(TensorData::new(vec![1.5f32, 2.0], [2])),
                        t(TensorData::new(vec![3.25f64, -4.0], [2])),
                    ],
                ),
                (
                    "booleans",
                    vec![
                        t(TensorData::new(vec![true, false], [2])),
                        t(TensorData::new(vec![false, false], [2])),
                    ],
                ),
                (
                    "ranks differ",
                    vec![
                        t(f32s(vec![1.0, 2.0])),
                        t(TensorData::new(vec![1.0f32, 2.0], [1, 2])),
                    ],
                ),
                (
                    "kinds differ",
                    vec![t(f32s(vec![1.0])), t(TensorData::new(vec![1i64], [1]))],
                ),
                (
                    "keys differ",
                    vec![map(f32s(vec![1.0]), 1, "a", vec![]), t(f32s(vec![1.0]))],
                ),
                (
                    "a tensor and a string",
                    vec![
                        map(f32s(vec![1.0]), 1, "a", vec![t(f32s(vec![1.0]))]),
                        map(f32s(vec![1.0]), 1, "a", vec![Nest::Str("x".into())]),
                    ],
                ),
            ]
        }
        fn check<C: Backend>() {
            let d = Default::default();
            for (name, samples) in cases::<C>() {
                let want = collate(samples.clone(), &d).map(|b| describe_all(&b));
                let mut collator = Collator::new(2, &d);
                let got = samples
                    .into_iter()
                    .try_for_each(|s| collator.push(s))
                    .and_then(|()| collator.finish())
                    .map(|b| describe_all(&b));
                assert_eq!(got, want, "{name}");
            }
        }
        check::<B>();
        check::<burn::backend::Autodiff<B>>();
    }
}
