//! `SampleSaver`: each sample's results as PNG images and a JSON file.

use super::*;

/// `SampleSaver`'s config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleSaverConfig {
    /// Keys saved as PNG images.
    #[serde(default)]
    pub image_keys: Vec<String>,
    /// Put before each name.
    #[serde(default)]
    pub save_prefix: String,
    /// Put after each name.
    #[serde(default)]
    pub save_suffix: String,
    /// Keys stored whole with every sample instead of split along the batch.
    #[serde(default)]
    pub not_batch_keys: Vec<String>,
}

/// Saves each sample's results as PNG images and a JSON file.
#[nucleotide(kind = CoordinatorCallback)]
pub struct SampleSaver {
    config: SampleSaverConfig,
}

impl<B: Backend> Build<B> for SampleSaver {
    type Config = SampleSaverConfig;
    type Input = ToSave<B>;
    type Output = NoKeys;
    fn build(c: &SampleSaverConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(SampleSaver { config: c.clone() })
    }
}

impl<B: Backend> CoordinatorCallback<B> for SampleSaver {
    fn on_iteration_end(
        &mut self,
        input: ToSave<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        let c = &self.config;
        let samples = input.samples(&c.not_batch_keys)?;
        for (i, mut sample) in samples.into_iter().enumerate() {
            let base = save_path(
                &ctx.log_dir,
                &SaveName {
                    prefix: &c.save_prefix,
                    suffix: &c.save_suffix,
                    name: input.save_names.as_ref().map(|s| s[i].as_str()),
                    position: Some((ctx.iteration.epoch, ctx.iteration.iteration, i)),
                },
            )?;
            create_parent(&base)?;
            let with = |tail: &str| with_tail(&base, tail);
            for key in &c.image_keys {
                let data = sample
                    .remove(key)
                    .ok_or_else(|| format!("image key `{key}` is not among the incoming keys"))?;
                crate::data::files::write_png(&with(&format!("-{key}.png")), &data)?;
            }
            if !sample.is_empty() {
                let mut json = serde_json::Map::new();
                for (key, data) in sample {
                    json.insert(key, tensor_json(&data)?);
                }
                let path = with(".json");
                write_text(&path, &serde_json::Value::Object(json).to_string())?;
            }
        }
        Ok(Some(NoKeys))
    }
}

/// A tensor as nested JSON lists (a scalar as a number).
fn tensor_json(data: &TensorData) -> Result<serde_json::Value, String> {
    let values: Vec<serde_json::Value> = match data.dtype {
        burn::tensor::DType::Bool(_) => data
            .clone()
            .convert::<u8>()
            .to_vec::<u8>()
            .map_err(|e| format!("{e:?}"))?
            .into_iter()
            .map(|v| (v != 0).into())
            .collect(),
        d if d.is_float() => data
            .clone()
            .convert::<f64>()
            .to_vec::<f64>()
            .map_err(|e| format!("{e:?}"))?
            .into_iter()
            .map(Into::into)
            .collect(),
        _ => data
            .clone()
            .convert::<i64>()
            .to_vec::<i64>()
            .map_err(|e| format!("{e:?}"))?
            .into_iter()
            .map(Into::into)
            .collect(),
    };
    fn nest(values: &[serde_json::Value], shape: &[usize]) -> serde_json::Value {
        match shape {
            [] => values.first().cloned().unwrap_or(serde_json::Value::Null),
            [_] => serde_json::Value::Array(values.to_vec()),
            [n, rest @ ..] => {
                let size = values.len() / (*n).max(1);
                serde_json::Value::Array(
                    values
                        .chunks(size.max(1))
                        .take(*n)
                        .map(|c| nest(c, rest))
                        .collect(),
                )
            }
        }
    }
    Ok(nest(&values, &data.shape.to_vec()))
}
