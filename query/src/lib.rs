//! Sightline's query side: one DataFusion `SessionContext` whose tables are the store's tables —
//! Parquet files and the acknowledged rows still in memory, one version per statement — and the
//! HTTP API over it.
//!
//! Architecture invariant: `query` depends on `storage` and never on `collector`.

mod attr_match;
pub mod catalog;
mod columns;
pub mod engine;
pub mod error;
pub mod exposition;
pub mod http;
pub mod jaeger;
pub mod params;
pub mod prometheus;
pub mod promql;
pub mod red;
pub mod remote_read;
pub mod rollups;
pub mod search;
pub mod span_metrics;
pub mod tables;
pub mod tempo;
pub mod topology;
pub mod trace;
pub mod traceql;
pub mod zipkin;

pub use engine::{QueryEngine, SqlLimits};
pub use error::QueryError;
pub use tables::{LiveStore, PinnedVersion, StoredTable, VersionSource};
