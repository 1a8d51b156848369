//! Tensors of any rank and kind in a nest: `AnyTensor` and its element kinds.

use super::*;

/// A burn tensor whose rank and kind are known at run time only.
pub enum AnyTensor<B: Backend> {
    /// A float tensor.
    Float(TensorPrimitive<B>),
    /// An integer tensor.
    Int(B::IntTensorPrimitive),
    /// A boolean tensor.
    Bool(B::BoolTensorPrimitive),
}

/// The element kind of a tensor: what `Tensor<B, D, K>`'s `K` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorDtype {
    /// `Tensor<B, D>` (the default `Float` kind).
    Float,
    /// `Tensor<B, D, Int>`.
    Int,
    /// `Tensor<B, D, Bool>`.
    Bool,
}

impl TensorDtype {
    /// The kind a tensor of storage type `dtype` has.
    pub fn of(dtype: DType) -> TensorDtype {
        match dtype {
            DType::Bool(_) => TensorDtype::Bool,
            d if d.is_float() => TensorDtype::Float,
            _ => TensorDtype::Int,
        }
    }
}

impl fmt::Display for TensorDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TensorDtype::Float => "float",
            TensorDtype::Int => "int",
            TensorDtype::Bool => "bool",
        })
    }
}

/// Tensor kinds that a nest can hold: burn's `Float`, `Int` and `Bool`.
pub trait NestTensorKind<B: Backend>: TensorKind<B> + BasicOps<B> {
    /// Which variant of [`AnyTensor`] this kind is stored in.
    const DTYPE: TensorDtype;
    /// Wraps a primitive of this kind.
    fn wrap(primitive: Self::Primitive) -> AnyTensor<B>;
    /// Unwraps a primitive of this kind, or gives the tensor back when it is of another kind.
    fn unwrap(tensor: AnyTensor<B>) -> Result<Self::Primitive, AnyTensor<B>>;
}

impl<B: Backend> NestTensorKind<B> for Float {
    const DTYPE: TensorDtype = TensorDtype::Float;
    fn wrap(primitive: Self::Primitive) -> AnyTensor<B> {
        AnyTensor::Float(primitive)
    }
    fn unwrap(tensor: AnyTensor<B>) -> Result<Self::Primitive, AnyTensor<B>> {
        match tensor {
            AnyTensor::Float(p) => Ok(p),
            other => Err(other),
        }
    }
}

impl<B: Backend> NestTensorKind<B> for Int {
    const DTYPE: TensorDtype = TensorDtype::Int;
    fn wrap(primitive: Self::Primitive) -> AnyTensor<B> {
        AnyTensor::Int(primitive)
    }
    fn unwrap(tensor: AnyTensor<B>) -> Result<Self::Primitive, AnyTensor<B>> {
        match tensor {
            AnyTensor::Int(p) => Ok(p),
            other => Err(other),
        }
    }
}

impl<B: Backend> NestTensorKind<B> for Bool {
    const DTYPE: TensorDtype = TensorDtype::Bool;
    fn wrap(primitive: Self::Primitive) -> AnyTensor<B> {
        AnyTensor::Bool(primitive)
    }
    fn unwrap(tensor: AnyTensor<B>) -> Result<Self::Primitive, AnyTensor<B>> {
        match tensor {
            AnyTensor::Bool(p) => Ok(p),
            other => Err(other),
        }
    }
}

impl<B: Backend> AnyTensor<B> {
    /// Stores a typed tensor; the data is not copied.
    pub fn new<const D: usize, K: NestTensorKind<B>>(tensor: Tensor<B, D, K>) -> Self {
        K::wrap(tensor.into_primitive())
    }

    /// The element kind.
    pub fn kind(&self) -> TensorDtype {
        match self {
            AnyTensor::Float(_) => TensorDtype::Float,
            AnyTensor::Int(_) => TensorDtype::Int,
            AnyTensor::Bool(_) => TensorDtype::Bool,
        }
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        match self {
            AnyTensor::Float(p) => p.shape(),
            AnyTensor::Int(p) => p.shape(),
            AnyTensor::Bool(p) => p.shape(),
        }
    }

