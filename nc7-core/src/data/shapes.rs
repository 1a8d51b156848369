//! A procedural data set of shapes: circles, squares and triangles of random size, position and
//! colour on a noisy background, with class labels, per-pixel masks and bounding boxes.
//! Every sample is a function of the seed and its index, so a data set needs no files and
//! reads in any order; [`write_shapes`] puts one on disk as PNG and JSON files.
//!
//! ```json
//! {"class_name": "Shapes", "name": "train_shapes", "samples": 2000, "size": 32, "seed": 1}
//! ```
//!
//! Generated keys: `image` (`[3, size, size]` floats in [0, 1]), `label` (`[1]`, int: 0 circle,
//! 1 square, 2 triangle), `mask` (`[size, size]`, int: 0 background, 1 + the label inside the
//! shape), `bbox` (`[4]` floats: x0, y0, x1, y1 as fractions of the side) and `file_name`
//! (`shape-<seed>-<index>`).

use std::path::Path;

use burn::prelude::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::nucleotide::{DataFeeder, Dataset};
use crate::{BoxError, Build, Generated, NoKeys, nucleotide};

/// The classes, by label.
pub const CLASSES: [&str; 3] = ["circle", "square", "triangle"];

/// `Shapes` and `ShapesFeeder`'s config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShapesConfig {
    /// How many samples.
    pub samples: usize,
    /// The images' side in pixels (at least 8).
    #[serde(default = "thirty_two")]
    pub size: usize,
    /// Seeds every sample: the same seed gives the same data set.
    #[serde(default)]
    pub seed: u64,
    /// Uniform pixel noise, from 0 (none) to 1.
    #[serde(default = "noise")]
    pub noise: f32,
}

fn thirty_two() -> usize {
    32
}

fn noise() -> f32 {
    0.05
}

/// One shape, drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    /// `[3, size, size]`, channels first, in [0, 1].
    pub pixels: Vec<f32>,
    /// 0 circle, 1 square, 2 triangle.
    pub label: i64,
    /// `size × size`: 0 background, 1 + label inside the shape.
    pub mask: Vec<i64>,
    /// x0, y0, x1, y1 as fractions of the side.
    pub bbox: [f32; 4],
}

