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