    /// The same values in another shape with as many elements.
    pub fn reshape(self, shape: Shape) -> AnyTensor<B> {
        match self {
            AnyTensor::Float(p) => {
                AnyTensor::Float(TensorPrimitive::Float(B::float_reshape(p.tensor(), shape)))
            }
            AnyTensor::Int(p) => AnyTensor::Int(B::int_reshape(p, shape)),
            AnyTensor::Bool(p) => AnyTensor::Bool(B::bool_reshape(p, shape)),
        }
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape().num_dims()
    }

    /// The storage data type (`F32`, `I64`, ...).
    pub fn dtype(&self) -> DType {
        match self {
            AnyTensor::Float(p) => p.dtype(),
            AnyTensor::Int(p) => p.dtype(),
            AnyTensor::Bool(p) => p.dtype(),
        }
    }

    /// Takes the typed tensor out; fails, giving the tensor back, when kind or rank differ.
    pub fn into_tensor<const D: usize, K: NestTensorKind<B>>(
        self,
    ) -> Result<Tensor<B, D, K>, AnyTensor<B>> {
        if self.rank() != D {
            return Err(self);
        }
        K::unwrap(self).map(Tensor::from_primitive)
    }

    /// A float tensor of any rank (up to 8) as a rank-1 tensor of its elements; `None` for int
    /// and bool tensors.
    pub fn flatten_float(self) -> Option<Tensor<B, 1>> {
        let AnyTensor::Float(p) = self else {
            return None;
        };
        let n = p.shape().num_elements();
        macro_rules! by_rank {
            ($($d:literal),*) => {
                match p.rank() {
                    $($d => Some(Tensor::<B, $d>::from_primitive(p).reshape([n])),)*
                    _ => None,
                }
            };
        }
        by_rank!(1, 2, 3, 4, 5, 6, 7, 8)
    }

    /// The device the tensor is on.
    pub fn device(&self) -> B::Device {
        match self {
            AnyTensor::Float(TensorPrimitive::Float(p)) => B::float_device(p),
            AnyTensor::Float(TensorPrimitive::QFloat(q)) => B::q_device(q),
            AnyTensor::Int(p) => B::int_device(p),
            AnyTensor::Bool(p) => B::bool_device(p),
        }
    }

    /// Reads the values (waiting for the device); the data keeps its shape and dtype.
    pub fn into_data(self) -> Result<TensorData, NestError> {
        let shape = self.shape();
        let n = shape.num_elements();
        let flat = Shape::from(vec![n]);
        let data = match self {
            AnyTensor::Float(p) => Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(
                B::float_reshape(p.tensor(), flat),
            ))
            .try_into_data(),
            AnyTensor::Int(p) => {
                Tensor::<B, 1, Int>::from_primitive(B::int_reshape(p, flat)).try_into_data()
            }
            AnyTensor::Bool(p) => {
                Tensor::<B, 1, Bool>::from_primitive(B::bool_reshape(p, flat)).try_into_data()
            }
        };
        let mut data = data.map_err(|e| NestError::Read {
            reason: format!("{e:?}"),
        })?;
        data.shape = shape;
        Ok(data)
    }

    /// A tensor of `data` on `device`: float dtypes give float tensors, integer dtypes int
    /// tensors, `Bool` bool tensors.
    pub fn from_data(data: TensorData, device: &B::Device) -> AnyTensor<B> {
        match TensorDtype::of(data.dtype) {
            TensorDtype::Bool => AnyTensor::Bool(B::bool_from_data(data, device)),
            TensorDtype::Float => {
                AnyTensor::Float(TensorPrimitive::Float(B::float_from_data(data, device)))
            }
            TensorDtype::Int => AnyTensor::Int(B::int_from_data(data, device)),
        }
    }

    /// A short description such as `float tensor [2, 3] F32`.
    pub fn describe(&self) -> String {
        format!(
            "{} tensor {:?} {:?}",
            self.kind(),
            &*self.shape(),
            self.dtype()
        )
    }
}

impl<B: Backend> Clone for AnyTensor<B> {
    /// Clones the handle: burn tensors are reference counted, the data is shared.
    fn clone(&self) -> Self {
        match self {
            AnyTensor::Float(p) => AnyTensor::Float(p.clone()),
            AnyTensor::Int(p) => AnyTensor::Int(p.clone()),
            AnyTensor::Bool(p) => AnyTensor::Bool(p.clone()),
        }
    }
}

impl<B: Backend> fmt::Debug for AnyTensor<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}
