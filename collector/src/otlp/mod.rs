//! OTLP receivers: traces over gRPC ([`grpc`]) and HTTP ([`http`]), protobuf and JSON.

pub mod grpc;
pub mod http;
pub mod traces;
pub mod traces_json;
pub mod traces_proto;
pub mod wire;

use std::sync::Arc;

use bytes::Bytes;
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

/// Decodes a trace export request and waits until its valid spans are durable.
pub async fn export_traces(
    state: &OtlpState,
    body: Bytes,
    format: Format,
) -> Result<ExportOutcome, IngestError> {
    let mut builder = SpanBatchBuilder::new();
    let rejections = match format {
        Format::Protobuf => traces_proto::decode_request(&body, &mut builder)
            .map_err(|e| IngestError::Decode(format!("invalid OTLP protobuf: {e}")))?,
        Format::Json => {
            traces_json::decode_request(&body, &mut builder).map_err(IngestError::Decode)?
        }
    };
    drop(body);
    let accepted = builder.len();
    if accepted > 0 {
        let batch = builder
            .finish()
            .map_err(|e| IngestError::Internal(e.to_string()))?;
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
