//! What every receiver shares, so that a protocol is only its decoder and its replies:
//! admission against the memory budget, bounded body reading (and draining what is refused),
//! decompression with a limit (gzip, raw snappy), decoding off the async workers when a body is
//! large, and the write into the [`Sink`]. Errors are one [`IngestError`]; each protocol renders
//! it in its own terms.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use sightline_storage::{Ingest, Reservation, WriteReport};

use crate::compression::{decode_body_held, Encoding, MAX_REQUEST_BYTES};
use crate::error::{IngestError, RETRY_AFTER_SECONDS};
use crate::sink::Sink;

/// Milliseconds since the epoch: the arrival time metrics are checked against.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// What a receiver needs: where to write, and how large a request may be.
pub struct Receiving {
    pub sink: Arc<dyn Sink>,
    /// Largest request accepted, after decompression.
    pub max_request_bytes: usize,
    /// How long a request waits for room in the memory budget before it is refused.
    pub admission_wait: std::time::Duration,
}

/// A request body in memory, counted against the budget until dropped.
pub struct HeldBody {
    pub bytes: Bytes,
    _held: Reservation,
}

impl HeldBody {
    pub fn new(bytes: Bytes, held: Reservation) -> Self {
        Self { bytes, _held: held }
    }
}

/// How much of a refused body is read and thrown away before answering: a client that is still
/// sending when the connection closes never sees the answer (it gets a broken pipe).
const DISCARD_LIMIT: usize = 1 << 30;

/// How long a request waits for room in the memory budget before it is refused, by default:
/// long enough for a flush to give memory back, well inside every sender's timeout (OTLP's 10 s,
/// remote write's 30 s). Waiting instead of refusing at once keeps the server busy when many
/// writers arrive together, rather than idle while refused senders back off.
pub const ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Requests larger than this are decoded on the blocking pool, so that one huge request does not
/// hold an async worker for long. Typical exporter batches (a few hundred KiB) decode inline: the
/// hand-off to the pool cost a fifth of the trace ingest throughput in the benchmark.
const INLINE_DECODE_BYTES: usize = 4 << 20;

impl Receiving {
    pub fn new(sink: Arc<dyn Sink>) -> Arc<Self> {
        Arc::new(Self {
            sink,
            max_request_bytes: MAX_REQUEST_BYTES,
            admission_wait: ADMISSION_WAIT,
        })
    }

    /// Admits and reads a request body: a declared length over the limit or over what the memory
    /// budget has room for is refused before reading (the body is drained so the client sees the
    /// answer); the body is read up to the limit, growing its reservation as it comes; then it
    /// is decompressed, with the same limit after decompression.
    pub async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
        encoding: Encoding,
    ) -> Result<HeldBody, IngestError> {
        let limit = self.max_request_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let admitted = if declared.is_some_and(|n| n > limit) {
            Err(IngestError::TooLarge {
                limit,
                decompressed: false,
            })
        } else {
            self.reserve_waiting(declared.unwrap_or(0)).await
        };
        let reservation = match admitted {
            Ok(r) => r,
            Err(e) => {
                discard(body).await;
                return Err(e);
            }
        };
        let (raw, reservation) = self.read_limited(body, limit, reservation).await?;
        let (bytes, held) = decode_body_held(raw, encoding, limit, reservation)?;
        Ok(HeldBody { bytes, _held: held })
    }

    /// A reservation against the memory budget, waiting a moment for room if there is none.
    pub async fn reserve_waiting(&self, bytes: usize) -> Result<Reservation, IngestError> {
        let memory = self.sink.memory();
        if !memory.has_room(bytes) {
            let _ = tokio::time::timeout(self.admission_wait, memory.wait_for_room(bytes)).await;
        }
        self.reserve(bytes)
    }

    /// A reservation against the memory budget, or the refusal a saturated server answers.
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, IngestError> {
        self.sink
            .memory()
            .try_reserve(bytes)
            .ok_or(IngestError::Saturated("memory budget"))
    }

    /// Reads the whole body, or fails with 413 once it passes `limit` (the rest is drained), or
    /// with 503 when the budget has no room for it.
    pub async fn read_limited(
        &self,
        mut body: Body,
        limit: usize,
        mut held: Reservation,
    ) -> Result<(Bytes, Reservation), IngestError> {
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| IngestError::Decode(format!("failed to read request body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let refusal = if buf.len() + data.len() > limit {
                Some(IngestError::TooLarge {
                    limit,
                    decompressed: false,
                })
            } else if buf.len() + data.len() > held.bytes()
                && !held.try_grow(buf.len() + data.len() - held.bytes())
            {
                Some(IngestError::Saturated("memory budget"))
            } else {
                None
            };
            if let Some(e) = refusal {
                discard(body).await;
                return Err(e);
            }
            buf.extend_from_slice(&data);
        }
        Ok((buf.freeze(), held))
    }

    /// Runs a decoder over a body, off the async workers if the body is large. The body's memory
    /// is given back once it is decoded.
    pub async fn decode<T: Send + 'static>(
        &self,
        body: HeldBody,
        decoder: impl FnOnce(&[u8]) -> Result<T, IngestError> + Send + 'static,
    ) -> Result<T, IngestError> {
        if body.bytes.len() <= INLINE_DECODE_BYTES {
            return decoder(&body.bytes);
        }
        tokio::task::spawn_blocking(move || decoder(&body.bytes))
            .await
            .map_err(|e| IngestError::Internal(format!("decoder task failed: {e}")))?
    }

    /// Writes into the sink and waits until what was admitted is durable.
    pub async fn write(&self, tenant: &str, ingest: Ingest) -> Result<WriteReport, IngestError> {
        let memory = self.sink.memory();
        let need = ingest.estimated_bytes();
        if !memory.has_room(need) {
            let _ = tokio::time::timeout(self.admission_wait, memory.wait_for_room(need)).await;
        }
        let (report, durable) = self.sink.submit(tenant, ingest)?;
        durable.await?;
        Ok(report)
    }
}

