//! ModelSummary outputs as TensorBoard images and histograms.
//!
//! A ModelSummary nucleotide's generated keys say what they are by their prefix:
//! - `scalar_<name>`: one number (written by the trainer with the metrics);
//! - `image_<name>`: a tensor of shape `[H, W]`, `[H, W, C]`, `[C, H, W]` or a batch of those
//!   (`[N, …]`, the first 3 drawn). Channels are last when the last dimension is 1–4, else
//!   first. Float values are in `[0, 1]`, integers in `[0, 255]`; both are clamped;
//! - `histogram_<name>`: any numeric tensor, its values in 30 buckets.
//!
//! Tags are `<nucleotide>/<name>`, with `/<i>` after the first image of a batch.

use std::collections::BTreeMap;

use burn::prelude::Backend;

use super::EventWriter;
use crate::gene::Kind;
use crate::model::Part;
use crate::nest::{AnyTensor, Nest, TensorDtype};

/// Images drawn per key and step.
pub(crate) const MAX_IMAGES: usize = 3;
/// Buckets of a histogram.
pub(crate) const HISTOGRAM_BUCKETS: usize = 30;

/// Writes the images and histograms among the ModelSummary outputs at `step`; an output that
/// cannot be drawn is an error naming it and its shape.
pub(crate) fn write_images_and_histograms<B: Backend>(
    writer: &EventWriter,
    parts: &[Part],
    outputs: &BTreeMap<String, Option<Nest<B>>>,
    step: u64,
) -> Result<(), String> {
    for p in parts.iter().filter(|p| p.kind == Kind::ModelSummary) {
        let Some(Some(nest)) = outputs.get(&p.name) else {
            continue;
        };
        for (key, value) in nest.flatten() {
            let Nest::Tensor(t) = value else {
                continue;
            };
            if let Some(name) = key.strip_prefix("image_") {
                write_image(writer, &format!("{}/{name}", p.name), t.clone(), step)?;
            } else if let Some(name) = key.strip_prefix("histogram_") {
                let tag = format!("{}/{name}", p.name);
                let values =
                    values_f64(t.clone()).map_err(|e| format!("histogram `{tag}`: {e}"))?;
                writer.histogram(&tag, &values, step, HISTOGRAM_BUCKETS);
            }
        }
    }
    Ok(())
}

/// Writes the images of a tensor under `tag` (`tag/1`, `tag/2` for the later ones of a batch).
pub(crate) fn write_image<B: Backend>(
    writer: &EventWriter,
    tag: &str,
    tensor: AnyTensor<B>,
    step: u64,
) -> Result<(), String> {
    let images = to_images(tensor, tag).map_err(|e| e.to_string())?;
    for (i, img) in images.into_iter().enumerate() {
        let tag = if i == 0 {
            tag.to_owned()
        } else {
            format!("{tag}/{i}")
        };
        writer.image(&tag, &img.pixels, img.height, img.width, img.channels, step)?;
    }
    Ok(())
}

/// One image's 8-bit pixels, row by row, channels interleaved.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// 1 to 4.
    pub channels: u8,
    /// `height × width × channels` values.
    pub pixels: Vec<u8>,
}

/// The images of a tensor (see the module docs for the layouts).
pub(crate) fn to_images<B: Backend>(
    t: AnyTensor<B>,
    tag: &str,
) -> Result<Vec<Image>, crate::data::DataError> {
    let shape = t.shape().to_vec();
    let float = t.kind() == TensorDtype::Float;
    let values = values_f64(t).map_err(|e| format!("image `{tag}`: {e}"))?;
    let bad = || {
        format!(
            "image `{tag}` has shape {shape:?}; images are [H, W], [H, W, C], [C, H, W] or a batch of those, with 1 to 4 channels"
        )
    };
    let channel = |d: usize| (1..=4).contains(&d);
    // (images, height, width, channels, channels last)
    let (n, h, w, c, last) = match shape.as_slice() {
        [h, w] => (1, *h, *w, 1, true),
        [h, w, c] if channel(*c) => (1, *h, *w, *c, true),
        [c, h, w] if channel(*c) => (1, *h, *w, *c, false),
        [n, h, w, c] if channel(*c) => (*n, *h, *w, *c, true),
        [n, c, h, w] if channel(*c) => (*n, *h, *w, *c, false),
        _ => return Err(bad().into()),
    };
    let scale = if float { 255.0 } else { 1.0 };
    let size = h * w * c;
    Ok((0..n.min(MAX_IMAGES))
        .map(|i| {
            let pixels =
                crate::data::files::to_pixels(&values[i * size..(i + 1) * size], c, !last, scale);
            Image {
                height: h as u32,
                width: w as u32,
                channels: c as u8,
                pixels,
            }
        })
        .collect())
}

fn values_f64<B: Backend>(t: AnyTensor<B>) -> Result<Vec<f64>, String> {
    if t.kind() == TensorDtype::Bool {
        return Err("boolean tensors are not drawn".into());
    }
    let data = t.into_data().map_err(|e| e.to_string())?;
    data.convert::<f64>()
        .to_vec::<f64>()
        .map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    type B = crate::backend::Cpu;

    fn float(values: Vec<f32>, shape: Vec<usize>) -> AnyTensor<B> {
        AnyTensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    #[test]
    fn layouts_table() {
        // (shape, images, height, width, channels)
        let cases: &[(&[usize], usize, u32, u32, u8)] = &[
            (&[2, 5], 1, 2, 5, 1),
            (&[2, 5, 3], 1, 2, 5, 3),
            (&[3, 2, 5], 1, 2, 5, 3),
            (&[4, 2, 5, 1], 3, 2, 5, 1),
            (&[2, 1, 6, 7], 2, 6, 7, 1),
        ];
        for (shape, n, h, w, c) in cases {
            let len = shape.iter().product();
            let imgs = to_images(float(vec![0.5; len], shape.to_vec()), "t").unwrap();
            assert_eq!(imgs.len(), *n, "{shape:?}");
            assert_eq!(
                (imgs[0].height, imgs[0].width, imgs[0].channels),
                (*h, *w, *c),
                "{shape:?}"
            );
            assert!(imgs[0].pixels.iter().all(|&p| p == 128), "{shape:?}");
        }
        let e = to_images(float(vec![0.0; 210], vec![5, 6, 7]), "sum/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("image `sum/x` has shape [5, 6, 7]"), "{e}");
    }

    #[test]
    fn channels_first_are_interleaved_and_values_clamped() {
        // Two channels of 1×2 pixels: channel 0 = [0, 1], channel 1 = [2, 3] (over 1).
        let img = to_images(float(vec![0.0, 1.0, 2.0, -1.0], vec![2, 1, 2]), "t").unwrap();
        assert_eq!(img[0].pixels, [0, 255, 255, 0]);
        let ints: AnyTensor<B> = AnyTensor::from_data(
            TensorData::new(vec![7i64, 300, -2, 0], vec![2, 2]),
            &Default::default(),
        );
        assert_eq!(to_images(ints, "t").unwrap()[0].pixels, [7, 255, 0, 0]);
    }
}
