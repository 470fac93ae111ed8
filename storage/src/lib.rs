//! Sightline's storage: the span data model (one Arrow schema), the write-ahead log, Parquet span
//! files partitioned by hour, the manifest, retention and compaction.
//!
//! Architecture invariant: `storage` knows nothing of HTTP, OTLP or DataFusion, and depends on no
//! other crate of Sightline. Receivers decode into [`SpanBatchBuilder`]; readers take a
//! [`Snapshot`].

pub mod error;
pub mod manifest;
pub mod partition;
pub mod rollup;
pub mod schema;
pub mod span_batch;
pub mod span_files;
pub mod store;
pub mod wal;

pub use arrow;
pub use error::StorageError;
pub use schema::{span_schema, SpanKind};
pub use span_batch::{AttrValue, DedicatedAttributes, SpanBatchBuilder, SpanFields};
pub use store::{
    MemoryBudget, Reservation, RollupSnapshot, Snapshot, SpanStore, StoreConfig, StoreStats,
};
