//! nc7's own CPU kernels on burn's Flex backend: 2-D convolution and max-pooling, forward and
//! backward, as autodiff operations.
//!
//! burn computes a convolution's weight gradient as a second convolution over transposed
//! tensors (a kernel the size of the image) and its max-pooling through generic strided
//! iteration; on a small model these dominate a training step. Here a convolution is one
//! patch matrix (im2col, built once in the forward pass and kept for the backward) and three
//! matrix products (`gemm`, threaded): forward `W · cols`, weight gradient `dY · colsᵀ`, input
//! gradient `Wᵀ · dY` scattered back (col2im). Max-pooling keeps the index of each window's
//! maximum. Work is split by rows and planes whose results do not depend on the number of
//! threads, so a run is bitwise the same on any machine with the same kernels.
//!
//! Only `f32` is served; other element types fall back to burn's ops (the callers decide).
//! The table tests hold every kernel to burn's own op: values and gradients.

use std::any::Any;
use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_flex::{Flex, FlexTensor, Layout};
use rayon::prelude::*;

type FlexTrain = Autodiff<Flex>;

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conv {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

/// The output height and width of a window sliding over `[h, w]` (floor rounding).
fn out_size(
    h: usize,
    w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> [usize; 2] {
    [
        (h + 2 * padding[0] - kernel[0]) / stride[0] + 1,
        (w + 2 * padding[1] - kernel[1]) / stride[1] + 1,
    ]
}

impl Conv {
    fn out(&self) -> [usize; 2] {
        out_size(self.h, self.w, self.kernel, self.stride, self.padding)
    }
    /// Rows of the patch matrix: `c · kh · kw`.
    fn k(&self) -> usize {
        self.c * self.kernel[0] * self.kernel[1]
    }
    /// Outputs per plane.
    fn p(&self) -> usize {
        let [ho, wo] = self.out();
        ho * wo
    }
    /// Columns of the patch matrix: every output position of every sample.
    fn l(&self) -> usize {
        self.n * self.p()
    }
}

/// Below this many elements a kernel runs on the calling thread: waking the pool's threads
/// costs more than the work. Measured on 2 cores (`nc7-core/README.md#threads`): at 2¹⁵ the
/// shapes classifier trained 14 % slower on two threads than at 2¹⁸ (and than on one).
const PARALLEL_FROM: usize = 1 << 18;

/// Below this many multiply-adds a matrix product runs on the calling thread, for the same
/// reason.
const GEMM_PARALLEL_FROM: usize = 1 << 23;

/// Calls `f(i, row)` for each `len`-element row of `data`: on the pool's threads in a few
/// tasks when `data` is large, else here. Each row is written by one call, so the result does
/// not depend on how rows are shared out.
fn rows<T: Send>(data: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Send + Sync) {
    match per_task(data.len(), len) {
        None => data
            .chunks_mut(len.max(1))
            .enumerate()
            .for_each(|(i, r)| f(i, r)),
        Some(per_task) => data
            .par_chunks_mut(len)
            .with_min_len(per_task)
            .enumerate()
            .for_each(|(i, r)| f(i, r)),
    }
}

/// Like [`rows`], over two outputs with as many rows each: `f(i, a_row, b_row)`.
fn rows2<T: Send, U: Send>(
    a: &mut [T],
    a_len: usize,
    b: &mut [U],
    b_len: usize,
    f: impl Fn(usize, &mut [T], &mut [U]) + Send + Sync,
) {
    match per_task(a.len(), a_len) {
        None => a
            .chunks_mut(a_len.max(1))
            .zip(b.chunks_mut(b_len.max(1)))
            .enumerate()
            .for_each(|(i, (ra, rb))| f(i, ra, rb)),
        Some(per_task) => a
            .par_chunks_mut(a_len)
            .zip(b.par_chunks_mut(b_len))
            .with_min_len(per_task)
            .enumerate()
            .for_each(|(i, (ra, rb))| f(i, ra, rb)),
    }
}

/// A new `Vec` of `total` elements in rows of `len`, each row made by `f(i, row)` as
/// [`rows`] does, without filling it with zeros first (most of a kernel's outputs are written
/// whole). `f` must write every element of its row.
fn new_rows<T: Send>(
    total: usize,
    len: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Send + Sync,
) -> Vec<T> {
    let mut v = Vec::with_capacity(total);
    rows(&mut v.spare_capacity_mut()[..total], len, f);
    // SAFETY: the first `total` elements of the capacity were each written by `f` (its
    // contract; every caller writes its rows element by element from end to end).
    unsafe { v.set_len(total) };
    v
}

/// Like [`new_rows`], two outputs with as many rows each, as [`rows2`].
fn new_rows2<T: Send, U: Send>(
    a_total: usize,
    a_len: usize,
    b_total: usize,
    b_len: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>], &mut [MaybeUninit<U>]) + Send + Sync,
) -> (Vec<T>, Vec<U>) {
    let mut a = Vec::with_capacity(a_total);
    let mut b = Vec::with_capacity(b_total);
    rows2(
        &mut a.spare_capacity_mut()[..a_total],
        a_len,
        &mut b.spare_capacity_mut()[..b_total],
        b_len,
        f,
    );
    // SAFETY: as in `new_rows`: `f` wrote every element of both.
    unsafe {
        a.set_len(a_total);
        b.set_len(b_total);
    }
    (a, b)
}

