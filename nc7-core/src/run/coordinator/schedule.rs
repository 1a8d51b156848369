//! Where a step sits in a run (spec §6): epoch and iteration from 1, and the summary step that
//! puts train and eval summaries on one axis, the last eval step of an epoch on the epoch's
//! last train step.

/// A step's place in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The epoch, from 1.
    pub epoch: u64,
    /// The iteration within the epoch, from 1.
    pub iteration: u64,
    /// The step summaries are written at.
    pub summary_step: u64,
}

/// The place of training step `global_step` (from 0) in epochs of `iterations_per_epoch`.
pub fn train_position(global_step: u64, iterations_per_epoch: u64) -> Position {
    let n = iterations_per_epoch.max(1);
    Position {
        epoch: global_step / n + 1,
        iteration: global_step % n + 1,
        summary_step: global_step + 1,
    }
}

/// The place of eval iteration `iteration` (from 1) of an eval that runs after `global_step`
/// training steps; its summary step counts back from `global_step` so that the eval's last
/// iteration shares the last train step.
pub fn eval_position(
    global_step: u64,
    iteration: u64,
    eval_iterations_per_epoch: u64,
    train_iterations_per_epoch: u64,
) -> Position {
    let n = train_iterations_per_epoch.max(1);
    Position {
        epoch: global_step.div_ceil(n).max(1),
        iteration,
        summary_step: (global_step + iteration).saturating_sub(eval_iterations_per_epoch),
    }
}

/// Positions of consecutive eval iterations: the iteration restarts at 1 whenever the global
/// step moves on (a new eval after more training).
#[derive(Debug, Clone, Copy)]
pub struct EvalSteps {
    eval_iterations_per_epoch: u64,
    train_iterations_per_epoch: u64,
    last: Option<(u64, u64)>,
}

impl EvalSteps {
    /// For evals of `eval_iterations_per_epoch` iterations after epochs of
    /// `train_iterations_per_epoch` training steps.
    pub fn new(eval_iterations_per_epoch: u64, train_iterations_per_epoch: u64) -> EvalSteps {
        EvalSteps {
            eval_iterations_per_epoch,
            train_iterations_per_epoch,
            last: None,
        }
    }

    /// The position of the next eval iteration, run after `global_step` training steps.
    pub fn next(&mut self, global_step: u64) -> Position {
        let iteration = match self.last {
            Some((step, i)) if step == global_step => i + 1,
            _ => 1,
        };
        self.last = Some((global_step, iteration));
        eval_position(
            global_step,
            iteration,
            self.eval_iterations_per_epoch,
            self.train_iterations_per_epoch,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spec §6, train: 7 iterations per epoch, global steps 0..19.
    #[test]
    fn train_positions() {
        for gs in 0..20u64 {
            let p = train_position(gs, 7);
            assert_eq!(p.epoch, (gs + 1).div_ceil(7), "gs {gs}");
            assert_eq!(p.iteration, gs % 7 + 1, "gs {gs}");
            assert_eq!(p.summary_step, gs + 1, "gs {gs}");
        }
        assert_eq!(
            train_position(7, 7),
            Position {
                epoch: 2,
                iteration: 1,
                summary_step: 8
            }
        );
    }

    /// spec §6, eval: 3 eval iterations after epochs of 7 train iterations.
    #[test]
    fn eval_positions() {
        let mut steps = EvalSteps::new(3, 7);
        let got: Vec<Position> = [7, 7, 7, 14, 14, 14, 21].map(|gs| steps.next(gs)).to_vec();
        let epochs: Vec<u64> = got.iter().map(|p| p.epoch).collect();
        let iterations: Vec<u64> = got.iter().map(|p| p.iteration).collect();
        let summary: Vec<u64> = got.iter().map(|p| p.summary_step).collect();
        assert_eq!(epochs, [1, 1, 1, 2, 2, 2, 3]);
        assert_eq!(iterations, [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(summary, [5, 6, 7, 12, 13, 14, 19]);
        // The last eval step of an epoch is the epoch's last train step.
        assert_eq!(got[2].summary_step, train_position(6, 7).summary_step);
    }
}
