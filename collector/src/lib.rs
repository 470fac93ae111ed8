//! Sightline's receivers. Each protocol has a module that decodes its wire format straight into
//! `storage`'s Arrow builders; what every protocol needs besides (admission, body reading,
//! decompression, the write) is in [`receiver`], and writes go through a [`sink::Sink`].
//!
//! Architecture invariant: `collector` depends on `storage` and never on `query`.

pub mod compression;
pub mod error;
pub mod lookout;
pub mod otlp;
pub mod receiver;
pub mod remote_write;
pub mod sink;
pub mod wire;
pub mod zipkin;

pub use error::IngestError;
pub use receiver::Receiving;
pub use sink::Sink;
