//! Sightline's receivers. Each protocol has a module that decodes its wire format straight into
//! `storage`'s Arrow builders and writes through a [`sink::SpanSink`].
//!
//! Architecture invariant: `collector` depends on `storage` and never on `query`.

pub mod compression;
pub mod error;
pub mod otlp;
pub mod sink;

pub use error::IngestError;
pub use sink::SpanSink;
