//! OTLP receivers: traces over gRPC ([`grpc`]) and HTTP ([`http`]), protobuf and JSON.

pub mod grpc;
pub mod http;
pub mod traces;
pub mod traces_json;
pub mod traces_proto;
pub mod wire;

use sightline_storage::arrow::array::RecordBatch;
use sightline_storage::span_table::SPANS_TABLE;
use sightline_storage::{SpanBatchBuilder, Write, DEFAULT_TENANT};

use crate::error::IngestError;
use crate::receiver::{HeldBody, Receiving};
use traces::Rejections;
use wire::Writer;

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
    receiving: &Receiving,
    body: HeldBody,
    format: Format,
) -> Result<ExportOutcome, IngestError> {
    let (batch, rejections) = receiving
        .decode(body, move |bytes| decode(bytes, format))
        .await?;
    let accepted = batch.as_ref().map_or(0, |b| b.num_rows());
    if let Some(batch) = batch {
        receiving
            .write(Write {
                tenant: DEFAULT_TENANT.into(),
                batches: vec![(SPANS_TABLE, batch)],
            })
            .await?;
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

#[cfg(test)]
mod compliance {
    use super::*;
    use crate::compression::Encoding;
    use crate::receiver::compliance::{run, Outcome, Subject};
    use axum::body::Body;
    use axum::http::{HeaderMap, Request};
    use std::sync::Arc;

    /// `ExportTraceServiceRequest` with `rows` valid spans.
    pub fn trace_request(rows: usize) -> Vec<u8> {
        let now = 1_795_288_800_000_000_000u64;
        let mut scope_spans = Writer::default();
        for i in 0..rows {
            let mut span = Writer::default();
            span.bytes_field(1, &[1 + i as u8; 16]);
            span.bytes_field(2, &[1 + i as u8; 8]);
            span.bytes_field(5, b"op");
            span.fixed64_field(7, now);
            span.fixed64_field(8, now + 1000);
            scope_spans.bytes_field(2, &span.buf);
        }
        let mut resource_spans = Writer::default();
        resource_spans.bytes_field(2, &scope_spans.buf);
        let mut request = Writer::default();
        request.bytes_field(1, &resource_spans.buf);
        request.buf
    }

    struct OtlpHttp(Format);

    impl Subject for OtlpHttp {
        fn name(&self) -> &'static str {
            match self.0 {
                Format::Protobuf => "otlp/http protobuf",
                Format::Json => "otlp/http json",
            }
        }

        fn router(&self, receiving: Arc<Receiving>) -> axum::Router {
            http::router(receiving)
        }

        fn request(
            &self,
            body: Vec<u8>,
            encoding: Encoding,
            content_type: Option<&str>,
        ) -> Request<Body> {
            let default = match self.0 {
                Format::Protobuf => "application/x-protobuf",
                Format::Json => "application/json",
            };
            let mut r = Request::post(http::TRACES_PATH)
                .header("content-type", content_type.unwrap_or(default))
                .header("content-length", body.len());
            if encoding != Encoding::Identity {
                r = r.header("content-encoding", encoding.name());
            }
            r.body(Body::from(body)).unwrap()
        }

        fn good_body(&self, rows: usize) -> Vec<u8> {
            match self.0 {
                Format::Protobuf => trace_request(rows),
                Format::Json => {
                    let spans: Vec<_> = (0..rows)
                        .map(|i| {
                            serde_json::json!({
                                "traceId": format!("{:032x}", i + 1),
                                "spanId": format!("{:016x}", i + 1),
                                "name": "op",
                                "startTimeUnixNano": "1795288800000000000",
                                "endTimeUnixNano": "1795288800000001000"
                            })
                        })
                        .collect();
                    serde_json::to_vec(&serde_json::json!({
                        "resourceSpans": [{"scopeSpans": [{"spans": spans}]}]
                    }))
                    .unwrap()
                }
            }
        }

        fn table(&self) -> &'static str {
            SPANS_TABLE
        }

        fn encodings(&self) -> &'static [Encoding] {
            &[Encoding::Gzip]
        }

        fn read(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> (Outcome, String) {
            // Errors are answered in the request's format, or JSON when it has none.
            let json = headers
                .get("content-type")
                .is_some_and(|v| v.as_bytes() == b"application/json");
            let message = if json {
                serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_default()
            } else {
                status_message(body)
            };
            (outcome_of_http(status), message)
        }

        fn empty_body(&self) -> Outcome {
            match self.0 {
                Format::Protobuf => Outcome::Stored,
                Format::Json => Outcome::Rejected,
            }
        }
    }

    fn outcome_of_http(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Stored,
            413 => Outcome::TooLarge,
            415 => Outcome::Unsupported,
            429 | 503 => Outcome::Retry,
            _ => Outcome::Rejected,
        }
    }

    /// The message of a `google.rpc.Status`.
    fn status_message(body: &[u8]) -> String {
        let mut r = wire::Reader::new(body);
        while let Ok(Some((field, v))) = r.next() {
            if field == 2 {
                return v.str("message").unwrap_or_default().to_string();
            }
        }
        String::new()
    }

    struct OtlpGrpc;

    impl Subject for OtlpGrpc {
        fn name(&self) -> &'static str {
            "otlp/grpc"
        }

        fn router(&self, receiving: Arc<Receiving>) -> axum::Router {
            grpc::router(receiving)
        }

        fn request(
            &self,
            body: Vec<u8>,
            encoding: Encoding,
            content_type: Option<&str>,
        ) -> Request<Body> {
            let mut frame = vec![u8::from(encoding != Encoding::Identity)];
            frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
            frame.extend_from_slice(&body);
            let mut r = Request::post(grpc::TRACE_EXPORT_PATH)
                .header("content-type", content_type.unwrap_or("application/grpc"));
            if encoding != Encoding::Identity {
                r = r.header("grpc-encoding", encoding.name());
            }
            r.body(Body::from(frame)).unwrap()
        }

        fn good_body(&self, rows: usize) -> Vec<u8> {
            trace_request(rows)
        }

        fn table(&self) -> &'static str {
            SPANS_TABLE
        }

        fn encodings(&self) -> &'static [Encoding] {
            &[Encoding::Gzip]
        }

        fn read(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> (Outcome, String) {
            let text = |h: &str| {
                headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            if status != 200 {
                return (
                    outcome_of_http(status),
                    String::from_utf8_lossy(body).into(),
                );
            }
            let message = text("grpc-message").replace("%20", " ");
            let outcome = match text("grpc-status").as_str() {
                "" | "0" => Outcome::Stored,
                "8" => Outcome::TooLarge,
                "12" => Outcome::Unsupported,
                "14" => Outcome::Retry,
                _ => Outcome::Rejected,
            };
            (outcome, message)
        }
    }

    #[tokio::test]
    async fn otlp_receivers_pass_the_compliance_suite() {
        run(&OtlpHttp(Format::Protobuf)).await;
        run(&OtlpHttp(Format::Json)).await;
        run(&OtlpGrpc).await;
    }
}
