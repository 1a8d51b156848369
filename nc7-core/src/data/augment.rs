//! `Augment`: reproducible augmentation as a data processor. Flips, 90° rotations, crops
//! resized back to the image's size, scaling about the centre, brightness and contrast, each
//! with a probability, applied alike to the image, its mask and its boxes.
//!
//! The randomness is the sample's: `sample_seed`, which a `DataPipe` gives every sample from
//! the run's seed, the data epoch and the sample's index (see
//! [`SampleKey`](crate::data::SampleKey)). So an augmented run repeats bit for bit, continues
//! exactly with `--continue`, and does not depend on the read-ahead or the devices.
//!
//! ```json
//! {"class_name": "Augment", "name": "augment",
//!  "inbound_nodes": ["file_list", "image", "mask"],
//!  "flip_horizontal": 0.5, "rotate90": 0.25,
//!  "crop": {"p": 0.5, "min_scale": 0.7},
//!  "brightness": {"p": 0.5, "delta": 0.1}, "contrast": {"p": 0.5, "delta": 0.2}}
//! ```
//!
//! The image is `[C, H, W]` in `[0, 1]` (augment before standardizing); the mask any tensor
//! whose last two dimensions are `H × W` (integer or float; resized by nearest neighbour);
//! boxes `[N, 4]` or one box `[4]`, `x0, y0, x1, y1` as fractions of the width and height. A
//! crop clips the boxes to the image; a box that leaves the image entirely is dropped from a
//! `[N, 4]` list (a single `[4]` box is clipped to nothing), and its row of the optional
//! `labels` (`[N, …]`, one per box) with it. `boxes_clipped` and `boxes_dropped` count them.

use burn::prelude::{Backend, Tensor};
use burn::tensor::{DType, TensorData};
use serde::{Deserialize, Serialize};

use super::order::SplitMix64;
use crate::glue::AnyValue;
use crate::nest::{AnyTensor, Nest};
use crate::nucleotide::DataProcessor;
use crate::{BoxError, Build, Generated, Incoming, nucleotide};

/// An augmentation applied with probability `p`, by up to `delta`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Jitter {
    /// The probability.
    pub p: f64,
    /// How far: brightness adds up to ±`delta`, contrast scales by up to 1 ± `delta`.
    pub delta: f64,
}

/// A random crop, resized back to the image's size.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Crop {
    /// The probability.
    pub p: f64,
    /// The smallest crop, as a fraction of the height and of the width.
    pub min_scale: f64,
    /// The largest crop (1 by default).
    #[serde(default = "one")]
    pub max_scale: f64,
}

fn one() -> f64 {
    1.0
}

/// A random scaling about the image's centre: above 1 zooms in, below 1 zooms out (the
/// border filled with 0, the background of a mask).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// The probability.
    pub p: f64,
    /// The smallest factor.
    pub min: f64,
    /// The largest factor.
    pub max: f64,
}

/// `Augment`'s config: each augmentation off unless given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// The probability of a left-right flip.
    #[serde(default)]
    pub flip_horizontal: f64,
    /// The probability of an up-down flip.
    #[serde(default)]
    pub flip_vertical: f64,
    /// The probability of a rotation by 90°, 180° or 270° (each as likely).
    #[serde(default)]
    pub rotate90: f64,
    /// A random crop resized back.
    #[serde(default)]
    pub crop: Option<Crop>,
    /// A random scaling about the centre.
    #[serde(default)]
    pub scale: Option<Scale>,
    /// Adds a random amount to every pixel (clamped to [0, 1]).
    #[serde(default)]
    pub brightness: Option<Jitter>,
    /// Scales every pixel's distance to the image's mean (clamped to [0, 1]).
    #[serde(default)]
    pub contrast: Option<Jitter>,
}