/// A small, fast generator (splitmix64) for reproducible samples.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: usize) -> Rng {
        let mut r = Rng(seed ^ (index as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

/// Draws sample `index` of the data set of `config`.
pub fn draw(config: &ShapesConfig, index: usize) -> Drawn {
    let s = config.size;
    let side = s as f32;
    let mut rng = Rng::new(config.seed, index);
    let label = (rng.next() % 3) as i64;
    // Shape and background colours far enough apart to see.
    let background: [f32; 3] = [
        rng.range(0.0, 0.45),
        rng.range(0.0, 0.45),
        rng.range(0.0, 0.45),
    ];
    let mut colour = [
        rng.range(0.0, 1.0),
        rng.range(0.0, 1.0),
        rng.range(0.0, 1.0),
    ];
    let brightest = (0..3)
        .max_by(|&a, &b| colour[a].total_cmp(&colour[b]))
        .expect("three channels");
    colour[brightest] = rng.range(0.75, 1.0);
    let r = rng.range(side * 0.18, side * 0.4);
    let cx = rng.range(r, side - r);
    let cy = rng.range(r, side - r);
    let inside = |x: f32, y: f32| -> bool {
        let (dx, dy) = (x - cx, y - cy);
        match label {
            0 => dx * dx + dy * dy <= r * r,
            1 => dx.abs() <= r * 0.8 && dy.abs() <= r * 0.8,
            _ => {
                // Apex up at (cx, cy - r), base from (cx - r, cy + r) to (cx + r, cy + r).
                let t = (dy + r) / (2.0 * r);
                (0.0..=1.0).contains(&t) && dx.abs() <= t * r
            }
        }
    };
    let mut pixels = vec![0.0f32; 3 * s * s];
    let mut mask = vec![0i64; s * s];
    let (mut x0, mut y0, mut x1, mut y1) = (side, side, 0.0f32, 0.0f32);
    for y in 0..s {
        for x in 0..s {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let hit = inside(px, py);
            if hit {
                mask[y * s + x] = label + 1;
                x0 = x0.min(x as f32);
                y0 = y0.min(y as f32);
                x1 = x1.max(x as f32 + 1.0);
                y1 = y1.max(y as f32 + 1.0);
            }
            for c in 0..3 {
                let base = if hit { colour[c] } else { background[c] };
                let n = (rng.unit() * 2.0 - 1.0) * config.noise;
                pixels[c * s * s + y * s + x] = (base + n).clamp(0.0, 1.0);
            }
        }
    }
    Drawn {
        pixels,
        label,
        mask,
        bbox: [x0 / side, y0 / side, x1 / side, y1 / side],
    }
}

/// One shapes sample.
#[derive(Generated)]
pub struct ShapeSample<B: Backend> {
    /// `[3, size, size]` in [0, 1].
    pub image: Tensor<B, 3>,
    /// `[1]`: 0 circle, 1 square, 2 triangle.
    pub label: Tensor<B, 1, Int>,
    /// `[size, size]`: 0 background, 1 + label inside the shape.
    pub mask: Tensor<B, 2, Int>,
    /// `[4]`: x0, y0, x1, y1 as fractions of the side.
    pub bbox: Tensor<B, 1>,
    /// `shape-<seed>-<index>`.
    pub file_name: String,
}

fn sample<B: Backend>(c: &ShapesConfig, index: usize) -> ShapeSample<B> {
    let d = Default::default();
    let s = c.size;
    let drawn = draw(c, index);
    ShapeSample {
        image: Tensor::from_data(TensorData::new(drawn.pixels, [3, s, s]), &d),
        label: Tensor::from_data(TensorData::new(vec![drawn.label], [1]), &d),
        mask: Tensor::from_data(TensorData::new(drawn.mask, [s, s]), &d),
        bbox: Tensor::from_data(TensorData::new(drawn.bbox.to_vec(), [4]), &d),
        file_name: name(c, index),
    }
}

fn name(c: &ShapesConfig, index: usize) -> String {
    format!("shape-{}-{index:06}", c.seed)
}

fn check(c: &ShapesConfig) -> Result<(), BoxError> {
    if c.size < 8 {
        return Err(format!(
            "size {} is too small to draw a shape; give 8 or more",
            c.size
        )
        .into());
    }
    if !(0.0..=1.0).contains(&c.noise) {
        return Err(format!("noise {} is outside [0, 1]", c.noise).into());
    }
    Ok(())
}

/// The shapes data set (training and evaluation), drawn on demand.
#[nucleotide(kind = Dataset)]
pub struct Shapes {
    config: ShapesConfig,
}

impl<B: Backend> Build<B> for Shapes {
    type Config = ShapesConfig;
    type Input = NoKeys;
    type Output = ShapeSample<B>;
    fn build(c: &ShapesConfig, _: &B::Device) -> Result<Self, BoxError> {
        check(c)?;
        Ok(Shapes { config: c.clone() })
    }
}

impl<B: Backend> Dataset<B> for Shapes {
    fn len(&self) -> usize {
        self.config.samples
    }
    fn get(&self, index: usize) -> Result<ShapeSample<B>, BoxError> {
        if index >= self.config.samples {
            return Err(format!("sample {index} of {}", self.config.samples).into());
        }
        Ok(sample(&self.config, index))
    }
}

/// The shapes data set for inference, one sample after another.
#[nucleotide(kind = DataFeeder)]
pub struct ShapesFeeder {
    config: ShapesConfig,
    next: usize,
}

impl<B: Backend> Build<B> for ShapesFeeder {
    type Config = ShapesConfig;
    type Input = NoKeys;
    type Output = ShapeSample<B>;
    fn build(c: &ShapesConfig, _: &B::Device) -> Result<Self, BoxError> {
        check(c)?;
        Ok(ShapesFeeder {
            config: c.clone(),
            next: 0,
        })
    }
}

impl<B: Backend> DataFeeder<B> for ShapesFeeder {
    fn next_sample(&mut self) -> Result<Option<ShapeSample<B>>, BoxError> {
        if self.next >= self.config.samples {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(sample(&self.config, self.next - 1)))
    }
}

/// Writes a shapes data set into `dir`: `images/<name>.png` (RGB), `masks/<name>.png` (grey,
/// the pixel value is the mask's class: 0 background, 1 + label) and `labels/<name>.json`
/// (`{"label": n, "class": "circle", "bbox": [x0, y0, x1, y1]}`), readable by `ImageFiles`.
/// Returns the number of samples written.
pub fn write_shapes(dir: &Path, config: &ShapesConfig) -> Result<usize, crate::data::DataError> {
    check(config).map_err(|e| e.to_string())?;
    for sub in ["images", "masks", "labels"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
            crate::data::DataError::caused(
                format!("cannot create {}: {e}", dir.join(sub).display()),
                e,
            )
        })?;
    }
    let s = config.size;
    for i in 0..config.samples {
        let drawn = draw(config, i);
        let n = name(config, i);
        super::files::write_png(
            &dir.join(format!("images/{n}.png")),
            &TensorData::new(drawn.pixels, [3, s, s]),
        )?;
        // Integers are written as they are (0..=3), not scaled.
        super::files::write_png(
            &dir.join(format!("masks/{n}.png")),
            &TensorData::new(drawn.mask, [s, s]),
        )?;
        let label = serde_json::json!({
            "label": drawn.label,
            "class": CLASSES[drawn.label as usize],
            "bbox": drawn.bbox,
        });
        let path = dir.join(format!("labels/{n}.json"));
        std::fs::write(&path, label.to_string()).map_err(|e| {
            crate::data::DataError::caused(format!("cannot write {}: {e}", path.display()), e)
        })?;
    }
    Ok(config.samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> ShapesConfig {
        ShapesConfig {
            samples: 300,
            size: 24,
            seed,
            noise: 0.05,
        }
    }

    #[test]
    fn samples_are_a_function_of_seed_and_index() {
        assert_eq!(draw(&config(1), 7), draw(&config(1), 7));
        assert_ne!(draw(&config(1), 7), draw(&config(2), 7));
        assert_ne!(draw(&config(1), 7), draw(&config(1), 8));
    }

    #[test]
    fn classes_masks_and_boxes_agree() {
        let c = config(3);
        let mut counts = [0usize; 3];
        for i in 0..c.samples {
            let d = draw(&c, i);
            counts[d.label as usize] += 1;
            let s = c.size;
            // The mask holds 1 + label inside the shape and 0 elsewhere; the box bounds it.
            let inside: Vec<usize> = (0..s * s).filter(|&p| d.mask[p] != 0).collect();
            assert!(inside.iter().all(|&p| d.mask[p] == d.label + 1));
            let area = inside.len() as f32 / (s * s) as f32;
            assert!(area > 0.03, "sample {i}: a shape covers {area}");
            let [x0, y0, x1, y1] = d.bbox;
            for &p in &inside {
                let (x, y) = ((p % s) as f32 / s as f32, (p / s) as f32 / s as f32);
                assert!(x >= x0 && x < x1 && y >= y0 && y < y1);
            }
            assert!(d.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
            // A square fills its box, a circle about π/4 of it, a triangle about half.
            let box_area = (x1 - x0) * (y1 - y0);
            let fill = area / box_area;
            let expected = [0.785, 1.0, 0.5][d.label as usize];
            assert!(
                (fill - expected).abs() < 0.15,
                "sample {i} label {}: fill {fill}",
                d.label
            );
        }
        assert!(counts.iter().all(|&n| n > 70), "{counts:?}");
    }

    #[test]
    fn written_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let c = ShapesConfig {
            samples: 4,
            ..config(5)
        };
        assert_eq!(write_shapes(dir.path(), &c).unwrap(), 4);
        let n = name(&c, 2);
        let d = draw(&c, 2);
        let image = super::super::files::read_image(
            &dir.path().join(format!("images/{n}.png")),
            super::super::files::Color::Rgb,
        )
        .unwrap();
        let pixels: Vec<f32> = image.to_vec().unwrap();
        assert!(
            pixels
                .iter()
                .zip(&d.pixels)
                .all(|(a, b)| (a - b).abs() < 0.003)
        );
        let label: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("labels/{n}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(label["label"], d.label);
        assert_eq!(label["class"], CLASSES[d.label as usize]);
        let mask = image::open(dir.path().join(format!("masks/{n}.png")))
            .unwrap()
            .to_luma8();
        let values: Vec<i64> = mask.pixels().map(|p| p.0[0] as i64).collect();
        assert_eq!(values, d.mask);
        let bad = ShapesConfig {
            size: 4,
            ..config(1)
        };
        assert!(
            write_shapes(dir.path(), &bad)
                .unwrap_err()
                .to_string()
                .contains("too small")
        );
    }
}
