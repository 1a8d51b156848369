//! SIGINT (Ctrl-C) and SIGTERM (what schedulers and `docker stop` send) during a command: the
//! first asks the run to stop at the end of its step — a training writes its checkpoint and
//! ends "stopped", an inference ends after its iteration — and the command exits with
//! 128 + the signal's number (130, 143); a second signal ends the process at once, which
//! corrupts nothing, since every file nc7 writes goes through a temporary file renamed into
//! place.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

/// The signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The flag runs read to stop.
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.swap(signal, Ordering::SeqCst) != 0 {
        // The second one: at once. `_exit` is async-signal-safe.
        // SAFETY: ends the process; no Rust state is touched.
        unsafe { libc::_exit(128 + signal) };
    }
    if let Some(flag) = STOP.get() {
        flag.store(true, Ordering::SeqCst);
    }
}

/// Catches SIGINT and SIGTERM for the command starting now, and returns the flag that asks its
/// run to stop (cleared: a command in the same process after an interrupted one starts afresh).
pub fn catch() -> Arc<AtomicBool> {
    let flag = STOP.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        #[cfg(unix)]
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: installs a handler that only touches atomics and calls `_exit`.
            unsafe {
                libc::signal(signal, on_signal as *const () as libc::sighandler_t);
            }
        }
        flag
    });
    flag.store(false, Ordering::SeqCst);
    RECEIVED.store(0, Ordering::SeqCst);
    flag.clone()
}

/// Forgets a signal an earlier command of this process received.
pub(crate) fn clear() {
    RECEIVED.store(0, Ordering::SeqCst);
    if let Some(flag) = STOP.get() {
        flag.store(false, Ordering::SeqCst);
    }
}

/// The exit code for a command that was interrupted by a signal (128 + its number), if it was.
pub fn exit_code() -> Option<u8> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => u8::try_from(128 + s).ok(),
    }
}

/// Why a run stopped on a signal, `at` saying where: `interrupted (SIGTERM) at step 12`;
/// [`is_interruption`] knows such a reason again.
pub fn stop_reason(at: &str) -> String {
    format!(
        "interrupted ({}) {at}",
        received().unwrap_or("asked to stop")
    )
}

/// Whether a run's stop reason is a signal's ([`stop_reason`]).
pub fn is_interruption(reason: &str) -> bool {
    reason.starts_with("interrupted (")
}

/// The signal's name, for messages.
pub fn received() -> Option<&'static str> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        #[cfg(unix)]
        libc::SIGTERM => Some("SIGTERM"),
        _ => Some("SIGINT"),
    }
}
