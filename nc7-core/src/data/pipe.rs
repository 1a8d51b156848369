//! Data pipes: a file list whose samples run through DataReader and DataProcessor nucleotides
//! (a small DNA helix of their own), with filters that drop samples; as a Dataset
//! (`DataPipe`) or a DataFeeder (`DataPipeFeeder`).
//!
//! ```json
//! {"class_name": "DataPipe", "name": "train_data",
//!  "file_list": {"file_names": {"image": "data/images/*.png", "label": "data/labels/*.json"}},
//!  "readers": [
//!    {"class_name": "ImageReader", "name": "image", "inbound_nodes": ["file_list"],
//!     "incoming_keys_mapping": {"file_list": {"image": "path", "label": "_"}}, "color": "grey"},
//!    {"class_name": "LabelReader", "name": "label", "inbound_nodes": ["file_list"],
//!     "incoming_keys_mapping": {"file_list": {"label": "path", "image": "_"}}}],
//!  "processors": [],
//!  "filters": []}
//! ```
//!
//! Each sample starts as the node `file_list`: its files' paths by key (strings),
//! `file_name` (the match name) and `sample_seed` (the sample's own seed from the run's seed,
//! the data epoch and its index, for processors that augment, such as `Augment`). Readers run first, then processors, each fed by its inbound
//! nodes through its key mapping, as in any helix. The sample is `file_name` and every key the
//! readers and processors generate (a later nucleotide's key replaces an earlier one's).
//! A **filter** is a DataProcessor that generates a boolean `keep`; a sample any filter does
//! not keep is dropped (filters are AND-ed). A `DataPipe` runs every sample through the filters
//! (and only what they read) when it is built, to know its length; a `DataPipeFeeder` filters
//! as it goes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use burn::prelude::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::file_list::{FileList, FileListConfigs};
use super::files::{Color, read_image, read_npy};
use super::image_files::read_label;
use crate::config::{Layered, NucleotideSection, RunType, SectionShape, Source, Sources, Tagged};
use crate::diagnostic::Diagnostics;
use crate::dna::NodeSpec;
use crate::gene::{DATA_PIPE_GENES, Kind};
use crate::glue::AnyValue;
use crate::handler::GeneHandler;
use crate::keys::Signature;
use crate::nest::Nest;
use crate::nucleotide::NoConfig;
use crate::nucleotide::part::Part;
use crate::nucleotide::{DataFeeder, DataReader, Dataset, Mode};
use crate::registry::Registry;
use crate::runtime::{self, DynStep};
use crate::{BoxError, Build, Generated, Incoming, NoKeys, nucleotide};

/// The node name under which a pipe's samples start.
pub const FILE_LIST_NODE: &str = "file_list";
/// The key a filter generates.
pub const KEEP_KEY: &str = "keep";
/// The `file_list` key holding the sample's own seed, from the run's seed, the data epoch
/// and the sample's index (what `Augment` draws from).
pub const SAMPLE_SEED_KEY: &str = "sample_seed";

/// `DataPipe` and `DataPipeFeeder`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataPipeConfig {
    /// Where samples start: one file list, or several joined in order.
    pub file_list: FileListConfigs,
    /// DataReader configs (`class_name`, `name`, `inbound_nodes`, mapping, own fields).
    #[serde(default)]
    pub readers: Vec<Value>,
    /// DataProcessor configs.
    #[serde(default)]
    pub processors: Vec<Value>,
    /// DataProcessor configs that each generate a boolean `keep`.
    #[serde(default)]
    pub filters: Vec<Value>,
    /// A folder (relative to the project) where `DataPipe` keeps each sample it made, keyed by
    /// its files' content and the readers' and processors' configs, and reads it from there
    /// the next time (this epoch's, or another run's); none by default.
    #[serde(default)]
    #[schemars(extend("x-nc7-path" = true))]
    pub cache: Option<String>,
}

/// A sample out of a pipe: `file_name` and what the readers and processors generated.
#[derive(Generated)]
pub struct PipeSample<B: Backend> {
    /// The match name of the sample's files.
    pub file_name: String,
    /// Every generated key.
    pub keys: Nest<B>,
}

