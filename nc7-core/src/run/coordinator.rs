//! Coordinators (trainer, inferer) and what they share: handlers and callbacks, where a step
//! sits in a run, and checkpoints.

pub mod checkpoint;
pub mod handlers;
pub mod inferer;
pub mod inferer_config;
pub mod load;
pub mod monitor;
pub mod schedule;
pub mod trainer;
pub mod trainer_config;

pub use checkpoint::{Checkpoint, CheckpointError, Checkpoints, find_checkpoint};
pub use inferer::{InferError, InferOptions, InferReport, evaluate_kpi, extract_data, infer};
pub use inferer_config::{FeedConfig, InfererConfig};
pub use schedule::{EvalSteps, Position, eval_position, train_position};
pub use trainer::{TrainError, TrainOptions, TrainReport, export_checkpoint, train};
pub use trainer_config::{PerMode, TrainerConfig};