/// Writes `src` into `dst` (as long).
fn write_all<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "write_all: lengths differ");
    for (d, s) in dst.iter_mut().zip(src) {
        d.write(*s);
    }
}

/// The sum of `v` in sixteen lanes, added pairwise at the end: vectorised, and the same on
/// every machine (the order depends on the length alone).
fn lane_sum(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (l, x) in lanes.iter_mut().zip(chunk) {
            *l += x;
        }
    }
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    rest.iter().fold(lanes[0], |s, x| s + x)
}

/// Rows per task when `total` elements in rows of `len` are worth sharing among the pool's
/// threads (a few tasks per thread); `None` when they are not.
fn per_task(total: usize, len: usize) -> Option<usize> {
    (total >= PARALLEL_FROM && len > 0).then(|| {
        (total / len)
            .div_ceil(4 * rayon::current_num_threads())
            .max(1)
    })
}

/// The output positions `0..len` along one axis whose input `o · stride + offset − pad` lies
/// in `0..size`.
fn valid(
    len: usize,
    size: usize,
    stride: usize,
    offset: usize,
    pad: usize,
) -> std::ops::Range<usize> {
    // o · stride + offset ≥ pad  ⇔  o ≥ ceil((pad − offset) / stride)
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    // o · stride + offset − pad < size  ⇔  o < (size + pad − offset) / stride, rounded up
    let hi = (size + pad)
        .saturating_sub(offset)
        .div_ceil(stride)
        .min(len);
    lo.min(hi)..hi
}

/// The patch matrix `[c·kh·kw, n·ho·wo]` of `x` (`[n, c, h, w]`, contiguous).
fn im2col(x: &[f32], g: &Conv) -> Vec<f32> {
    if g.stride == [1, 1] && g.out()[1] == g.w {
        im2col_same(x, g)
    } else {
        im2col_rows(x, g)
    }
}

/// Where a window position `(i, j)` of a stride-1 convolution whose output is as wide as its
/// input (`same` padding) reads: its valid output rows `ys` and columns `xs`, and the run
/// `lo..hi` of a sample's segment of the patch-matrix row that covers them, which lies in the
/// input plane from `at` on — output `(oy, ox)` reads input `(oy + i − ph, ox + j − pw)`, one
/// offset in the flat plane, as both rows are `wo` wide. Inside the run, the entries of the
/// columns outside `xs` fall in the padding. `None` when the window never lies on the input.
struct SameRun {
    ys: std::ops::Range<usize>,
    xs: std::ops::Range<usize>,
    lo: usize,
    hi: usize,
    at: usize,
}

impl SameRun {
    fn new(g: &Conv, i: usize, j: usize) -> Option<SameRun> {
        let [ho, wo] = g.out();
        let [ph, pw] = g.padding;
        let ys = valid(ho, g.h, 1, i, ph);
        let xs = valid(wo, g.w, 1, j, pw);
        if ys.is_empty() || xs.is_empty() {
            return None;
        }
        let (lo, hi) = (ys.start * wo + xs.start, (ys.end - 1) * wo + xs.end);
        let at = lo + i * g.w + j - ph * g.w - pw;
        Some(SameRun { ys, xs, lo, hi, at })
    }

    /// Sets the entries of `segment` (a sample's segment of the row, rows `wo` wide) that lie
    /// inside the run but in the padding's columns.
    fn clear_padding<T: Clone>(&self, segment: &mut [T], wo: usize, zero: T) {
        if self.xs.len() < wo {
            for line in segment[self.ys.start * wo..self.ys.end * wo].chunks_exact_mut(wo) {
                line[..self.xs.start].fill(zero.clone());
                line[self.xs.end..].fill(zero.clone());
            }
        }
    }
}

/// [`im2col`] of a convolution at stride 1 whose output is as wide as its input (`same`
/// padding), written once element by element: each window position's row is one contiguous
/// copy of the input plane at an offset ([`SameRun`]; a copy per output row otherwise), its
/// elements in the padding then set to zero.
fn im2col_same(x: &[f32], g: &Conv) -> Vec<f32> {
    let (l, p) = (g.l(), g.p());
    let [kh, kw] = g.kernel;
    let wo = g.out()[1];
    let zero = MaybeUninit::new(0.0);
    new_rows(g.k() * l, l, |row, out| {
        let (c, i, j) = (row / (kh * kw), (row / kw) % kh, row % kw);
        let run = SameRun::new(g, i, j);
        for n in 0..g.n {
            let out = &mut out[n * p..][..p];
            let Some(run) = &run else {
                out.fill(zero);
                continue;
            };
            let plane = &x[(n * g.c + c) * g.h * g.w..][..g.h * g.w];
            out[..run.lo].fill(zero);
            write_all(
                &mut out[run.lo..run.hi],
                &plane[run.at..run.at + (run.hi - run.lo)],
            );
            out[run.hi..].fill(zero);
            run.clear_padding(out, wo, zero);
        }
    })
}