const SECTIONS: [NucleotideSection; 3] = [
    NucleotideSection {
        key: "readers",
        kinds: &[Kind::DataReader],
        shape: SectionShape::List,
    },
    NucleotideSection {
        key: "processors",
        kinds: &[Kind::DataProcessor],
        shape: SectionShape::List,
    },
    NucleotideSection {
        key: "filters",
        kinds: &[Kind::DataProcessor],
        shape: SectionShape::List,
    },
];

/// A pipe's nucleotides, built.
struct Pipe<B: Backend> {
    list: FileList,
    handler: Option<GeneHandler>,
    steps: BTreeMap<String, Box<dyn DynStep<B>>>,
    /// Readers and processors in config order (whose keys make the sample).
    makers: Vec<String>,
    filters: Vec<String>,
    /// The filters and every nucleotide they read, directly or not: all that runs to decide
    /// whether a sample is kept.
    filter_inputs: std::collections::BTreeSet<String>,
    /// Samples each filter dropped (a sample counts for the first filter that drops it).
    dropped: Vec<usize>,
    /// A nucleotide that takes `sample_seed` (its samples differ by epoch), if one does.
    random: Option<String>,
}

/// Nucleotides wired after a start node whose keys are the data's, as a pipe or a data filter
/// has them: checked (every problem at once) and built.
pub(crate) struct Built<B: Backend> {
    pub(crate) entries: Vec<crate::config::NucleotideEntry>,
    pub(crate) parts: Vec<Part>,
    pub(crate) handler: Option<GeneHandler>,
    pub(crate) steps: BTreeMap<String, Box<dyn DynStep<B>>>,
}

impl<B: Backend> Built<B> {
    /// Runs every nucleotide on `start` (the start node's keys); `what` names one of them in
    /// the error of one that was not built (`filter`, `processor`).
    pub(crate) fn run(
        &mut self,
        start: Nest<B>,
        what: &str,
    ) -> Result<crate::handler::Outputs<'_, B>, BoxError> {
        let Built { handler, steps, .. } = self;
        let handler = handler
            .as_ref()
            .ok_or_else(|| format!("no {what} was built"))?;
        Ok(handler.run(vec![Some(start)], |node, input| {
            match steps.get_mut(&node.spec.name) {
                Some(s) => s.run(input, Mode::Infer).map(Some),
                None => Err(format!("{what} `{}` was not built", node.spec.name).into()),
            }
        })?)
    }
}

/// Builds the nucleotides of `sections` in `tree` after the start node `start`; `what` names
/// them in the error (`the data pipe's nucleotides`).
pub(crate) fn build_nucleotides<B: Backend>(
    tree: &Value,
    sections: &[NucleotideSection],
    start: &str,
    what: &str,
    device: &B::Device,
) -> Result<Built<B>, BoxError> {
    let mut sources = Sources::default();
    let source = sources.add(Source::Builtin);
    let mut layered = Layered {
        run: RunType::Train,
        tree: Tagged::new(tree, source),
        sources,
    };
    let registry = Registry::global();
    let mut diags = Diagnostics::default();
    let entries = crate::config::complete_nucleotides(&mut layered, sections, registry, &mut diags);
    let parts = if diags.has_errors() {
        None
    } else {
        Some(Part::from_entries(&entries)?)
    };
    let mut nodes = Vec::new();
    for (e, p) in entries.iter().zip(parts.iter().flatten()) {
        let common = e
            .common
            .as_ref()
            .expect("resolved entries have common fields");
        nodes.push(
            NodeSpec::new(p.name.clone(), p.kind, (p.registration.signature)())
                .inbound(common.inbound_nodes.iter().cloned())
                .mapping(common.mapping.clone()),
        );
    }
    let handler = if nodes.is_empty() {
        None
    } else {
        let start = NodeSpec::new(
            start,
            Kind::DataFeeder,
            Signature::default().with_dynamic_generated(),
        );
        match GeneHandler::new("data_pipe", DATA_PIPE_GENES, vec![start], nodes) {
            Ok(h) => Some(h),
            Err(more) => {
                diags.0.extend(more.0);
                None
            }
        }
    };
    if diags.has_errors() {
        return Err(format!("{what} have problems:\n{diags}").into());
    }
    let parts = parts.unwrap_or_default();
    let mut steps = BTreeMap::new();
    for p in &parts {
        steps.insert(
            p.name.clone(),
            runtime::step::<B>(p.registration, &p.name, &p.config, device)?,
        );
    }
    Ok(Built {
        entries,
        parts,
        handler,
        steps,
    })
}

