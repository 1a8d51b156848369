//! Model weights as safetensors files: named tensors of a backend to bytes and back
//! (the file format itself is `data::tensor_file`'s).

use super::*;
pub use crate::data::tensor_file::{decode_safetensors, encode_safetensors};

/// Named tensors as a safetensors file's bytes, with `metadata` in its header.
pub fn to_safetensors<B: Backend>(
    tensors: Vec<(String, AnyTensor<B>)>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, String> {
    let mut datas = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let data = t.into_data()?;
        datas.push((name, data));
    }
    encode_safetensors(datas.iter().map(|(n, d)| (n.clone(), d)), metadata)
}

/// Reads a safetensors file's tensors onto `device`.
pub fn from_safetensors<B: Backend>(
    bytes: &[u8],
    device: &B::Device,
) -> Result<BTreeMap<String, AnyTensor<B>>, String> {
    Ok(decode_safetensors(bytes)?
        .into_iter()
        .map(|(name, data)| (name, AnyTensor::from_data(data, device)))
        .collect())
}

/// Reads a safetensors file.
pub fn read_safetensors<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<BTreeMap<String, AnyTensor<B>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    from_safetensors(&bytes, device).map_err(|e| format!("{}: {e}", path.display()))
}
