//! Where receivers put what they decode: a small trait, so a receiver can be tested against an
//! in-memory sink as well as the real store. A write is batches for any of the store's tables,
//! for one tenant.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sightline_storage::{MemoryBudget, StorageError, Store, Write, WriteReport};

pub type WriteFuture = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send>>;

pub trait Sink: Send + Sync + 'static {
    /// Starts a durable write. Refusal (saturation) is immediate, and so is the report of rows
    /// the store would not take (limits, bad values); the future resolves once the rest is
    /// durable.
    fn submit(&self, write: Write) -> Result<(WriteReport, WriteFuture), StorageError>;

    /// The budget request bodies are counted against while they are decoded.
    fn memory(&self) -> &Arc<MemoryBudget>;
}

impl Sink for Store {
    fn submit(&self, write: Write) -> Result<(WriteReport, WriteFuture), StorageError> {
        let (report, rx) = Store::submit(self, write)?;
        Ok((
            report,
            Box::pin(async move { rx.await.map_err(|_| StorageError::Closed)? }),
        ))
    }

    fn memory(&self) -> &Arc<MemoryBudget> {
        Store::memory(self)
    }
}
