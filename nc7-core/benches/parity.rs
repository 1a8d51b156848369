//! Parity: the nc7 Trainer against a hand-written burn loop, after Lightning's parity test.
//!
//! Model: Lightning Fabric's parity ConvNet (conv 3→6 5×5, max-pool 2, conv 6→16 5×5, max-pool
//! 2, fc 400→120→84→10), SGD at a constant learning rate, random CIFAR-shaped data (3×32×32,
//! 10 classes), batch 32, 200 steps, the CPU backend (Flex), the same seed. Both sides batch the same
//! in-memory samples the same way (one tensor per sample, stacked), read the loss back every
//! step and start from the same weights; the loss sequences must be identical.
//!
//! The nc7 side is a whole `train` call on a project folder: configs loaded and checked,
//! the graph built, 200 steps with the summaries, checkpoint, evaluation (one batch) and the
//! defaults that ship on (progress bar, prefetching). The raw side is model init and the loop,
//! on a thread pool of one thread per core, as the trainer computes on its own.
//! They run alternately (each first in half the rounds) in one process; the ratio is the
//! geometric mean of the rounds' ratios, printed with the medians. Peak memory:
//! each side runs once in its own child process and reports its high-water RSS and its peak
//! live heap (counted by this binary's allocator). RSS also counts the code each side runs
//! and the allocator's per-thread arenas, a fixed few MiB that the heap figure leaves out.
//!
//! Run with `cargo xtask bench parity`. The last line is `parity ratio: <nc7/raw>`.

#[path = "../tests/models/parity.rs"]
mod parity;

use std::collections::BTreeMap;

use parity::{BATCH, LR, SAMPLES, SEED, STEPS, data, nc7, raw};

/// Measured rounds: even, so that each side goes first equally often (on a machine with a
/// CPU budget the second run of a pair can be slower whichever side it is).
const REPEATS: usize = 6;

// ---- measuring ----

/// The system allocator, counting live heap bytes and their high-water mark.
struct CountingAlloc;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only counters are added.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        // SAFETY: the caller's contract for `alloc` is passed on.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// A field of this process's `/proc/self/status` in KiB (Linux): `VmHWM` is the high-water
/// resident set size, `RssFile` the resident pages of mapped files (the code, mostly).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs one side in a child process (this binary again) and reads its peak RSS, its file
/// pages at the end and its peak heap (KiB).
fn child_peak(side: &str) -> (u64, u64, u64) {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let out = std::process::Command::new(exe)
        .env("PARITY_CHILD", side)
        .output()
        .expect("the bench binary runs again");
    assert!(
        out.status.success(),
        "the {side} child failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let read = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("the {side} child did not report its {name}"))
    };
    (
        read("peak_rss_kib "),
        read("file_rss_kib "),
        read("peak_heap_kib "),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    if let Ok(side) = std::env::var("PARITY_CHILD") {
        let _ = data();
        match side.as_str() {
            "nc7" => drop(nc7(STEPS, BATCH)),
            _ => drop(raw(STEPS, BATCH)),
        }
        println!("peak_rss_kib {}", status_kib("VmHWM").unwrap_or(0));
        println!("file_rss_kib {}", status_kib("RssFile").unwrap_or(0));
        println!(
            "peak_heap_kib {}",
            PEAK.load(std::sync::atomic::Ordering::Relaxed) / 1024
        );
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is read.
    println!(
        "parity: ConvNet, SGD lr {LR}, batch {BATCH}, {STEPS} steps, {SAMPLES} CIFAR-shaped samples, the CPU backend (Flex), seed {SEED}"
    );
    let (rss_nc7, file_nc7, heap_nc7) = child_peak("nc7");
    let (rss_raw, file_raw, heap_raw) = child_peak("raw");
    let _ = data();
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut ratios: Vec<f64> = Vec::new();
    let mut pair: BTreeMap<&str, f64> = BTreeMap::new();
    let mut reference: Option<Vec<f64>> = None;
    // One warm-up pair, then the measured ones, alternating which side goes first.
    for round in 0..=REPEATS {
        let order: [&str; 2] = if round % 2 == 0 {
            ["nc7", "raw"]
        } else {
            ["raw", "nc7"]
        };
        for side in order {
            let (losses, seconds) = if side == "nc7" {
                nc7(STEPS, BATCH)
            } else {
                raw(STEPS, BATCH)
            };
            match &reference {
                None => reference = Some(losses),
                Some(r) => assert!(
                    *r == losses,
                    "the {side} losses differ from the first run's: {:?} vs {:?}",
                    &r[..4],
                    &losses[..4]
                ),
            }
            if round > 0 {
                println!("round {round} {side:>3}: {seconds:.3} s");
                times.entry(side).or_default().push(seconds);
                pair.insert(side, seconds);
            }
        }
        if round > 0 {
            ratios.push(pair["nc7"] / pair["raw"]);
        }
    }
    let losses = reference.expect("at least one run");
    println!(
        "loss sequences identical over {} runs: {:.5} → {:.5}",
        2 * (REPEATS + 1),
        losses[0],
        losses[STEPS - 1]
    );
    let t_nc7 = median(times["nc7"].clone());
    let t_raw = median(times["raw"].clone());
    println!(
        "median time: nc7 {t_nc7:.3} s, raw {t_raw:.3} s ({:.4} ms per step of overhead)",
        (t_nc7 - t_raw) * 1000.0 / STEPS as f64
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "peak RSS: nc7 {:.1} MiB, raw {:.1} MiB, ratio {:.3}; {:.1} MiB more, of which {:.1} MiB more code and other file pages (nc7 {:.1} MiB, raw {:.1} MiB at the end)",
        mib(rss_nc7),
        mib(rss_raw),
        rss_nc7 as f64 / rss_raw.max(1) as f64,
        mib(rss_nc7) - mib(rss_raw),
        mib(file_nc7) - mib(file_raw),
        mib(file_nc7),
        mib(file_raw),
    );
    println!(
        "peak heap: nc7 {:.1} MiB, raw {:.1} MiB, ratio {:.3}",
        heap_nc7 as f64 / 1024.0,
        heap_raw as f64 / 1024.0,
        heap_nc7 as f64 / heap_raw.max(1) as f64
    );
    println!(
        "ratio of medians {:.4}; per round {}",
        t_nc7 / t_raw,
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // The geometric mean of the rounds' ratios: the order effect cancels over alternating rounds.
    let ratio = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    println!("parity ratio: {ratio:.4}");
}