impl AugmentConfig {
    /// Every value in its range, or what is wrong.
    fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut p = |name: &str, v: f64| {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("`{name}` is {v}: a probability is from 0 to 1"));
            }
        };
        p("flip_horizontal", self.flip_horizontal);
        p("flip_vertical", self.flip_vertical);
        p("rotate90", self.rotate90);
        if let Some(c) = self.crop {
            p("crop.p", c.p);
        }
        if let Some(sc) = self.scale {
            p("scale.p", sc.p);
        }
        for (name, j) in [("brightness", self.brightness), ("contrast", self.contrast)] {
            if let Some(j) = j {
                p(&format!("{name}.p"), j.p);
            }
        }
        if let Some(c) = self.crop
            && !(c.min_scale > 0.0 && c.min_scale <= c.max_scale && c.max_scale <= 1.0)
        {
            problems.push(format!(
                "`crop` scales {}–{}: give 0 < min_scale ≤ max_scale ≤ 1",
                c.min_scale, c.max_scale
            ));
        }
        if let Some(sc) = self.scale
            && !(sc.min > 0.0 && sc.min <= sc.max && sc.max.is_finite())
        {
            problems.push(format!(
                "`scale` factors {}–{}: give 0 < min ≤ max",
                sc.min, sc.max
            ));
        }
        for (name, j) in [("brightness", self.brightness), ("contrast", self.contrast)] {
            if let Some(j) = j
                && !(j.delta >= 0.0 && j.delta.is_finite())
            {
                problems.push(format!("`{name}.delta` is {}: give 0 or more", j.delta));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// What `Augment` takes.
#[derive(Incoming)]
pub struct AugmentIn<B: Backend> {
    /// `[C, H, W]` in `[0, 1]`.
    pub image: Tensor<B, 3>,
    /// A mask whose last two dimensions are the image's.
    pub mask: Option<AnyValue<B>>,
    /// `[N, 4]` or `[4]`: `x0, y0, x1, y1` as fractions.
    pub boxes: Option<AnyValue<B>>,
    /// One label (or any value per box) per box, `[N, …]`: kept with the boxes a crop keeps.
    pub labels: Option<AnyValue<B>>,
    /// The sample's seed (a `DataPipe`'s `file_list` gives it).
    pub sample_seed: i64,
}

/// What `Augment` gives.
#[derive(Generated)]
pub struct AugmentOut<B: Backend> {
    /// The image, augmented.
    pub image: Tensor<B, 3>,
    /// The mask, moved as the image.
    pub mask: Option<AnyValue<B>>,
    /// The boxes, moved as the image, clipped to it.
    pub boxes: Option<AnyValue<B>>,
    /// The labels of the boxes kept.
    pub labels: Option<AnyValue<B>>,
    /// Boxes a crop clipped.
    pub boxes_clipped: i64,
    /// Boxes a crop moved out of the image, dropped.
    pub boxes_dropped: i64,
}

/// Augments an image with its mask and boxes, reproducibly from the sample's seed.
#[nucleotide(kind = DataProcessor)]
pub struct Augment {
    config: AugmentConfig,
}

impl<B: Backend> Build<B> for Augment {
    type Config = AugmentConfig;
    type Input = AugmentIn<B>;
    type Output = AugmentOut<B>;
    fn build(c: &AugmentConfig, _: &B::Device) -> Result<Self, BoxError> {
        c.check()?;
        Ok(Augment { config: c.clone() })
    }
}

/// The rows of `labels` (one per box) whose box is `kept`; all of them when no box was given.
fn keep_rows<B: Backend>(
    labels: AnyValue<B>,
    kept: &[bool],
    device: &B::Device,
) -> Result<AnyValue<B>, BoxError> {
    let data = tensor_of(labels, "labels")?.into_data()?;
    let shape = data.shape.to_vec();
    let rows = shape.first().copied().unwrap_or(1);
    if kept.is_empty() {
        return Ok(AnyValue(Nest::Tensor(AnyTensor::from_data(data, device))));
    }
    if rows != kept.len() {
        return Err(format!(
            "{} boxes but labels of shape {shape:?}: give one label per box",
            kept.len()
        )
        .into());
    }
    let size = data.num_elements() / rows.max(1);
    let dtype = data.dtype;
    let values: Vec<f64> = data.iter::<f64>().collect();
    let out: Vec<f64> = values
        .chunks(size.max(1))
        .zip(kept)
        .filter(|(_, k)| **k)
        .flat_map(|(row, _)| row.iter().copied())
        .collect();
    let mut shape = shape;
    if let Some(first) = shape.first_mut() {
        *first = kept.iter().filter(|k| **k).count();
    }
    let data = TensorData::new(out, shape).convert_dtype(dtype);
    Ok(AnyValue(Nest::Tensor(AnyTensor::from_data(data, device))))
}

/// Values on `H × W` planes (every leading dimension a plane), with their tensor's shape and
/// dtype, to move and give back.
struct Planes {
    shape: Vec<usize>,
    dtype: DType,
    h: usize,
    w: usize,
    values: Vec<f64>,
}

impl Planes {
    fn of(data: TensorData, what: &str) -> Result<Planes, BoxError> {
        let shape = data.shape.to_vec();
        if shape.len() < 2 {
            return Err(
                format!("the {what} has shape {shape:?}: it needs a height and a width").into(),
            );
        }
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        Ok(Planes {
            dtype: data.dtype,
            values: data.iter::<f64>().collect(),
            shape,
            h,
            w,
        })
    }

    fn planes(&self) -> usize {
        self.values.len() / (self.h * self.w).max(1)
    }

    /// Each plane remade as `h × w` from `at(plane values, row, column)`.
    fn remake(&mut self, h: usize, w: usize, at: impl Fn(&[f64], usize, usize) -> f64) {
        let size = self.h * self.w;
        let mut out = Vec::with_capacity(self.planes() * h * w);
        for p in 0..self.planes() {
            let plane = &self.values[p * size..(p + 1) * size];
            for r in 0..h {
                for c in 0..w {
                    out.push(at(plane, r, c));
                }
            }
        }
        self.values = out;
        let n = self.shape.len();
        (self.shape[n - 2], self.shape[n - 1]) = (h, w);
        (self.h, self.w) = (h, w);
    }

    fn data(self) -> TensorData {
        let values: Vec<f64> = match self.dtype {
            // Integer and boolean values come back whole.
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::Flex32 => self.values,
            _ => self.values.into_iter().map(f64::round).collect(),
        };
        TensorData::new(values, self.shape).convert_dtype(self.dtype)
    }
}

/// The value at `(y, x)` (in pixels, possibly between them) of a `size` plane that `at`
/// reads: bilinear when `smooth` (images), else the nearest pixel (masks); clamped to the
/// plane's edge.
fn resample(
    at: impl Fn(usize, usize) -> f64,
    [h, w]: [usize; 2],
    y: f64,
    x: f64,
    smooth: bool,
) -> f64 {
    let (hf, wf) = ((h - 1) as f64, (w - 1) as f64);
    if !smooth {
        return at(
            (y.round().max(0.0) as usize).min(h - 1),
            (x.round().max(0.0) as usize).min(w - 1),
        );
    }
    let (yf, xf) = (y.clamp(0.0, hf), x.clamp(0.0, wf));
    let (ya, xa) = (yf.floor() as usize, xf.floor() as usize);
    let (yb, xb) = ((ya + 1).min(h - 1), (xa + 1).min(w - 1));
    let (dy, dx) = (yf - ya as f64, xf - xa as f64);
    let top = at(ya, xa) * (1.0 - dx) + at(ya, xb) * dx;
    let bottom = at(yb, xa) * (1.0 - dx) + at(yb, xb) * dx;
    top * (1.0 - dy) + bottom * dy
}

/// One geometric change, to apply alike to image, mask and boxes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Move {
    FlipH,
    FlipV,
    /// Clockwise by 90°.
    Rotate,
    /// Rows `y0..y0+ch`, columns `x0..x0+cw`, resized back to the full size.
    Crop {
        y0: usize,
        x0: usize,
        ch: usize,
        cw: usize,
    },
    /// By this factor about the centre.
    Scale(f64),
}

impl Move {
    /// Moves the planes; `smooth` resizes bilinearly (images), else by nearest neighbour.
    fn planes(self, p: &mut Planes, smooth: bool) {
        let (h, w) = (p.h, p.w);
        match self {
            Move::FlipH => p.remake(h, w, |v, r, c| v[r * w + (w - 1 - c)]),
            Move::FlipV => p.remake(h, w, |v, r, c| v[(h - 1 - r) * w + c]),
            Move::Rotate => p.remake(w, h, |v, r, c| v[(h - 1 - c) * w + r]),
            Move::Crop { y0, x0, ch, cw } => p.remake(h, w, |v, r, c| {
                // The output pixel's centre, in the crop's pixels.
                let y = (r as f64 + 0.5) * ch as f64 / h as f64 - 0.5;
                let x = (c as f64 + 0.5) * cw as f64 / w as f64 - 0.5;
                resample(|yy, xx| v[(y0 + yy) * w + x0 + xx], [ch, cw], y, x, smooth)
            }),
            Move::Scale(f) => p.remake(h, w, |v, r, c| {
                // Where the output pixel's centre was before the scaling; 0 outside.
                let y = (r as f64 + 0.5 - h as f64 / 2.0) / f + h as f64 / 2.0 - 0.5;
                let x = (c as f64 + 0.5 - w as f64 / 2.0) / f + w as f64 / 2.0 - 0.5;
                let (hf, wf) = ((h - 1) as f64, (w - 1) as f64);
                if y < -0.5 || x < -0.5 || y > hf + 0.5 || x > wf + 0.5 {
                    return 0.0;
                }
                resample(|yy, xx| v[yy * w + xx], [h, w], y, x, smooth)
            }),
        }
    }

    /// Moves one box (fractions of the image `h × w` before the move).
    fn bbox(self, [x0, y0, x1, y1]: [f64; 4], h: usize, w: usize) -> [f64; 4] {
        match self {
            Move::FlipH => [1.0 - x1, y0, 1.0 - x0, y1],
            Move::FlipV => [x0, 1.0 - y1, x1, 1.0 - y0],
            // (x, y) → (1 - y, x).
            Move::Rotate => [1.0 - y1, x0, 1.0 - y0, x1],
            Move::Crop {
                y0: cy,
                x0: cx,
                ch,
                cw,
            } => {
                let fx = |x: f64| (x * w as f64 - cx as f64) / cw as f64;
                let fy = |y: f64| (y * h as f64 - cy as f64) / ch as f64;
                [fx(x0), fy(y0), fx(x1), fy(y1)]
            }
            Move::Scale(f) => [x0, y0, x1, y1].map(|v| (v - 0.5) * f + 0.5),
        }
    }

    /// Whether the move can take part of the image out (its boxes are clipped after it).
    fn cuts(self) -> bool {
        matches!(self, Move::Crop { .. } | Move::Scale(_))
    }
}

impl AugmentConfig {
    /// The moves and pixel changes for a sample of `h × w` with `seed`.
    fn plan(&self, seed: u64, h: usize, w: usize) -> (Vec<Move>, Option<f64>, Option<f64>) {
        // Each augmentation draws whether it is on even when it is off, so that its draws
        // stay where they are whichever others are on.
        let mut d = SplitMix64(seed);
        let mut moves = Vec::new();
        if d.chance(self.flip_horizontal) {
            moves.push(Move::FlipH);
        }
        if d.chance(self.flip_vertical) {
            moves.push(Move::FlipV);
        }
        let (rotate, turns) = (d.chance(self.rotate90), 1 + d.below(3) as usize);
        let (mut h, mut w) = (h, w);
        if rotate {
            for _ in 0..turns {
                moves.push(Move::Rotate);
                (h, w) = (w, h);
            }
        }
        let (crop, a, b, c) = (
            d.chance(self.crop.map_or(0.0, |c| c.p)),
            d.unit(),
            d.unit(),
            d.unit(),
        );
        if let (true, Some(cfg)) = (crop, self.crop) {
            let scale = cfg.min_scale + (cfg.max_scale - cfg.min_scale) * a;
            let ch = ((h as f64 * scale).round() as usize).clamp(1, h);
            let cw = ((w as f64 * scale).round() as usize).clamp(1, w);
            let y0 = ((h - ch + 1) as f64 * b) as usize % (h - ch + 1);
            let x0 = ((w - cw + 1) as f64 * c) as usize % (w - cw + 1);
            if (ch, cw) != (h, w) {
                moves.push(Move::Crop { y0, x0, ch, cw });
            }
        }
        let (scale, f) = (d.chance(self.scale.map_or(0.0, |s| s.p)), d.unit());
        if let (true, Some(sc)) = (scale, self.scale) {
            let factor = sc.min + (sc.max - sc.min) * f;
            if factor != 1.0 {
                moves.push(Move::Scale(factor));
            }
        }
        let mut jitter = |j: Option<Jitter>| {
            let (on, amount) = (d.chance(j.map_or(0.0, |j| j.p)), d.unit() * 2.0 - 1.0);
            j.filter(|_| on).map(|j| amount * j.delta)
        };
        let brightness = jitter(self.brightness);
        let contrast = jitter(self.contrast);
        (moves, brightness, contrast)
    }
}

fn tensor_of<B: Backend>(value: AnyValue<B>, what: &str) -> Result<AnyTensor<B>, BoxError> {
    match value.0 {
        Nest::Tensor(t) => Ok(t),
        other => Err(format!("the {what} is {}, not a tensor", other.describe()).into()),
    }
}

impl<B: Backend> DataProcessor<B> for Augment {
    fn process(&mut self, input: AugmentIn<B>) -> Result<AugmentOut<B>, BoxError> {
        let device = input.image.device();
        let [_, h, w] = input.image.dims();
        if self.config.rotate90 > 0.0 && h != w {
            return Err(format!(
                "`rotate90` would turn this {h}×{w} image into {w}×{h}, and a batch holds one size: rotate square images only"
            )
            .into());
        }
        let (moves, brightness, contrast) = self.config.plan(input.sample_seed as u64, h, w);
        let mut image = Planes::of(input.image.into_data(), "image")?;
        for m in &moves {
            m.planes(&mut image, true);
        }
        if let Some(delta) = brightness {
            image
                .values
                .iter_mut()
                .for_each(|v| *v = (*v + delta).clamp(0.0, 1.0));
        }
        if let Some(delta) = contrast {
            let mean = image.values.iter().sum::<f64>() / image.values.len().max(1) as f64;
            let factor = 1.0 + delta;
            image
                .values
                .iter_mut()
                .for_each(|v| *v = (mean + (*v - mean) * factor).clamp(0.0, 1.0));
        }
        let mask = match input.mask {
            Some(m) => {
                let mut planes = Planes::of(tensor_of(m, "mask")?.into_data()?, "mask")?;
                if (planes.h, planes.w) != (h, w) {
                    return Err(format!(
                        "the mask is {}×{}, the image {h}×{w}",
                        planes.h, planes.w
                    )
                    .into());
                }
                for m in &moves {
                    m.planes(&mut planes, false);
                }
                Some(AnyValue(Nest::Tensor(AnyTensor::from_data(
                    planes.data(),
                    &device,
                ))))
            }
            None => None,
        };
        let (mut clipped, mut dropped) = (0, 0);
        // Which boxes stay, in order (all of them without boxes).
        let mut kept: Vec<bool> = Vec::new();
        let boxes = match input.boxes {
            Some(b) => {
                let data = tensor_of(b, "boxes")?.into_data()?;
                let shape = data.shape.to_vec();
                let single = shape == [4];
                if !single && (shape.len() != 2 || shape[1] != 4) {
                    return Err(format!(
                        "the boxes have shape {shape:?}: give [N, 4] or [4] (x0, y0, x1, y1)"
                    )
                    .into());
                }
                let dtype = data.dtype;
                let values: Vec<f64> = data.iter::<f64>().collect();
                for (i, b) in values.chunks(4).enumerate() {
                    let inside = b.iter().all(|v| (0.0..=1.0).contains(v));
                    if !inside || b[2] < b[0] || b[3] < b[1] {
                        return Err(format!(
                            "box {i} is {b:?}: boxes are x0, y0, x1, y1 as fractions of the image, from 0 to 1, x0 ≤ x1 and y0 ≤ y1; fix the labels"
                        )
                        .into());
                    }
                }
                let mut out = Vec::new();
                for b in values.chunks(4) {
                    let (mut bh, mut bw) = (h, w);
                    let mut bx = [b[0], b[1], b[2], b[3]];
                    let mut cut = false;
                    for m in &moves {
                        bx = m.bbox(bx, bh, bw);
                        if *m == Move::Rotate {
                            (bh, bw) = (bw, bh);
                        }
                        if m.cuts() {
                            let inside = bx.map(|v| v.clamp(0.0, 1.0));
                            cut |= inside != bx;
                            bx = inside;
                        }
                    }
                    let empty = bx[2] <= bx[0] || bx[3] <= bx[1];
                    kept.push(!empty || single);
                    if empty && !single {
                        dropped += 1;
                        continue;
                    }
                    clipped += i64::from(cut);
                    out.extend(bx);
                }
                let n = out.len() / 4;
                let shape = if single { vec![4] } else { vec![n, 4] };
                let data = TensorData::new(out, shape).convert_dtype(dtype);
                Some(AnyValue(Nest::Tensor(AnyTensor::from_data(data, &device))))
            }
            None => None,
        };
        let labels = match input.labels {
            Some(l) => Some(keep_rows(l, &kept, &device)?),
            None => None,
        };
        Ok(AugmentOut {
            image: Tensor::from_data(image.data(), &device),
            mask,
            boxes,
            labels,
            boxes_clipped: clipped,
            boxes_dropped: dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    fn augment(config: serde_json::Value) -> Augment {
        let c: AugmentConfig = serde_json::from_value(config).unwrap();
        <Augment as Build<Cpu>>::build(&c, &Default::default()).unwrap()
    }

    /// A 1×6×6 image whose pixel (r, c) is `10 r + c` / 100, its mask the same as integers,
    /// and one box on pixels rows 1..3, columns 2..5.
    fn sample(seed: i64) -> AugmentIn<Cpu> {
        let d = Default::default();
        let values: Vec<f32> = (0..6)
            .flat_map(|r| (0..6).map(move |c| (10 * r + c) as f32 / 100.0))
            .collect();
        let mask: Vec<i64> = (0..6)
            .flat_map(|r| (0..6).map(move |c| 10 * r + c))
            .collect();
        AugmentIn {
            image: Tensor::from_data(TensorData::new(values, [1, 6, 6]), &d),
            mask: Some(AnyValue(Nest::Tensor(AnyTensor::from_data(
                TensorData::new(mask, [6, 6]),
                &d,
            )))),
            boxes: Some(AnyValue(Nest::Tensor(AnyTensor::from_data(
                TensorData::new(vec![2.0f32 / 6.0, 1.0 / 6.0, 5.0 / 6.0, 3.0 / 6.0], [1, 4]),
                &d,
            )))),
            labels: Some(AnyValue(Nest::Tensor(AnyTensor::from_data(
                TensorData::new(vec![7i64], [1]),
                &d,
            )))),
            sample_seed: seed,
        }
    }

    fn values(v: Option<AnyValue<Cpu>>) -> (Vec<usize>, Vec<f64>) {
        let Some(AnyValue(Nest::Tensor(t))) = v else {
            panic!("no tensor")
        };
        let data = t.into_data().unwrap();
        (data.shape.to_vec(), data.iter::<f64>().collect())
    }

    /// The box of the mask's pixels whose value lies in the original box (rows 1..3,
    /// columns 2..5), as fractions.
    fn mask_box(shape: &[usize], mask: &[f64]) -> [f64; 4] {
        let (h, w) = (shape[0], shape[1]);
        let inside = |v: f64| {
            let (r, c) = ((v / 10.0).floor() as usize, v as usize % 10);
            (1..3).contains(&r) && (2..5).contains(&c)
        };
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        for r in 0..h {
            for c in 0..w {
                if inside(mask[r * w + c]) {
                    (x0, y0, x1, y1) = (x0.min(c), y0.min(r), x1.max(c + 1), y1.max(r + 1));
                }
            }
        }
        [
            x0 as f64 / w as f64,
            y0 as f64 / h as f64,
            x1 as f64 / w as f64,
            y1 as f64 / h as f64,
        ]
    }

    #[test]
    fn flips_and_rotations_move_image_mask_and_boxes_alike() {
        for (config, name) in [
            (
                serde_json::json!({"flip_horizontal": 1.0}),
                "flip left-right",
            ),
            (serde_json::json!({"flip_vertical": 1.0}), "flip up-down"),
            (serde_json::json!({"rotate90": 1.0}), "rotate"),
            (
                serde_json::json!({"flip_horizontal": 1.0, "flip_vertical": 1.0, "rotate90": 1.0}),
                "all three",
            ),
        ] {
            for seed in 0..6 {
                let out = augment(config.clone()).process(sample(seed)).unwrap();
                let image: Vec<f64> = out.image.clone().into_data().iter::<f64>().collect();
                let (shape, mask) = values(out.mask);
                // The image's pixels went where the mask's did.
                for (i, m) in image.iter().zip(&mask) {
                    assert!((i * 100.0 - m).abs() < 1e-4, "{name}: {i} vs {m}");
                }
                // The box is where the mask's pixels of the box went.
                let (_, b) = values(out.boxes);
                let expected = mask_box(&shape, &mask);
                for (got, want) in b.iter().zip(expected) {
                    assert!(
                        (got - want).abs() < 1e-6,
                        "{name} seed {seed}: {b:?} vs {expected:?}"
                    );
                }
                assert_eq!((out.boxes_clipped, out.boxes_dropped), (0, 0));
            }
        }
    }

    #[test]
    fn crops_resize_back_and_clip_or_drop_the_boxes_they_cut() {
        let crop = serde_json::json!({"crop": {"p": 1.0, "min_scale": 0.5, "max_scale": 0.5}});
        let mut cut = 0;
        for seed in 0..40 {
            let out = augment(crop.clone()).process(sample(seed)).unwrap();
            assert_eq!(out.image.dims(), [1, 6, 6], "resized back");
            let (shape, mask) = values(out.mask);
            assert_eq!(shape, [6, 6]);
            // Nearest neighbour: the mask holds values of the original only.
            assert!(
                mask.iter()
                    .all(|v| (v / 10.0).floor() <= 5.0 && v % 10.0 <= 5.0)
            );
            let (bshape, b) = values(out.boxes);
            // A dropped box takes its label with it.
            let (lshape, labels) = values(out.labels);
            if out.boxes_dropped == 1 {
                assert_eq!(bshape, [0, 4]);
                assert_eq!(lshape, [0]);
            } else {
                assert_eq!((lshape, labels), (vec![1], vec![7.0]));
                assert!(b.iter().all(|v| (0.0..=1.0).contains(v)), "{b:?}");
            }
            cut += out.boxes_clipped + out.boxes_dropped;
        }
        assert!(cut > 0, "a half-size crop cuts the box sometimes");
    }

    #[test]
    fn labels_go_one_per_box() {
        let mut two = sample(0);
        two.labels = Some(AnyValue(Nest::Tensor(AnyTensor::from_data(
            TensorData::new(vec![7i64, 8], [2]),
            &Default::default(),
        ))));
        let Err(e) = augment(serde_json::json!({"flip_horizontal": 1.0})).process(two) else {
            panic!("two labels for one box: accepted")
        };
        assert!(
            e.to_string()
                .contains("1 boxes but labels of shape [2]: give one label per box"),
            "{e}"
        );
    }

    #[test]
    fn scaling_keeps_the_size_and_moves_boxes_about_the_centre() {
        // Zoom in by 2: the centre 3×3 fills the image; the box (rows 1..3, columns 2..5)
        // becomes [1/6, 0, 1, 1/2] after clipping.
        let out = augment(serde_json::json!({"scale": {"p": 1.0, "min": 2.0, "max": 2.0}}))
            .process(sample(0))
            .unwrap();
        assert_eq!(out.image.dims(), [1, 6, 6]);
        let (_, b) = values(out.boxes);
        let want = [1.0 / 6.0, 0.0, 1.0, 0.5];
        for (g, w) in b.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{b:?}");
        }
        assert_eq!((out.boxes_clipped, out.boxes_dropped), (1, 0));
        // Zoom out by 1/2: the border is 0 in image and mask, the box shrinks to the centre.
        let out = augment(serde_json::json!({"scale": {"p": 1.0, "min": 0.5, "max": 0.5}}))
            .process(sample(0))
            .unwrap();
        let image: Vec<f64> = out.image.into_data().iter::<f64>().collect();
        let (_, mask) = values(out.mask);
        assert_eq!((image[0], mask[0]), (0.0, 0.0), "a corner is border");
        let (_, b) = values(out.boxes);
        let want = [5.0 / 12.0, 1.0 / 3.0, 2.0 / 3.0, 0.5];
        for (g, w) in b.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{b:?}");
        }
    }

    #[test]
    fn the_sample_seed_alone_decides_and_brightness_and_contrast_stay_in_range() {
        let config = serde_json::json!({
            "flip_horizontal": 0.5, "rotate90": 0.5,
            "crop": {"p": 0.5, "min_scale": 0.6}, "scale": {"p": 0.5, "min": 0.7, "max": 1.3},
            "brightness": {"p": 0.5, "delta": 0.3}, "contrast": {"p": 0.5, "delta": 0.5}
        });
        let run = |seed| {
            let out = augment(config.clone()).process(sample(seed)).unwrap();
            let image: Vec<f64> = out.image.into_data().iter::<f64>().collect();
            (image, values(out.mask), values(out.boxes))
        };
        let mut different = 0;
        for seed in 0..20 {
            let a = run(seed);
            assert_eq!(a, run(seed), "seed {seed}: the same twice");
            assert!(a.0.iter().all(|v| (0.0..=1.0).contains(v)));
            different += usize::from(a != run(seed + 100));
        }
        assert!(different > 10, "other seeds, other samples: {different}");
    }

    #[test]
    fn bad_configs_and_inputs_are_named() {
        for (config, expected) in [
            (
                serde_json::json!({"flip_horizontal": 1.5}),
                "`flip_horizontal` is 1.5",
            ),
            (
                serde_json::json!({"crop": {"p": 0.5, "min_scale": 0.0}}),
                "give 0 < min_scale ≤ max_scale ≤ 1",
            ),
            (
                serde_json::json!({"brightness": {"p": 0.5, "delta": -1.0}}),
                "`brightness.delta` is -1",
            ),
            (
                serde_json::json!({"scale": {"p": 0.5, "min": 1.5, "max": 1.2}}),
                "give 0 < min ≤ max",
            ),
        ] {
            let c: AugmentConfig = serde_json::from_value(config).unwrap();
            let err = <Augment as Build<Cpu>>::build(&c, &Default::default())
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
        let mut s = sample(0);
        s.boxes = Some(AnyValue(Nest::Tensor(AnyTensor::from_data(
            TensorData::new(vec![0.0f32; 6], [2, 3]),
            &Default::default(),
        ))));
        let err = augment(serde_json::json!({}))
            .process(s)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("give [N, 4] or [4]"), "{err}");
        // A label's box outside the image.
        let mut s = sample(0);
        s.boxes = Some(AnyValue(Nest::Tensor(AnyTensor::from_data(
            TensorData::new(vec![0.5f32, 0.2, 1.3, 0.4], [4]),
            &Default::default(),
        ))));
        let err = augment(serde_json::json!({}))
            .process(s)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("box 0 is [0.5,") && err.contains("fix the labels"),
            "{err}"
        );
        let mut s = sample(0);
        s.image = Tensor::zeros([1, 4, 6], &Default::default());
        s.mask = None;
        let err = augment(serde_json::json!({"rotate90": 0.5}))
            .process(s)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("rotate square images only"), "{err}");
    }
}
