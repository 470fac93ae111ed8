//! Where receivers put spans: a small trait, so a receiver can be tested against an in-memory
//! sink as well as the real store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sightline_storage::arrow::array::RecordBatch;
use sightline_storage::{MemoryBudget, SpanStore, StorageError};

pub type WriteFuture = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send>>;

pub trait SpanSink: Send + Sync + 'static {
    /// Starts a durable write. Refusal (saturation) is immediate; the future resolves once the
    /// batch is durable.
    fn write(&self, batch: RecordBatch) -> Result<WriteFuture, StorageError>;

    /// The budget request bodies are counted against while they are decoded.
    fn memory(&self) -> &Arc<MemoryBudget>;
}

impl SpanSink for SpanStore {
    fn write(&self, batch: RecordBatch) -> Result<WriteFuture, StorageError> {
        let rx = self.submit(batch)?;
        Ok(Box::pin(async move {
            rx.await.map_err(|_| StorageError::Closed)?
        }))
    }

    fn memory(&self) -> &Arc<MemoryBudget> {
        SpanStore::memory(self)
    }
}
