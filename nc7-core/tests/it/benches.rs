//! The benchmarks' projects, run small, so that what the benchmarks measure is also checked on
//! every test run: the parity benchmark's two sides agree loss for loss, and the inferer
//! benchmark's project trains, exports and infers, threaded and in one thread alike.

use std::fs;

use nc7_core::Registry;
use nc7_core::coordinator::{InferOptions, infer};
use nc7_core::plan::{InferPlan, InferRequest};

use crate::{inferer_models, parity_models};

#[test]
fn the_parity_sides_agree_loss_for_loss() {
    let _serial = crate::support::serial();
    // Three steps in batches of two: the benchmark's 200 steps of 32 are the same code, and
    // this crate's own code (the model's included) is not optimised in tests.
    let (nc7, _) = parity_models::nc7(3, 2);
    let (raw, _) = parity_models::raw(3, 2);
    assert_eq!(nc7.len(), 3);
    assert_eq!(nc7, raw, "the nc7 Trainer and the hand-written loop");
}

#[test]
fn the_inferer_benchmark_project_infers_threaded_and_alone_alike() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    {
        let _serial = crate::support::serial();
        inferer_models::trained_project(root, 12);
    }
    // The benchmark sets the plugin's cost in the saved model before it measures.
    inferer_models::set_cost(root, 24, 12, 2);
    let mut pictures = Vec::new();
    for single_thread in [false, true] {
        let request = InferRequest {
            single_thread,
            ..InferRequest::default()
        };
        let plan = InferPlan::load(root, &request, Registry::global()).unwrap();
        let report = {
            let _serial = crate::support::serial();
            infer(&plan, &InferOptions::default()).unwrap()
        };
        assert_eq!(report.samples, 12);
        let mut files: Vec<_> = fs::read_dir(&report.run.results)
            .unwrap()
            .flatten()
            .map(|e| (e.file_name(), fs::read(e.path()).unwrap()))
            .collect();
        files.sort();
        pictures.push(files);
    }
    assert_eq!(pictures[0].len(), 12);
    assert_eq!(pictures[0], pictures[1]);
}
