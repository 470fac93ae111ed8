//! Sightline's storage: the data model (Arrow schemas of spans, rollups and metrics) and one
//! table engine for all of them — write-ahead log, buffers, Parquet files partitioned by hour, a
//! versioned manifest, retention and compaction — behind one file-I/O seam.
//!
//! Architecture invariant: `storage` knows nothing of HTTP, OTLP or DataFusion, and depends on no
//! other crate of Sightline. Receivers decode into its batch builders and write through
//! [`Store`]; readers take a [`Version`].

pub mod engine;
pub mod error;
pub mod files;
pub mod metrics;
pub mod rollup;
pub mod schema;
pub mod span_batch;
pub mod span_table;
pub mod store;
pub mod telemetry;

pub use arrow;
pub use engine::manifest::{FileEntry, DEFAULT_TENANT};
pub use engine::partition;
pub use engine::{
    EngineStats, FooterCache, KeyLookup, MemoryBudget, OneOf, Reservation, TableSpec, TableVersion,
    Version, Write,
};
pub use error::StorageError;
pub use files::FileStore;
pub use schema::{span_schema, SpanKind};
pub use span_batch::{AttrValue, DedicatedAttributes, SpanBatchBuilder, SpanFields};
pub use store::{Ingest, Refusal, Store, StoreConfig, WriteReport};
