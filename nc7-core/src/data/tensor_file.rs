//! safetensors files: named tensor data to the bytes of a file and back, with the metadata
//! sorted so the same tensors always give the same bytes. Model weights and records shards
//! are both written this way.

use burn::tensor::{DType, TensorData};
use serde_json::Value;

pub(crate) fn safetensors_dtype(d: DType) -> Result<safetensors::Dtype, String> {
    use safetensors::Dtype as S;
    Ok(match d {
        DType::F64 => S::F64,
        DType::F32 | DType::Flex32 => S::F32,
        DType::F16 => S::F16,
        DType::BF16 => S::BF16,
        DType::I64 => S::I64,
        DType::I32 => S::I32,
        DType::I16 => S::I16,
        DType::I8 => S::I8,
        DType::U64 => S::U64,
        DType::U32 => S::U32,
        DType::U16 => S::U16,
        DType::U8 => S::U8,
        DType::Bool(_) => S::BOOL,
        other => return Err(format!("tensors of dtype {other:?} cannot be saved")),
    })
}

pub(crate) fn burn_dtype(d: safetensors::Dtype) -> Result<DType, String> {
    use safetensors::Dtype as S;
    Ok(match d {
        S::F64 => DType::F64,
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::I64 => DType::I64,
        S::I32 => DType::I32,
        S::I16 => DType::I16,
        S::I8 => DType::I8,
        S::U64 => DType::U64,
        S::U32 => DType::U32,
        S::U16 => DType::U16,
        S::U8 => DType::U8,
        S::BOOL => DType::Bool(burn::tensor::BoolStore::Native),
        other => return Err(format!("safetensors dtype {other:?} is not supported")),
    })
}

/// Named tensor data as the bytes of a safetensors file, with `metadata` in its header.
pub(crate) fn encode_safetensors<'a>(
    datas: impl IntoIterator<Item = (String, &'a TensorData)>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, crate::data::DataError> {
    let mut views = Vec::new();
    for (name, data) in datas {
        let view = safetensors::tensor::TensorView::new(
            safetensors_dtype(data.dtype)?,
            data.shape.to_vec(),
            data.as_bytes(),
        )
        .map_err(|e| format!("tensor `{name}`: {e}"))?;
        views.push((name, view));
    }
    let mut bytes = safetensors::serialize(views, metadata).map_err(|e| e.to_string())?;
    sort_metadata(&mut bytes);
    Ok(bytes)
}

/// safetensors writes the metadata map in hash order, so the same tensors would give other
/// bytes on each run; with its keys sorted (same length, so the offsets hold) they do not.
pub(crate) fn sort_metadata(bytes: &mut [u8]) {
    let Some(n) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return;
    };
    let Some(header) = bytes.get(8..8 + n) else {
        return;
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(header) else {
        return;
    };
    let Some(Value::Object(meta)) = value.get_mut("__metadata__") else {
        return;
    };
    let sorted: std::collections::BTreeMap<String, Value> =
        std::mem::take(meta).into_iter().collect();
    meta.extend(sorted);
    let Ok(text) = serde_json::to_vec(&value) else {
        return;
    };
    if text.len() <= n {
        bytes[8..8 + text.len()].copy_from_slice(&text);
        bytes[8 + text.len()..8 + n].fill(b' ');
    }
}

/// Every tensor of a safetensors file's bytes, as tensor data by name.
pub(crate) fn decode_safetensors(
    bytes: &[u8],
) -> Result<Vec<(String, TensorData)>, crate::data::DataError> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = burn_dtype(view.dtype()).map_err(|e| format!("tensor `{name}`: {e}"))?;
            let data =
                TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype);
            Ok((name, data))
        })
        .collect()
}
