//! The last stage of an inference, KPI evaluation or data extraction run.

use super::*;
use crate::nucleotide::RunOutcome;

/// The last stage of a pipeline: each predicted iteration through the KPIs and the callbacks,
/// counted.
pub(super) struct Sink<B: Backend> {
    pub(super) kpi: Option<KpiEvaluator>,
    pub(super) callbacks: Callbacks<B>,
    pub(super) counts: Counts,
    pub(super) started: Instant,
    pub(super) progress: Progress,
    /// Set by a signal: stop after this iteration.
    pub(super) stop: Option<Arc<AtomicBool>>,
}

/// The progress of a run whose length is not known in advance: a counter on a terminal, a
/// plain line every ten seconds in a log.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    terminal: bool,
    last_line: Instant,
    started: Instant,
}

impl Progress {
    /// A display for a run called `what` (`inferred`), or none.
    pub(super) fn new(what: Option<&'static str>) -> Progress {
        use std::io::IsTerminal as _;
        let terminal = std::io::stderr().is_terminal();
        let bar = what.map(|w| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} {pos} samples ({per_sec}) {elapsed}",
            ) {
                bar.set_style(style);
            }
            bar.set_prefix(w);
            bar
        });
        Progress {
            bar,
            what: what.unwrap_or_default(),
            terminal,
            last_line: Instant::now(),
            started: Instant::now(),
        }
    }

    fn add(&mut self, samples: u64, total: u64) {
        let Some(bar) = &self.bar else {
            return;
        };
        bar.inc(samples);
        if !self.terminal && self.last_line.elapsed().as_secs() >= 10 {
            self.last_line = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64();
            log::info!(
                "{} {total} samples ({:.1} samples/s)",
                self.what,
                total as f64 / seconds.max(1e-9)
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl<B: Backend> Sink<B> {
    /// One iteration; `false` when a callback asked the run to stop.
    pub(super) fn iteration(
        &mut self,
        p: Predicted<B>,
        ctx: &mut CallbackContext,
    ) -> Result<bool, Fault> {
        let counts = &mut self.counts;
        let p_samples = p.samples as u64;
        counts.iterations += 1;
        counts.samples += p.samples as u64;
        ctx.summary_step = counts.iterations;
        ctx.iteration = IterationInfo {
            epoch: 1,
            iteration: counts.iterations as usize,
            execution_time: self.started.elapsed().as_secs_f64(),
            is_last: p.is_last,
        };
        let clock = Instant::now();
        if let Some(kpi) = &mut self.kpi {
            kpi.iteration(&p.data, &p.outputs, p.samples, p.is_last)
                .map_err(|e| Fault::of(&e))?;
        }
        self.callbacks
            .iteration(p.data, p.outputs, ctx)
            .map_err(|e| Fault::of(&e))?;
        counts.stage_seconds[2] += clock.elapsed().as_secs_f64();
        self.progress.add(p_samples, counts.samples);
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
        {
            ctx.control
                .request_stop(crate::signals::stop_reason(&format!(
                    "after iteration {}",
                    counts.iterations
                )));
        }
        Ok(ctx.control.stop_requested().is_none())
    }

    /// Ends the run after the reading and prediction stages ended: the callbacks' `end` (even
    /// after a failure, so that savers write what they hold), the KPIs and their summaries, and
    /// the counts; then, however it ended, the callbacks' `on_run_end`.
    pub(super) fn finish(
        mut self,
        stages: Stages,
        ctx: &CallbackContext,
        writer: &EventWriter,
    ) -> Result<Counts, InferError> {
        self.progress.finish();
        let ended = self.callbacks.end(ctx);
        let mut callbacks = self.callbacks;
        let started = self.started;
        let (kpi, counts) = (self.kpi, self.counts);
        let iterations = counts.iterations;
        let result = Self::sum_up(kpi, counts, started, stages, ended, ctx, writer);
        let outcome = RunOutcome {
            status: run_end(&result),
            reason: match &result {
                Err(e) => Some(e.to_string()),
                Ok(c) => c.stopped.clone(),
            },
            step: result.as_ref().map_or(iterations, |c| c.iterations),
            metrics: result
                .as_ref()
                .map(|c| c.kpi.clone().into_iter().collect())
                .unwrap_or_default(),
            elapsed: started.elapsed(),
        };
        callbacks.run_end(&outcome, ctx);
        result
    }

    fn sum_up(
        kpi: Option<KpiEvaluator>,
        mut counts: Counts,
        started: Instant,
        stages: Stages,
        ended: Result<(), CallbackError>,
        ctx: &CallbackContext,
        writer: &EventWriter,
    ) -> Result<Counts, InferError> {
        counts.skipped = stages.skipped;
        counts.stage_seconds[0] = stages.read_seconds;
        counts.stage_seconds[1] = stages.predict_seconds;
        counts.stopped = ctx.control.stop_requested();
        stages.result.map_err(InferError::Run)?;
        ended?;
        if let Some(kpi) = kpi {
            let values = kpi.finish()?;
            for (tag, image) in values.images() {
                write_image(writer, &tag, image, counts.iterations)
                    .map_err(|e| InferError::Run(Fault::new(Code::IO, e)))?;
            }
            counts.kpi = values.scalars();
            for (tag, value) in &counts.kpi {
                writer.scalar(tag, *value, counts.iterations);
            }
            log::info!(
                "KPIs over {} samples: {}",
                values.samples,
                counts
                    .kpi
                    .iter()
                    .filter(|(k, _)| !crate::kpi::is_element(k))
                    .map(|(k, v)| format!("{k} {v:.6}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        writer
            .flush()
            .map_err(|e| InferError::Run(Fault::new(Code::IO, e.to_string())))?;
        counts.seconds = started.elapsed().as_secs_f64();
        if let Some(reason) = &counts.stopped {
            log::info!("stopped: {reason}");
        }
        let [read, predict, call] = counts.stage_seconds;
        log::info!(
            "ran {} samples in {} iterations in {:.2} s (reading {read:.2} s, prediction {predict:.2} s, callbacks and KPIs {call:.2} s){}",
            counts.samples,
            counts.iterations,
            counts.seconds,
            if counts.skipped.is_empty() {
                String::new()
            } else {
                format!("; {} bad samples skipped", counts.skipped.len())
            }
        );
        Ok(counts)
    }
}
