//! Benchmark of the DNA helix: build + validate + sort of random helices, and one routed step.
//!
//! Run with `cargo xtask bench dna`. The last line is `dna: <ms for 1000 nodes>`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use burn::backend::NdArray;
use burn::tensor::Tensor;
use nc7_core::gene::MODEL_GENES;
use nc7_core::{GeneHandler, Helix, KeysMapping, Kind, Nest, NodeSpec, Signature};

/// A small deterministic generator, so every run builds the same graphs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random DAG of `n` plugins: each reads up to three earlier nodes (or the dataset), takes
/// four keys from them through a mapping, and generates four keys. Declared in shuffled order.
fn random_helix(n: usize, seed: u64) -> (Vec<NodeSpec>, Vec<NodeSpec>) {
    let mut rng = Rng(seed);
    let name = |i: usize| format!("node_{i:05}");
    let generated = |i: usize| -> Vec<String> { (0..4).map(|k| format!("k{k}_{i}")).collect() };
    let dataset = NodeSpec::new(
        "dataset",
        Kind::Dataset,
        Signature::nucleus7(&[], &["d0", "d1", "d2", "d3"]),
    );
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let fan_in = if i == 0 { 0 } else { 3.min(i) };
        let mut inbound: Vec<usize> = Vec::new();
        while inbound.len() < fan_in {
            let j = rng.below(i);
            if !inbound.contains(&j) {
                inbound.push(j);
            }
        }
        let mut rules = serde_json::Map::new();
        let mut inbound_names: Vec<String> = inbound.iter().map(|&j| name(j)).collect();
        // Four incoming keys, each mapped from one key of an inbound node.
        let incoming: Vec<String> = (0..4).map(|k| format!("in{k}")).collect();
        if inbound.is_empty() {
            inbound_names.push("dataset".into());
            let m: serde_json::Map<String, serde_json::Value> = (0..4)
                .map(|k| (format!("d{k}"), format!("in{k}").into()))
                .collect();
            rules.insert("dataset".into(), m.into());
        } else {
            for (k, key) in incoming.iter().enumerate() {
                let from = inbound[k % inbound.len()];
                let source = generated(from)[k].clone();
                let entry = rules
                    .entry(name(from))
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                entry[&source] = key.clone().into();
            }
            for &from in &inbound {
                // Everything else from the node is dropped.
                rules
                    .entry(name(from))
                    .or_insert_with(|| serde_json::json!({}))["*"] = "_".into();
            }
        }
        let incoming_refs: Vec<&str> = incoming.iter().map(String::as_str).collect();
        let generated_keys = generated(i);
        let generated_refs: Vec<&str> = generated_keys.iter().map(String::as_str).collect();
        let mapping = KeysMapping::from_json(&rules.into()).expect("valid mapping");
        nodes.push(
            NodeSpec::new(
                name(i),
                Kind::ModelPlugin,
                Signature::nucleus7(&incoming_refs, &generated_refs),
            )
            .inbound(inbound_names)
            .mapping(mapping),
        );
    }
    // Shuffle the declaration order (Fisher-Yates).
    for i in (1..nodes.len()).rev() {
        let j = rng.below(i + 1);
        nodes.swap(i, j);
    }
    (vec![dataset], nodes)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time_build(n: usize, repeats: usize) -> Duration {
    let samples = (0..repeats)
        .map(|r| {
            let (incoming, nodes) = random_helix(n, 0x5eed + r as u64);
            let start = Instant::now();
            let helix = Helix::build(incoming, nodes).expect("random helices are valid");
            let took = start.elapsed();
            assert_eq!(helix.order().len(), n);
            black_box(helix);
            took
        })
        .collect();
    median(samples)
}

fn time_route(n: usize, steps: usize) -> Duration {
    let (incoming, nodes) = random_helix(n, 7);
    let handler = GeneHandler::new("model", MODEL_GENES, incoming, nodes).expect("valid");
    let device = Default::default();
    let tensor =
        |v: f32| -> Nest<NdArray> { Tensor::<NdArray, 2>::full([8, 8], v, &device).into() };
    let dataset: Nest<NdArray> = (0..4)
        .map(|k| (format!("d{k}"), tensor(k as f32)))
        .collect();
    // Each nucleotide's output: its four keys, as tensors (clones share data).
    let outputs: Vec<Nest<NdArray>> = (0..n)
        .map(|i| {
            (0..4)
                .map(|k| (format!("k{k}_{i}"), tensor(k as f32)))
                .collect()
        })
        .collect();
    let index_of = |name: &str| name["node_".len()..].parse::<usize>().expect("bench names");
    let mut samples = Vec::with_capacity(steps);
    for _ in 0..steps {
        let start = Instant::now();
        let out = handler
            .run(vec![Some(dataset.clone())], |node, input| {
                black_box(&input);
                Ok(Some(outputs[index_of(&node.spec.name)].clone()))
            })
            .expect("runs");
        samples.push(start.elapsed());
        black_box(out);
    }
    median(samples)
}

fn main() {
    // Warm up allocator and caches.
    time_build(100, 3);
    let sizes = [100usize, 1_000, 10_000];
    let times: Vec<Duration> = sizes
        .iter()
        .map(|&n| time_build(n, if n >= 10_000 { 5 } else { 11 }))
        .collect();
    println!("{:<44} {:>12}", "helix build + validate + sort", "median");
    for (n, t) in sizes.iter().zip(&times) {
        println!(
            "{:<44} {:>9.3} ms",
            format!("  {n} nucleotides"),
            t.as_secs_f64() * 1e3
        );
    }
    let ms_1000 = times[1].as_secs_f64() * 1e3;
    let ratio = times[2].as_secs_f64() / times[1].as_secs_f64();
    println!(
        "{:<44} {:>9.2}x   (linear: 10x; target < 12x)",
        "  10000 / 1000", ratio
    );
    println!("{:<44} {:>9}", "  1000-node target", "< 50 ms");
    let step = time_route(50, 2_001);
    let per_node = step.as_secs_f64() * 1e6 / 50.0;
    println!(
        "{:<44} {:>9.3} us   (target < 5 us)",
        "route one step, 50 nucleotides, per node", per_node
    );
    println!("dna: {ms_1000:.3}");
}
