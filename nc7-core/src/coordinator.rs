//! Coordinators (trainer, inferer) and what they share: where a step sits in a run, and
//! checkpoints.

pub mod checkpoint;
pub mod load;
pub mod monitor;
pub mod schedule;
pub mod trainer;
pub mod trainer_config;

pub use checkpoint::{Checkpoint, CheckpointError, Checkpoints};
pub use schedule::{EvalSteps, Position, eval_position, train_position};
pub use trainer::{TrainError, TrainOptions, TrainReport, export_checkpoint, train};
pub use trainer_config::{PerMode, TrainerConfig};
