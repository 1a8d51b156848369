//! Putting batches back together along the first dimension (the inferer's feed lists).

use super::*;

/// Puts batches back together along the first dimension: what the inferer does with the
/// batches of one feed list. Tensors are joined (all but the first dimension must agree),
/// batched strings appended, lists joined item by item, and numbers kept when every batch
/// has the same one.
pub fn concat<B: Backend>(batches: Vec<Nest<B>>) -> Result<Nest<B>, BatchError> {
    concat_at(batches, "")
}

pub(super) fn concat_at<B: Backend>(
    batches: Vec<Nest<B>>,
    key: &str,
) -> Result<Nest<B>, BatchError> {
    if batches.len() == 1 {
        return Ok(batches.into_iter().next().expect("one batch"));
    }
    let Some(first) = batches.first() else {
        return Err(err(key, "no batches"));
    };
    let unlike = |i: usize| err(key, format!("batch {i} is not like batch 0"));
    match first {
        Nest::Map(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let mut columns: BTreeMap<String, Vec<Nest<B>>> =
                keys.iter().map(|k| (k.clone(), Vec::new())).collect();
            for (i, b) in batches.into_iter().enumerate() {
                match b {
                    Nest::Map(m) if m.len() == keys.len() => {
                        for (k, v) in m {
                            columns.get_mut(&k).ok_or_else(|| unlike(i))?.push(v);
                        }
                    }
                    _ => return Err(unlike(i)),
                }
            }
            columns
                .into_iter()
                .map(|(k, c)| Ok((k.clone(), concat_at(c, &child(key, &k))?)))
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map(Nest::Map)
        }
        Nest::List(items) if items.iter().all(|i| matches!(i, Nest::Str(_))) => {
            let mut out = Vec::new();
            for (i, b) in batches.into_iter().enumerate() {
                match b {
                    Nest::List(items) if items.iter().all(|i| matches!(i, Nest::Str(_))) => {
                        out.extend(items)
                    }
                    _ => return Err(unlike(i)),
                }
            }
            Ok(Nest::List(out))
        }
        Nest::List(items) => {
            let n = items.len();
            let mut columns: Vec<Vec<Nest<B>>> = (0..n).map(|_| Vec::new()).collect();
            for (i, b) in batches.into_iter().enumerate() {
                match b {
                    Nest::List(items) if items.len() == n => {
                        for (c, v) in columns.iter_mut().zip(items) {
                            c.push(v);
                        }
                    }
                    _ => return Err(unlike(i)),
                }
            }
            columns
                .into_iter()
                .enumerate()
                .map(|(i, c)| concat_at(c, &child(key, &i.to_string())))
                .collect::<Result<Vec<_>, _>>()
                .map(Nest::List)
        }
        Nest::Tensor(t) => {
            let (kind, shape) = (t.kind(), t.shape().to_vec());
            if shape.is_empty() {
                return Err(err(key, "a tensor of rank 0 has no batch dimension"));
            }
            let mut tensors = Vec::with_capacity(batches.len());
            for (i, b) in batches.into_iter().enumerate() {
                match b {
                    Nest::Tensor(t)
                        if t.kind() == kind && t.shape().to_vec()[1..] == shape[1..] =>
                    {
                        tensors.push(t)
                    }
                    Nest::Tensor(t) => {
                        return Err(err(
                            key,
                            format!(
                                "batch {i} is a {} tensor of shape {:?}, batch 0 a {kind} one of shape {shape:?}",
                                t.kind(),
                                t.shape().to_vec()
                            ),
                        ));
                    }
                    _ => return Err(unlike(i)),
                }
            }
            Ok(Nest::Tensor(cat0(tensors)))
        }
        Nest::Str(_) | Nest::Float(_) | Nest::Int(_) | Nest::Bool(_) => {
            match batches.iter().position(|b| b != first) {
                None => Ok(batches.into_iter().next().expect("one batch")),
                Some(i) => Err(err(
                    key,
                    format!(
                        "batch {i} holds another value than batch 0, and values are not batches"
                    ),
                )),
            }
        }
    }
}
