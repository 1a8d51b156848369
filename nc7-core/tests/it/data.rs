//! Data files against the real tools: records shards read by the safetensors Python package,
//! `.npy` files written by numpy read by nc7.

use crate::support::python;

use burn::tensor::{DType, TensorData};
use nc7_core::data::RecordsWriter;
use nc7_core::data::files::read_npy;

/// Integers read at the backend's width (Flex holds I32), as i64.
fn ints(data: TensorData) -> Vec<i64> {
    data.convert::<i64>().to_vec().unwrap()
}

#[test]
fn records_shards_are_read_by_python_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = RecordsWriter::new(dir.path(), 3).unwrap();
    for i in 0..4i64 {
        w.write(
            "val",
            [
                ("label".to_owned(), TensorData::new(vec![i], [1])),
                (
                    "image".to_owned(),
                    TensorData::new(vec![i as f32 / 4.0; 12], [3, 2, 2]),
                ),
            ]
            .into(),
        )
        .unwrap();
    }
    w.flush().unwrap();
    assert_eq!(w.written().len(), 2);
    let first = w.written()[0].to_str().unwrap().to_owned();
    if let Some(out) = python::run_python(
        "safetensors",
        "import sys, json\nfrom safetensors import safe_open\nfrom safetensors.numpy import load_file\nt = load_file(sys.argv[1])\nwith safe_open(sys.argv[1], 'np') as f:\n    meta = f.metadata()\nprint(json.dumps({'meta': meta, 'shapes': {k: list(v.shape) for k, v in t.items()}, 'labels': [int(t['%06d/label' % i][0]) for i in range(3)], 'pixel': float(t['000002/image'][0, 1, 1])}))",
        &[&first],
    ) {
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["meta"]["format"], "nc7-records");
        assert_eq!(v["meta"]["samples"], "3");
        assert_eq!(v["meta"]["keys"], "image,label");
        assert_eq!(v["shapes"]["000001/image"], serde_json::json!([3, 2, 2]));
        assert_eq!(v["labels"], serde_json::json!([0, 1, 2]));
        assert_eq!(v["pixel"], 0.5);
    }
}

