//! Layers for model plugins that burn's own do not serve well on every backend.
//!
//! [`upsample2`] doubles the height and width by repeating each pixel, with a backward pass of
//! sums (burn's nearest interpolation has no fast CPU gradient).
//!
//! [`Conv2d`] is a 2-D convolution and [`MaxPool2d`] a max-pooling. On the CPU backend (burn's
//! Flex) both run nc7's own kernels, forward and backward (`layers/kernels.rs`): the
//! convolution as one patch matrix and three matrix products, the pooling keeping each
//! window's index. burn's ops there compute the convolution's weight gradient as a second
//! convolution with an image-sized kernel, and pool through generic strided iteration; the
//! shapes classifier trains about twice as fast with nc7's. On NdArray (`--device ndarray`) and
//! on CUDA, [`Conv2d`] is patches times a matrix (im2col) made of tensor ops: the input is
//! padded, the `kh × kw` shifted views are stacked along the channels and one matrix product
//! with the kernel gives every output (on NdArray several times faster than
//! `burn::nn::conv::Conv2d`, whose backward pass runs a direct transposed convolution), and
//! [`MaxPool2d`] is burn's op. [`Conv2d`]'s parameters are
//! named and shaped like burn's (`weight` `[out, in, kh, kw]`, `bias` `[out]`) and start from
//! the same initialisation, so weights move between the two, and between projects, unchanged.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig as BurnConv2dConfig;
use burn::prelude::Backend;
use burn::tensor::{Slice, Tensor};

mod kernels;

/// How to build a [`Conv2d`].
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dConfig {
    /// Input and output channels.
    pub channels: [usize; 2],
    /// Kernel height and width.
    pub kernel_size: [usize; 2],
    /// Step between outputs, per dimension.
    pub stride: [usize; 2],
    /// Zeros added on each side, per dimension; `None` keeps the size (odd kernels, stride 1).
    pub padding: Option<[usize; 2]>,
    /// Whether a bias is added.
    pub bias: bool,
}

impl Conv2dConfig {
    /// A convolution from `channels[0]` to `channels[1]` channels with stride 1, the size kept
    /// and a bias.
    pub fn new(channels: [usize; 2], kernel_size: [usize; 2]) -> Self {
        Conv2dConfig {
            channels,
            kernel_size,
            stride: [1, 1],
            padding: None,
            bias: true,
        }
    }

    /// With this stride.
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }

    /// With this padding on each side (instead of keeping the size).
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = Some(padding);
        self
    }

    /// With or without a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// The padding used: the given one, or the one that keeps the size.
    ///
    /// # Panics
    /// When no padding is given and the kernel is even or the stride is not 1: no padding
    /// keeps the size then.
    fn resolved_padding(&self) -> [usize; 2] {
        self.padding.unwrap_or_else(|| {
            assert!(
                self.kernel_size.iter().all(|k| k % 2 == 1) && self.stride == [1, 1],
                "Conv2d keeps the size only for odd kernels with stride 1; kernel {:?}, stride {:?}: give a padding",
                self.kernel_size,
                self.stride
            );
            [self.kernel_size[0] / 2, self.kernel_size[1] / 2]
        })
    }

    /// The layer, initialised like burn's `Conv2d` (Kaiming-uniform weights and bias).
    ///
    /// # Panics
    /// On a zero channel count, kernel size or stride, or a size-keeping padding that cannot
    /// be (see [`Conv2dConfig::with_padding`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Conv2d<B> {
        assert!(
            self.channels
                .iter()
                .chain(&self.kernel_size)
                .chain(&self.stride)
                .all(|&n| n > 0),
            "Conv2d needs channels, kernel size and stride above zero; got channels {:?}, kernel {:?}, stride {:?}",
            self.channels,
            self.kernel_size,
            self.stride
        );
        let padding = self.resolved_padding();
        let burn = BurnConv2dConfig::new(self.channels, self.kernel_size)
            .with_bias(self.bias)
            .with_padding(PaddingConfig2d::Valid)
            .init(device);
        Conv2d {
            weight: burn.weight,
            bias: burn.bias,
            stride: self.stride,
            padding,
        }
    }
}

/// A 2-D convolution as patches times a matrix; see the module docs.
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// `[out, in, kh, kw]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Step between outputs.
    pub stride: [usize; 2],
    /// Zeros added on each side.
    pub padding: [usize; 2],
}