/// Reads and drops the rest of a body, up to a bound: for a request refused on its headers.
pub async fn discard(mut body: Body) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > DISCARD_LIMIT {
            break;
        }
    }
}

/// The media type of a request, lowercased, without parameters, and its parameters.
pub fn media_type(headers: &HeaderMap) -> (String, Vec<(String, String)>) {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = raw.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ))
        })
        .collect();
    (essence, params)
}

/// The raw `Content-Type` header, for error messages.
pub fn content_type_header(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The `Content-Encoding` header, among those a protocol takes.
pub fn content_encoding(
    headers: &HeaderMap,
    accepted: &[Encoding],
) -> Result<Encoding, IngestError> {
    Encoding::parse(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
        accepted,
    )
}

/// An error answered as plain text with `status` (the error's own HTTP status by default), for
/// the protocols whose errors are text: remote write, the Lookout gateway.
pub fn text_error(e: &IngestError, status: Option<StatusCode>, protocol: &'static str) -> Response {
    let status = status.unwrap_or_else(|| {
        StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    });
    let resp = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        e.to_string(),
    )
        .into_response();
    finish_error(e, resp, protocol)
}

/// Adds `Retry-After` to the answer of a refusal a client should retry, and logs and counts
/// refusals once.
pub fn finish_error(e: &IngestError, mut resp: Response, protocol: &'static str) -> Response {
    note_refusal(e, protocol);
    if e.retryable() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    resp
}

/// Requests refused, by (protocol, [`IngestError::reason`]), since the process started.
static REFUSALS: std::sync::Mutex<std::collections::BTreeMap<(&str, &str), u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Logs a refused request (a warning when the client should retry, as that is the server's
/// doing) and counts it.
pub fn note_refusal(e: &IngestError, protocol: &'static str) {
    if e.retryable() {
        tracing::warn!(error = %e, protocol, "request refused");
    } else {
        tracing::debug!(error = %e, protocol, "request rejected");
    }
    if let Ok(mut r) = REFUSALS.lock() {
        *r.entry((protocol, e.reason())).or_default() += 1;
    }
}

/// Spans refused at decoding (an invalid id, ...) by reason; metric rows refused at admission
/// are counted by the store.
static SPANS_REFUSED: std::sync::Mutex<std::collections::BTreeMap<&str, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

pub fn note_spans_refused(by_reason: impl Iterator<Item = (&'static str, u64)>) {
    // Called on every export: no lock when nothing was refused.
    let mut by_reason = by_reason.peekable();
    if by_reason.peek().is_none() {
        return;
    }
    if let Ok(mut r) = SPANS_REFUSED.lock() {
        for (reason, n) in by_reason {
            *r.entry(reason).or_default() += n;
        }
    }
}

/// Spans refused at decoding since the process started, by reason.
pub fn spans_refused() -> Vec<(&'static str, u64)> {
    SPANS_REFUSED
        .lock()
        .map(|r| r.iter().map(|(k, v)| (*k, *v)).collect())
        .unwrap_or_default()
}

/// Requests refused since the process started: ((protocol, reason), count).
pub fn refusals() -> Vec<((&'static str, &'static str), u64)> {
    REFUSALS
        .lock()
        .map(|r| r.iter().map(|(k, v)| (*k, *v)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod compliance;
