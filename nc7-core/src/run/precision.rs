//! Training precision (`trainer_config.precision`, `--precision`): `f32`, or mixed precision
//! in `f16` or `bf16`.
//!
//! In mixed precision the model plugins compute in half precision: each step their float
//! inputs and a half-precision copy of their weights (made on the autodiff graph, so the
//! gradients reach the weights) go in, and their outputs come back as `f32` for the
//! post-processors, losses and metrics. The weights, the optimizer state, evaluation and saved
//! models stay `f32` (the master weights). The loss is multiplied by a dynamic loss scale
//! before the backward pass, so that small half-precision gradients do not round to zero; the
//! gradients are divided by it again before clipping and the optimizer step. A step whose
//! gradients overflowed (not finite) is skipped and halves the scale; every
//! [`LossScaler::GROWTH_INTERVAL`] steps without overflow double it.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Backend;
use burn::tensor::{DType, FloatDType};

/// The precision a model trains in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Single precision throughout (the default).
    #[default]
    F32,
    /// The plugins compute in IEEE half precision, with dynamic loss scaling.
    F16,
    /// The plugins compute in bfloat16, with dynamic loss scaling.
    Bf16,
}

impl Precision {
    /// The dtype the plugins compute in; `None` for `f32` (nothing is cast).
    pub fn half(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::F16 => Some(FloatDType::F16),
            Precision::Bf16 => Some(FloatDType::BF16),
        }
    }

    /// Whether backend `B` computes in this precision on `device`.
    pub fn supported_by<B: Backend>(self, device: &B::Device) -> bool {
        let dtype = match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        };
        B::dtype_usage(device, dtype).contains(burn::tensor::backend::DTypeUsage::Arithmetic)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        })
    }
}

/// A precision name that is not `f32`, `f16` or `bf16`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}`; write `f32`, `f16` or `bf16`")]
pub struct BadPrecision(pub String);

impl FromStr for Precision {
    type Err = BadPrecision;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(BadPrecision(s.to_owned())),
        }
    }
}

/// The dynamic loss scale of mixed-precision training, kept in checkpoints so that a
/// continued run scales as the uninterrupted one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaler {
    /// The factor the loss is multiplied by.
    pub scale: f64,
    /// Steps since the last overflow or growth.
    pub good_steps: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: Self::INITIAL,
            good_steps: 0,
        }
    }
}

impl LossScaler {
    /// The first scale, 2¹⁶.
    pub const INITIAL: f64 = 65536.0;
    /// Steps without overflow after which the scale doubles.
    pub const GROWTH_INTERVAL: u64 = 2000;
    /// The scale never falls below this (a model whose gradients overflow even unscaled
    /// keeps skipping steps, which the run's summaries show).
    pub const MIN: f64 = 1.0;
    /// Nor grows above this.
    pub const MAX: f64 = 16_777_216.0;

    /// Records a step whose unscaled gradients were `finite` or not; whether the step is
    /// taken (a step that overflowed is skipped and halves the scale).
    pub fn update(&mut self, finite: bool) -> bool {
        if !finite {
            self.scale = (self.scale / 2.0).max(Self::MIN);
            self.good_steps = 0;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps >= Self::GROWTH_INTERVAL {
            self.scale = (self.scale * 2.0).min(Self::MAX);
            self.good_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_scale_halves_on_overflow_and_doubles_after_a_run_of_good_steps() {
        let mut s = LossScaler::default();
        assert_eq!(s.scale, 65536.0);
        // An overflow: the step is skipped, the scale halves, the count restarts.
        assert!(!s.update(false));
        assert_eq!((s.scale, s.good_steps), (32768.0, 0));
        for _ in 0..LossScaler::GROWTH_INTERVAL - 1 {
            assert!(s.update(true));
        }
        assert_eq!((s.scale, s.good_steps), (32768.0, 1999));
        assert!(s.update(true));
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
        // Never below the minimum, never above the maximum.
        for _ in 0..40 {
            s.update(false);
        }
        assert_eq!(s.scale, LossScaler::MIN);
        let mut big = LossScaler {
            scale: LossScaler::MAX,
            good_steps: LossScaler::GROWTH_INTERVAL - 1,
        };
        big.update(true);
        assert_eq!(big.scale, LossScaler::MAX);
    }

    #[test]
    fn precision_names_and_the_backends_that_compute_in_them() {
        assert_eq!("F16".parse(), Ok(Precision::F16));
        assert_eq!("bfloat16".parse(), Ok(Precision::Bf16));
        assert_eq!(Precision::Bf16.to_string(), "bf16");
        let err = "f8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("`f32`, `f16` or `bf16`"), "{err}");
        // The CPU default computes in both half precisions; NdArray in neither.
        let cpu = Default::default();
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            assert!(p.supported_by::<crate::backend::Cpu>(&cpu), "{p}");
        }
        let nd = Default::default();
        assert!(Precision::F32.supported_by::<burn::backend::NdArray>(&nd));
        assert!(!Precision::F16.supported_by::<burn::backend::NdArray>(&nd));
        assert!(!Precision::Bf16.supported_by::<burn::backend::NdArray>(&nd));
    }
}
