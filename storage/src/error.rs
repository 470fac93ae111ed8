use std::path::{Path, PathBuf};

use arrow::error::ArrowError;
use parquet::errors::ParquetError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("wal record of {0} bytes is too large")]
    RecordTooLarge(usize),
    #[error("the write path is saturated ({0}); retry later")]
    Saturated(&'static str),
    #[error("the store is shut down")]
    Closed,
    #[error("write-ahead log failed: {0}")]
    WalFailed(String),
    /// A table, schema or name that does not fit the catalog: a bug of the caller, not bad
    /// input from a client.
    #[error("schema: {0}")]
    Schema(String),
}

impl StorageError {
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
