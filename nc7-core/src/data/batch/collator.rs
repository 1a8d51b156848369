//! The `Collator`: samples batched as they are read, each key's values in one column.

use super::*;

/// Batches samples as they are read. On the CPU backend each sample's tensors are copied into
/// the batch's buffers as soon as the sample is pushed, and the sample's own memory is freed:
/// a batch needs its own memory and one sample's, where gathering the samples first and then
/// stacking them needs twice the batch. Other backends keep the samples and [`collate`] them
/// at the end. Either way the result and the errors are those of [`collate`].
pub struct Collator<B: Backend> {
    device: B::Device,
    capacity: usize,
    /// The samples; on the CPU backend, with each tensor replaced by an empty one of its dtype.
    samples: Vec<Nest<B>>,
    /// On the CPU backend: each tensor's values, by key path.
    columns: BTreeMap<String, Column>,
}

/// One key's tensors, concatenated.
pub(super) struct Column {
    dtype: DType,
    shapes: Vec<Vec<usize>>,
    values: Values,
}

pub(super) enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
    /// Other dtypes, and samples whose kind differs from the first one's (an error, given
    /// by `collate` when the samples are put together).
    Each(Vec<TensorData>),
}

impl<B: Backend> Collator<B> {
    /// A batch of about `capacity` samples on `device`.
    pub fn new(capacity: usize, device: &B::Device) -> Self {
        Collator {
            device: device.clone(),
            capacity,
            samples: Vec::with_capacity(capacity),
            columns: BTreeMap::new(),
        }
    }

    /// Adds a sample.
    pub fn push(&mut self, mut sample: Nest<B>) -> Result<(), BatchError> {
        if crate::backend::on_host::<B>() {
            let capacity = self.capacity;
            let columns = &mut self.columns;
            let mut failed = None;
            take_tensors(
                &mut sample,
                String::new(),
                &self.device,
                &mut |key, data| {
                    if failed.is_none()
                        && let Err(e) = add(columns, key, data, capacity)
                    {
                        failed = Some(e);
                    }
                },
            );
            if let Some(e) = failed {
                return Err(e);
            }
        }
        self.samples.push(sample);
        Ok(())
    }

    /// Samples pushed so far.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was pushed.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The batch.
    pub fn finish(self) -> Result<Nest<B>, BatchError> {
        // On the CPU backend the samples hold empty tensors: their collation checks that the
        // samples agree (keys, kinds) and gives the batch's structure.
        let mut batch = collate(self.samples, &self.device)?;
        for (key, column) in self.columns {
            let tensor = column.stack::<B>(&key, &self.device)?;
            *find_mut(&mut batch, &key).expect("collated samples keep their keys") =
                Nest::Tensor(tensor);
        }
        Ok(batch)
    }
}

/// Replaces each tensor of `nest` by an empty one of its dtype, giving its values to `take`
/// with the key path `collate` names it by.
pub(super) fn take_tensors<B: Backend>(
    nest: &mut Nest<B>,
    key: String,
    device: &B::Device,
    take: &mut dyn FnMut(String, Result<TensorData, String>),
) {
    match nest {
        Nest::Map(m) => {
            for (k, v) in m.iter_mut() {
                take_tensors(v, child(&key, k), device, take);
            }
        }
        Nest::List(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                take_tensors(v, child(&key, &i.to_string()), device, take);
            }
        }
        Nest::Tensor(t) => {
            let empty = AnyTensor::from_data(
                TensorData::from_bytes_vec(Vec::new(), [0], t.dtype()),
                device,
            );
            let t = std::mem::replace(t, empty);
            take(key, t.into_data().map_err(|e| e.to_string()));
        }
        _ => {}
    }
}