/// [`im2col`] of any convolution, a copy per output row.
fn im2col_rows(x: &[f32], g: &Conv) -> Vec<f32> {
    let (l, p) = (g.l(), g.p());
    let [ho, wo] = g.out();
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    let mut cols = vec![0f32; g.k() * l];
    rows(&mut cols, l, |row, out| {
        let (c, i, j) = (row / (kh * kw), (row / kw) % kh, row % kw);
        let ys = valid(ho, g.h, sh, i, ph);
        let xs = valid(wo, g.w, sw, j, pw);
        for n in 0..g.n {
            let plane = &x[(n * g.c + c) * g.h * g.w..][..g.h * g.w];
            let out = &mut out[n * p..][..p];
            for oy in ys.clone() {
                let src = &plane[(oy * sh + i - ph) * g.w..][..g.w];
                let dst = &mut out[oy * wo..][..wo];
                if sw == 1 {
                    let x0 = xs.start + j - pw;
                    dst[xs.clone()].copy_from_slice(&src[x0..x0 + xs.len()]);
                } else {
                    for ox in xs.clone() {
                        dst[ox] = src[ox * sw + j - pw];
                    }
                }
            }
        }
    });
    cols
}

/// Adds the patch matrix's gradient `[c·kh·kw, n·ho·wo]` back onto the input's `[n, c, h, w]`.
fn col2im(mut dcols: Vec<f32>, g: &Conv) -> Vec<f32> {
    if g.stride == [1, 1] && g.out()[1] == g.w {
        col2im_same(&mut dcols, g)
    } else {
        col2im_rows(&dcols, g)
    }
}

/// [`col2im`] of any convolution, a run per output row.
fn col2im_rows(dcols: &[f32], g: &Conv) -> Vec<f32> {
    let (l, p) = (g.l(), g.p());
    let [ho, wo] = g.out();
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    let mut dx = vec![0f32; g.n * g.c * g.h * g.w];
    rows(&mut dx, g.h * g.w, |plane, out| {
        let (n, c) = (plane / g.c, plane % g.c);
        for i in 0..kh {
            let ys = valid(ho, g.h, sh, i, ph);
            for j in 0..kw {
                let xs = valid(wo, g.w, sw, j, pw);
                let src = &dcols[((c * kh + i) * kw + j) * l + n * p..][..p];
                for oy in ys.clone() {
                    let dst = &mut out[(oy * sh + i - ph) * g.w..][..g.w];
                    let src = &src[oy * wo..][..wo];
                    if sw == 1 {
                        // Contiguous on both sides: one vectorised add.
                        let x0 = xs.start + j - pw;
                        for (d, s) in dst[x0..x0 + xs.len()].iter_mut().zip(&src[xs.clone()]) {
                            *d += s;
                        }
                    } else {
                        for ox in xs.clone() {
                            dst[ox * sw + j - pw] += src[ox];
                        }
                    }
                }
            }
        }
    });
    dx
}

/// [`col2im`] of a convolution at stride 1 whose output is as wide as its input (`same`
/// padding): a window position's row of the patch matrix is then the input plane shifted by
/// one offset ([`SameRun`]), so each of the kernel's positions adds one long contiguous run to
/// the plane (vectorised) instead of a short one per output row. The patch matrix's elements
/// that fall in the padding are set to zero first, so that the run can go over them; the sums
/// are the same, element by element and in the same order, as adding the rows one by one.
fn col2im_same(dcols: &mut [f32], g: &Conv) -> Vec<f32> {
    let (l, p) = (g.l(), g.p());
    let [kh, kw] = g.kernel;
    let wo = g.out()[1];
    rows(dcols, l, |row, dcol| {
        if let Some(run) = SameRun::new(g, (row / kw) % kh, row % kw) {
            for n in 0..g.n {
                run.clear_padding(&mut dcol[n * p..][..p], wo, 0.0);
            }
        }
    });
    let dcols = &*dcols;
    let mut dx = vec![0f32; g.n * g.c * g.h * g.w];
    rows(&mut dx, g.h * g.w, |plane, out| {
        let (n, c) = (plane / g.c, plane % g.c);
        for i in 0..kh {
            for j in 0..kw {
                let Some(run) = SameRun::new(g, i, j) else {
                    continue;
                };
                let src = &dcols[((c * kh + i) * kw + j) * l + n * p..][run.lo..run.hi];
                for (d, s) in out[run.at..run.at + (run.hi - run.lo)].iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
    });
    dx
}

/// A matrix in a slice: its rows and columns and their strides.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix.
    fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose, without copying.
    fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// `a · b` as a row-major `Vec`.
fn matmul(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "matmul: inner sizes differ");
    for m in [a, b] {
        let last = (m.rows.max(1) - 1) * m.row_stride + (m.cols.max(1) - 1) * m.col_stride;
        assert!(
            m.rows == 0 || m.cols == 0 || last < m.data.len(),
            "matmul: out of bounds"
        );
    }
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let mut dst = Vec::<f32>::with_capacity(m * n);
    // SAFETY: every element the product reads lies in `a.data` or `b.data` (checked above:
    // the largest offset is inside each). Without `read_dst` it writes each of the `m × n`
    // elements at row stride `n` once, into `dst`'s capacity, which holds exactly that many
    // and overlaps neither input; only then is the length set.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            if m * n * k < GEMM_PARALLEL_FROM {
                gemm::Parallelism::None
            } else {
                gemm::Parallelism::Rayon(0)
            },
        );
        dst.set_len(m * n);
    }
    dst
}