/// Whether every filter of `filters` keeps the sample whose nucleotides' outputs are
/// `outputs`; a drop counts for the first filter that drops it (in `dropped`).
pub(crate) fn kept_by<B: Backend>(
    outputs: &crate::handler::Outputs<'_, B>,
    filters: &[String],
    dropped: &mut [usize],
) -> Result<bool, BoxError> {
    for (i, f) in filters.iter().enumerate() {
        let keep = match outputs.get(f).and_then(|o| o.get(KEEP_KEY)) {
            Some(flag) => flag
                .truth_values()
                .map_err(|e| format!("filter `{f}`: `{KEEP_KEY}`: {e}"))?
                .into_iter()
                .all(|v| v),
            None => {
                return Err(format!(
                    "filter `{f}` gave nothing for `{KEEP_KEY}`; a filter generates a boolean `{KEEP_KEY}`"
                )
                .into());
            }
        };
        if !keep {
            dropped[i] += 1;
            return Ok(false);
        }
    }
    Ok(true)
}

/// What each filter dropped, for a message: `` `a` dropped 3, `b` dropped 1 ``.
pub(crate) fn dropped_by(filters: &[String], dropped: &[usize]) -> String {
    filters
        .iter()
        .zip(dropped)
        .map(|(f, n)| format!("`{f}` dropped {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn build_pipe<B: Backend>(c: &DataPipeConfig, device: &B::Device) -> Result<Pipe<B>, BoxError> {
    let list = FileList::build_all(&c.file_list, std::path::Path::new("."))?;
    let Built {
        entries,
        parts,
        handler,
        steps,
    } = build_nucleotides::<B>(
        &serde_json::json!({
            "readers": c.readers, "processors": c.processors, "filters": c.filters
        }),
        &SECTIONS,
        FILE_LIST_NODE,
        "the data pipe's nucleotides",
        device,
    )?;
    let filters: Vec<String> = entries
        .iter()
        .filter(|e| e.section == "filters")
        .map(|e| e.name().to_owned())
        .collect();
    let makers = entries
        .iter()
        .filter(|e| e.section != "filters")
        .map(|e| e.name().to_owned())
        .collect();
    let mut filter_inputs = std::collections::BTreeSet::new();
    let mut todo: Vec<String> = filters.clone();
    while let Some(name) = todo.pop() {
        if !filter_inputs.insert(name.clone()) {
            continue;
        }
        if let Some(common) = entries
            .iter()
            .find(|e| e.name() == name)
            .and_then(|e| e.common.as_ref())
        {
            todo.extend(common.inbound_nodes.iter().cloned());
        }
    }
    let random = parts
        .iter()
        .find(|p| {
            (p.registration.signature)()
                .incoming_key(SAMPLE_SEED_KEY)
                .is_some()
        })
        .map(|p| p.name.clone());
    Ok(Pipe {
        list,
        handler,
        steps,
        makers,
        dropped: vec![0; filters.len()],
        filters,
        filter_inputs,
        random,
    })
}

impl<B: Backend> Pipe<B> {
    /// What each filter dropped, for a message: `` `a` dropped 3, `b` dropped 1 ``.
    fn dropped_by(&self) -> String {
        dropped_by(&self.filters, &self.dropped)
    }

    /// The error of filters that keep none of the file list's samples.
    fn none_kept(&self) -> BoxError {
        format!(
            "the filters keep none of the {} samples of the file list: {} (a sample counts for the first filter that drops it); loosen or remove the filters that dropped them, or check the file list",
            self.list.len(),
            self.dropped_by()
        )
        .into()
    }

    /// Sample `index` through the pipe, with `seed` as its `sample_seed`; `None` when a filter
    /// drops it. With `only_filters`, only what the filters need runs (the sample's keys are
    /// then incomplete).
    fn sample(
        &mut self,
        index: usize,
        seed: u64,
        only_filters: bool,
    ) -> Result<Option<PipeSample<B>>, BoxError> {
        let (name, files) = self
            .list
            .samples
            .get(index)
            .ok_or_else(|| format!("sample {index} of {}", self.list.len()))?;
        let mut start = Nest::map();
        for (key, path) in files {
            start.insert(key, Nest::Str(path.display().to_string()))?;
        }
        start.insert("file_name", Nest::Str(name.clone()))?;
        start.insert(SAMPLE_SEED_KEY, Nest::Int(seed as i64))?;
        let Some(handler) = &self.handler else {
            return Ok(Some(PipeSample {
                file_name: name.clone(),
                keys: Nest::map(),
            }));
        };
        let steps = &mut self.steps;
        let needed = &self.filter_inputs;
        let mut outputs = handler
            .run(vec![Some(start)], |node, input| {
                if only_filters && !needed.contains(&node.spec.name) {
                    return Ok(None);
                }
                match steps.get_mut(&node.spec.name) {
                    Some(s) => s.run(input, Mode::Infer).map(Some),
                    None => Err(format!("nucleotide `{}` was not built", node.spec.name).into()),
                }
            })
            .map_err(|e| format!("sample `{name}`: {e}"))?;
        if !kept_by(&outputs, &self.filters, &mut self.dropped)? {
            return Ok(None);
        }
        let mut keys = Nest::map();
        for m in &self.makers {
            if let Some(Nest::Map(out)) = outputs.take(m) {
                for (k, v) in out {
                    keys.insert(&k, v)?;
                }
            }
        }
        Ok(Some(PipeSample {
            file_name: name.clone(),
            keys,
        }))
    }
}

/// A file list through readers, processors and filters, as a dataset.
#[nucleotide(kind = Dataset)]
pub struct DataPipe {
    /// The pipe, behind a lock: nucleotides run with `&mut self`, a dataset is read with `&self`.
    pipe: Mutex<Pipe<crate::backend::Cpu>>,
    /// The file-list samples the filters keep.
    kept: Vec<usize>,
    /// Where made samples are kept, when asked.
    cache: Option<super::cache::SampleCache>,
}

impl<B: Backend> Build<B> for DataPipe {
    type Config = DataPipeConfig;
    type Input = NoKeys;
    type Output = PipeSample<B>;
    fn build(c: &DataPipeConfig, _: &B::Device) -> Result<Self, BoxError> {
        let mut pipe = build_pipe::<crate::backend::Cpu>(c, &Default::default())?;
        let kept = if pipe.filters.is_empty() {
            (0..pipe.list.len()).collect()
        } else {
            let mut kept = Vec::new();
            for i in 0..pipe.list.len() {
                if pipe.sample(i, unkeyed(i), true)?.is_some() {
                    kept.push(i);
                }
            }
            if kept.is_empty() {
                return Err(pipe.none_kept());
            }
            if kept.len() < pipe.list.len() {
                log::info!(
                    "data pipe: the filters keep {} of {} samples ({})",
                    kept.len(),
                    pipe.list.len(),
                    pipe.dropped_by()
                );
            }
            kept
        };
        if let (Some(_), Some(random)) = (&c.cache, &pipe.random) {
            return Err(format!(
                "`cache` keeps each sample as it was made, but `{random}` takes `{SAMPLE_SEED_KEY}`: its samples differ every epoch; remove `cache`, or cache in a pipe without it"
            )
            .into());
        }
        let cache = match &c.cache {
            Some(dir) => Some(super::cache::SampleCache::new(
                dir.into(),
                &serde_json::json!({"readers": c.readers, "processors": c.processors}),
            )?),
            None => None,
        };
        Ok(DataPipe {
            pipe: Mutex::new(pipe),
            kept,
            cache,
        })
    }
}

/// The seed of sample `index` read outside a training's epochs (filtering at build,
/// inference).
fn unkeyed(index: usize) -> u64 {
    crate::data::SampleKey::unkeyed(index).sample_seed()
}

impl<B: Backend> Dataset<B> for DataPipe {
    fn len(&self) -> usize {
        self.kept.len()
    }
    fn get(&self, index: usize) -> Result<PipeSample<B>, BoxError> {
        self.get_for(crate::data::SampleKey::unkeyed(index))
    }
    fn get_for(&self, key: crate::data::SampleKey) -> Result<PipeSample<B>, BoxError> {
        let index = key.index;
        let i = *self
            .kept
            .get(index)
            .ok_or_else(|| format!("sample {index} of {}", self.kept.len()))?;
        let lock = || self.pipe.lock().unwrap_or_else(|p| p.into_inner());
        // The filters kept the sample when the pipe was built: a cached one is used as it is.
        let cached = match &self.cache {
            Some(cache) => {
                let (name, files) = lock().list.samples[i].clone();
                let entry = cache.entry(&files)?;
                if let Some(keys) = cache.get::<B>(&entry, &Default::default()) {
                    return Ok(PipeSample {
                        file_name: name,
                        keys,
                    });
                }
                Some((cache, entry))
            }
            None => None,
        };
        let s = lock().sample(i, key.sample_seed(), false)?.ok_or_else(|| {
            format!("sample {index} was kept by the filters at build but not now")
        })?;
        if let Some((cache, entry)) = cached
            && let Err(e) = cache.put(&entry, &s.keys)
        {
            log::warn!("{e}; the sample is read from its files the next time too");
        }
        Ok(PipeSample {
            file_name: s.file_name,
            keys: move_nest::<B>(s.keys)?,
        })
    }
}

/// The pipe's tensors, read on the CPU backend, on the backend `B` of the caller (moved only
/// when `B` is another backend).
pub(crate) fn move_nest<B: Backend>(nest: Nest<crate::backend::Cpu>) -> Result<Nest<B>, BoxError> {
    let any: Box<dyn std::any::Any> = Box::new(nest);
    let nest = match any.downcast::<Nest<B>>() {
        Ok(same) => return Ok(*same),
        Err(any) => *any
            .downcast::<Nest<crate::backend::Cpu>>()
            .expect("boxed above"),
    };
    let device = Default::default();
    Ok(match nest {
        Nest::Map(m) => Nest::Map(
            m.into_iter()
                .map(|(k, v)| Ok((k, move_nest::<B>(v)?)))
                .collect::<Result<_, BoxError>>()?,
        ),
        Nest::List(l) => Nest::List(
            l.into_iter()
                .map(move_nest::<B>)
                .collect::<Result<_, _>>()?,
        ),
        Nest::Tensor(t) => Nest::Tensor(crate::nest::AnyTensor::from_data(t.into_data()?, &device)),
        Nest::Float(v) => Nest::Float(v),
        Nest::Int(v) => Nest::Int(v),
        Nest::Bool(v) => Nest::Bool(v),
        Nest::Str(s) => Nest::Str(s),
    })
}

/// A file list through readers, processors and filters, for inference.
#[nucleotide(kind = DataFeeder)]
pub struct DataPipeFeeder {
    pipe: Pipe<crate::backend::Cpu>,
    next: usize,
    /// Samples given.
    given: usize,
}

impl<B: Backend> Build<B> for DataPipeFeeder {
    type Config = DataPipeConfig;
    type Input = NoKeys;
    type Output = PipeSample<B>;
    fn build(c: &DataPipeConfig, _: &B::Device) -> Result<Self, BoxError> {
        if c.cache.is_some() {
            return Err("`cache` is for DataPipe, which reads samples again every epoch; a data feeder reads each sample once: remove `cache`".into());
        }
        Ok(DataPipeFeeder {
            pipe: build_pipe(c, &Default::default())?,
            next: 0,
            given: 0,
        })
    }
}

impl<B: Backend> DataFeeder<B> for DataPipeFeeder {
    fn next_sample(&mut self) -> Result<Option<PipeSample<B>>, BoxError> {
        while self.next < self.pipe.list.len() {
            self.next += 1;
            let index = self.next - 1;
            if let Some(s) = self.pipe.sample(index, unkeyed(index), false)? {
                self.given += 1;
                return Ok(Some(PipeSample {
                    file_name: s.file_name,
                    keys: move_nest::<B>(s.keys)?,
                }));
            }
        }
        if self.given == 0 && !self.pipe.filters.is_empty() {
            return Err(self.pipe.none_kept());
        }
        Ok(None)
    }
}

// ---- built-in readers ----

/// A file path: what the readers read.
#[derive(Incoming)]
pub struct FilePath {
    /// The file.
    pub path: String,
}

/// `ImageReader`'s config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageReaderConfig {
    /// `rgb` (default) or `grey`.
    #[serde(default)]
    pub color: Color,
}

/// An image read from a file.
#[derive(Generated)]
pub struct ReadImage<B: Backend> {
    /// `[C, H, W]` in `[0, 1]`.
    pub image: Tensor<B, 3>,
}

/// Reads a PNG or JPEG file into `image` (`[C, H, W]` in `[0, 1]`).
#[nucleotide(kind = DataReader)]
pub struct ImageReader {
    color: Color,
}

impl<B: Backend> Build<B> for ImageReader {
    type Config = ImageReaderConfig;
    type Input = FilePath;
    type Output = ReadImage<B>;
    fn build(c: &ImageReaderConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(ImageReader { color: c.color })
    }
}

impl<B: Backend> DataReader<B> for ImageReader {
    fn read(&mut self, input: FilePath) -> Result<ReadImage<B>, BoxError> {
        let data = read_image(std::path::Path::new(&input.path), self.color)?;
        Ok(ReadImage {
            image: Tensor::from_data(data, &Default::default()),
        })
    }
}

/// A class index read from a file.
#[derive(Generated)]
pub struct ReadLabel<B: Backend> {
    /// `[1]`.
    pub label: Tensor<B, 1, Int>,
}

/// Reads a JSON file holding a class index (or `{"label": index}`) into `label`.
#[nucleotide(kind = DataReader)]
pub struct LabelReader;

impl<B: Backend> Build<B> for LabelReader {
    type Config = NoConfig;
    type Input = FilePath;
    type Output = ReadLabel<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(LabelReader)
    }
}

