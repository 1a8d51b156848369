//! The threads a run computes on: one setting, `threads`, for the whole run.
//!
//! A run's numeric work — burn's CPU kernels, the matrix products, nc7's own kernels — runs
//! on a pool of `threads` compute threads of its own (the cores available when the setting is
//! absent), never on a process-wide pool. The run's other threads — the training data's
//! read-ahead, the inferer's reading and callbacks — each compute on one thread: whatever
//! parallel work they start runs on that thread, so a run keeps `threads` cores busy with
//! compute and one more per pipeline stage at most, and two runs in one process do not share
//! (or fight over) one pool.
//!
//! A pool's thread never waits for a thread that needs the same pool: the trainer's loop runs
//! on its pool and waits only for the read-ahead thread (which computes on its own thread);
//! the inferer's prediction runs on its pool and the reading and callbacks on theirs.
//!
//! Results do not depend on `threads`: nc7's kernels and the matrix products split their work
//! by rows and planes, never across a sum.

use std::sync::Arc;

/// The stack of each compute thread: the main thread's on Linux, since the trainer's loop,
/// which ran there, now runs on one.
const STACK: usize = 8 << 20;

/// The number of CPU threads this process may run at once: the default of `threads`.
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The compute threads could not be started.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot start {threads} compute thread{}: {source}; give `threads` a smaller number",
    if *threads == 1 { "" } else { "s" }
)]
pub struct ThreadsError {
    /// How many were asked for.
    pub threads: usize,
    /// Why they could not be started.
    pub source: rayon::ThreadPoolBuildError,
}

/// A run's compute threads: work given to [`Threads::run`] and every parallel operation it
/// starts run on them.
#[derive(Debug, Clone)]
pub struct Threads {
    pool: Arc<rayon::ThreadPool>,
}

impl Threads {
    /// Starts `threads` compute threads (at least one), named `nc7-<name>-<i>`.
    pub fn new(threads: usize, name: &'static str) -> Result<Threads, ThreadsError> {
        let threads = threads.max(1);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("nc7-{name}-{i}"))
            .stack_size(STACK)
            .build()
            .map(|pool| Threads {
                pool: Arc::new(pool),
            })
            .map_err(|source| ThreadsError { threads, source })
    }

    /// How many threads there are.
    pub fn count(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `work` on these threads: it and the parallel operations it starts use them and
    /// no other; the calling thread waits for it. `work` must not wait for another thread
    /// that runs work on these same threads.
    pub fn run<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        self.pool.install(work)
    }
}

/// Runs `work` on a thread of its own whose parallel operations run on that one thread (a
/// pipeline stage: the read-ahead, the inferer's reading and callbacks); on the calling
/// thread, with the same effect, when no thread can be started.
pub fn serial<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    match Threads::new(1, "stage") {
        Ok(one) => one.run(work),
        Err(e) => {
            log::warn!("{e}; the stage's parallel work may use other threads");
            work()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_and_its_parallel_operations_run_on_the_run_threads() {
        let three = Threads::new(3, "test").unwrap();
        assert_eq!(three.count(), 3);
        let (inside, names) = three.run(|| {
            use rayon::prelude::*;
            let names: std::collections::BTreeSet<String> = (0..64)
                .into_par_iter()
                .map(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    std::thread::current().name().unwrap_or("").to_owned()
                })
                .collect();
            (rayon::current_num_threads(), names)
        });
        assert_eq!(inside, 3);
        assert!(
            !names.is_empty() && names.iter().all(|n| n.starts_with("nc7-test-")),
            "{names:?}"
        );
        // A stage computes on its one thread.
        let (count, name) = serial(|| {
            (
                rayon::current_num_threads(),
                std::thread::current().name().map(str::to_owned),
            )
        });
        assert_eq!((count, name.as_deref()), (1, Some("nc7-stage-0")));
        // Zero is taken as one (plans refuse it before a run starts).
        assert_eq!(Threads::new(0, "test").unwrap().count(), 1);
    }
}
