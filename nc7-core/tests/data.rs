//! Data files against the real tools: records shards read by the safetensors Python package,
//! `.npy` files written by numpy read by nc7.

#[path = "support/python.rs"]
mod python;

use burn::tensor::{DType, TensorData};
use nc7_core::data::RecordsWriter;
use nc7_core::data::files::read_npy;

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
    let e = read_npy(&dir.path().join("fortran.npy")).unwrap_err();
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
    assert_eq!(
        label.clone().into_data().unwrap().to_vec::<i64>().unwrap(),
        [2]
    );
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