impl<B: Backend> DataReader<B> for LabelReader {
    fn read(&mut self, input: FilePath) -> Result<ReadLabel<B>, BoxError> {
        let label = read_label(std::path::Path::new(&input.path))?;
        Ok(ReadLabel {
            label: Tensor::from_data(TensorData::new(vec![label], [1]), &Default::default()),
        })
    }
}

/// Boxes and their labels read from a file.
#[derive(Generated)]
pub struct ReadBoxes<B: Backend> {
    /// `[G, 4]`: `x0, y0, x1, y1` as fractions of the image.
    pub boxes: Tensor<B, 2>,
    /// `[G]`: each box's class.
    pub labels: Tensor<B, 1, Int>,
}

/// The boxes and labels of a JSON file: `{"boxes": [[x0, y0, x1, y1], ...], "labels": [...]}`,
/// or one box as `write_shapes` writes it, `{"bbox": [x0, y0, x1, y1], "label": n}`.
pub fn read_boxes(path: &std::path::Path) -> Result<(Vec<f32>, Vec<i64>), super::DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        super::DataError::caused(format!("cannot read boxes {}: {e}", path.display()), e)
    })?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let bad = |what: &str| -> super::DataError {
        format!(
            "{}: {what}; a boxes file is {{\"boxes\": [[x0, y0, x1, y1], ...], \"labels\": [class, ...]}} (or {{\"bbox\": [x0, y0, x1, y1], \"label\": class}}), boxes as fractions of the image",
            path.display()
        )
        .into()
    };
    let (boxes, labels) = match (json.get("boxes"), json.get("bbox")) {
        (Some(Value::Array(b)), _) => (
            b.clone(),
            json.get("labels")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| bad("`boxes` without a `labels` list"))?,
        ),
        (None, Some(b @ Value::Array(_))) => (
            vec![b.clone()],
            vec![
                json.get("label")
                    .cloned()
                    .ok_or_else(|| bad("`bbox` without a `label`"))?,
            ],
        ),
        _ => return Err(bad("no `boxes` list and no `bbox`")),
    };
    if boxes.len() != labels.len() {
        return Err(bad(&format!(
            "{} boxes and {} labels",
            boxes.len(),
            labels.len()
        )));
    }
    let mut flat = Vec::with_capacity(4 * boxes.len());
    for (i, b) in boxes.iter().enumerate() {
        let numbers: Option<Vec<f32>> = b
            .as_array()
            .filter(|a| a.len() == 4)
            .and_then(|a| a.iter().map(|v| v.as_f64().map(|v| v as f32)).collect());
        let numbers = numbers.ok_or_else(|| bad(&format!("box {i} is {b}, not four numbers")))?;
        flat.extend(numbers);
    }
    let labels = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.as_i64()
                .ok_or_else(|| bad(&format!("label {i} is {l}, not a class index")))
        })
        .collect::<Result<Vec<i64>, _>>()?;
    Ok((flat, labels))
}

