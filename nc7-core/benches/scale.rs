//! Scale: data-parallel training on two CPU devices against one.
//!
//! The parity bench's model and data (Lightning's parity ConvNet, CIFAR-shaped samples, SGD,
//! global batch 32, 200 steps) trained by the whole `train` call on one device with one
//! compute thread, and on two devices (`devices: cpu:0,cpu:1`) with one compute thread each,
//! so that the machine's two cores are the two devices. The runs alternate (each first in
//! half the rounds) in one process. Efficiency is throughput(2) / (2 × throughput(1)) =
//! t(1) / (2 × t(2)), the geometric mean over the rounds; 1.0 would be a perfect doubling.
//!
//! The machine's own ceiling is measured beside it: two one-thread trainings on one device,
//! each of the half batch (16), at once in two processes of this binary. A two-device run can
//! at best be as fast as those (each device does half the work, and nothing is exchanged), so
//! the ceiling is t(1) / (2 × t(two at once)): what the machine gives up to two cores sharing
//! caches, memory bandwidth and a clock, and to half-size batches, no data-parallel design can
//! win back. The last lines print the efficiency, the ceiling and their ratio.
//!
//! Run with `cargo xtask bench scale`. The last line is `scale efficiency: <x>`.

#[path = "../tests/models/parity.rs"]
mod parity;

use nc7_core::plan::TrainRequest;
use parity::{BATCH, STEPS, nc7_on};

/// Measured rounds: even, so that each side goes first equally often.
const ROUNDS: usize = 6;

fn request(devices: usize) -> TrainRequest {
    TrainRequest {
        devices: (devices > 1).then(|| (0..devices).map(|i| format!("cpu:{i}")).collect()),
        threads: Some(devices),
        ..TrainRequest::default()
    }
}

/// One training's seconds on `devices` devices with one thread each, of `batch` per step.
fn seconds(devices: usize, batch: usize) -> f64 {
    nc7_on(STEPS, batch, request(devices)).1
}

/// Seconds of two one-device trainings of half the batch at once, in two child processes.
fn two_at_once() -> f64 {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .env("SCALE_CHILD", "1")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("the bench binary runs again")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("the child ends");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .expect("the child prints its seconds")
        })
        .fold(0.0, f64::max)
}

fn geometric_mean(xs: &[f64]) -> f64 {
    (xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp()
}

fn main() {
    if std::env::var_os("SCALE_CHILD").is_some() {
        println!("{}", seconds(1, BATCH / 2));
        return;
    }
    // Warm-up: code and data into memory, the collective's threads started.
    let (one_losses, _) = nc7_on(STEPS, BATCH, request(1));
    let (two_losses, _) = nc7_on(STEPS, BATCH, request(2));
    let drift = one_losses
        .iter()
        .zip(&two_losses)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let mut efficiency = Vec::new();
    let mut ceiling = Vec::new();
    println!(
        "round  1 device (s)  2 devices (s)  efficiency  half batch alone (s)  two half batches at once (s)  ceiling"
    );
    for round in 0..ROUNDS {
        let (one, two) = if round % 2 == 0 {
            let one = seconds(1, BATCH);
            (one, seconds(2, BATCH))
        } else {
            let two = seconds(2, BATCH);
            (seconds(1, BATCH), two)
        };
        let half = seconds(1, BATCH / 2);
        let both = two_at_once();
        efficiency.push(one / (2.0 * two));
        ceiling.push(one / (2.0 * both));
        println!(
            "{round:>5}  {one:>12.3}  {two:>13.3}  {:>10.3}  {half:>20.3}  {both:>28.3}  {:>7.3}",
            efficiency[round], ceiling[round]
        );
    }
    let e = geometric_mean(&efficiency);
    let c = geometric_mean(&ceiling);
    println!("largest loss difference, 1 vs 2 devices, over {STEPS} steps: {drift:.3e}");
    println!("machine ceiling (two half-batch trainings at once as the two devices): {c:.3}");
    println!("efficiency against the ceiling: {:.3}", e / c);
    // Two processes as two nodes on loopback: not measured, see the crate docs' "Several
    // devices and mixed precision" (burn 0.21's collective between nodes, tracel-ai/burn#4549).
    println!("two nodes on loopback: not available (burn 0.21 collective, tracel-ai/burn#4549)");
    println!("scale efficiency: {e:.3}");
}
