//! The Zipkin v2 receiver: `POST /api/v2/spans`, a JSON list of spans or a protobuf
//! `ListOfSpans` (`application/x-protobuf`), optionally gzip-compressed; 202 when stored. It is
//! served on port 9411, where SOFATracer's and Zipkin's reporters send by default, and under
//! `/zipkin` on the HTTP port. A request is stored whole or not at all, as on Zipkin's server:
//! the first bad span fails it with 400 and a message naming the span and the problem.

pub mod digest;
mod json;
mod proto;
pub mod sofatracer;
pub mod span;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use sightline_storage::arrow::array::RecordBatch;
use sightline_storage::{Ingest, SpanBatchBuilder, DEFAULT_TENANT};

use crate::compression::Encoding;
use crate::error::IngestError;
use crate::receiver::{self, Receiving};

pub const SPANS_PATH: &str = "/api/v2/spans";
/// Where the receiver is mounted on the HTTP port.
pub const HTTP_PREFIX: &str = "/zipkin";
const CONTENT_TYPES: &str = "application/json or application/x-protobuf";
const ENCODINGS: [Encoding; 2] = [Encoding::Identity, Encoding::Gzip];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Protobuf,
}

/// The receiver's routes, at the root (port 9411); nest under [`HTTP_PREFIX`] on 8080.
pub fn router(receiving: Arc<Receiving>) -> Router {
    Router::new()
        .route(SPANS_PATH, post(spans))
        .with_state(receiving)
}

/// The encoding of a request, from its content type. No content type, and `text/plain` (what
/// some scripts' `curl` sends), read as JSON, as on Zipkin's server.
fn content_format(headers: &HeaderMap) -> Result<Format, IngestError> {
    match receiver::media_type(headers).0.as_str() {
        "" | "application/json" | "text/plain" => Ok(Format::Json),
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        _ => Err(IngestError::UnsupportedContentType(
            receiver::content_type_header(headers),
            CONTENT_TYPES,
        )),
    }
}

async fn spans(
    State(receiving): State<Arc<Receiving>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let admitted = content_format(&headers)
            .and_then(|f| Ok((f, receiver::content_encoding(&headers, &ENCODINGS)?)));
        let (format, encoding) = match admitted {
            Ok(a) => a,
            Err(e) => {
                receiver::discard(body).await;
                return Err(e);
            }
        };
        let body = receiving.read_body(&headers, body, encoding).await?;
        let batch = receiving
            .decode(body, move |bytes| decode(bytes, format))
            .await?;
        if let Some(batch) = batch {
            receiving
                .write(DEFAULT_TENANT, Ingest::Spans(batch))
                .await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => receiver::text_error(&e, None, "zipkin"),
    }
}

/// A request's spans as a batch, `None` when it holds none.
pub fn decode(body: &[u8], format: Format) -> Result<Option<RecordBatch>, IngestError> {
    let spans = match format {
        Format::Json => json::decode(body),
        Format::Protobuf => proto::decode(body),
    }
    .map_err(IngestError::Decode)?;
    if spans.is_empty() {
        return Ok(None);
    }
    let mut builder = SpanBatchBuilder::with_capacity(spans.len());
    span::write(&spans, &mut builder);
    builder
        .finish()
        .map(Some)
        .map_err(|e| IngestError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests;
