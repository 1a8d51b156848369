//! Profiles of runs as Chrome traces (the Trace Event Format's JSON array, which Perfetto and
//! chrome://tracing load): one complete event (`"ph": "X"`) per span, on the thread it ran on,
//! counters (`"ph": "C"`) for values such as the loss, and thread names. Events are written as
//! they end and flushed every second, and the closing `]` comes last: the format allows it
//! missing, so the trace of a killed run still loads.
//!
//! A profiler is passed as an `Option`: when profiling is off nothing is measured.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::json;

/// Writes one run's trace.
#[derive(Debug)]
pub struct Profiler {
    path: PathBuf,
    start: Instant,
    trace: Mutex<Trace>,
}

#[derive(Debug)]
struct Trace {
    out: Option<BufWriter<File>>,
    /// Small numbers for the threads seen, with their names.
    threads: Vec<std::thread::ThreadId>,
    /// Seconds and calls per span name.
    totals: BTreeMap<String, (f64, u64)>,
    flushed: Instant,
}

/// A span being measured; it is recorded when dropped.
#[must_use = "a span measures until it is dropped"]
pub struct Span<'a> {
    profiler: &'a Profiler,
    name: String,
    category: &'static str,
    start: Instant,
}

impl Drop for Span<'_> {
    fn drop(&mut self) {
        let end = Instant::now();
        self.profiler
            .complete(&self.name, self.category, self.start, end);
    }
}

impl Profiler {
    /// A trace written to `path` (its folder created).
    pub fn create(path: &Path) -> std::io::Result<Profiler> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = BufWriter::new(File::create(path)?);
        let process = json!({"name": "process_name", "ph": "M", "pid": 1, "tid": 0,
                             "args": {"name": "nc7"}});
        write!(out, "[\n{process}")?;
        out.flush()?;
        Ok(Profiler {
            path: path.to_owned(),
            start: Instant::now(),
            trace: Mutex::new(Trace {
                out: Some(out),
                threads: Vec::new(),
                totals: BTreeMap::new(),
                flushed: Instant::now(),
            }),
        })
    }

    /// The trace file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Measures from now until the span is dropped.
    pub fn span(&self, name: impl Into<String>, category: &'static str) -> Span<'_> {
        Span {
            profiler: self,
            name: name.into(),
            category,
            start: Instant::now(),
        }
    }

    fn micros(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64() * 1e6
    }

    fn complete(&self, name: &str, category: &'static str, start: Instant, end: Instant) {
        let seconds = end.saturating_duration_since(start).as_secs_f64();
        let (ts, dur) = (self.micros(start), seconds * 1e6);
        let mut trace = self.trace.lock().unwrap_or_else(|p| p.into_inner());
        let tid = trace.thread();
        let total = trace.totals.entry(name.to_owned()).or_default();
        total.0 += seconds;
        total.1 += 1;
        trace.event(
            json!({"name": name, "cat": category, "ph": "X", "ts": ts, "dur": dur,
                           "pid": 1, "tid": tid}),
        );
    }

    /// Records counter values (a series each) at this moment.
    pub fn counter(&self, name: &str, values: &[(&str, f64)]) {
        let ts = self.micros(Instant::now());
        let args: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let mut trace = self.trace.lock().unwrap_or_else(|p| p.into_inner());
        let tid = trace.thread();
        trace.event(json!({"name": name, "ph": "C", "ts": ts, "pid": 1, "tid": tid, "args": args}));
    }

    /// Closes the trace (`]`) and returns the time table: seconds, calls and share of the
    /// run per span name, the longest first.
    pub fn finish(&self) -> String {
        let total = self.start.elapsed().as_secs_f64();
        let mut trace = self.trace.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut out) = trace.out.take() {
            let closed = write!(out, "\n]\n").and_then(|()| out.flush());
            if let Err(e) = closed {
                log::warn!(
                    "the profile {} could not be finished: {e}",
                    self.path.display()
                );
            }
        }
        let mut rows: Vec<(&String, &(f64, u64))> = trace.totals.iter().collect();
        rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(b.0)));
        let mut table = format!(
            "{:<40} {:>10} {:>8} {:>7}\n",
            "span", "seconds", "calls", "share"
        );
        for (name, (seconds, calls)) in rows {
            table.push_str(&format!(
                "{name:<40} {seconds:>10.3} {calls:>8} {:>6.1}%\n",
                100.0 * seconds / total.max(1e-9)
            ));
        }
        table
    }
}

impl Trace {
    /// This thread's number, naming it in the trace the first time.
    fn thread(&mut self) -> usize {
        let id = std::thread::current().id();
        if let Some(i) = self.threads.iter().position(|t| *t == id) {
            return i + 1;
        }
        self.threads.push(id);
        let tid = self.threads.len();
        let name = std::thread::current()
            .name()
            .map_or_else(|| format!("thread {tid}"), str::to_owned);
        self.event(
            json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": tid,
                          "args": {"name": name}}),
        );
        tid
    }

    fn event(&mut self, event: serde_json::Value) {
        let Some(out) = &mut self.out else {
            return;
        };
        let written = write!(out, ",\n{event}").and_then(|()| {
            if self.flushed.elapsed().as_secs_f64() >= 1.0 {
                self.flushed = Instant::now();
                out.flush()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // A full disk: the run goes on without its trace.
            log::warn!("profiling stopped: {e}");
            self.out = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_counters_and_threads_make_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile/trace.json");
        let p = Profiler::create(&path).unwrap();
        {
            let _outer = p.span("step", "train");
            let _inner = p.span("forward/net", "model");
        }
        std::thread::scope(|s| {
            s.spawn(|| drop(p.span("read", "data")));
        });
        p.counter("loss", &[("loss", 0.5), ("nan", f64::NAN)]);
        let table = p.finish();
        assert!(table.contains("forward/net"), "{table}");
        let events: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
        assert!(names.contains(&"step") && names.contains(&"read") && names.contains(&"loss"));
        let threads = events.iter().filter(|e| e["name"] == "thread_name").count();
        assert_eq!(threads, 2);
        for e in events.iter().filter(|e| e["ph"] == "X") {
            assert!(e["dur"].as_f64().unwrap() >= 0.0);
        }
        // The inner span lies within the outer one.
        let find = |n: &str| events.iter().find(|e| e["name"] == n).unwrap().clone();
        let (o, i) = (find("step"), find("forward/net"));
        assert!(i["ts"].as_f64() >= o["ts"].as_f64());
        // A run killed before `finish` leaves a trace without `]`, which still parses once closed.
        let killed = dir.path().join("killed.json");
        let k = Profiler::create(&killed).unwrap();
        drop(k.span("step", "train"));
        let mut text = String::new();
        if let Ok(mut t) = k.trace.lock() {
            t.out.as_mut().unwrap().flush().unwrap();
        }
        text.push_str(&std::fs::read_to_string(&killed).unwrap());
        text.push(']');
        let events: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn a_disk_that_fills_stops_the_trace_not_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let p = Profiler::create(&dir.path().join("trace.json")).unwrap();
        // From now on every write finds the disk full.
        p.trace.lock().unwrap().out = Some(BufWriter::new(File::create("/dev/full").unwrap()));
        for _ in 0..10_000 {
            drop(p.span("step", "train"));
        }
        p.counter("loss", &[("loss", 0.5)]);
        assert!(p.trace.lock().unwrap().out.is_none(), "the trace stopped");
        // The time table still counts every span.
        assert!(p.finish().contains("10000"));
        // Full from the start: no profiler, which the trainer turns into a warning.
        assert!(Profiler::create(Path::new("/dev/full")).is_err());
    }
}
