//! The Zipkin v2 receiver: `POST /api/v2/spans`, a JSON list of spans or a protobuf
//! `ListOfSpans` (`application/x-protobuf`), optionally gzip-compressed; 202 when stored. It is
//! served on port 9411, where SOFATracer's and Zipkin's reporters send by default, and under
//! `/zipkin` on the HTTP port. A request is stored whole or not at all, as on Zipkin's server:
//! the first bad span fails it with 400 and a message naming the span and the problem.
//!
//! Beside it, `POST /sofatracer/stat?log=spring-mvc-stat.log&utc_offset=+08:00&interval=60`
//! takes the lines of a SOFATracer stat log as they are (see [`stat`]), for the calls SOFATracer
//! only counted: stored whole or not at all too, 202.

pub mod digest;
mod json;
mod proto;
pub mod sofatracer;
pub mod span;
pub mod stat;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
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
/// Where SOFATracer's stat lines are taken.
pub const STAT_PATH: &str = "/sofatracer/stat";
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
        .route(STAT_PATH, post(stat_lines))
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
    let admitted = content_format(&headers)
        .and_then(|f| Ok((f, receiver::content_encoding(&headers, &ENCODINGS)?)));
    receive(
        &receiving,
        &headers,
        body,
        admitted,
        "zipkin",
        |bytes, format| Ok(decode(bytes, format)?.map(Ingest::Spans)),
    )
    .await
}

/// What both endpoints share once a request is admitted (or refused: its body is drained so
/// the client sees the answer): the body read within the limits, decoded off the async workers
/// when large, stored whole, and 202 — or the error as plain text.
async fn receive<T: Send + 'static>(
    receiving: &Receiving,
    headers: &HeaderMap,
    body: Body,
    admitted: Result<(T, Encoding), IngestError>,
    protocol: &'static str,
    decode: impl FnOnce(&[u8], T) -> Result<Option<Ingest>, IngestError> + Send + 'static,
) -> Response {
    let result = async {
        let (how, encoding) = match admitted {
            Ok(a) => a,
            Err(e) => {
                receiver::discard(body).await;
                return Err(e);
            }
        };
        let body = receiving.read_body(headers, body, encoding).await?;
        let ingest = receiving
            .decode(body, move |bytes| decode(bytes, how))
            .await?;
        if let Some(ingest) = ingest {
            receiving.write(DEFAULT_TENANT, ingest).await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => receiver::text_error(&e, None, protocol),
    }
}

/// The query of a stat request: the log's name (or file name), the writer's offset from UTC
/// (`+08:00`), the period in seconds.
#[derive(Debug, serde::Deserialize)]
struct StatQuery {
    log: Option<String>,
    utc_offset: Option<String>,
    interval: Option<String>,
}

impl StatQuery {
    fn stat_log(&self) -> Result<stat::StatLog, IngestError> {
        let bad = |m: String| IngestError::Decode(m);
        let log = self
            .log
            .as_deref()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("the log parameter is missing: give the stat log's name, e.g. log=spring-mvc-stat.log".into()))?;
        let offset = match self.utc_offset.as_deref() {
            None | Some("") => 0,
            Some(o) => digest::parse_utc_offset(o)
                .ok_or_else(|| bad(format!("utc_offset {o:?} is not like +08:00")))?,
        };
        let interval = match self.interval.as_deref() {
            None | Some("") => stat::DEFAULT_INTERVAL_SECS,
            Some(i) => i
                .parse::<i64>()
                .ok()
                .filter(|s| (1..=86_400).contains(s))
                .ok_or_else(|| {
                    bad(format!(
                        "interval {i:?} is not a number of seconds from 1 to 86400"
                    ))
                })?,
        };
        Ok(stat::StatLog::new(log, offset, interval))
    }
}

async fn stat_lines(
    State(receiving): State<Arc<Receiving>>,
    query: Result<Query<StatQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let admitted = query
        .map_err(|e| IngestError::Decode(e.body_text()))
        .and_then(|Query(q)| q.stat_log())
        .and_then(|log| match receiver::media_type(&headers).0.as_str() {
            "" | "text/plain" | "application/x-ndjson" | "application/json" => {
                Ok((log, receiver::content_encoding(&headers, &ENCODINGS)?))
            }
            _ => Err(IngestError::UnsupportedContentType(
                receiver::content_type_header(&headers),
                "text/plain or application/x-ndjson",
            )),
        });
    receive(
        &receiving,
        &headers,
        body,
        admitted,
        "sofatracer_stat",
        |bytes, log| Ok(log.decode(bytes)?.map(Ingest::SpanStats)),
    )
    .await
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
