//! Data for coordinators: which samples make each batch, in a seeded order that a resumed run
//! reproduces exactly, and how samples are stacked into batches and read ahead; file lists,
//! sample files (images, `.npy`) and records (saved samples as safetensors shards).

pub mod augment;
pub mod batch;
mod cache;
pub mod file_list;
pub mod files;
pub mod filtered;
pub mod image_files;
pub mod mix;
pub mod order;
pub mod pipe;
pub mod processed;
pub mod records;
pub mod records_reader;
pub mod shapes;
pub mod tensor_file;

pub use augment::{Augment, AugmentConfig};
pub use batch::{BatchError, Collator, collate, concat, stack};
pub(crate) use batch::{EpochBatch, for_each_batch};
pub use file_list::{FileList, FileListConfig, FileListConfigs};
pub use filtered::{FilteredDataset, FilteredFeeder};
pub use image_files::{ImageFiles, ImageFilesFeeder};
pub use mix::{DatasetMix, DatasetMixConfig};
pub use order::{BatchOrder, DataPosition, SampleKey};
pub use pipe::{
    BoxesReader, CsvReader, DataPipe, DataPipeFeeder, ImageReader, LabelReader, NpyReader,
};
pub use processed::{ProcessedDataset, ProcessedFeeder, Standardize, StandardizeConfig};
pub use records::{RecordsWriter, read_records};
pub use records_reader::{Records, RecordsFeeder};
pub use shapes::{Shapes, ShapesConfig, ShapesFeeder, write_shapes};

/// A data file or value that cannot be read or written: what went wrong, naming the file and
/// the fix, and the cause a library reported.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DataError {
    /// What went wrong.
    pub message: String,
    /// The cause, when a library gave one.
    #[source]
    pub source: Option<crate::BoxError>,
}

impl DataError {
    /// A problem with its cause.
    pub fn caused(message: impl Into<String>, source: impl Into<crate::BoxError>) -> DataError {
        DataError {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl From<String> for DataError {
    fn from(message: String) -> DataError {
        DataError {
            message,
            source: None,
        }
    }
}

impl From<&str> for DataError {
    fn from(message: &str) -> DataError {
        DataError::from(message.to_owned())
    }
}
