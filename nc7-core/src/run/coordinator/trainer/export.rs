//! `export <project> [--checkpoint …]`: a saved model written from a checkpoint of a planned
//! project.

use super::*;

/// Writes a saved model from a checkpoint of a planned project: `export <project_dir>
/// [--checkpoint …]`.
pub fn export_checkpoint(
    plan: &TrainPlan,
    checkpoint: Option<&Path>,
) -> Result<PathBuf, TrainError> {
    let _lock = crate::project::ProjectLock::acquire(plan.project(), "export")?;
    let dirs = plan.dirs();
    let cp = find_checkpoint(&dirs, checkpoint)?;
    crate::threads::Threads::new(plan.threads, "compute")?.run(|| {
        plan.device.dispatch(Exporting {
            plan,
            checkpoint: &cp,
            dirs: &dirs,
        })
    })
}

/// An export, to be dispatched on the plan's device.
struct Exporting<'a> {
    plan: &'a TrainPlan,
    checkpoint: &'a Checkpoint,
    dirs: &'a TrainingDirs,
}

impl OnDevice for Exporting<'_> {
    type Output = Result<PathBuf, TrainError>;

    fn run<B: AutodiffBackend>(
        self,
        _device: &B::Device,
        inner: &burn::tensor::Device<B::InnerBackend>,
    ) -> Self::Output {
        let Exporting {
            plan,
            checkpoint: cp,
            dirs,
        } = self;
        B::InnerBackend::seed(inner, plan.trainer.random_seed);
        let mut model = Model::<B::InnerBackend>::build(
            plan.model.eval_handler.clone(),
            &plan.model.parts,
            inner,
        )
        .map_err(failed("building the model"))?;
        let mut weights =
            crate::model::read_safetensors::<B::InnerBackend>(&cp.file(WEIGHTS), inner)?;
        model
            .load_tensors(&mut weights, &[])
            .map_err(failed("loading the checkpoint's weights"))?;
        let data = dataset::<B::InnerBackend>(&plan.eval_data, "eval", inner)?;
        Ok(crate::export::SavedModel::write(
            plan.project(),
            &dirs.saved_models,
            &mut model,
            &plan.model.parts,
            &plan.check.config.tree.to_value(),
            data.as_ref(),
            plan.trainer.batch_size.eval(),
            cp.global_step,
            cp.epoch,
            None,
            plan.trainer.exports_to_keep.max(1),
        )?
        .dir)
    }
}
