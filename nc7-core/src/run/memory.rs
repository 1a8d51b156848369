//! The process's memory allocator, tuned for tensors.
//!
//! Tensor work frees and allocates the same large buffers again and again: a batch, a
//! convolution's padded copy, an activation. glibc's allocator serves buffers above its
//! `mmap` threshold (128 KiB at start, raised as such buffers are freed) with fresh pages from
//! the system and gives the top of its heap back when more than its trim threshold is free.
//! Either way the next buffer of that size is paged in, and zeroed, again: on CPU this can
//! take a quarter of an inference run's time (`cargo xtask bench inferer` prints both).
//!
//! [`tune_allocator`] raises both thresholds, so freed buffers are kept and used again; peak
//! memory is unchanged, but memory freed after the peak is kept by the process until it
//! ends. `nc7` command lines call it first. It does nothing where glibc is not the allocator,
//! and nothing when the environment already sets glibc's malloc parameters
//! (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_` or
//! `GLIBC_TUNABLES`), so a user's own settings win; `NC7_MALLOC=system` turns it off.

/// Buffers below this size come from the heap instead of fresh pages. A thread's heap holds
/// at most 64 MiB on 64-bit systems, so larger buffers get fresh pages whatever the threshold.
pub const MMAP_THRESHOLD: usize = 64 << 20;
/// Free memory at the top of the heap kept for later buffers.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// What [`tune_allocator`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Both thresholds were raised.
    Tuned,
    /// The environment sets the allocator's parameters, or `NC7_MALLOC=system`.
    LeftToEnvironment,
    /// Not glibc's allocator, or glibc refused a value.
    Unsupported,
}

/// Environment variables through which glibc's malloc is already configured.
const GLIBC_VARIABLES: [&str; 4] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "GLIBC_TUNABLES",
];

/// Raises glibc's `mmap` and trim thresholds for this process (see the module's text).
/// Calling it again does no harm.
pub fn tune_allocator() -> Tuning {
    let env = |k: &str| std::env::var_os(k);
    if GLIBC_VARIABLES.iter().any(|k| env(k).is_some())
        || env("NC7_MALLOC").is_some_and(|v| v == "system")
    {
        return Tuning::LeftToEnvironment;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> Tuning {
    // SAFETY: `mallopt` only changes the allocator's parameters; both values are in the
    // ranges glibc documents, and it reports a refused value by returning 0.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    };
    if ok {
        Tuning::Tuned
    } else {
        Tuning::Unsupported
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> Tuning {
    Tuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_thresholds() {
        assert_eq!(set_thresholds(), Tuning::Tuned);
    }
}