impl<B: Backend> Conv2d<B> {
    /// `[N, in, H, W]` → `[N, out, H', W']`, where `H' = (H + 2·pad − kh) / stride + 1`.
    ///
    /// # Panics
    /// When the input has another channel count than the layer, or is smaller than the kernel
    /// after padding.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let [out, inp, kh, kw] = self.weight.dims();
        assert_eq!(
            c,
            inp,
            "Conv2d takes {inp} input channels; the input has {c} (shape {:?})",
            [n, c, h, w]
        );
        let [ph, pw] = self.padding;
        let [sh, sw] = self.stride;
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        assert!(
            hp >= kh && wp >= kw,
            "Conv2d's {kh}×{kw} kernel is larger than the padded input {hp}×{wp}"
        );
        let (ho, wo) = ((hp - kh) / sh + 1, (wp - kw) / sw + 1);
        if let Some(y) = kernels::conv2d(
            &x,
            &self.weight.val(),
            self.bias.as_ref().map(Param::val).as_ref(),
            self.stride,
            self.padding,
        ) {
            return y;
        }
        let x = if ph > 0 || pw > 0 {
            pad_zeros(x, ph, pw)
        } else {
            x
        };
        let columns = if kh == 1 && kw == 1 && sh == 1 && sw == 1 {
            x
        } else {
            let mut views = Vec::with_capacity(kh * kw);
            for dy in 0..kh {
                for dx in 0..kw {
                    views.push(x.clone().slice([
                        Slice::from(..),
                        Slice::from(..),
                        Slice::new(
                            dy as isize,
                            Some((dy + (ho - 1) * sh + 1) as isize),
                            sh as isize,
                        ),
                        Slice::new(
                            dx as isize,
                            Some((dx + (wo - 1) * sw + 1) as isize),
                            sw as isize,
                        ),
                    ]));
                }
            }
            Tensor::cat(views, 1)
        };
        // Column (dy·kw + dx)·in + c of the patches meets the kernel's [o, c, dy, dx].
        let kernel = self
            .weight
            .val()
            .permute([0, 2, 3, 1])
            .reshape([1, out, kh * kw * inp]);
        let y = kernel.matmul(columns.reshape([n, kh * kw * inp, ho * wo]));
        let y = match &self.bias {
            Some(b) => y + b.val().reshape([1, out, 1]),
            None => y,
        };
        y.reshape([n, out, ho, wo])
    }
}

/// 2-D max-pooling: each `kernel`-sized window's largest value, windows `stride` apart, the
/// input padded by `padding` (which never wins). On Flex it runs nc7's own kernel (forward and
/// backward), elsewhere burn's op; the two give the same values and gradients.
#[derive(Module, Clone, Debug)]
pub struct MaxPool2d {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Added on each side, per dimension.
    pub padding: [usize; 2],
}

impl MaxPool2d {
    /// Windows of `kernel`, side by side (the stride is the kernel), no padding.
    ///
    /// # Panics
    /// On a zero kernel size.
    pub fn new(kernel: [usize; 2]) -> Self {
        assert!(
            kernel.iter().all(|&k| k > 0),
            "MaxPool2d needs a kernel above zero; got {kernel:?}"
        );
        MaxPool2d {
            kernel,
            stride: kernel,
            padding: [0, 0],
        }
    }

    /// With this step between windows.
    ///
    /// # Panics
    /// On a zero stride.
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        assert!(
            stride.iter().all(|&s| s > 0),
            "MaxPool2d needs a stride above zero; got {stride:?}"
        );
        self.stride = stride;
        self
    }

    /// With this padding on each side; at most half the kernel.
    ///
    /// # Panics
    /// When the padding is more than half the kernel (a window could hold padding alone).
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        assert!(
            padding[0] <= self.kernel[0] / 2 && padding[1] <= self.kernel[1] / 2,
            "MaxPool2d's padding is at most half its kernel {:?}; got {padding:?}",
            self.kernel
        );
        self.padding = padding;
        self
    }

    /// `[N, C, H, W]` → `[N, C, H', W']`, `H' = (H + 2·pad − kh) / stride + 1`.
    ///
    /// # Panics
    /// When the padded input is smaller than the window.
    pub fn forward<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let [kh, kw] = self.kernel;
        assert!(
            h + 2 * self.padding[0] >= kh && w + 2 * self.padding[1] >= kw,
            "MaxPool2d's {kh}×{kw} window is larger than the padded input {h}×{w} (padding {:?})",
            self.padding
        );
        if let Some(y) = kernels::max_pool2d(&x, self.kernel, self.stride, self.padding) {
            return y;
        }
        burn::tensor::module::max_pool2d(x, self.kernel, self.stride, self.padding, [1, 1], false)
    }
}

