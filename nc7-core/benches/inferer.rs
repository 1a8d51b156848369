//! The inferer's threads: reading (PNG decoding), the network and the callbacks (PNG writing)
//! on three threads joined by bounded channels, the network on the default compute threads
//! (every core), against the same run in one thread (`--single-thread --threads 1`).
//!
//! The pipeline: `ImageFilesFeeder` over 256 RGB PNG files of 256×256 in batches of 8, a
//! plugin `Mix` (the image's top-left `side`×`side` square, with a 3×3 convolution applied
//! `repeats` times over its top-left `tile`×`tile` square) and `SampleSaver` writing each
//! result as a PNG. Before measuring, single-thread runs time each stage: `side` is set so
//! that writing takes as long as reading, then `repeats` and `tile` so that prediction takes
//! as long as the mean of the two. Each stage is then about a third of the single-thread time.
//!
//! Each round runs, in one of the six orders: the single-thread run, the threaded run, and
//! two single-thread runs at once on two copies of the project. The last shows what two
//! cores give this very workload on this machine with no pipeline at all (two cores that
//! share caches and memory bandwidth, or hyperthreads, give less than twice one). The
//! speedup is the geometric mean of the rounds' single/threaded time ratios.
//!
//! The process tunes its allocator as `nc7` command lines do (`nc7_core::memory`), and the
//! project lives in memory (`/dev/shm` where there is one): creating and deleting thousands
//! of files on a disk file system costs kernel time that varies from run to run. At the end
//! a child process repeats a few rounds with glibc's default allocator settings, to show
//! what the tuning is worth.
//!
//! Run with `cargo xtask bench inferer`. The last line is `inferer speedup: <threaded/single>`
//! (throughput of the threaded run over the single-thread run).

#[path = "../tests/models/inferer.rs"]
mod inferer;

use inferer::{BATCH, SIDE, set_cost, trained_project};

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nc7_core::Registry;
use nc7_core::coordinator::{InferOptions, InferReport, infer};
use nc7_core::plan::{InferPlan, InferRequest};

const IMAGES: usize = 256;
/// Measured rounds: six, one per order of the three runs.
const ROUNDS: usize = 6;

/// CPU seconds this process has used, all threads.
fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
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

fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|r| r.ln()).sum::<f64>() / v.len() as f64).exp()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A project with its images and saved model, and a copy of it for the second of two runs at
/// once (the copy reads the first one's images).
struct Bench {
    _dir: tempfile::TempDir,
    roots: [PathBuf; 2],
}

impl Bench {
    fn new() -> Bench {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let root = dir.path().join("a");
        trained_project(&root, IMAGES);
        let copy = dir.path().join("b");
        copy_dir(&root.join("inference"), &copy.join("inference"));
        copy_dir(&root.join("saved_models"), &copy.join("saved_models"));
        Bench {
            _dir: dir,
            roots: [root, copy],
        }
    }

    /// Sets the plugin's cost in both saved models.
    fn set(&self, c: Cost) {
        for root in &self.roots {
            set_cost(root, c.side, c.tile, c.repeats);
        }
    }

    /// One inference of project `k`; its results are deleted.
    fn run(&self, k: usize, single_thread: bool) -> InferReport {
        // The single-thread run computes on one thread too; the threaded run on the default,
        // every core.
        let request = InferRequest {
            single_thread,
            threads: single_thread.then_some(1),
            ..InferRequest::default()
        };
        let plan = InferPlan::load(&self.roots[k], &request, Registry::global())
            .expect("the inference plans");
        let r = infer(&plan, &InferOptions::default()).expect("inference runs");
        assert_eq!(r.samples, IMAGES as u64);
        // Keep the memory from filling with results.
        fs::remove_dir_all(&r.run.dir).unwrap();
        r
    }

    /// One run, printed with its CPU time and how long each stage worked; its seconds.
    fn timed(&self, single_thread: bool) -> f64 {
        let cpu = cpu_seconds();
        let r = self.run(0, single_thread);
        let cpu = cpu_seconds() - cpu;
        let [read, predict, call] = r.stage_seconds;
        println!(
            "  {}: {:.3} s, CPU {cpu:.3} s; stages worked: reading {read:.3} s, prediction {predict:.3} s, callbacks {call:.3} s",
            if single_thread {
                "single thread"
            } else {
                "threaded     "
            },
            r.seconds
        );
        r.seconds
    }

