//! What runs leave behind: files other tools read, in those tools' own formats (TensorBoard
//! event files, MLflow's file store), and the saver callbacks (records, PNG and JSON per sample, buffers, the
//! experiments table).

pub mod callbacks;
pub mod mlflow;
pub mod plots;
pub mod profile;
pub mod summaries;
pub mod tensorboard;

pub use tensorboard::EventWriter;
