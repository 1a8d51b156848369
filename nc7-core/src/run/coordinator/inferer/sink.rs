//! The last stage of an inference, KPI evaluation or data extraction run.

use super::*;

/// The last stage of a pipeline: each predicted iteration through the KPIs and the callbacks,
/// counted.
pub(super) struct Sink<B: Backend> {
    pub(super) kpi: Option<KpiEvaluator>,
    pub(super) callbacks: Callbacks<B>,
    pub(super) counts: Counts,
    pub(super) started: Instant,
}

impl<B: Backend> Sink<B> {
    /// One iteration; `false` when a callback asked the run to stop.
    pub(super) fn iteration(
        &mut self,
        p: Predicted<B>,
        ctx: &mut CallbackContext,
    ) -> Result<bool, String> {
        let counts = &mut self.counts;
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
                .map_err(|e| e.to_string())?;
        }
        self.callbacks
            .iteration(p.data, p.outputs, ctx)
            .map_err(|e| e.to_string())?;
        counts.stage_seconds[2] += clock.elapsed().as_secs_f64();
        Ok(ctx.control.stop_requested().is_none())
    }

    /// Ends the run after the reading and prediction stages ended: the callbacks' `end` (even
    /// after a failure, so that savers write what they hold), the KPIs and their summaries, and
    /// the counts.
    pub(super) fn finish(
        mut self,
        stages: Stages,
        ctx: &CallbackContext,
        writer: &EventWriter,
    ) -> Result<Counts, InferError> {
        let ended = self.callbacks.end(ctx);
        let mut counts = self.counts;
        counts.skipped = stages.skipped;
        counts.stage_seconds[0] = stages.read_seconds;
        counts.stage_seconds[1] = stages.predict_seconds;
        counts.stopped = ctx.control.stop_requested();
        stages.result.map_err(InferError::Run)?;
        ended?;
        if let Some(kpi) = self.kpi {
            let values = kpi.finish()?;
            for (tag, image) in values.images() {
                write_image(writer, &tag, image, counts.iterations).map_err(InferError::Run)?;
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
        writer.flush().map_err(|e| InferError::Run(e.to_string()))?;
        counts.seconds = self.started.elapsed().as_secs_f64();
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
