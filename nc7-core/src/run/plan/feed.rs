//! Plans of the runs without a model: KPI evaluation (`evaluate-kpi`) and data extraction
//! (`extract-data`) feed a data feeder's samples through KPI nucleotides or callbacks.

use super::*;
use crate::coordinator::FeedConfig;

/// What a run without a model asks for besides the project's configs; each field is over the
/// run's settings field of the same name.
#[derive(Debug, Clone, Default)]
pub struct FeedRequest {
    /// `--batch-size`.
    pub batch_size: Option<usize>,
    /// `--single-thread`.
    pub single_thread: bool,
    /// `--prefetch`.
    pub prefetch: Option<usize>,
    /// `--skip-bad-samples`.
    pub skip_bad_samples: bool,
    /// `--device`.
    pub device: Option<DeviceChoice>,
    /// `--threads`.
    pub threads: Option<usize>,
    /// Config overrides.
    pub overrides: Overrides,
}

/// A data feeder and the callbacks its samples go to, resolved and checked.
#[derive(Debug, Clone)]
pub struct FeedPlan {
    /// The run type: `kpi` or `data`.
    pub run: RunType,
    /// The checked project.
    pub check: ProjectCheck,
    /// The settings.
    pub settings: InferSettings,
    /// Where the data feeder's tensors are made.
    pub device: DeviceChoice,
    /// The run's compute threads.
    pub threads: usize,
    /// The data feeder.
    pub feeder: Part,
    /// The callbacks (inputs: the data).
    pub callbacks: CallbacksPlan,
    /// The fully resolved config the run records.
    pub snapshot: Value,
}

impl FeedPlan {
    /// The project directory.
    pub fn project(&self) -> &Path {
        &self.check.project
    }
}

/// A KPI evaluation run, resolved and checked: what `evaluate-kpi` runs.
#[derive(Debug, Clone)]
pub struct KpiPlan {
    /// The data feeder and the callbacks.
    pub feed: FeedPlan,
    /// The KPI plugins and accumulators.
    pub kpi: KpiEvaluatorPlan,
}

/// A data extraction run, resolved and checked: what `extract-data` runs.
#[derive(Debug, Clone)]
pub struct ExtractPlan {
    /// The data feeder and the callbacks.
    pub feed: FeedPlan,
}

impl KpiPlan {
    /// Resolves and checks `project`'s `kpi_evaluation/` configs.
    pub fn load(
        project: &Path,
        request: &FeedRequest,
        registry: &Registry,
    ) -> Result<KpiPlan, PlanError> {
        let (feed, kpi) = load_feed(project, RunType::Kpi, request, registry)?;
        match kpi {
            Some(kpi) => Ok(KpiPlan { feed, kpi }),
            None => Err(PlanError(errors_or_missing(Diagnostics::default()))),
        }
    }
}

impl ExtractPlan {
    /// Resolves and checks `project`'s `data_extraction/` configs.
    pub fn load(
        project: &Path,
        request: &FeedRequest,
        registry: &Registry,
    ) -> Result<ExtractPlan, PlanError> {
        let (feed, _) = load_feed(project, RunType::Data, request, registry)?;
        Ok(ExtractPlan { feed })
    }
}

fn load_feed(
    project: &Path,
    run: RunType,
    request: &FeedRequest,
    registry: &Registry,
) -> Result<(FeedPlan, Option<KpiEvaluatorPlan>), PlanError> {
    let key: &'static str = match run {
        RunType::Kpi => "kpi_evaluator_config",
        _ => "data_extraction_config",
    };
    let check = ProjectCheck::load(project, run, &request.overrides, registry);
    let mut diags = check.diagnostics.clone();
    let config = settings(&check, key, &mut diags, |v| FeedConfig::from_value(key, v));
    let compute = config.as_ref().and_then(|c| {
        resolve_compute(
            &check,
            (request.device, request.threads),
            (c.device.as_deref(), c.threads),
            key,
            &mut diags,
        )
    });
    if request.batch_size == Some(0) {
        diags.push(Diagnostic::error(
            Code::FIELD_TYPE,
            "",
            "--batch-size must be at least 1".into(),
            "give a batch size of 1 or more".into(),
        ));
    }
    let parts = Parts::new(&check, &mut diags);
    let feeder = parts.data("datafeeder_config", None);
    let callbacks = parts.callbacks(&check, "callbacks");
    let kpi = parts.kpi(&check, "kpi");
    diags.sort();
    let (Some(config), Some((device, threads)), Some(feeder), false) =
        (config, compute, feeder, diags.has_errors())
    else {
        return Err(PlanError(errors_or_missing(diags)));
    };
    let snapshot = check.config.tree.to_value();
    Ok((
        FeedPlan {
            run,
            settings: InferSettings {
                batch_size: request.batch_size.unwrap_or(config.batch_size),
                prefetch: request.prefetch.unwrap_or(config.prefetch_buffer_size),
                single_thread: request.single_thread || config.single_thread,
                skip_bad_samples: request.skip_bad_samples || config.skip_bad_samples,
                shard: None,
            },
            check: ProjectCheck {
                diagnostics: diags,
                ..check
            },
            device,
            threads,
            feeder,
            callbacks,
            snapshot,
        },
        kpi,
    ))
}
