//! `DetectionSaver`: each image's detections as JSON and drawn on the image as PNG.

use burn::tensor::{Int, Tensor};

use super::*;

/// `DetectionSaver`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectionSaverConfig {
    /// Detections scored below this are left out (of the JSON and the drawing).
    #[serde(default = "three_tenths")]
    pub min_score: f64,
    /// The classes' names, by label, written beside each label.
    #[serde(default)]
    pub class_names: Vec<String>,
}

fn three_tenths() -> f64 {
    0.3
}

/// Images and their detections (`CenterDecode`'s outputs).
#[derive(Incoming)]
pub struct DetectionsToSave<B: Backend> {
    /// One save name per image.
    pub save_names: Option<Vec<String>>,
    /// `[N, C, H, W]`: drawn on, rescaled to its own range.
    pub image: Tensor<B, 4>,
    /// `[N, K, 4]`: `x0, y0, x1, y1` as fractions.
    pub detected_boxes: Tensor<B, 3>,
    /// `[N, K]`.
    pub detected_scores: Tensor<B, 2>,
    /// `[N, K]`.
    pub detected_labels: Tensor<B, 2, Int>,
}

/// Saves each image's detections scored at least `min_score`: `<name>.json` (boxes as
/// fractions, scores, labels and class names) and `<name>.png` (the image with a rectangle
/// per detection, one colour per class).
#[nucleotide(kind = CoordinatorCallback)]
pub struct DetectionSaver {
    config: DetectionSaverConfig,
}

impl<B: Backend> Build<B> for DetectionSaver {
    type Config = DetectionSaverConfig;
    type Input = DetectionsToSave<B>;
    type Output = NoKeys;
    fn build(c: &DetectionSaverConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(DetectionSaver { config: c.clone() })
    }
}

/// Colours of the classes' rectangles, by label (cycled).
const COLOURS: [[f32; 3]; 6] = [
    [1.0, 0.2, 0.2],
    [0.2, 1.0, 0.2],
    [0.3, 0.5, 1.0],
    [1.0, 1.0, 0.2],
    [1.0, 0.3, 1.0],
    [0.2, 1.0, 1.0],
];

/// `[C, H, W]` values rescaled to [0, 1] as RGB (grey repeated), with each box's outline.
pub fn draw_boxes(values: &[f32], [c, h, w]: [usize; 3], boxes: &[([f32; 4], i64)]) -> Vec<f32> {
    let (low, high) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
    let range = if high > low { high - low } else { 1.0 };
    let mut rgb = vec![0f32; 3 * h * w];
    for ch in 0..3 {
        let from = if c >= 3 { ch } else { 0 };
        for p in 0..h * w {
            rgb[ch * h * w + p] = (values[from * h * w + p] - low) / range;
        }
    }
    for (b, label) in boxes {
        let colour = COLOURS[label.rem_euclid(COLOURS.len() as i64) as usize];
        let px =
            |f: f32, n: usize| ((f * n as f32).round() as isize).clamp(0, n as isize - 1) as usize;
        let (x0, x1) = (px(b[0], w), px(b[2], w));
        let (y0, y1) = (px(b[1], h), px(b[3], h));
        let mut put = |x: usize, y: usize| {
            for (ch, v) in colour.iter().enumerate() {
                rgb[ch * h * w + y * w + x] = *v;
            }
        };
        for x in x0..=x1 {
            put(x, y0);
            put(x, y1);
        }
        for y in y0..=y1 {
            put(x0, y);
            put(x1, y);
        }
    }
    rgb
}

impl<B: Backend> CoordinatorCallback<B> for DetectionSaver {
    fn on_iteration_end(
        &mut self,
        input: DetectionsToSave<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        let [n, c, h, w] = input.image.dims();
        let [_, k, _] = input.detected_boxes.dims();
        let floats = |t: TensorData| -> Result<Vec<f32>, String> {
            t.convert::<f32>().to_vec().map_err(|e| format!("{e:?}"))
        };
        let image = floats(input.image.into_data())?;
        let boxes = floats(input.detected_boxes.into_data())?;
        let scores = floats(input.detected_scores.into_data())?;
        let labels: Vec<i64> = input
            .detected_labels
            .into_data()
            .convert::<i64>()
            .to_vec()
            .map_err(|e| format!("{e:?}"))?;
        for i in 0..n {
            let base = save_path(
                &ctx.log_dir,
                &SaveName {
                    prefix: "",
                    suffix: "",
                    name: input
                        .save_names
                        .as_ref()
                        .and_then(|s| s.get(i))
                        .map(String::as_str),
                    position: Some((ctx.iteration.epoch, ctx.iteration.iteration, i)),
                },
            )?;
            create_parent(&base)?;
            let mut kept = Vec::new();
            let mut json = Vec::new();
            for j in i * k..(i + 1) * k {
                if f64::from(scores[j]) < self.config.min_score {
                    continue;
                }
                let b = [
                    boxes[4 * j],
                    boxes[4 * j + 1],
                    boxes[4 * j + 2],
                    boxes[4 * j + 3],
                ];
                let mut d = serde_json::json!({"box": b, "score": scores[j], "label": labels[j]});
                if let Some(name) = usize::try_from(labels[j])
                    .ok()
                    .and_then(|l| self.config.class_names.get(l))
                {
                    d["class"] = name.clone().into();
                }
                json.push(d);
                kept.push((b, labels[j]));
            }
            let with = |tail: &str| with_tail(&base, tail);
            let path = with(".json");
            write_text(&path, &serde_json::json!({"detections": json}).to_string())?;
            let pixels = &image[i * c * h * w..(i + 1) * c * h * w];
            let drawn = draw_boxes(pixels, [c, h, w], &kept);
            crate::data::files::write_png(&with(".png"), &TensorData::new(drawn, [3, h, w]))?;
        }
        Ok(Some(NoKeys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_drawn_as_outlines_on_the_rescaled_image() {
        let grey: Vec<f32> = (0..16).map(|v| v as f32 - 8.0).collect();
        let rgb = draw_boxes(&grey, [1, 4, 4], &[([0.25, 0.25, 0.75, 0.75], 1)]);
        assert_eq!(rgb.len(), 48);
        // The corner outside the box: the rescaled grey (lowest → 0) in every channel.
        assert_eq!([rgb[0], rgb[16], rgb[32]], [0.0, 0.0, 0.0]);
        // A pixel of the outline: class 1's colour.
        let at = 4 + 1;
        assert_eq!([rgb[at], rgb[16 + at], rgb[32 + at]], COLOURS[1]);
    }
}
