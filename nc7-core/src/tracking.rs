//! What runs leave for other tools to read, in those tools' own formats: TensorBoard event files.

pub mod summaries;
pub mod tensorboard;

pub use tensorboard::EventWriter;
