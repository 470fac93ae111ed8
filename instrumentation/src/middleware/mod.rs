//! HTTP middleware: SERVER spans and the stat log for servers, CLIENT spans and header
//! injection for reqwest.

#[cfg(feature = "reqwest")]
mod client;
mod server;

#[cfg(feature = "reqwest")]
pub use client::TracedRequest;
pub use server::{HttpServer, HttpServerLayer, ResponseFuture, STAT_LOG_METRIC};
