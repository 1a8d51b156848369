//! Built-in file datasets: images matched by a file list, with optional masks and labels.
//!
//! ```json
//! {"class_name": "ImageFiles", "name": "train_images",
//!  "file_list": {"file_names": {"image": "data/images/*.png", "label": "data/labels/*.json"},
//!                "optional_keys": ["label"]},
//!  "color": "rgb"}
//! ```
//!
//! Keys of `file_names`: `image` (required; PNG or JPEG), `mask` (optional; PNG or JPEG read
//! as grey, `[1, H, W]` in `[0, 1]`), `label` (optional; a JSON file holding a class index,
//! or an object with a `label` field). Globs are relative to the working directory (the
//! project folder when run through `cargo xtask`). Generated keys: `image` (`[C, H, W]`),
//! `mask`, `label` (`[1]`, int) when the list has them, and `file_name` (the match name, for
//! savers' save names). `ImageFiles` is a Dataset (training, evaluation); `ImageFilesFeeder` gives
//! the same samples one after another for inference.

use std::path::Path;

use burn::prelude::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::file_list::{FileList, FileListConfigs};
use super::files::{Color, read_image};
use crate::nucleotide::{DataFeeder, Dataset};
use crate::{BoxError, Build, Generated, NoKeys, nucleotide};

/// `ImageFiles` and `ImageFilesFeeder`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageFilesConfig {
    /// Which files: keys `image`, and optionally `mask` and `label`; one file list, or
    /// several joined in order.
    pub file_list: FileListConfigs,
    /// `rgb` (default) or `grey`.
    #[serde(default)]
    pub color: Color,
}

/// One sample of image files.
#[derive(Generated)]
pub struct ImageSample<B: Backend> {
    /// `[C, H, W]` in `[0, 1]`.
    pub image: Tensor<B, 3>,
    /// `[1, H, W]` in `[0, 1]`, when the list has masks.
    pub mask: Option<Tensor<B, 3>>,
    /// The class index, `[1]`, when the list has labels.
    pub label: Option<Tensor<B, 1, Int>>,
    /// The sample's match name.
    pub file_name: String,
}

/// Image files (with optional masks and labels) as a dataset.
#[nucleotide(kind = Dataset)]
pub struct ImageFiles {
    list: FileList,
    color: Color,
}

fn build_list(c: &ImageFilesConfig) -> Result<FileList, BoxError> {
    for (i, list) in c.file_list.lists().iter().enumerate() {
        let keys: Vec<&String> = list.file_names.keys().collect();
        if !list.file_names.contains_key("image")
            || keys
                .iter()
                .any(|k| !["image", "mask", "label"].contains(&k.as_str()))
        {
            let which = match &c.file_list {
                FileListConfigs::One(_) => String::new(),
                FileListConfigs::Joined(_) => format!(" (file list {})", i + 1),
            };
            return Err(format!(
                "file_list.file_names has keys {keys:?}{which}; `image` is required, `mask` and `label` are optional, nothing else is read"
            )
            .into());
        }
    }
    Ok(FileList::build_all(&c.file_list, Path::new("."))?)
}

fn read_sample<B: Backend>(
    list: &FileList,
    color: Color,
    index: usize,
    device: &B::Device,
) -> Result<ImageSample<B>, BoxError> {
    let (name, files) = list
        .samples
        .get(index)
        .ok_or_else(|| format!("sample {index} of {}", list.len()))?;
    let image = Tensor::from_data(read_image(&files["image"], color)?, device);
    let mask = match files.get("mask") {
        Some(p) => Some(Tensor::from_data(read_image(p, Color::Grey)?, device)),
        None => None,
    };
    let label = match files.get("label") {
        Some(p) => Some(Tensor::from_data(
            TensorData::new(vec![read_label(p)?], [1]),
            device,
        )),
        None => None,
    };
    Ok(ImageSample {
        image,
        mask,
        label,
        file_name: name.clone(),
    })
}

/// A class index from a JSON file: a number, or an object with a numeric `label`.
pub fn read_label(path: &Path) -> Result<i64, crate::data::DataError> {
    let text = std::fs::read(path).map_err(|e| {
        crate::data::DataError::caused(format!("cannot read label {}: {e}", path.display()), e)
    })?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| format!("label {} is not JSON: {e}", path.display()))?;
    value
        .as_i64()
        .or_else(|| value.get("label").and_then(serde_json::Value::as_i64))
        .ok_or_else(|| {
            crate::data::DataError::from(format!(
                "label {} holds {value}; a class index or {{\"label\": <index>}} is read",
                path.display()
            ))
        })
}

impl<B: Backend> Build<B> for ImageFiles {
    type Config = ImageFilesConfig;
    type Input = NoKeys;
    type Output = ImageSample<B>;
    fn build(c: &ImageFilesConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(ImageFiles {
            list: build_list(c)?,
            color: c.color,
        })
    }
}

impl<B: Backend> Dataset<B> for ImageFiles {
    fn len(&self) -> usize {
        self.list.len()
    }
    fn get(&self, index: usize) -> Result<ImageSample<B>, BoxError> {
        read_sample(&self.list, self.color, index, &Default::default())
    }
}

/// Image files (with optional masks and labels) for inference, one after another.
#[nucleotide(kind = DataFeeder)]
pub struct ImageFilesFeeder {
    list: FileList,
    color: Color,
    next: usize,
}

impl<B: Backend> Build<B> for ImageFilesFeeder {
    type Config = ImageFilesConfig;
    type Input = NoKeys;
    type Output = ImageSample<B>;
    fn build(c: &ImageFilesConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(ImageFilesFeeder {
            list: build_list(c)?,
            color: c.color,
            next: 0,
        })
    }
}

impl<B: Backend> DataFeeder<B> for ImageFilesFeeder {
    fn next_sample(&mut self) -> Result<Option<ImageSample<B>>, BoxError> {
        if self.next >= self.list.len() {
            return Ok(None);
        }
        self.next += 1;
        read_sample(&self.list, self.color, self.next - 1, &Default::default()).map(Some)
    }
}