/// Reads a JSON file of boxes and labels (see [`read_boxes`]) into `boxes` and `labels`: the
/// ground truth of a detection data set.
#[nucleotide(kind = DataReader)]
pub struct BoxesReader;

impl<B: Backend> Build<B> for BoxesReader {
    type Config = NoConfig;
    type Input = FilePath;
    type Output = ReadBoxes<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(BoxesReader)
    }
}

impl<B: Backend> DataReader<B> for BoxesReader {
    fn read(&mut self, input: FilePath) -> Result<ReadBoxes<B>, BoxError> {
        let (boxes, labels) = read_boxes(std::path::Path::new(&input.path))?;
        let n = labels.len();
        let device = Default::default();
        Ok(ReadBoxes {
            boxes: Tensor::from_data(TensorData::new(boxes, [n, 4]), &device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), &device),
        })
    }
}

/// An array read from a file.
#[derive(Generated)]
pub struct ReadArray<B: Backend> {
    /// The array, with the file's dtype and shape.
    pub array: AnyValue<B>,
}

/// Reads a `.npy` file into `array`.
#[nucleotide(kind = DataReader)]
pub struct NpyReader;

impl<B: Backend> Build<B> for NpyReader {
    type Config = NoConfig;
    type Input = FilePath;
    type Output = ReadArray<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(NpyReader)
    }
}

