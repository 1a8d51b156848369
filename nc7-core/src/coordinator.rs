//! Coordinators (trainer, inferer) and what they share: where a step sits in a run, and
//! checkpoints.

pub mod checkpoint;
pub mod schedule;

pub use checkpoint::{Checkpoint, CheckpointError, Checkpoints};
pub use schedule::{EvalSteps, Position, eval_position, train_position};
