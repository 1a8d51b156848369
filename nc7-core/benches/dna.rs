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

/// The median and the fastest of several timings. On a shared machine noise only ever adds
/// time, so the fastest run is the best estimate of the cost itself; the median shows the spread.
#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    min: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats {
        median: samples[samples.len() / 2],
        min: samples[0],
    }
}

/// Times one build of a prepared random helix.
fn time_one(n: usize, seed: u64) -> Duration {
    let (incoming, nodes) = random_helix(n, seed);
    let start = Instant::now();
    let helix = Helix::build(incoming, nodes).expect("random helices are valid");
    let took = start.elapsed();
    assert_eq!(helix.order().len(), n);
    black_box(helix);
    took
}

/// Per-build times of `n`-node helices, and the ratio of each size to the one before it,
/// measured side by side: every round builds each size once (the smaller ones several times,
/// so each size gets about the same time), so slow and fast phases of a noisy machine hit all
/// sizes alike. Returns per-size stats and per-step ratio stats.
fn time_sizes(sizes: &[usize], rounds: usize) -> (Vec<Stats>, Vec<Stats>) {
    let largest = *sizes.iter().max().expect("sizes");
    let mut per_size: Vec<Vec<Duration>> = vec![Vec::new(); sizes.len()];
    let mut ratios: Vec<Vec<Duration>> = vec![Vec::new(); sizes.len() - 1];
    for round in 0..=rounds {
        let mut this_round = Vec::with_capacity(sizes.len());
        for &n in sizes {
            let repeats = (largest / n).max(1);
            let total: Duration = (0..repeats)
                .map(|r| time_one(n, 0x5eed + (round * repeats + r) as u64))
                .sum();
            this_round.push(total / repeats as u32);
        }
        if round == 0 {
            continue; // Warm-up: the allocator grows to the largest size.
        }
        for (i, t) in this_round.iter().enumerate() {
            per_size[i].push(*t);
        }
        for i in 1..sizes.len() {
            // A ratio stored as a duration of "ratio microseconds", to reuse `stats`.
            let r = this_round[i].as_secs_f64() / this_round[i - 1].as_secs_f64();
            ratios[i - 1].push(Duration::from_secs_f64(r * 1e-6));
        }
    }
    (
        per_size.into_iter().map(stats).collect(),
        ratios.into_iter().map(stats).collect(),
    )
}

fn time_route(n: usize, steps: usize) -> Stats {
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
    stats(samples)
}

fn main() {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = |d: Duration| d.as_secs_f64() * 1e6;
    let sizes = [100usize, 1_000, 10_000];
    let (times, ratios) = time_sizes(&sizes, 9);
    println!(
        "{:<44} {:>12} {:>12}",
        "helix build + validate + sort", "fastest", "median"
    );
    for (n, t) in sizes.iter().zip(&times) {
        println!(
            "{:<44} {:>9.3} ms {:>9.3} ms",
            format!("  {n} nucleotides"),
            ms(t.min),
            ms(t.median)
        );
    }
    for (i, r) in ratios.iter().enumerate() {
        println!(
            "{:<44} {:>10.2}x {:>10.2}x   (linear: 10x{})",
            format!("  {} / {} (same round)", sizes[i + 1], sizes[i]),
            ratio(r.min),
            ratio(r.median),
            if sizes[i + 1] == 10_000 {
                "; target < 12x"
            } else {
                ""
            }
        );
    }
    println!("{:<44} {:>12}", "  1000-node target", "< 50 ms");
    let step = time_route(50, 2_001);
    let per_node = |d: Duration| d.as_secs_f64() * 1e6 / 50.0;
    println!(
        "{:<44} {:>9.3} us {:>9.3} us   (target < 5 us)",
        "route one step, 50 nucleotides, per node",
        per_node(step.min),
        per_node(step.median)
    );
    println!("dna: {:.3}", ms(times[1].median));
}