/// The value at a key path of `take_tensors`.
pub(super) fn find_mut<'a, B: Backend>(
    nest: &'a mut Nest<B>,
    key: &str,
) -> Option<&'a mut Nest<B>> {
    if key.is_empty() {
        return Some(nest);
    }
    let mut node = nest;
    for seg in key.split(':') {
        node = match node {
            Nest::Map(m) => m.get_mut(seg)?,
            Nest::List(items) => items.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

pub(super) fn add(
    columns: &mut BTreeMap<String, Column>,
    key: String,
    data: Result<TensorData, String>,
    capacity: usize,
) -> Result<(), BatchError> {
    let data = data.map_err(|e| err(&key, e))?;
    match columns.get_mut(&key) {
        Some(column) => column.push(data, &key),
        None => {
            let column = Column::new(data, capacity, &key)?;
            columns.insert(key, column);
            Ok(())
        }
    }
}

impl Column {
    /// A column of `capacity` samples, the first of which is `first`.
    pub(super) fn new(first: TensorData, capacity: usize, key: &str) -> Result<Column, BatchError> {
        let n = capacity.max(1) * first.num_elements();
        let values = match first.dtype {
            DType::F32 => Values::F32(Vec::with_capacity(n)),
            DType::F64 => Values::F64(Vec::with_capacity(n)),
            DType::I64 => Values::I64(Vec::with_capacity(n)),
            DType::I32 => Values::I32(Vec::with_capacity(n)),
            DType::U8 => Values::U8(Vec::with_capacity(n)),
            DType::Bool(_) => Values::Bool(Vec::with_capacity(n)),
            _ => Values::Each(Vec::with_capacity(capacity)),
        };
        let mut column = Column {
            dtype: first.dtype,
            shapes: Vec::with_capacity(capacity),
            values,
        };
        column.push(first, key)?;
        Ok(column)
    }

    /// Appends a sample's values, converted to the column's dtype when only the precision
    /// differs. A sample of another kind (an error, which `stack` or `collate` reports) turns
    /// the column into separate samples.
    pub(super) fn push(&mut self, data: TensorData, key: &str) -> Result<(), BatchError> {
        if TensorDtype::of(data.dtype) != TensorDtype::of(self.dtype)
            && !matches!(self.values, Values::Each(_))
        {
            let values = std::mem::replace(&mut self.values, Values::Each(Vec::new()));
            self.values = Values::Each(split(values, &self.shapes));
        }
        self.shapes.push(data.shape.to_vec());
        if let Values::Each(v) = &mut self.values {
            v.push(data);
            return Ok(());
        }
        let data = if data.dtype == self.dtype {
            data
        } else {
            data.convert_dtype(self.dtype)
        };
        let slice_err = |e| err(key, format!("reading a sample's values: {e:?}"));
        match &mut self.values {
            Values::F32(v) => v.extend_from_slice(data.as_slice::<f32>().map_err(slice_err)?),
            Values::F64(v) => v.extend_from_slice(data.as_slice::<f64>().map_err(slice_err)?),
            Values::I64(v) => v.extend_from_slice(data.as_slice::<i64>().map_err(slice_err)?),
            Values::I32(v) => v.extend_from_slice(data.as_slice::<i32>().map_err(slice_err)?),
            Values::U8(v) => v.extend_from_slice(data.as_slice::<u8>().map_err(slice_err)?),
            Values::Bool(v) => v.extend_from_slice(data.as_slice::<bool>().map_err(slice_err)?),
            Values::Each(_) => unreachable!("handled above"),
        }
        Ok(())
    }

    /// The stacked tensor: straight from the buffer when every sample has the same shape and
    /// kind, else through [`stack`] (padding, and its errors).
    pub(super) fn stack<B: Backend>(
        self,
        key: &str,
        device: &B::Device,
    ) -> Result<AnyTensor<B>, BatchError> {
        let same = self.shapes.iter().all(|s| *s == self.shapes[0]);
        let mut batch_shape = vec![self.shapes.len()];
        batch_shape.extend(&self.shapes[0]);
        let whole = |data: TensorData| Ok(AnyTensor::from_data(data, device));
        let tensors = |datas: Vec<TensorData>| -> Vec<AnyTensor<B>> {
            datas
                .into_iter()
                .map(|d| AnyTensor::from_data(d, device))
                .collect()
        };
        match self.values {
            Values::F32(v) if same => whole(TensorData::new(v, batch_shape)),
            Values::F64(v) if same => whole(TensorData::new(v, batch_shape)),
            Values::I64(v) if same => whole(TensorData::new(v, batch_shape)),
            Values::I32(v) if same => whole(TensorData::new(v, batch_shape)),
            Values::U8(v) if same => whole(TensorData::new(v, batch_shape)),
            Values::Bool(v) if same => whole(TensorData::new(v, batch_shape)),
            // Other dtypes (half floats, small integers) of one kind: the backend joins them.
            Values::Each(datas)
                if same
                    && datas
                        .iter()
                        .all(|d| TensorDtype::of(d.dtype) == TensorDtype::of(self.dtype)) =>
            {
                Ok(stack_by_cat(tensors(datas)))
            }
            values => stack(tensors(split(values, &self.shapes)), key),
        }
    }
}

/// A column's values as one `TensorData` per sample.
pub(super) fn split(values: Values, shapes: &[Vec<usize>]) -> Vec<TensorData> {
    pub(super) fn each<T: burn::tensor::Element>(
        v: Vec<T>,
        shapes: &[Vec<usize>],
    ) -> Vec<TensorData> {
        let mut rest = v.as_slice();
        shapes
            .iter()
            .map(|s| {
                let (mine, tail) = rest.split_at(s.iter().product());
                rest = tail;
                TensorData::new(mine.to_vec(), s.clone())
            })
            .collect()
    }
    match values {
        Values::F32(v) => each(v, shapes),
        Values::F64(v) => each(v, shapes),
        Values::I64(v) => each(v, shapes),
        Values::I32(v) => each(v, shapes),
        Values::U8(v) => each(v, shapes),
        Values::Bool(v) => each(v, shapes),
        Values::Each(v) => v,
    }
}
