//! OTLP receivers: traces over gRPC ([`grpc`]) and HTTP ([`http`]), protobuf and JSON.

pub mod grpc;
pub mod http;
pub mod traces;
pub mod traces_json;
pub mod traces_proto;
pub mod wire;

use std::sync::Arc;

use bytes::Bytes;
use sightline_storage::arrow::array::RecordBatch;
use sightline_storage::SpanBatchBuilder;

use crate::error::IngestError;
use crate::sink::SpanSink;
use traces::Rejections;
use wire::Writer;

/// What the OTLP receivers share.
pub struct OtlpState {
    pub sink: Arc<dyn SpanSink>,
    /// Largest request accepted, after decompression.
    pub max_request_bytes: usize,
}

impl OtlpState {
    pub fn new(sink: Arc<dyn SpanSink>) -> Arc<Self> {
        Arc::new(Self {
            sink,
            max_request_bytes: crate::compression::MAX_REQUEST_BYTES,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

/// The result of an accepted export: how many spans were stored, and which were not.
#[derive(Debug)]
pub struct ExportOutcome {
    pub accepted: usize,
    pub rejections: Rejections,
}

/// Requests larger than this are decoded on the blocking pool, so that one huge request does not
/// hold an async worker for long. Typical exporter batches (a few hundred KiB) decode inline: the
/// hand-off to the pool cost a fifth of the ingest throughput in the benchmark.
const INLINE_DECODE_BYTES: usize = 4 << 20;

/// Decodes a trace export request and waits until its valid spans are durable.
pub async fn export_traces(
    state: &OtlpState,
    body: Bytes,
    format: Format,
) -> Result<ExportOutcome, IngestError> {
    let (batch, rejections) = if body.len() <= INLINE_DECODE_BYTES {
        decode(&body, format)?
    } else {
        tokio::task::spawn_blocking(move || decode(&body, format))
            .await
            .map_err(|e| IngestError::Internal(format!("decoder task failed: {e}")))??
    };
    let accepted = batch.as_ref().map_or(0, |b| b.num_rows());
    if let Some(batch) = batch {
        state.sink.write(batch)?.await?;
    }
    if let Some(message) = rejections.message() {
        tracing::debug!(
            accepted,
            rejected = rejections.total(),
            message,
            "partial success"
        );
    }
    Ok(ExportOutcome {
        accepted,
        rejections,
    })
}

type Decoded = (Option<RecordBatch>, Rejections);

/// Rough encoded size of a span, to size the builders from the request (see the workload note in
/// docs/benchmarks.md: about 480 bytes in protobuf; JSON is larger).
fn estimated_spans(body_len: usize, format: Format) -> usize {
    match format {
        Format::Protobuf => body_len / 400,
        Format::Json => body_len / 1000,
    }
}

fn decode(body: &[u8], format: Format) -> Result<Decoded, IngestError> {
    let mut builder = SpanBatchBuilder::with_capacity(estimated_spans(body.len(), format));
    let rejections = match format {
        Format::Protobuf => traces_proto::decode_request(body, &mut builder)
            .map_err(|e| IngestError::Decode(format!("invalid OTLP protobuf: {e}")))?,
        Format::Json => {
            traces_json::decode_request(body, &mut builder).map_err(IngestError::Decode)?
        }
    };
    if builder.is_empty() {
        return Ok((None, rejections));
    }
    let batch = builder
        .finish()
        .map_err(|e| IngestError::Internal(e.to_string()))?;
    Ok((Some(batch), rejections))
}

/// `ExportTraceServiceResponse`, with `partial_success` only when something was rejected.
pub fn encode_response_protobuf(outcome: &ExportOutcome) -> Vec<u8> {
    let mut w = Writer::default();
    if let Some(message) = outcome.rejections.message() {
        let mut partial = Writer::default();
        partial.varint_field(1, outcome.rejections.total());
        partial.bytes_field(2, message.as_bytes());
        w.bytes_field(1, &partial.buf);
    }
    w.buf
}

pub fn encode_response_json(outcome: &ExportOutcome) -> Vec<u8> {
    match outcome.rejections.message() {
        Some(message) => serde_json::to_vec(&serde_json::json!({
            "partialSuccess": {
                "rejectedSpans": outcome.rejections.total(),
                "errorMessage": message,
            }
        }))
        .unwrap_or_default(),
        None => b"{}".to_vec(),
    }
}

/// `google.rpc.Status`, with a `google.rpc.RetryInfo` detail when `retry_after` is set.
pub fn encode_status(code: u8, message: &str, retry_after: Option<u64>) -> Vec<u8> {
    let mut w = Writer::default();
    w.varint_field(1, u64::from(code));
    w.bytes_field(2, message.as_bytes());
    if let Some(seconds) = retry_after {
        let mut duration = Writer::default();
        duration.varint_field(1, seconds);
        let mut retry_info = Writer::default();
        retry_info.bytes_field(1, &duration.buf);
        let mut any = Writer::default();
        any.bytes_field(1, b"type.googleapis.com/google.rpc.RetryInfo");
        any.bytes_field(2, &retry_info.buf);
        w.bytes_field(3, &any.buf);
    }
    w.buf
}