    /// Two single-thread runs at once, one per project; the seconds until both are done.
    fn two_at_once(&self) -> f64 {
        let started = Instant::now();
        std::thread::scope(|s| {
            let other = s.spawn(|| self.run(1, true));
            self.run(0, true);
            other.join().expect("the second run");
        });
        let seconds = started.elapsed().as_secs_f64();
        println!("  two single-thread runs at once: {seconds:.3} s");
        seconds
    }

    /// The stages' single-thread seconds at this cost: medians of three runs.
    fn measure(&self, cost: Cost) -> [f64; 3] {
        self.set(cost);
        let runs: Vec<[f64; 3]> = (0..3).map(|_| self.run(0, true).stage_seconds).collect();
        std::array::from_fn(|k| median(runs.iter().map(|r| r[k]).collect()))
    }

    /// Sets the cost so that each stage takes about a third of the single-thread time.
    /// Writing costs about in proportion to the picture's area, so `side` is set in two steps
    /// from the ratio of reading to writing; then one convolution over the whole picture is
    /// timed, and the convolutions' count and tile chosen so that prediction takes the mean of
    /// reading and writing (a convolution costs about in proportion to its tile's area),
    /// corrected twice from the time measured.
    fn calibrate(&self) -> (Cost, f64, [f64; 3]) {
        let balance = |side: usize, stages: [f64; 3]| {
            ((side as f64) * (stages[0] / stages[2]).sqrt())
                .round()
                .clamp(16.0, SIDE as f64) as usize
        };
        self.run(0, true);
        let none = |side| Cost {
            side,
            tile: 4,
            repeats: 0,
        };
        let mut side = SIDE / 2;
        for _ in 0..2 {
            side = balance(side, self.measure(none(side)));
        }
        let base = self.measure(none(side));
        let one = self.measure(Cost {
            side,
            tile: side,
            repeats: 1,
        });
        let per_conv = (one[1] - base[1]).max(1e-6);
        let need = (base[0] + base[2]) / 2.0 - base[1];
        if need <= 0.0 {
            return (none(side), per_conv, base);
        }
        // Convolution work in pixels (`repeats` × `tile`²), set from the time measured at
        // the last guess, twice.
        let with_work = |work: f64| {
            let repeats = (work / (side * side) as f64).ceil().max(1.0);
            Cost {
                side,
                tile: ((work / repeats).sqrt().round() as usize).clamp(4, side),
                repeats: repeats as usize,
            }
        };
        let mut work = (side * side) as f64 * need / per_conv;
        let mut cost = with_work(work);
        for _ in 0..2 {
            let extra = self.measure(cost)[1] - base[1];
            if extra <= 0.0 {
                break;
            }
            work = (cost.repeats * cost.tile * cost.tile) as f64 * need / extra;
            cost = with_work(work);
        }
        (cost, per_conv, self.measure(cost))
    }
}

/// What the plugin `Mix` does: the picture's side, and how often a convolution runs over a
/// tile of it.
#[derive(Debug, Clone, Copy)]
struct Cost {
    side: usize,
    tile: usize,
    repeats: usize,
}

/// With `BENCH_CHILD=side,tile,repeats`: a few rounds at the given cost, then the medians.
fn child(calibration: &str) {
    // The parent asks for glibc's defaults with `NC7_MALLOC=system`.
    nc7_core::memory::tune_allocator();
    let n: Vec<usize> = calibration
        .split(',')
        .map(|n| n.parse().expect("BENCH_CHILD is side,tile,repeats"))
        .collect();
    let bench = Bench::new();
    bench.set(Cost {
        side: n[0],
        tile: n[1],
        repeats: n[2],
    });
    bench.run(0, true);
    bench.run(0, false);
    let (mut singles, mut threads) = (Vec::new(), Vec::new());
    for round in 0..4 {
        for single in [round % 2 == 0, round % 2 == 1] {
            let seconds = bench.run(0, single).seconds;
            if single { &mut singles } else { &mut threads }.push(seconds);
        }
    }
    println!("child {} {}", median(singles), median(threads));
}