#[test]
fn npy_files_written_by_numpy_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_str().unwrap().to_owned();
    let Some(_) = python::run_python(
        "numpy",
        "import sys, numpy as np\nd = sys.argv[1]\nnp.save(d + '/f32.npy', np.arange(6, dtype=np.float32).reshape(2, 3) / 2)\nnp.save(d + '/i64.npy', np.array([[-1], [7]], dtype=np.int64))\nnp.save(d + '/u8.npy', np.array([0, 255], dtype=np.uint8))\nnp.save(d + '/f64.npy', np.float64(3.25))\nnp.save(d + '/fortran.npy', np.asfortranarray(np.ones((2, 3))))\nprint('ok')",
        &[&base],
    ) else {
        return;
    };
    let f = read_npy(&dir.path().join("f32.npy")).unwrap();
    assert_eq!(f.shape.to_vec(), [2, 3]);
    assert_eq!(f.to_vec::<f32>().unwrap(), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    let i = read_npy(&dir.path().join("i64.npy")).unwrap();
    assert_eq!(
        (i.dtype, i.to_vec::<i64>().unwrap()),
        (DType::I64, vec![-1, 7])
    );
    let u = read_npy(&dir.path().join("u8.npy")).unwrap();
    assert_eq!(u.to_vec::<u8>().unwrap(), [0, 255]);
    let s = read_npy(&dir.path().join("f64.npy")).unwrap();
    assert_eq!(
        (s.shape.to_vec(), s.to_vec::<f64>().unwrap()),
        (vec![], vec![3.25])
    );
    let e = read_npy(&dir.path().join("fortran.npy"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fortran.npy") && e.contains("Fortran-ordered"),
        "{e}"
    );
}

#[test]
fn image_files_datasets_and_feeders_read_images_masks_and_labels() {
    use nc7_core::data::files::write_png;
    use nc7_core::{Kind, Nest, Registry};
    type B = nc7_core::backend::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["img", "mask", "lbl"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let v = i as f32 / 2.0;
        write_png(
            &root.join(format!("img/{name}.png")),
            &TensorData::new(vec![v; 3 * 4 * 5], [3, 4, 5]),
        )
        .unwrap();
        std::fs::write(
            root.join(format!("lbl/{name}.json")),
            format!("{{\"label\": {i}}}"),
        )
        .unwrap();
    }
    write_png(
        &root.join("mask/b.png"),
        &TensorData::new(vec![1.0f32; 20], [4, 5]),
    )
    .unwrap();
    let glob = |d: &str, ext: &str| format!("{}/{d}/*.{ext}", root.display());
    let config = serde_json::json!({
        "file_list": {"file_names": {"image": glob("img", "png"), "label": glob("lbl", "json")}},
        "color": "grey"
    });
    let registry = Registry::global();
    let reg = registry.resolve("ImageFiles", Some(Kind::Dataset)).unwrap();
    let device = Default::default();
    let data = nc7_core::runtime::dataset::<B>(reg, "images", &config, &device).unwrap();
    assert_eq!(data.len(), 3);
    let sample = data.get(2).unwrap();
    let flat: std::collections::BTreeMap<String, &Nest<B>> = sample.flatten().into_iter().collect();
    let Nest::Tensor(image) = flat["image"] else {
        panic!("image: {sample:?}")
    };
    assert_eq!(image.shape().to_vec(), [1, 4, 5]);
    let Nest::Tensor(label) = flat["label"] else {
        panic!("label: {sample:?}")
    };
    assert_eq!(ints(label.clone().into_data().unwrap()), [2]);
    assert!(matches!(flat["file_name"], Nest::Str(s) if s == "c"));

    // A feeder with optional masks: only `b` has one.
    let config = serde_json::json!({
        "file_list": {"file_names": {"image": glob("img", "png"), "mask": glob("mask", "png")},
                      "optional_keys": ["mask"]}
    });
    let reg = registry
        .resolve("ImageFilesFeeder", Some(Kind::DataFeeder))
        .unwrap();
    let mut feeder = nc7_core::runtime::feeder::<B>(reg, "feed", &config, &device).unwrap();
    let mut masks = Vec::new();
    while let Some(s) = feeder.next_sample().unwrap() {
        masks.push(s.flatten().iter().any(|(k, _)| k == "mask"));
    }
    assert_eq!(masks, [false, true, false]);

    // A corrupt image names its file; an unknown key is refused.
    std::fs::write(root.join("img/b.png"), b"not a png").unwrap();
    let e = data.get(1).unwrap_err().to_string();
    assert!(e.contains("b.png"), "{e}");
    let config = serde_json::json!({"file_list": {"file_names": {"picture": glob("img", "png")}}});
    let reg = registry.resolve("ImageFiles", Some(Kind::Dataset)).unwrap();
    let e = nc7_core::runtime::dataset::<B>(reg, "x", &config, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`image` is required"), "{e}");
}

#[test]
fn the_file_list_command_writes_the_matched_list() {
    use nc7_core::data::files::write_png;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("images")).unwrap();
    for name in ["x", "y"] {
        write_png(
            &root.join(format!("images/{name}.png")),
            &TensorData::new(vec![0.5f32; 4], [2, 2]),
        )
        .unwrap();
    }
    let configs = root.join("inference/configs");
    std::fs::create_dir_all(&configs).unwrap();
    let feeder = serde_json::json!({
        "class_name": "ImageFilesFeeder", "name": "feed",
        "file_list": {"file_names": {"image": format!("{}/images/*.png", root.display())}}
    });
    std::fs::write(configs.join("datafeeder.json"), feeder.to_string()).unwrap();
    let p = root.to_str().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = nc7_core::cli::run(
        ["nc7", "file-list", p, "--type", "infer"],
        Default::default(),
        &mut out,
        &mut err,
    );
    let (o, e) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    assert_eq!(code, 0, "{o}{e}");
    assert!(o.contains("feed: 2 samples"), "{o}");
    let list =
        std::fs::read_to_string(root.join("inference/artifacts/file_list_feed.jsonl")).unwrap();
    assert_eq!(list.lines().count(), 2);
    assert!(
        list.lines().next().unwrap().contains(r#""match_name":"x""#),
        "{list}"
    );

    // A glob that matches nothing: exit 1 with the glob named.
    let feeder = serde_json::json!({
        "class_name": "ImageFilesFeeder", "name": "feed",
        "file_list": {"file_names": {"image": format!("{}/none/*.png", root.display())}}
    });
    std::fs::write(configs.join("datafeeder.json"), feeder.to_string()).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = nc7_core::cli::run(
        ["nc7", "file-list", p, "--type", "infer"],
        Default::default(),
        &mut out,
        &mut err,
    );
    let e = String::from_utf8_lossy(&err);
    assert_eq!(code, 1);
    assert!(
        e.contains("the file list is empty") && e.contains("none/*.png"),
        "{e}"
    );
}

#[test]
fn records_are_read_back_by_the_records_dataset_and_feeder() {
    use nc7_core::{Kind, Nest, Registry};
    type B = nc7_core::backend::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let mut w = RecordsWriter::new(dir.path(), 2).unwrap();
    for i in 0..5i64 {
        w.write(
            "saved",
            [
                ("label".to_owned(), TensorData::new(vec![i], [1])),
                (
                    "box:corner".to_owned(),
                    TensorData::new(vec![i as f32, 2.0 * i as f32], [2]),
                ),
            ]
            .into(),
        )
        .unwrap();
    }
    w.flush().unwrap();
    let config = serde_json::json!({"shards": format!("{}/*.safetensors", dir.path().display())});
    let registry = Registry::global();
    let device = Default::default();
    let reg = registry.resolve("Records", Some(Kind::Dataset)).unwrap();
    let data = nc7_core::runtime::dataset::<B>(reg, "records", &config, &device).unwrap();
    assert_eq!(data.len(), 5, "shards of 2, 2 and 1, read in order");
    let values = |sample: &Nest<B>, key: &str| -> Vec<f64> {
        let Some(Nest::Tensor(t)) = sample.get(key) else {
            panic!("{key} in {sample:?}")
        };
        let data = t.clone().into_data().unwrap();
        data.convert::<f64>().to_vec().unwrap()
    };
    let third = data.get(3).unwrap();
    assert_eq!(values(&third, "label"), [3.0]);
    assert_eq!(values(&third, "box:corner"), [3.0, 6.0], "nested again");

    let reg = registry
        .resolve("RecordsFeeder", Some(Kind::DataFeeder))
        .unwrap();
    let mut feeder = nc7_core::runtime::feeder::<B>(reg, "feed", &config, &device).unwrap();
    let mut labels = Vec::new();
    while let Some(s) = feeder.next_sample().unwrap() {
        labels.extend(values(&s, "label"));
    }
    assert_eq!(labels, [0.0, 1.0, 2.0, 3.0, 4.0]);

    let none =
        serde_json::json!({"shards": format!("{}/nothing-*.safetensors", dir.path().display())});
    let e = nc7_core::runtime::feeder::<B>(reg, "feed", &none, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nothing-*.safetensors` matches no file"), "{e}");
}

#[derive(nc7_core::Generated)]
pub struct Picture<B: burn::prelude::Backend> {
    image: burn::tensor::Tensor<B, 3>,
}

#[derive(nc7_core::Incoming)]
pub struct Label<B: burn::prelude::Backend> {
    label: burn::tensor::Tensor<B, 1, burn::tensor::Int>,
}

#[derive(nc7_core::Generated)]
pub struct Keep {
    keep: bool,
}

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// How many pictures `Invert` made: a cached sample is not made again.
static INVERTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

simple_nucleotide!(Invert, DataProcessor, Empty, Picture<B>, Picture<B>, {
    fn process(&mut self, input: Picture<B>) -> Result<Picture<B>, nc7_core::BoxError> {
        INVERTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Picture {
            image: input.image.neg().add_scalar(1.0),
        })
    }
});

simple_nucleotide!(NotOne, DataProcessor, Empty, Label<B>, Keep, {
    fn process(&mut self, input: Label<B>) -> Result<Keep, nc7_core::BoxError> {
        use burn::tensor::ElementConversion;
        Ok(Keep {
            keep: input.label.into_scalar().elem::<i64>() != 1,
        })
    }
});

#[test]
fn data_pipes_read_process_and_filter_samples() {
    use nc7_core::data::files::write_png;
    use nc7_core::{Kind, Nest, Registry};
    type B = nc7_core::backend::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["img", "lbl"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        write_png(
            &root.join(format!("img/{name}.png")),
            &TensorData::new(vec![i as f32 / 2.0; 6], [2, 3]),
        )
        .unwrap();
        std::fs::write(root.join(format!("lbl/{name}.json")), i.to_string()).unwrap();
    }
    std::fs::write(
        root.join("table.csv"),
        "file_name,weight,tag,count\na,0.5,x,1\nb,1.5,y,2\nc,2.5,z,3\n",
    )
    .unwrap();
    let glob = |d: &str, ext: &str| format!("{}/{d}/*.{ext}", root.display());
    let config = serde_json::json!({
        "file_list": {"file_names": {"image": glob("img", "png"), "label": glob("lbl", "json")}},
        "readers": [
            {"class_name": "ImageReader", "name": "read_image", "inbound_nodes": ["file_list"],
             "incoming_keys_mapping": {"file_list": {"image": "path", "label": "_", "file_name": "_"}},
             "color": "grey"},
            {"class_name": "LabelReader", "name": "read_label", "inbound_nodes": ["file_list"],
             "incoming_keys_mapping": {"file_list": {"label": "path", "image": "_", "file_name": "_"}}},
            {"class_name": "CsvReader", "name": "table", "inbound_nodes": ["file_list"],
             "incoming_keys_mapping": {"file_list": {"label": "_", "image": "_"}},
             "file": root.join("table.csv").display().to_string()}
        ],
        "processors": [{"class_name": "Invert", "name": "invert", "inbound_nodes": ["read_image"]}],
        "filters": [{"class_name": "NotOne", "name": "not_one", "inbound_nodes": ["read_label"]}]
    });
    let registry = Registry::global();
    let device = Default::default();
    let reg = registry.resolve("DataPipe", Some(Kind::Dataset)).unwrap();
    let feeder_reg = registry
        .resolve("DataPipeFeeder", Some(Kind::DataFeeder))
        .unwrap();
    // The error of building a pipe, or a feeder, from `config`.
    let build_error = |config: &serde_json::Value| {
        nc7_core::runtime::dataset::<B>(reg, "pipe", config, &device)
            .err()
            .unwrap()
            .to_string()
    };
    let feeder_error = |config: &serde_json::Value| {
        nc7_core::runtime::feeder::<B>(feeder_reg, "feed", config, &device)
            .err()
            .unwrap()
            .to_string()
    };
    let data = nc7_core::runtime::dataset::<B>(reg, "pipe", &config, &device).unwrap();
    assert_eq!(data.len(), 2, "the filter drops `b` (label 1)");
    let c = data.get(1).unwrap();
    assert!(matches!(c.get("file_name"), Some(Nest::Str(s)) if s == "c"));
    let Some(Nest::Tensor(image)) = c.get("image") else {
        panic!("{c:?}")
    };
    assert_eq!(image.shape().to_vec(), [1, 2, 3]);
    let v: Vec<f32> = image.clone().into_data().unwrap().to_vec().unwrap();
    assert_eq!(
        v, [0.0; 6],
        "the processor's image (1 - 1.0) replaced the reader's"
    );
    let Some(Nest::Tensor(label)) = c.get("label") else {
        panic!("{c:?}")
    };
    assert_eq!(ints(label.clone().into_data().unwrap()), [2]);
    // The CSV row of `c`: a float, a string and an integer column.
    let Some(Nest::Tensor(weight)) = c.get("weight") else {
        panic!("{c:?}")
    };
    assert_eq!(
        weight.clone().into_data().unwrap().to_vec::<f32>().unwrap(),
        [2.5]
    );
    assert!(matches!(c.get("tag"), Some(Nest::Str(t)) if t == "z"));
    let Some(Nest::Tensor(count)) = c.get("count") else {
        panic!("{c:?}")
    };
    assert_eq!(ints(count.clone().into_data().unwrap()), [3]);

    let mut feeder = nc7_core::runtime::feeder::<B>(feeder_reg, "feed", &config, &device).unwrap();
    let mut names = Vec::new();
    while let Some(s) = feeder.next_sample().unwrap() {
        let Some(Nest::Str(n)) = s.get("file_name") else {
            panic!("{s:?}")
        };
        names.push(n.clone());
    }
    assert_eq!(names, ["a", "c"]);

    // A cache: the samples made are kept by content, read back bitwise instead of made again,
    // made again when a file changes or an entry is damaged.
    let cache_dir = root.join("cache");
    let mut cached = config.clone();
    cached["cache"] = cache_dir.display().to_string().into();
    let made = || INVERTED.load(std::sync::atomic::Ordering::SeqCst);
    let values = |s: &Nest<B>| -> Vec<Vec<u8>> {
        ["image", "label", "weight", "count"]
            .iter()
            .map(|k| match s.get(k) {
                Some(Nest::Tensor(t)) => t.clone().into_data().unwrap().bytes.to_vec(),
                other => panic!("{k}: {other:?}"),
            })
            .collect()
    };
    let first = nc7_core::runtime::dataset::<B>(reg, "pipe", &cached, &device).unwrap();
    let before = made();
    let fresh: Vec<_> = (0..2).map(|i| values(&first.get(i).unwrap())).collect();
    assert_eq!(made() - before, 2);
    assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 2);
    let again = nc7_core::runtime::dataset::<B>(reg, "pipe", &cached, &device).unwrap();
    let before = made();
    let read: Vec<_> = (0..2).map(|i| values(&again.get(i).unwrap())).collect();
    assert_eq!(made(), before, "both read from the cache");
    assert_eq!(read, fresh);
    let c = again.get(1).unwrap();
    assert!(matches!(c.get("file_name"), Some(Nest::Str(s)) if s == "c"));
    assert!(matches!(c.get("tag"), Some(Nest::Str(t)) if t == "z"));
    // A changed file is a new entry; a damaged entry is made again and rewritten.
    write_png(
        &root.join("img/c.png"),
        &TensorData::new(vec![0.25f32; 6], [2, 3]),
    )
    .unwrap();
    let before = made();
    let changed = values(&again.get(1).unwrap());
    assert_eq!(made() - before, 1);
    assert_ne!(changed, fresh[1]);
    assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 3);
    for e in std::fs::read_dir(&cache_dir).unwrap().flatten() {
        std::fs::write(e.path(), b"damaged").unwrap();
    }
    let before = made();
    assert_eq!(values(&again.get(0).unwrap()), fresh[0]);
    assert_eq!(made() - before, 1);
    assert_eq!(values(&again.get(0).unwrap()), fresh[0]);
    assert_eq!(made() - before, 1, "rewritten, then read");
    // A data feeder reads each sample once: `cache` is refused, not ignored.
    let e = feeder_error(&cached);
    assert!(e.contains("`cache` is for DataPipe"), "{e}");
    write_png(
        &root.join("img/c.png"),
        &TensorData::new(vec![1.0f32; 6], [2, 3]),
    )
    .unwrap();

    // Filters that keep nothing: the dataset at build, the feeder at its end, naming what each
    // filter dropped.
    let mut only_b = config.clone();
    only_b["file_list"]["file_names"]["image"] =
        root.join("img/b.png").display().to_string().into();
    let e = build_error(&only_b);
    assert!(
        e.contains("the filters keep none of the 1 samples of the file list: `not_one` dropped 1"),
        "{e}"
    );
    let mut feeder = nc7_core::runtime::feeder::<B>(feeder_reg, "feed", &only_b, &device).unwrap();
    let e = feeder.next_sample().err().unwrap().to_string();
    assert!(e.contains("`not_one` dropped 1"), "{e}");

    // Problems of the pipe's own nucleotides are build errors naming them.
    let mut bad = config.clone();
    bad["readers"][0]["class_name"] = "ImageReeder".into();
    bad["filters"][0]["inbound_nodes"] = serde_json::json!(["invert"]);
    let e = build_error(&bad);
    assert!(
        e.contains("the data pipe's nucleotides have problems"),
        "{e}"
    );
    assert!(
        e.contains("ImageReeder") && e.contains("ImageReader"),
        "{e}"
    );
    // A CSV column that is not there; a sample without a row.
    let mut no_column = config.clone();
    no_column["readers"][2]["columns"] = serde_json::json!(["wieght"]);
    let e = build_error(&no_column);
    assert!(
        e.contains("has no column `wieght` in its header row (4 columns); did you mean `weight`?"),
        "{e}"
    );
    std::fs::write(root.join("table.csv"), "file_name,weight\na,0.5\n").unwrap();
    let partial = nc7_core::runtime::dataset::<B>(reg, "pipe", &config, &device).unwrap();
    let e = partial.get(1).err().unwrap().to_string();
    assert!(e.contains("has no row whose `file_name` is `c`"), "{e}");
    // A filter that generates no `keep`.
    let mut no_keep = config.clone();
    no_keep["filters"][0] =
        serde_json::json!({"class_name": "Invert", "name": "f", "inbound_nodes": ["read_image"]});
    let e = build_error(&no_keep);
    assert!(e.contains("filter `f` gave nothing for `keep`"), "{e}");
}

#[test]
fn a_data_pipe_augments_each_sample_by_its_key_and_refuses_a_cache_of_augmented_samples() {
    use nc7_core::data::SampleKey;
    use nc7_core::data::files::write_png;
    use nc7_core::{Kind, Nest, Registry};
    type B = nc7_core::backend::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("img")).unwrap();
    for i in 0..3 {
        // A 4×4 ramp: flips and rotations show.
        let values: Vec<f32> = (0..16).map(|p| (p + i) as f32 / 20.0).collect();
        write_png(
            &root.join(format!("img/{i}.png")),
            &TensorData::new(values, [4, 4]),
        )
        .unwrap();
    }
    let glob = format!("{}/img/*.png", root.display());
    let config = |cache: Option<&str>| {
        let mut c = serde_json::json!({
            "file_list": {"file_names": {"image": glob}},
            "readers": [
                {"class_name": "ImageReader", "name": "read", "inbound_nodes": ["file_list"],
                 "incoming_keys_mapping": {"file_list": {"image": "path", "file_name": "_", "sample_seed": "_"}},
                 "color": "grey"},
                {"class_name": "ImageReader", "name": "read_mask", "inbound_nodes": ["file_list"],
                 "incoming_keys_mapping": {"file_list": {"image": "path", "file_name": "_", "sample_seed": "_"}},
                 "color": "grey"}
            ],
            "processors": [
                {"class_name": "Augment", "name": "augment", "inbound_nodes": ["file_list", "read", "read_mask"],
                 "incoming_keys_mapping": {"file_list": {"image": "_", "file_name": "_"}, "read_mask": {"image": "mask"}},
                 "flip_horizontal": 0.5, "flip_vertical": 0.5, "rotate90": 0.5}
            ]
        });
        if let Some(dir) = cache {
            c["cache"] = serde_json::json!(dir);
        }
        c
    };
    let registry = Registry::global();
    let reg = registry.resolve("DataPipe", Some(Kind::Dataset)).unwrap();
    let device = Default::default();
    let data = nc7_core::runtime::dataset::<B>(reg, "pipe", &config(None), &device).unwrap();
    let read = |key: SampleKey| {
        let s = data.get_for(key).unwrap();
        let values = |k: &str| -> Vec<f32> {
            let Some(Nest::Tensor(t)) = s.get(k) else {
                panic!("no `{k}` in {s:?}")
            };
            t.clone().into_data().unwrap().to_vec().unwrap()
        };
        (values("image"), values("mask"))
    };
    let key = |index, epoch| SampleKey {
        index,
        epoch,
        seed: 7,
    };
    let mut seen = std::collections::BTreeSet::new();
    for epoch in 1..=8 {
        let (image, mask) = read(key(0, epoch));
        // The same sample twice: the same augmentation; the mask moved as the image.
        assert_eq!(read(key(0, epoch)), (image.clone(), mask.clone()));
        assert_eq!(image, mask, "epoch {epoch}");
        seen.insert(
            image
                .iter()
                .map(|v| (v * 1000.0) as i64)
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        seen.len() > 2,
        "epochs augment differently: {} distinct",
        seen.len()
    );
    // A cache would keep one augmentation for ever: refused, naming the processor.
    let cached = root.join("cache").display().to_string();
    let err = nc7_core::runtime::dataset::<B>(reg, "pipe", &config(Some(&cached)), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`augment` takes `sample_seed`") && err.contains("remove `cache`"),
        "{err}"
    );
}

#[test]
fn filters_drop_samples_of_any_data_set_or_data_feeder() {
    use nc7_core::{Kind, Nest, Registry};
    type B = nc7_core::backend::Cpu;
    let registry = Registry::global();
    let device = Default::default();
    let label_of = |s: &Nest<B>| {
        let Some(Nest::Tensor(t)) = s.get("label") else {
            panic!("{s:?}")
        };
        ints(t.clone().into_data().unwrap())[0]
    };
    let shapes = serde_json::json!({"class_name": "Shapes", "name": "shapes", "samples": 30, "size": 8, "seed": 3});
    let not_one =
        serde_json::json!([{"class_name": "NotOne", "name": "not_one", "inbound_nodes": ["data"]}]);
    let all = nc7_core::runtime::dataset::<B>(
        registry.resolve("Shapes", Some(Kind::Dataset)).unwrap(),
        "shapes",
        &serde_json::json!({"samples": 30, "size": 8, "seed": 3}),
        &device,
    )
    .unwrap();
    let expected: Vec<i64> = (0..30)
        .map(|i| label_of(&all.get(i).unwrap()))
        .filter(|l| *l != 1)
        .collect();
    assert!(expected.len() < 30, "the data has squares to drop");
    // A data set: its length is what the filter keeps; each sample is the wrapped one's.
    let reg = registry
        .resolve("FilteredDataset", Some(Kind::Dataset))
        .unwrap();
    let config = serde_json::json!({"dataset": shapes, "filters": not_one});
    let data = nc7_core::runtime::dataset::<B>(reg, "kept", &config, &device).unwrap();
    let labels: Vec<i64> = (0..data.len())
        .map(|i| label_of(&data.get(i).unwrap()))
        .collect();
    assert_eq!(labels, expected);
    assert!(data.get(0).unwrap().get("image").is_some());
    // A data feeder: the same samples in order.
    let feeder_reg = registry
        .resolve("FilteredFeeder", Some(Kind::DataFeeder))
        .unwrap();
    let feeder_config = serde_json::json!({"feeder": {"class_name": "ShapesFeeder", "name": "shapes",
        "samples": 30, "size": 8, "seed": 3}, "filters": not_one});
    let mut feeder =
        nc7_core::runtime::feeder::<B>(feeder_reg, "kept", &feeder_config, &device).unwrap();
    let mut fed = Vec::new();
    while let Some(s) = feeder.next_sample().unwrap() {
        fed.push(label_of(&s));
    }
    assert_eq!(fed, expected);
    // Filters that keep nothing, and bad configs, are named.
    // A one-sample data set whose sample is a square.
    let seed = (0..100)
        .find(|&seed| {
            let one = nc7_core::runtime::dataset::<B>(
                registry.resolve("Shapes", Some(Kind::Dataset)).unwrap(),
                "shapes",
                &serde_json::json!({"samples": 1, "size": 8, "seed": seed}),
                &device,
            )
            .unwrap();
            label_of(&one.get(0).unwrap()) == 1
        })
        .expect("a seed whose first shape is a square");
    let square = serde_json::json!({"class_name": "Shapes", "name": "shapes", "samples": 1, "size": 8, "seed": seed});
    let err = |config: serde_json::Value| {
        nc7_core::runtime::dataset::<B>(reg, "kept", &config, &device)
            .err()
            .unwrap()
            .to_string()
    };
    let e = err(serde_json::json!({"dataset": square, "filters": not_one}));
    assert!(
        e.contains("the filters keep none of the 1 samples of `shapes`: `not_one` dropped 1"),
        "{e}"
    );
    let e = err(
        serde_json::json!({"dataset": {"class_name": "Shapes", "samples": 3}, "filters": not_one}),
    );
    assert!(e.contains("`dataset` has no `name`"), "{e}");
    let e = err(serde_json::json!({"dataset": shapes, "filters": []}));
    assert!(e.contains("`filters` is empty"), "{e}");
    let e = err(serde_json::json!({"dataset": shapes,
        "filters": [{"class_name": "NotOne", "name": "f", "inbound_nodes": ["dataset"]}]}));
    assert!(
        e.contains("the filters have problems") && e.contains("dataset"),
        "{e}"
    );
}
