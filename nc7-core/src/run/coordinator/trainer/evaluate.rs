//! The trainer's evaluations: every evaluation batch through the evaluation model, its values
//! weighted by the batch's samples, so the result is the data set's whatever the batch size.

use super::*;

impl<B: AutodiffBackend> Trainer<'_, B> {
    /// One evaluation over the evaluation data: each value weighted by the samples of its
    /// batch, so the result is the data set's, whatever the batch size.
    pub(super) fn evaluate(&mut self) -> Result<BTreeMap<String, f64>, TrainError> {
        let global_step = self.state.global_step;
        let mut valid = self
            .model
            .valid(&self.inner)
            .map_err(failed("building the model to evaluate"))?;
        let parts = self.model.parts().to_vec();
        let eval = &mut self.eval;
        let iterations = eval.iterations;
        let mut steps = EvalSteps::new(iterations, self.train.iterations);
        // Evaluation reads its samples as of epoch 0: the same every time.
        let batches: Vec<EpochBatch> = eval
            .order
            .batches_from(DataPosition { epoch: 1, batch: 0 })
            .take(iterations as usize)
            .map(|b| (0, b))
            .collect();
        let sizes: Vec<usize> = batches.iter().map(|b| b.1.len()).collect();
        // With several devices each evaluates its shard of every batch; the trainer takes
        // the shards in device order, as one device would take the batch's samples.
        let batches = match &mut self.replicas {
            Some(r) => r.evaluate(&batches),
            None => batches,
        };
        let mut sums = WeightedMeans::default();
        let mut kpi = match &self.plan.kpi {
            Some(plan) => Some(
                KpiEvaluator::new(
                    plan,
                    &KpiTargets {
                        results: self.dirs.kpi.join(format!("step-{global_step}")),
                        cache: Some(self.dirs.kpi.join("cache")),
                    },
                )
                .map_err(failed("building the KPI nucleotides"))?,
            ),
            None => None,
        };
        let started = Instant::now();
        let mut index = 0;
        let profiler = self.profiler.clone();
        let replicas = &mut self.replicas;
        for_each_batch::<B::InnerBackend, TrainError>(
            eval.data.as_ref(),
            batches,
            self.plan.trainer.random_seed,
            self.plan.trainer.prefetch,
            &self.inner,
            profiler.as_deref(),
            |batch| {
                let _span = profiler.as_deref().map(|p| p.span("eval step", "eval"));
                let pos = steps.next(global_step);
                let own = match replicas.as_ref() {
                    Some(r) => r.own_share(sizes[index]),
                    None => sizes[index],
                };
                let outputs = valid
                    .run(batch.clone(), Mode::Eval)
                    .map_err(|e| TrainError::Step(e.to_string().into()))?
                    .into_map();
                let values = values_of(&mut valid, &parts, &outputs);
                if pos.iteration == 1 {
                    // Images and histograms of the first batch (its first device's shard).
                    write_images_and_histograms(&eval.writer, &parts, &outputs, global_step)?;
                }
                let mut pieces = vec![(batch, outputs, values, own)];
                if let Some(r) = replicas.as_mut() {
                    pieces.extend(r.evaluated(sizes[index])?);
                }
                index += 1;
                eval.ctx.summary_step = pos.summary_step;
                eval.ctx.iteration = IterationInfo {
                    epoch: pos.epoch as usize,
                    iteration: pos.iteration as usize,
                    execution_time: started.elapsed().as_secs_f64(),
                    is_last: pos.iteration == iterations,
                };
                let count = pieces.len();
                for (i, (data, outputs, values, samples)) in pieces.into_iter().enumerate() {
                    sums.add(values, samples);
                    if let Some(kpi) = &mut kpi {
                        let last = pos.iteration == iterations && i + 1 == count;
                        kpi.iteration(&data, &outputs, samples, last)
                            .map_err(|e| TrainError::Step(e.into()))?;
                    }
                    eval.callbacks.iteration(data, outputs, &eval.ctx)?;
                }
                Ok(true)
            },
        )?;
        let mut means = sums.means();
        let plots = self.dirs.root.join("plots");
        if let Some(kpi) = kpi {
            let values = kpi.finish().map_err(|e| TrainError::Step(e.into()))?;
            for (tag, image) in values.images() {
                // The newest of each KPI picture (a confusion matrix) beside the curves.
                let file = plots.join(format!("{}.png", tag.replace('/', "_")));
                if let Ok(data) = image.clone().into_data() {
                    let _ = std::fs::create_dir_all(&plots);
                    if let Err(e) = crate::data::files::write_png(&file, &data) {
                        log::warn!("{}: {e}", file.display());
                    }
                }
                write_image(&eval.writer, &tag, image, global_step)?;
            }
            means.extend(values.scalars());
        }
        self.plots.add(
            "eval",
            global_step,
            means
                .iter()
                .filter(|(k, _)| !crate::kpi::is_element(k))
                .map(|(k, v)| (k.as_str(), *v)),
        );
        let written =
            crate::tracking::plots::write_charts(&plots, &self.plots.charts()).and_then(|()| {
                let text = serde_json::to_string(&self.plots).map_err(std::io::Error::other)?;
                std::fs::write(plots.join(super::PLOT_VALUES), text)
            });
        if let Err(e) = written {
            log::warn!("the plots in {} could not be written: {e}", plots.display());
        }
        for (k, v) in &means {
            eval.writer.scalar(k, *v, global_step);
        }
        if let Some(run) = &self.mlflow {
            run.log_metrics(
                means.iter().map(|(k, v)| (format!("eval/{k}"), *v)),
                global_step,
            );
        }
        log::info!(
            "evaluation after step {global_step}: {}",
            means
                .iter()
                .filter(|(k, _)| !crate::kpi::is_element(k))
                .map(|(k, v)| format!("{k} {v:.6}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(means)
    }
}

/// The values of one evaluation batch's outputs: the total loss, the loss keys and the
/// metrics' and summaries' scalars.
pub(super) fn values_of<B: Backend>(
    valid: &mut Model<B>,
    parts: &[Part],
    outputs: &BTreeMap<String, Option<crate::Nest<B>>>,
) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::new();
    if let Ok((total, losses)) = valid.losses(outputs) {
        values.insert("loss".to_owned(), total.into_scalar().elem::<f64>());
        values.extend(losses);
    }
    values.extend(metric_scalars(parts, outputs));
    values
}

/// Means of values over batches, each batch weighted by its samples.
#[derive(Debug, Default)]
struct WeightedMeans(BTreeMap<String, (f64, usize)>);

impl WeightedMeans {
    fn add(&mut self, values: BTreeMap<String, f64>, samples: usize) {
        for (k, v) in values {
            let e = self.0.entry(k).or_insert((0.0, 0));
            e.0 += v * samples as f64;
            e.1 += samples;
        }
    }

    fn means(self) -> BTreeMap<String, f64> {
        self.0
            .into_iter()
            .map(|(k, (s, n))| (k, s / n.max(1) as f64))
            .collect()
    }
}