impl<B: Backend> DataReader<B> for NpyReader {
    fn read(&mut self, input: FilePath) -> Result<ReadArray<B>, BoxError> {
        let data = read_npy(std::path::Path::new(&input.path))?;
        Ok(ReadArray {
            array: AnyValue(Nest::Tensor(crate::nest::AnyTensor::from_data(
                data,
                &Default::default(),
            ))),
        })
    }
}

/// `CsvReader`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvReaderConfig {
    /// The CSV file, with a header row; relative to the project.
    #[schemars(extend("x-nc7-path" = true))]
    pub file: String,
    /// The column holding each row's match name (the sample's `file_name`).
    #[serde(default = "file_name_column")]
    pub match_column: String,
    /// The columns to read; every other column when empty.
    #[serde(default)]
    pub columns: Vec<String>,
}

fn file_name_column() -> String {
    "file_name".into()
}

/// A sample's match name: what `CsvReader` looks rows up by.
#[derive(Incoming)]
pub struct MatchName {
    /// The match name.
    pub file_name: String,
}

/// A CSV row's values.
#[derive(Generated)]
pub struct CsvRow<B: Backend> {
    /// One key per column: integers as int tensors `[1]`, other numbers as float tensors `[1]`,
    /// anything else as a string.
    pub columns: Nest<B>,
}

