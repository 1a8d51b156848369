//! burn module visitors and mappers over a plugin's parameters: stable parameter ids from
//! names, collecting and loading named tensors, gradient and weight sums, and the optimizer
//! step.

use super::*;

/// Sums `|w|` and `w²` over every float parameter of a module.
pub(super) struct WeightSums<B: Backend> {
    pub(super) sums: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
}

impl<B: Backend> ModuleVisitor<B> for WeightSums<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let w = param.val().reshape([-1]);
        let abs = w.clone().abs().sum();
        let squares = w.powi_scalar(2).sum();
        self.sums = Some(match self.sums.take() {
            Some((a, s)) => (a + abs, s + squares),
            None => (abs, squares),
        });
    }
}

pub(super) fn join(path: &[String]) -> String {
    path.join(".")
}

pub(super) struct StableIds<'a> {
    pub(super) plugin: &'a str,
    pub(super) path: Vec<String>,
}

impl StableIds<'_> {
    fn id(&self) -> ParamId {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.plugin.hash(&mut h);
        self.path.hash(&mut h);
        ParamId::from(h.finish())
    }
}

impl<B: Backend> ModuleMapper<B> for StableIds<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(self.id(), tensor, mapper)
    }
    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(self.id(), tensor, mapper)
    }
    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(self.id(), tensor, mapper)
    }
}

pub(super) struct Collect<B: Backend> {
    pub(super) path: Vec<String>,
    pub(super) out: Vec<(String, AnyTensor<B>)>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out
            .push((join(&self.path), AnyTensor::new(param.val())));
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.out
            .push((join(&self.path), AnyTensor::new(param.val())));
    }
    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        self.out
            .push((join(&self.path), AnyTensor::new(param.val())));
    }
}

pub(super) struct Load<'a, B: Backend> {
    pub(super) path: Vec<String>,
    pub(super) tensors: &'a mut BTreeMap<String, AnyTensor<B>>,
    pub(super) require_grad: bool,
    pub(super) problems: Vec<String>,
}

impl<B: Backend> Load<'_, B> {
    /// The tensor for the current path, if it fits `shape` and kind `K`.
    fn take<const D: usize, K: crate::nest::NestTensorKind<B>>(
        &mut self,
        shape: &[usize],
    ) -> Option<Tensor<B, D, K>> {
        let name = join(&self.path);
        let Some(tensor) = self.tensors.remove(&name) else {
            self.problems
                .push(format!("no weights for parameter `{name}`"));
            return None;
        };
        let found = tensor.shape().to_vec();
        if found != shape {
            self.problems.push(format!(
                "parameter `{name}` has shape {shape:?}, the weights given have {found:?}"
            ));
            return None;
        }
        match tensor.into_tensor::<D, K>() {
            Ok(t) => Some(t),
            Err(other) => {
                self.problems.push(format!(
                    "parameter `{name}` holds {} values, the weights given are {}",
                    K::DTYPE,
                    other.kind()
                ));
                None
            }
        }
    }
}

impl<B: Backend> ModuleMapper<B> for Load<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let shape = param.shape().to_vec();
        match self.take::<D, burn::tensor::Float>(&shape) {
            Some(t) => {
                let t = if self.require_grad {
                    t.require_grad()
                } else {
                    t
                };
                Param::initialized(param.id, t)
            }
            None => param,
        }
    }
    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        let shape = param.shape().to_vec();
        match self.take::<D, Int>(&shape) {
            Some(t) => Param::initialized(param.id, t),
            None => param,
        }
    }
    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        let shape = param.shape().to_vec();
        match self.take::<D, Bool>(&shape) {
            Some(t) => Param::initialized(param.id, t),
            None => param,
        }
    }
}

pub(super) struct SquareSum<'a, B: AutodiffBackend> {
    pub(super) grads: &'a B::Gradients,
    pub(super) sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquareSum<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = param.val().grad(self.grads) {
            let s = square_sum(&grad);
            self.sum = Some(match self.sum.take() {
                Some(total) => total + s,
                None => s,
            });
        }
    }
}

pub(super) struct Step<'a, B: AutodiffBackend> {
    pub(super) optimizer: &'a mut PluginOptimizer<B>,
    pub(super) lr: f64,
    pub(super) grads: &'a mut B::Gradients,
    pub(super) scale: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Step<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = tensor.grad_remove(self.grads) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let grad = if self.scale == 1.0 {
            grad
        } else {
            grad.mul_scalar(self.scale)
        };
        let require_grad = tensor.is_require_grad();
        let stepped = self.optimizer.step(id, self.lr, tensor.inner(), grad);
        let mut tensor = Tensor::from_inner(stepped);
        if require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Every trainable parameter's gradient, flattened, in visiting order; zeros for one the step
/// gave none, so that every replica of a model lays its gradients out alike.
pub(super) struct FlatGrads<'a, B: AutodiffBackend> {
    pub(super) grads: &'a B::Gradients,
    pub(super) out: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for FlatGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let grad = match value.grad(self.grads) {
            Some(g) => g.reshape([-1]),
            None => value.inner().reshape([-1]).zeros_like(),
        };
        self.out.push(grad);
    }
}

/// Gives each trainable parameter, in visiting order, the next piece of `flat` as its
/// gradient (the layout [`FlatGrads`] made).
pub(super) struct SetGrads<'a, B: AutodiffBackend> {
    pub(super) grads: &'a mut B::Gradients,
    pub(super) flat: &'a Tensor<B::InnerBackend, 1>,
    pub(super) offset: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SetGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let shape = value.shape();
        let n = shape.num_elements();
        let piece = self
            .flat
            .clone()
            .slice(self.offset..self.offset + n)
            .reshape(shape);
        value.grad_replace(self.grads, piece);
        self.offset += n;
    }
}

/// A module's float parameters cast to `dtype` (mixed precision), on the autodiff graph when
/// they are tracked, so that the gradients reach the originals.
pub(super) struct CastParams {
    pub(super) dtype: burn::tensor::FloatDType,
}

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.cast(self.dtype), mapper)
    }
}
