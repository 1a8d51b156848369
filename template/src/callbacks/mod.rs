//! Callbacks. nc7's built-in `ExperimentCsv` (configured in
//! `project/training/configs/callbacks_eval/experiments.json`) keeps one row per training run
//! in `project/logs/experiments.csv`. The project's own callbacks go here, such as
//! `ConfusionMatrix`.

use std::collections::BTreeMap;

use burn::prelude::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use nc7_core::nucleotide::{CallbackContext, CoordinatorCallback};
use nc7_core::{BoxError, Build, Incoming, NoConfig, NoKeys, nucleotide};

/// Predicted and true classes.
#[derive(Incoming)]
pub struct Classes<B: Backend> {
    /// `[N]`.
    pub class: Tensor<B, 1, Int>,
    /// `[N, 1]`.
    pub label: Tensor<B, 2, Int>,
}

/// Counts (true class, predicted class) pairs over each evaluation and writes them, one row per
/// pair, to `confusion.csv` in its folder at the evaluation's last iteration.
#[nucleotide(kind = CoordinatorCallback)]
pub struct ConfusionMatrix {
    counts: BTreeMap<(i64, i64), usize>,
}

impl<B: Backend> Build<B> for ConfusionMatrix {
    type Config = NoConfig;
    type Input = Classes<B>;
    type Output = NoKeys;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(ConfusionMatrix {
            counts: BTreeMap::new(),
        })
    }
}

impl<B: Backend> CoordinatorCallback<B> for ConfusionMatrix {
    fn on_iteration_end(
        &mut self,
        input: Classes<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        if ctx.iteration.iteration == 1 {
            self.counts.clear();
        }
        let classes = |data: TensorData| -> Result<Vec<i64>, String> {
            data.convert::<i64>().to_vec().map_err(|e| format!("{e:?}"))
        };
        let predicted = classes(input.class.into_data())?;
        let truth = classes(input.label.into_data())?;
        for (t, p) in truth.into_iter().zip(predicted) {
            *self.counts.entry((t, p)).or_default() += 1;
        }
        if ctx.iteration.is_last {
            let mut text = String::from("truth,predicted,count\n");
            for ((t, p), n) in &self.counts {
                text.push_str(&format!("{t},{p},{n}\n"));
            }
            std::fs::create_dir_all(&ctx.log_dir)?;
            std::fs::write(ctx.log_dir.join("confusion.csv"), text)?;
        }
        Ok(Some(NoKeys))
    }
}