fn main() {
    if let Ok(calibration) = std::env::var("BENCH_CHILD") {
        child(&calibration);
        return;
    }
    let tuning = nc7_core::memory::tune_allocator();
    let bench = Bench::new();
    let (cost, per_conv, stages) = bench.calibrate();
    let total: f64 = stages.iter().sum();
    let Cost {
        side,
        tile,
        repeats,
    } = cost;
    println!(
        "{IMAGES} images of 3×{SIDE}×{SIDE} in batches of {BATCH}; pictures of {side}×{side}, the 3×3 convolution applied {repeats} times over {tile}×{tile} ({per_conv:.4} s over the whole picture); allocator {tuning:?}",
    );
    println!(
        "one thread: reading {:.3} s ({:.0}%), prediction {:.3} s ({:.0}%), callbacks (PNG writing) {:.3} s ({:.0}%)",
        stages[0],
        100.0 * stages[0] / total,
        stages[1],
        100.0 * stages[1] / total,
        stages[2],
        100.0 * stages[2] / total,
    );

    // Warm-up: one of each.
    bench.run(0, true);
    bench.run(0, false);
    bench.two_at_once();
    const ORDERS: [[u8; 3]; 6] = [
        [0, 1, 2],
        [1, 2, 0],
        [2, 0, 1],
        [0, 2, 1],
        [2, 1, 0],
        [1, 0, 2],
    ];
    let (mut singles, mut threads, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut speedups, mut ceilings) = (Vec::new(), Vec::new());
    for (round, order) in ORDERS.iter().cycle().take(ROUNDS).enumerate() {
        let mut seconds = [0.0; 3];
        for &what in order {
            seconds[what as usize] = match what {
                0 => bench.timed(true),
                1 => bench.timed(false),
                _ => bench.two_at_once(),
            };
        }
        let [s, t, p] = seconds;
        println!(
            "round {}: single thread {s:.3} s, threaded {t:.3} s, speedup {:.3}; two at once {p:.3} s, {:.3}× one",
            round + 1,
            s / t,
            2.0 * s / p
        );
        singles.push(s);
        threads.push(t);
        pairs.push(p);
        speedups.push(s / t);
        ceilings.push(2.0 * s / p);
    }
    let (s, t, p) = (median(singles), median(threads), median(pairs));
    println!(
        "medians: single thread {s:.3} s ({:.1} images/s), threaded {t:.3} s ({:.1} images/s), two single-thread runs at once {p:.3} s ({:.1} images/s)",
        IMAGES as f64 / s,
        IMAGES as f64 / t,
        2.0 * IMAGES as f64 / p
    );
    let (speedup, ceiling) = (geomean(&speedups), geomean(&ceilings));
    println!(
        "cores available: {}; two single-thread runs at once give {ceiling:.3}× the throughput of one: the threaded pipeline reaches {:.0}% of that",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        100.0 * speedup / ceiling
    );
    if tuning == nc7_core::memory::Tuning::Tuned {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("BENCH_CHILD", format!("{side},{tile},{repeats}"))
            .env("NC7_MALLOC", "system")
            .output()
            .expect("the bench runs again");
        let text = String::from_utf8_lossy(&out.stdout);
        let child: Vec<f64> = text
            .lines()
            .find_map(|l| l.strip_prefix("child "))
            .map(|l| l.split(' ').filter_map(|v| v.parse().ok()).collect())
            .unwrap_or_default();
        if let [cs, ct] = child[..] {
            println!(
                "with glibc's default allocator settings (a child process, 4 rounds): single thread {cs:.3} s, threaded {ct:.3} s, speedup {:.3}; the tuning saves {:.0}% and {:.0}%",
                cs / ct,
                100.0 * (1.0 - s / cs),
                100.0 * (1.0 - t / ct)
            );
        }
    }
    println!("inferer speedup: {speedup:.3}");
}