/// The convolution's output `[n, o, ho, wo]` and the patch matrix.
fn conv_forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Conv) -> (Vec<f32>, Vec<f32>) {
    let cols = im2col(x, g);
    let (k, l, p) = (g.k(), g.l(), g.p());
    // [o, n·p]
    let prod = matmul(Mat::new(weight, g.o, k), Mat::new(&cols, k, l));
    let y = new_rows(g.n * g.o * p, p, |plane, out| {
        let (n, o) = (plane / g.o, plane % g.o);
        let src = &prod[o * l + n * p..][..p];
        let b = bias.map_or(0.0, |b| b[o]);
        for (d, s) in out.iter_mut().zip(src) {
            d.write(s + b);
        }
    });
    (y, cols)
}

/// The gradients of a convolution's input, weight and bias from its output's `dy`.
fn conv_backward(
    dy: &[f32],
    cols: &[f32],
    weight: &[f32],
    g: &Conv,
    want: [bool; 3],
) -> [Option<Vec<f32>>; 3] {
    let (k, l, p) = (g.k(), g.l(), g.p());
    // dY as [o, n·p], the patch matrix's column order.
    let dy2 = new_rows(g.o * l, l, |o, row| {
        for n in 0..g.n {
            write_all(&mut row[n * p..][..p], &dy[(n * g.o + o) * p..][..p]);
        }
    });
    let dy2m = Mat::new(&dy2, g.o, l);
    let dx = want[0].then(|| col2im(matmul(Mat::new(weight, g.o, k).t(), dy2m), g));
    let dw = want[1].then(|| matmul(dy2m, Mat::new(cols, k, l).t()));
    let db = want[2].then(|| dy2.chunks(l).map(lane_sum).collect());
    [dx, dw, db]
}

/// The sizes of one max-pooling (no dilation, floor rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pool {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Pool {
    fn out(&self) -> [usize; 2] {
        out_size(self.h, self.w, self.kernel, self.stride, self.padding)
    }
}

/// Whether `v` replaces `best` as a window's maximum: larger, or the window's first NaN.
/// Without short-circuits, so that the choice compiles to a select rather than a branch.
#[inline(always)]
fn wins(v: f32, best: f32) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// Each window's maximum and its index in the plane (the first, on ties; a NaN wins).
fn pool_forward(x: &[f32], g: &Pool) -> (Vec<f32>, Vec<u32>) {
    let [ho, wo] = g.out();
    let (hw, p) = (g.h * g.w, ho * wo);
    let total = g.planes * p;
    new_rows2(total, p, total, p, |plane, values, indices| {
        let x = &x[plane * hw..][..hw];
        if g.kernel == [2, 2] && g.stride == [2, 2] && g.padding == [0, 0] {
            pool_2x2(x, g.w, values, indices);
        } else {
            pool_windows(x, g, values, indices);
        }
    })
}

/// Any windows over one plane `x`: each one's first maximum in reading order.
fn pool_windows(
    x: &[f32],
    g: &Pool,
    values: &mut [MaybeUninit<f32>],
    indices: &mut [MaybeUninit<u32>],
) {
    let [ho, wo] = g.out();
    for oy in 0..ho {
        let y0 = (oy * g.stride[0]) as isize - g.padding[0] as isize;
        let ys = y0.max(0) as usize..((y0 + g.kernel[0] as isize) as usize).min(g.h);
        for ox in 0..wo {
            let x0 = (ox * g.stride[1]) as isize - g.padding[1] as isize;
            let xs = x0.max(0) as usize..((x0 + g.kernel[1] as isize) as usize).min(g.w);
            let mut best = (f32::NEG_INFINITY, ys.start * g.w + xs.start);
            for yy in ys.clone() {
                for xx in xs.clone() {
                    let v = x[yy * g.w + xx];
                    if wins(v, best.0) {
                        best = (v, yy * g.w + xx);
                    }
                }
            }
            values[oy * wo + ox].write(x[best.1]);
            indices[oy * wo + ox].write(best.1 as u32);
        }
    }
}

/// 2×2 windows at stride 2 over one plane `x` of width `w`, written without branches so that
/// the compiler vectorises it: each row pair of a window first (its first maximum), then the
/// lower pair's winner against the upper's — the first maximum in reading order, as the
/// general loop chooses.
fn pool_2x2(
    x: &[f32],
    w: usize,
    values: &mut [MaybeUninit<f32>],
    indices: &mut [MaybeUninit<u32>],
) {
    let wo = w / 2;
    if wo == 0 {
        return;
    }
    let out = values
        .chunks_exact_mut(wo)
        .zip(indices.chunks_exact_mut(wo));
    for (oy, (values, indices)) in out.enumerate() {
        let r0 = 2 * oy * w;
        let top = &x[r0..][..2 * wo];
        let bottom = &x[r0 + w..][..2 * wo];
        let (values, indices) = (&mut values[..wo], &mut indices[..wo]);
        let (base, w) = (r0 as u32, w as u32);
        // Indexed rather than zipped: the compiler vectorises this form (4× the zipped one).
        for c in 0..wo {
            let (t, b) = (
                [top[2 * c], top[2 * c + 1]],
                [bottom[2 * c], bottom[2 * c + 1]],
            );
            let upper_right = wins(t[1], t[0]);
            let upper = if upper_right { t[1] } else { t[0] };
            let lower_right = wins(b[1], b[0]);
            let lower = if lower_right { b[1] } else { b[0] };
            let down = wins(lower, upper);
            values[c].write(if down { lower } else { upper });
            let offset = if down {
                w + lower_right as u32
            } else {
                upper_right as u32
            };
            indices[c].write(base + 2 * c as u32 + offset);
        }
    }
}