/// A CSV cell, parsed.
#[derive(Debug, Clone)]
enum Cell {
    Int(i64),
    Float(f64),
    Text(String),
}

/// Reads per-sample values (labels, weights, tags) from one CSV table, by the sample's
/// `file_name` in `match_column`.
#[nucleotide(kind = DataReader)]
pub struct CsvReader {
    file: String,
    match_column: String,
    rows: BTreeMap<String, Vec<(String, Cell)>>,
}

impl<B: Backend> Build<B> for CsvReader {
    type Config = CsvReaderConfig;
    type Input = MatchName;
    type Output = CsvRow<B>;
    fn build(c: &CsvReaderConfig, _: &B::Device) -> Result<Self, BoxError> {
        let mut reader = csv::Reader::from_path(&c.file)
            .map_err(|e| format!("cannot read CSV file {}: {e}", c.file))?;
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| format!("{}: {e}", c.file))?
            .iter()
            .map(str::to_owned)
            .collect();
        // The error names a close column at most: the file may be anything, and its content
        // is not echoed.
        let position = |name: &str| {
            headers.iter().position(|h| h == name).ok_or_else(|| {
                format!(
                    "{} has no column `{name}` in its header row ({} columns){}",
                    c.file,
                    headers.len(),
                    crate::suggest::hint(name, headers.iter().map(String::as_str))
                )
            })
        };
        let key = position(&c.match_column)?;
        let columns: Vec<(String, usize)> = if c.columns.is_empty() {
            headers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != key)
                .map(|(i, h)| (h.clone(), i))
                .collect()
        } else {
            c.columns
                .iter()
                .map(|name| Ok((name.clone(), position(name)?)))
                .collect::<Result<_, String>>()?
        };
        let mut rows = BTreeMap::new();
        for (line, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("{}: {e}", c.file))?;
            let cell = |i: usize| record.get(i).unwrap_or("").trim();
            let values = columns
                .iter()
                .map(|(name, i)| {
                    let text = cell(*i);
                    let value = match (text.parse::<i64>(), text.parse::<f64>()) {
                        (Ok(v), _) => Cell::Int(v),
                        (_, Ok(v)) => Cell::Float(v),
                        _ => Cell::Text(text.to_owned()),
                    };
                    (name.clone(), value)
                })
                .collect();
            if rows.insert(cell(key).to_owned(), values).is_some() {
                return Err(format!(
                    "{}: row {} repeats the match name `{}` of an earlier row",
                    c.file,
                    line + 2,
                    cell(key)
                )
                .into());
            }
        }
        Ok(CsvReader {
            file: c.file.clone(),
            match_column: c.match_column.clone(),
            rows,
        })
    }
}

impl<B: Backend> DataReader<B> for CsvReader {
    fn read(&mut self, input: MatchName) -> Result<CsvRow<B>, BoxError> {
        let row = self.rows.get(&input.file_name).ok_or_else(|| {
            format!(
                "{} has no row whose `{}` is `{}`",
                self.file, self.match_column, input.file_name
            )
        })?;
        let device = Default::default();
        let mut columns = Nest::map();
        for (name, cell) in row {
            let value = match cell {
                Cell::Int(v) => Nest::Tensor(crate::nest::AnyTensor::new(
                    Tensor::<B, 1, Int>::from_data(TensorData::new(vec![*v], [1]), &device),
                )),
                Cell::Float(v) => Nest::Tensor(crate::nest::AnyTensor::new(
                    Tensor::<B, 1>::from_data(TensorData::new(vec![*v as f32], [1]), &device),
                )),
                Cell::Text(t) => Nest::Str(t.clone()),
            };
            columns.insert(name, value)?;
        }
        Ok(CsvRow { columns })
    }
}
