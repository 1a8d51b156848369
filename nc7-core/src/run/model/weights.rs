//! Model weights as safetensors files: named tensors of a backend to bytes and back
//! (the file format itself is `data::tensor_file`'s).

use super::*;
pub(crate) use crate::data::tensor_file::{decode_safetensors, encode_safetensors};

/// Why weights or optimizer state cannot be written, read or loaded.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are no safetensors file nc7 can read, or a tensor cannot be saved.
    #[error("{}{problem}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Format {
        /// The file, when there is one.
        path: Option<std::path::PathBuf>,
        /// What does not fit.
        problem: String,
    },
    /// Parameters that have no weights, or weights of another shape or kind; each is named.
    #[error("{0}")]
    Mismatch(String),
    /// An optimizer's state cannot be saved or restored.
    #[error("optimizer state: {0}")]
    OptimizerState(#[from] burn::record::RecorderError),
    /// An optimizer state for a plugin the model does not have.
    #[error("no plugin `{0}` in this model")]
    NoPlugin(String),
}

fn format(problem: String) -> WeightsError {
    WeightsError::Format {
        path: None,
        problem,
    }
}

/// Named tensors as a safetensors file's bytes, with `metadata` in its header.
pub(crate) fn to_safetensors<B: Backend>(
    tensors: Vec<(String, AnyTensor<B>)>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, WeightsError> {
    let mut datas = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let data = t.into_data().map_err(|e| format(e.to_string()))?;
        datas.push((name, data));
    }
    encode_safetensors(datas.iter().map(|(n, d)| (n.clone(), d)), metadata)
        .map_err(|e| format(e.to_string()))
}

/// Reads a safetensors file's tensors onto `device`.
pub(crate) fn from_safetensors<B: Backend>(
    bytes: &[u8],
    device: &B::Device,
) -> Result<BTreeMap<String, AnyTensor<B>>, WeightsError> {
    Ok(decode_safetensors(bytes)
        .map_err(|e| format(e.to_string()))?
        .into_iter()
        .map(|(name, data)| (name, AnyTensor::from_data(data, device)))
        .collect())
}

/// Reads a safetensors file.
pub(crate) fn read_safetensors<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<BTreeMap<String, AnyTensor<B>>, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Read {
        path: path.to_owned(),
        source,
    })?;
    from_safetensors(&bytes, device).map_err(|e| match e {
        WeightsError::Format { problem, .. } => WeightsError::Format {
            path: Some(path.to_owned()),
            problem,
        },
        other => other,
    })
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use burn::backend::NdArray;
    use proptest::prelude::*;

    fn valid() -> Vec<u8> {
        let d = Default::default();
        let t = AnyTensor::<NdArray>::from_data(
            burn::tensor::TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]),
            &d,
        );
        to_safetensors(vec![("net.weight".to_owned(), t)], None).unwrap()
    }

    proptest! {
        // Fuzzing (the reliability issue): a safetensors file with any bytes changed,
        // truncated or replaced reads as tensors or an error, never a panic.
        #[test]
        fn damaged_safetensors_read_or_are_refused(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = valid();
            for (at, b) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            let _ = from_safetensors::<NdArray>(&bytes, &Default::default());
            let n = cut.index(bytes.len() + 1);
            let _ = from_safetensors::<NdArray>(&bytes[..n], &Default::default());
            let _ = from_safetensors::<NdArray>(&garbage, &Default::default());
        }
    }
}