/// The input's gradient: each output's gradient added at its maximum.
fn pool_backward(dy: &[f32], at: &[u32], g: &Pool) -> Vec<f32> {
    let [ho, wo] = g.out();
    let (hw, p) = (g.h * g.w, ho * wo);
    let mut dx = vec![0f32; g.planes * hw];
    rows(&mut dx, hw, |plane, dx| {
        for (d, a) in dy[plane * p..][..p].iter().zip(&at[plane * p..][..p]) {
            dx[*a as usize] += d;
        }
    });
    dx
}

// ---------------------------------------------------------------------------------------------
// Tensors in and out.

/// `t` laid out in order (the same tensor when it is already), when it holds `f32`.
fn f32s(t: &FlexTensor) -> Option<FlexTensor> {
    let t = t.to_contiguous();
    t.as_slice::<f32>()?;
    Some(t)
}

/// The values of a tensor [`f32s`] made.
fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice().expect("laid out by f32s")
}

fn flex(data: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::new(
        burn::tensor::Bytes::from_elems(data),
        Layout::contiguous(shape.into()),
        DType::F32,
    )
}

/// `t` as a tensor of `To`, when `From` is `To`.
fn cast<From: 'static, To: 'static>(t: From) -> Option<To> {
    (Box::new(t) as Box<dyn Any>)
        .downcast::<To>()
        .ok()
        .map(|b| *b)
}

/// `t`'s float primitive on `To`, when `B` is `To`.
fn float_of<To: Backend, B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<FloatTensor<To>> {
    Some(
        cast::<_, Tensor<To, D>>(t.clone())?
            .into_primitive()
            .tensor(),
    )
}

/// A kernel's output on `On` as a tensor of `B`, when `B` is `On`.
fn tensor_of<On: Backend, B: Backend>(y: FloatTensor<On>) -> Option<Tensor<B, 4>> {
    cast(Tensor::<On, 4>::from_primitive(TensorPrimitive::Float(y)))
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

// ---------------------------------------------------------------------------------------------
// Convolution.

#[derive(Debug)]
struct ConvBackward;

#[derive(Debug, Clone)]
struct ConvState {
    cols: Arc<Vec<f32>>,
    weight: FlexTensor,
    geometry: Conv,
}

impl<const N: usize> Backward<Flex, N> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let dy = f32s(&grad).expect("the gradient of an f32 convolution is f32");
        let s = ops.state;
        let g = s.geometry;
        let want = [0, 1, 2].map(|i| ops.parents.get(i).is_some_and(Option::is_some));
        let [dx, dw, db] = conv_backward(slice(&dy), &s.cols, slice(&s.weight), &g, want);
        let shapes = [
            vec![g.n, g.c, g.h, g.w],
            vec![g.o, g.c, g.kernel[0], g.kernel[1]],
            vec![g.o],
        ];
        for ((parent, grad), shape) in ops.parents.iter().zip([dx, dw, db]).zip(shapes) {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<Flex>(node.id, flex(grad, shape));
            }
        }
    }
}

/// The sizes of a convolution of `x` by `weight`; `None` for anything but `f32`.
fn conv_geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<Conv> {
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        return None;
    }
    let [n, c, h, w] = dims4(x);
    let [o, wc, kh, kw] = dims4(weight);
    assert_eq!(
        c, wc,
        "convolution: the input has {c} channels, the kernel takes {wc}"
    );
    assert!(
        h + 2 * padding[0] >= kh && w + 2 * padding[1] >= kw,
        "convolution: a {kh}×{kw} kernel does not fit a {h}×{w} input padded by {padding:?}"
    );
    Some(Conv {
        n,
        c,
        h,
        w,
        o,
        kernel: [kh, kw],
        stride,
        padding,
    })
}