/// `x` with `ph` rows and `pw` columns of zeros on each side, in `x`'s own dtype (burn's
/// `pad` makes its border in the default float dtype, which a half-precision tensor cannot
/// take).
fn pad_zeros<B: Backend>(x: Tensor<B, 4>, ph: usize, pw: usize) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let zeros = Tensor::<B, 4>::zeros([n, c, h + 2 * ph, w + 2 * pw], &x.device()).cast(x.dtype());
    zeros.slice_assign([0..n, 0..c, ph..ph + h, pw..pw + w], x)
}

/// `[N, C, H, W]` → `[N, C, 2H, 2W]`, each pixel repeated in a 2×2 block (nearest
/// neighbour).
pub fn upsample2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .expand([n, c, h, 2, w, 2])
        .reshape([n, c, 2 * h, 2 * w])
}

/// A 3×3 convolution (nc7's [`Conv2d`]) and a ReLU; the height and width are kept. The
/// parameter is `conv.weight` / `conv.bias`.
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> ConvBlock<B> {
    /// A block from `input` to `output` channels.
    pub fn new(input: usize, output: usize, device: &B::Device) -> Self {
        ConvBlock {
            conv: Conv2dConfig::new([input, output], [3, 3]).init(device),
        }
    }

    /// `[N, input, H, W]` → `[N, output, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        burn::tensor::activation::relu(self.conv.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Module;
    use burn::nn::conv::Conv2d as BurnConv2d;
    use burn::tensor::{Distribution, ElementConversion, Tensor};

    use super::*;

    type B = Autodiff<NdArray>;

    #[test]
    fn a_padded_convolution_and_pooling_compute_in_half_precision() {
        // Mixed precision runs the layers on half-precision inputs and weights: the padding
        // and the fallbacks (nc7's kernels are f32) keep the dtype.
        type H = Autodiff<crate::backend::Cpu>;
        let device = Default::default();
        let conv = Conv2dConfig::new([2, 3], [3, 3]).init::<H>(&device);
        let x = Tensor::<H, 4>::random([2, 2, 6, 6], Distribution::Default, &device);
        let full = MaxPool2d::new([2, 2]).forward(conv.forward(x.clone()));
        for dtype in [
            burn::tensor::FloatDType::F16,
            burn::tensor::FloatDType::BF16,
        ] {
            // As mixed precision casts them: on the graph, keeping the parameters' ids.
            let cast = |p: Param<Tensor<H, 4>>| {
                let (id, t, mapper) = p.consume();
                Param::from_mapped_value(id, t.cast(dtype), mapper)
            };
            let cast_bias = |p: Param<Tensor<H, 1>>| {
                let (id, t, mapper) = p.consume();
                Param::from_mapped_value(id, t.cast(dtype), mapper)
            };
            let mut half = conv.clone();
            half.weight = cast(half.weight);
            half.bias = half.bias.map(cast_bias);
            let y = MaxPool2d::new([2, 2]).forward(half.forward(x.clone().cast(dtype)));
            assert_eq!(y.dims(), full.dims());
            let diff = (y.cast(burn::tensor::FloatDType::F32) - full.clone())
                .abs()
                .max()
                .into_scalar()
                .elem::<f32>();
            assert!(diff < 0.05, "{dtype:?}: {diff}");
        }
    }

    fn burn_twin(ours: &Conv2d<B>, kernel: [usize; 2]) -> BurnConv2d<B> {
        let [out, inp, _, _] = ours.weight.dims();
        let mut twin = BurnConv2dConfig::new([inp, out], kernel)
            .with_stride(ours.stride)
            .with_padding(PaddingConfig2d::Explicit(
                ours.padding[0],
                ours.padding[1],
                ours.padding[0],
                ours.padding[1],
            ))
            .with_bias(ours.bias.is_some())
            .init(&Default::default());
        twin.weight = Param::from_tensor(ours.weight.val().detach().require_grad());
        twin.bias = ours
            .bias
            .as_ref()
            .map(|b| Param::from_tensor(b.val().detach().require_grad()));
        twin
    }

    fn close<Bk: burn::prelude::Backend, const D: usize>(
        a: Tensor<Bk, D>,
        b: Tensor<Bk, D>,
        what: &str,
    ) {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes");
        let diff: f32 = (a - b).abs().max().into_scalar().elem();
        assert!(diff < 1e-4, "{what}: largest difference {diff}");
    }

    /// Outputs and every gradient agree with burn's convolution, for each kernel, stride,
    /// padding and bias the table names.
    #[test]
    fn agrees_with_burns_convolution() {
        let device = Default::default();
        // (kernel, stride, padding, bias, input shape)
        type Case = ([usize; 2], [usize; 2], Option<[usize; 2]>, bool, [usize; 4]);
        let cases: &[Case] = &[
            ([3, 3], [1, 1], None, true, [2, 3, 7, 6]),
            ([5, 3], [1, 1], None, false, [1, 4, 9, 8]),
            ([1, 1], [1, 1], None, true, [2, 5, 4, 4]),
            ([2, 2], [2, 2], Some([0, 0]), true, [2, 3, 8, 8]),
            ([3, 3], [2, 1], Some([1, 2]), true, [3, 2, 9, 5]),
            ([3, 3], [1, 1], Some([0, 0]), false, [1, 2, 3, 3]),
        ];
        for &(kernel, stride, padding, bias, shape) in cases {
            let what =
                format!("kernel {kernel:?} stride {stride:?} padding {padding:?} bias {bias}");
            let mut config = Conv2dConfig::new([shape[1], 4], kernel)
                .with_stride(stride)
                .with_bias(bias);
            if let Some(p) = padding {
                config = config.with_padding(p);
            }
            let ours = config.init::<B>(&device);
            let twin = burn_twin(&ours, kernel);
            let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let (xa, xb) = (x.clone().require_grad(), x.require_grad());
            let (ya, yb) = (ours.forward(xa.clone()), twin.forward(xb.clone()));
            close(ya.clone(), yb.clone(), &what);
            // A loss that weighs every output differently.
            let weights = Tensor::<B, 4>::random(ya.dims(), Distribution::Default, &device);
            let ga = (ya * weights.clone()).sum().backward();
            let gb = (yb * weights).sum().backward();
            close(
                xa.grad(&ga).unwrap(),
                xb.grad(&gb).unwrap(),
                &format!("{what}: input grad"),
            );
            close(
                ours.weight.grad(&ga).unwrap(),
                twin.weight.grad(&gb).unwrap(),
                &format!("{what}: weight grad"),
            );
            if bias {
                close(
                    ours.bias.as_ref().unwrap().grad(&ga).unwrap(),
                    twin.bias.as_ref().unwrap().grad(&gb).unwrap(),
                    &format!("{what}: bias grad"),
                );
            }
        }
    }

    #[test]
    fn upsampling_repeats_pixels_and_sums_gradients() {
        let device = Default::default();
        let x = Tensor::<B, 4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &device).require_grad();
        let y = upsample2(x.clone());
        let expected = Tensor::<B, 4>::from_floats(
            [[[
                [1.0, 1.0, 2.0, 2.0],
                [1.0, 1.0, 2.0, 2.0],
                [3.0, 3.0, 4.0, 4.0],
                [3.0, 3.0, 4.0, 4.0],
            ]]],
            &device,
        );
        close(y.clone(), expected, "values");
        let weights = Tensor::<B, 4>::from_floats(
            [[[
                [1.0, 2.0, 0.0, 0.0],
                [3.0, 4.0, 0.0, 1.0],
                [0.0, 0.0, 5.0, 5.0],
                [0.0, 0.0, 5.0, 5.0],
            ]]],
            &device,
        );
        let g = (y * weights).sum().backward();
        let grad = Tensor::<NdArray, 4>::from_floats([[[[10.0, 1.0], [0.0, 20.0]]]], &device);
        close(x.grad(&g).unwrap(), grad, "gradient");
    }

    #[test]
    fn parameters_are_named_and_shaped_like_burns() {
        let device = Default::default();
        let ours = Conv2dConfig::new([2, 3], [3, 5]).init::<NdArray>(&device);
        let twin = BurnConv2dConfig::new([2, 3], [3, 5]).init::<NdArray>(&device);
        let (mut a, mut b) = (Names::default(), Names::default());
        ours.visit(&mut a);
        twin.visit(&mut b);
        assert_eq!(a.0, ["weight [3, 2, 3, 5]", "bias [3]"]);
        assert_eq!(a.0, b.0);
    }

    #[derive(Default)]
    struct Names(Vec<String>, Vec<String>);

    impl<Bk: burn::prelude::Backend> burn::module::ModuleVisitor<Bk> for Names {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.1.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.1.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
            self.0.push(format!("{} {:?}", self.1.join("."), p.dims()));
        }
    }

    #[test]
    #[should_panic(expected = "give a padding")]
    fn even_kernels_need_a_padding() {
        Conv2dConfig::new([1, 1], [2, 2]).init::<NdArray>(&Default::default());
    }

    #[test]
    #[should_panic(expected = "takes 3 input channels; the input has 2")]
    fn channel_mismatch_is_named() {
        let conv = Conv2dConfig::new([3, 1], [3, 3]).init::<NdArray>(&Default::default());
        conv.forward(Tensor::zeros([1, 2, 4, 4], &Default::default()));
    }
}
