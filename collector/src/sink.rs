//! Where receivers put what they decode: a small trait, so a receiver can be tested against an
//! in-memory sink as well as the real store. A write is one signal's rows for one tenant; the
//! store admits them by that signal's rules and turns them into batches of its tables.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sightline_storage::metrics::MetricsConfig;
use sightline_storage::{Ingest, MemoryBudget, StorageError, Store, WriteReport};

pub type WriteFuture = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send>>;

pub trait Sink: Send + Sync + 'static {
    /// Starts a durable write. Refusal (saturation) is immediate, and so is the report of rows
    /// the store would not take (limits, bad values); the future resolves once the rest is
    /// durable.
    fn submit(
        &self,
        tenant: &str,
        ingest: Ingest,
    ) -> Result<(WriteReport, WriteFuture), StorageError>;

    /// The budget request bodies are counted against while they are decoded.
    fn memory(&self) -> &Arc<MemoryBudget>;

    /// The limits metrics are decoded against (label rules, the accepted time window).
    fn metrics_config(&self) -> &MetricsConfig;
}

impl Sink for Store {
    fn submit(
        &self,
        tenant: &str,
        ingest: Ingest,
    ) -> Result<(WriteReport, WriteFuture), StorageError> {
        let (report, rx) = Store::submit(self, tenant, ingest)?;
        Ok((
            report,
            Box::pin(async move { rx.await.map_err(|_| StorageError::Closed)? }),
        ))
    }

    fn memory(&self) -> &Arc<MemoryBudget> {
        Store::memory(self)
    }

    fn metrics_config(&self) -> &MetricsConfig {
        Store::metrics_config(self)
    }
}