/// Records `y` as `op`'s output on the autodiff graph, with `state` for its backward pass when
/// a parent is tracked.
fn record<O: Backward<Flex, N>, const N: usize>(
    op: O,
    parents: [&FloatTensor<FlexTrain>; N],
    state: O::State,
    y: FlexTensor,
) -> FloatTensor<FlexTrain> {
    match op
        .prepare::<NoCheckpointing>(parents.map(|p| p.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// A convolution's output and what its backward pass needs; `None` when a tensor is not `f32`.
fn conv_run(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<(FlexTensor, ConvState)> {
    let g = conv_geometry(x, weight, stride, padding)?;
    let bias = match bias {
        Some(b) => Some(f32s(b)?),
        None => None,
    };
    let weight = f32s(weight)?;
    let (y, cols) = conv_forward(
        slice(&f32s(x)?),
        slice(&weight),
        bias.as_ref().map(slice),
        &g,
    );
    let [ho, wo] = g.out();
    let state = ConvState {
        cols: Arc::new(cols),
        weight,
        geometry: g,
    };
    Some((flex(y, [g.n, g.o, ho, wo]), state))
}

/// A convolution on Flex, with or without autodiff: `None` when `B` is neither or the tensors
/// are not `f32` (the caller then uses burn's op).
pub(crate) fn conv2d<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<Tensor<B, 4>> {
    if let Some(x) = float_of::<FlexTrain, _, 4>(x) {
        let weight = float_of::<FlexTrain, _, 4>(weight)?;
        let bias = match bias {
            Some(b) => Some(float_of::<FlexTrain, _, 1>(b)?),
            None => None,
        };
        let (y, state) = conv_run(
            &x.primitive,
            &weight.primitive,
            bias.as_ref().map(|b| &b.primitive),
            stride,
            padding,
        )?;
        let out = match &bias {
            Some(b) => record(ConvBackward, [&x, &weight, b], state, y),
            None => record(ConvBackward, [&x, &weight], state, y),
        };
        return tensor_of::<FlexTrain, B>(out);
    }
    let x = float_of::<Flex, _, 4>(x)?;
    let weight = float_of::<Flex, _, 4>(weight)?;
    let bias = match bias {
        Some(b) => Some(float_of::<Flex, _, 1>(b)?),
        None => None,
    };
    let (y, _) = conv_run(&x, &weight, bias.as_ref(), stride, padding)?;
    tensor_of::<Flex, B>(y)
}

// ---------------------------------------------------------------------------------------------
// Max-pooling.

#[derive(Debug)]
struct PoolBackward;

#[derive(Debug, Clone)]
struct PoolState {
    at: Arc<Vec<u32>>,
    geometry: Pool,
    shape: [usize; 4],
}

impl Backward<Flex, 1> for PoolBackward {
    type State = PoolState;

    fn backward(self, ops: Ops<PoolState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        if let [Some(node)] = ops.parents {
            let dy = f32s(&grad).expect("the gradient of an f32 pooling is f32");
            let dx = pool_backward(slice(&dy), &ops.state.at, &ops.state.geometry);
            grads.register::<Flex>(node.id, flex(dx, ops.state.shape));
        }
    }
}

/// A max-pooling's output and what its backward pass needs; `None` when `x` is not `f32`.
fn pool_run(
    x: &FlexTensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<(FlexTensor, PoolState)> {
    let shape = dims4(x);
    let [n, c, h, w] = shape;
    let g = Pool {
        planes: n * c,
        h,
        w,
        kernel,
        stride,
        padding,
    };
    let (y, at) = pool_forward(slice(&f32s(x)?), &g);
    let [ho, wo] = g.out();
    let state = PoolState {
        at: Arc::new(at),
        geometry: g,
        shape,
    };
    Some((flex(y, [n, c, ho, wo]), state))
}

/// A max-pooling on Flex, with or without autodiff: `None` when `B` is neither or `x` is not
/// `f32` (the caller then uses burn's op).
pub(crate) fn max_pool2d<B: Backend>(
    x: &Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<Tensor<B, 4>> {
    if let Some(x) = float_of::<FlexTrain, _, 4>(x) {
        let (y, state) = pool_run(&x.primitive, kernel, stride, padding)?;
        return tensor_of::<FlexTrain, B>(record(PoolBackward, [&x], state, y));
    }
    let (y, _) = pool_run(&float_of::<Flex, _, 4>(x)?, kernel, stride, padding)?;
    tensor_of::<Flex, B>(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    type T<const D: usize> = Tensor<FlexTrain, D>;
    /// Input `[n, c, h, w]`, output channels, kernel, stride, padding, bias.
    type ConvCase = ([usize; 4], usize, [usize; 2], [usize; 2], [usize; 2], bool);
    /// Input `[n, c, h, w]`, kernel, stride, padding.
    type PoolCase = ([usize; 4], [usize; 2], [usize; 2], [usize; 2]);

    /// Asserts nc7's and burn's results agree; a failure names the case (printed first).
    fn close(ours: TensorData, burns: TensorData, case: &str) {
        eprintln!("comparing {case}");
        ours.assert_approx_eq::<f32>(&burns, Tolerance::absolute(1e-4).set_relative(1e-4));
    }

    /// Every convolution shape of the table: values and the three gradients, against burn's op.
    #[test]
    fn convolution_matches_burns_op_in_values_and_gradients() {
        let d = Default::default();
        let table: &[ConvCase] = &[
            ([2, 3, 8, 8], 4, [3, 3], [1, 1], [1, 1], true),
            ([1, 1, 5, 7], 2, [3, 3], [1, 1], [0, 0], true),
            ([3, 2, 9, 6], 3, [2, 3], [2, 1], [1, 0], false),
            ([2, 4, 7, 7], 5, [1, 1], [1, 1], [0, 0], true),
            ([2, 3, 10, 11], 2, [3, 3], [2, 2], [1, 1], true),
            ([1, 2, 6, 6], 3, [5, 5], [1, 1], [2, 2], true),
            ([2, 2, 4, 4], 1, [3, 3], [3, 3], [2, 2], false),
            ([2, 2, 7, 5], 3, [3, 1], [1, 1], [0, 0], true),
            ([1, 3, 5, 6], 2, [2, 3], [1, 1], [1, 1], true),
        ];
        for &(shape, o, kernel, stride, padding, with_bias) in table {
            let case =
                format!("{shape:?} o {o} kernel {kernel:?} stride {stride:?} padding {padding:?}");
            let x = T::<4>::random(shape, Distribution::Normal(0.0, 1.0), &d).require_grad();
            let w = T::<4>::random(
                [o, shape[1], kernel[0], kernel[1]],
                Distribution::Normal(0.0, 1.0),
                &d,
            )
            .require_grad();
            let b = with_bias
                .then(|| T::<1>::random([o], Distribution::Normal(0.0, 1.0), &d).require_grad());
            let ours = conv2d(&x, &w, b.as_ref(), stride, padding).expect("Flex serves f32");
            let burns = module::conv2d(
                x.clone(),
                w.clone(),
                b.clone(),
                ConvOptions::new(stride, padding, [1, 1], 1),
            );
            close(ours.to_data(), burns.to_data(), &case);
            // A weighted sum, so that every output's gradient differs.
            let weights = T::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &d);
            let g_ours = (ours * weights.clone()).sum().backward();
            let g_burn = (burns * weights).sum().backward();
            close(
                x.grad(&g_ours).unwrap().to_data(),
                x.grad(&g_burn).unwrap().to_data(),
                &case,
            );
            close(
                w.grad(&g_ours).unwrap().to_data(),
                w.grad(&g_burn).unwrap().to_data(),
                &case,
            );
            if let Some(b) = &b {
                close(
                    b.grad(&g_ours).unwrap().to_data(),
                    b.grad(&g_burn).unwrap().to_data(),
                    &case,
                );
            }
            // Without autodiff too.
            let inner = conv2d(
                &x.clone().inner(),
                &w.clone().inner(),
                b.clone().map(|b| b.inner()).as_ref(),
                stride,
                padding,
            )
            .unwrap();
            close(
                inner.to_data(),
                module::conv2d(
                    x.inner(),
                    w.inner(),
                    b.map(|b| b.inner()),
                    ConvOptions::new(stride, padding, [1, 1], 1),
                )
                .to_data(),
                &case,
            );
        }
    }

    #[test]
    fn max_pooling_matches_burns_op_in_values_and_gradients() {
        let d = Default::default();
        let table: &[PoolCase] = &[
            ([2, 3, 8, 8], [2, 2], [2, 2], [0, 0]),
            ([1, 2, 7, 9], [2, 2], [2, 2], [0, 0]),
            ([2, 2, 9, 9], [3, 3], [2, 2], [1, 1]),
            ([1, 3, 6, 5], [3, 2], [1, 1], [1, 0]),
            ([2, 1, 5, 5], [1, 1], [2, 2], [0, 0]),
        ];
        for &(shape, kernel, stride, padding) in table {
            let case = format!("{shape:?} kernel {kernel:?} stride {stride:?} padding {padding:?}");
            let x = T::<4>::random(shape, Distribution::Normal(0.0, 1.0), &d).require_grad();
            let ours = max_pool2d(&x, kernel, stride, padding).expect("Flex serves f32");
            let burns = module::max_pool2d(x.clone(), kernel, stride, padding, [1, 1], false);
            close(ours.to_data(), burns.to_data(), &case);
            let weights = T::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &d);
            let g_ours = (ours * weights.clone()).sum().backward();
            let g_burn = (burns * weights).sum().backward();
            close(
                x.grad(&g_ours).unwrap().to_data(),
                x.grad(&g_burn).unwrap().to_data(),
                &case,
            );
            let inner = max_pool2d(&x.clone().inner(), kernel, stride, padding).unwrap();
            close(
                inner.to_data(),
                module::max_pool2d(x.inner(), kernel, stride, padding, [1, 1], false).to_data(),
                &case,
            );
        }
    }

    /// The same numbers on one thread and on four: work is split where it does not change a
    /// sum's order.
    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        let g = Conv {
            n: 16,
            c: 16,
            h: 32,
            w: 32,
            o: 32,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
        };
        // Large enough for every step to be split among threads.
        let smallest = [g.k() * g.l(), g.n * g.o * g.p(), g.n * g.c * g.h * g.w];
        assert!(smallest.iter().all(|&n| n >= PARALLEL_FROM));
        assert!(g.o * g.k() * g.l() >= GEMM_PARALLEL_FROM);
        let mut seed = 7u32;
        let mut random = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        let x = random(g.n * g.c * g.h * g.w);
        let w = random(g.o * g.k());
        let b = random(g.o);
        let dy = random(g.n * g.o * g.p());
        let run = || {
            let (y, cols) = conv_forward(&x, &w, Some(&b), &g);
            let grads = conv_backward(&dy, &cols, &w, &g, [true; 3]);
            let pool = Pool {
                planes: g.n * g.o,
                h: g.h,
                w: g.w,
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0, 0],
            };
            let (py, at) = pool_forward(&y, &pool);
            let pdx = pool_backward(&py, &at, &pool);
            (y, grads, py, pdx)
        };
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(run)
        };
        let one = on(1);
        assert_eq!(one, on(4));
        assert_eq!(one, on(2));
    }

    #[test]
    fn the_two_by_two_path_picks_the_windows_first_maximum_as_the_general_one() {
        // Few distinct values: most windows hold ties, some a NaN or two.
        let (h, w) = (6, 9);
        let x: Vec<f32> = (0..h * w)
            .map(|i| match (i as u32).wrapping_mul(2_654_435_761) >> 28 {
                15 => f32::NAN,
                v => (v % 3) as f32,
            })
            .collect();
        let g = Pool {
            planes: 1,
            h,
            w,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
        };
        let p = 3 * 4;
        let fast = new_rows2(p, p, p, p, |_, v, i| pool_2x2(&x, w, v, i));
        let general = new_rows2(p, p, p, p, |_, v, i| pool_windows(&x, &g, v, i));
        let both = |(v, i): (Vec<f32>, Vec<u32>)| (bits(&v), i);
        assert_eq!(both(fast), both(general));
    }

    #[test]
    fn a_window_holding_a_nan_pools_to_it() {
        let nan = f32::NAN;
        for (kernel, stride) in [([2, 2], [2, 2]), ([2, 2], [1, 1])] {
            let g = Pool {
                planes: 1,
                h: 2,
                w: 2,
                kernel,
                stride,
                padding: [0, 0],
            };
            let (y, at) = pool_forward(&[1.0, nan, 3.0, nan], &g);
            assert!(
                y[0].is_nan() && at == [1],
                "{kernel:?} {stride:?}: {y:?} at {at:?}"
            );
            assert_eq!(pool_backward(&[5.0], &at, &g), [0.0, 5.0, 0.0, 0.0]);
        }
    }

    /// `len` values spread over −8..8 by a multiplicative hash of their index.
    fn noise(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / 1e6 - 8.0)
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    /// Convolutions at stride 1 whose output keeps the input's width: `[n, c, h, w]`, kernel,
    /// padding (one output channel).
    const SAME_WIDTH: [([usize; 4], [usize; 2], [usize; 2]); 5] = [
        ([2, 3, 6, 6], [3, 3], [1, 1]),
        ([1, 2, 7, 5], [3, 1], [0, 0]),
        ([2, 1, 5, 6], [2, 3], [1, 1]),
        ([1, 2, 6, 6], [5, 5], [2, 2]),
        ([1, 1, 3, 4], [1, 1], [0, 0]),
    ];

    fn same_width([n, c, h, w]: [usize; 4], kernel: [usize; 2], padding: [usize; 2]) -> Conv {
        let g = Conv {
            n,
            c,
            h,
            w,
            o: 1,
            kernel,
            stride: [1, 1],
            padding,
        };
        assert_eq!(
            g.out()[1],
            w,
            "[{n}, {c}, {h}, {w}] {kernel:?}: the width must stay"
        );
        g
    }

    #[test]
    fn the_same_width_col2im_adds_as_the_row_by_row_one_bit_for_bit() {
        for (shape, kernel, padding) in SAME_WIDTH {
            let g = same_width(shape, kernel, padding);
            let dcols = noise(g.k() * g.l());
            assert_eq!(
                bits(&col2im_same(&mut dcols.clone(), &g)),
                bits(&col2im_rows(&dcols, &g)),
                "{shape:?} kernel {kernel:?} padding {padding:?}"
            );
        }
    }

    #[test]
    fn the_same_width_im2col_copies_as_the_row_by_row_one_bit_for_bit() {
        for (shape, kernel, padding) in SAME_WIDTH {
            let g = same_width(shape, kernel, padding);
            let x = noise(shape.iter().product());
            assert_eq!(
                bits(&im2col_same(&x, &g)),
                bits(&im2col_rows(&x, &g)),
                "{shape:?} kernel {kernel:?} padding {padding:?}"
            );
        }
    }

    #[test]
    fn lane_sums_add_every_element() {
        for len in [0, 1, 15, 16, 17, 100, 1000] {
            let v: Vec<f32> = (0..len).map(|i| (i % 7) as f32 - 2.5).collect();
            let exact: f64 = v.iter().map(|&x| f64::from(x)).sum();
            assert!((f64::from(lane_sum(&v)) - exact).abs() < 1e-3, "{len}");
        }
    }

    #[test]
    fn valid_ranges_keep_the_input_inside() {
        // 5 outputs, input 5, stride 1, kernel offset 0, padding 1: output 0 reads input −1.
        assert_eq!(valid(5, 5, 1, 0, 1), 1..5);
        assert_eq!(valid(5, 5, 1, 2, 1), 0..4);
        assert_eq!(valid(3, 6, 2, 0, 1), 1..3);
        // A kernel offset past every input row.
        assert_eq!(valid(2, 1, 1, 3, 0), 0..0);
    }
}
