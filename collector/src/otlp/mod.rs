//! OTLP receivers: traces and metrics over gRPC ([`grpc`]) and HTTP ([`http`]), protobuf and
//! JSON.

pub mod grpc;
pub mod http;
pub mod metrics;
pub mod prometheus_names;
pub mod traces;
pub mod traces_json;
pub mod traces_proto;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;
use sightline_storage::arrow::array::RecordBatch;
use sightline_storage::metrics::MetricBatchBuilder;
use sightline_storage::{Ingest, SpanBatchBuilder, DEFAULT_TENANT};

use crate::error::IngestError;
use crate::receiver::{self, HeldBody, Receiving};
use crate::wire::Writer;
use metrics::{DeltaState, OtlpMetricsConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

/// The OTLP signals received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

/// What the OTLP receivers share: the scaffold, and the metrics translation's settings and
/// running delta totals.
pub struct Otlp {
    pub receiving: Arc<Receiving>,
    pub metrics: OtlpMetricsConfig,
    deltas: DeltaState,
}

impl Otlp {
    pub fn new(receiving: Arc<Receiving>, metrics: OtlpMetricsConfig) -> Arc<Self> {
        Arc::new(Self {
            receiving,
            metrics,
            deltas: DeltaState::default(),
        })
    }
}

/// The result of an accepted export: how many items were refused, and why.
#[derive(Debug)]
pub struct ExportOutcome {
    pub signal: Signal,
    pub rejected: u64,
    pub message: Option<String>,
}

/// Decodes an export request and waits until what it holds that is valid is durable.
pub async fn export(
    otlp: &Otlp,
    body: HeldBody,
    format: Format,
    signal: Signal,
) -> Result<ExportOutcome, IngestError> {
    let receiving = &otlp.receiving;
    let (rejected, message) = match signal {
        Signal::Traces => {
            let (batch, rejections) = receiving
                .decode(body, move |bytes| decode(bytes, format))
                .await?;
            receiver::note_spans_refused(rejections.by_reason());
            if let Some(batch) = batch {
                receiving
                    .write(DEFAULT_TENANT, Ingest::Spans(batch))
                    .await?;
            }
            (rejections.total(), rejections.message())
        }
        Signal::Metrics => {
            let request = receiving
                .decode(body, move |bytes| decode_metrics(bytes, format))
                .await?;
            let mut builder =
                MetricBatchBuilder::new(receiving.sink.metrics_config(), receiver::now_millis());
            metrics::translate(&request, &otlp.metrics, &otlp.deltas, &mut builder);
            let report = receiving
                .write(DEFAULT_TENANT, Ingest::Metrics(Box::new(builder.finish())))
                .await?;
            (report.total(), report.message("data points"))
        }
    };
    if let Some(message) = &message {
        tracing::debug!(?signal, rejected, message, "partial success");
    }
    Ok(ExportOutcome {
        signal,
        rejected,
        message,
    })
}

fn decode_metrics(body: &[u8], format: Format) -> Result<ExportMetricsServiceRequest, IngestError> {
    match format {
        Format::Protobuf => ExportMetricsServiceRequest::decode(body)
            .map_err(|e| IngestError::Decode(format!("invalid OTLP protobuf: {e}"))),
        Format::Json => serde_json::from_slice(body)
            .map_err(|e| IngestError::Decode(format!("invalid OTLP/JSON: {e}"))),
    }
}

type Decoded = (Option<RecordBatch>, traces::Rejections);

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

/// `Export{Trace,Metrics}ServiceResponse` (the same fields), with `partial_success` only when
/// something was rejected.
pub fn encode_response_protobuf(outcome: &ExportOutcome) -> Vec<u8> {
    let mut w = Writer::default();
    if let Some(message) = &outcome.message {
        let mut partial = Writer::default();
        partial.varint_field(1, outcome.rejected);
        partial.bytes_field(2, message.as_bytes());
        w.bytes_field(1, &partial.buf);
    }
    w.buf
}

pub fn encode_response_json(outcome: &ExportOutcome) -> Vec<u8> {
    let key = match outcome.signal {
        Signal::Traces => "rejectedSpans",
        Signal::Metrics => "rejectedDataPoints",
    };
    match &outcome.message {
        Some(message) => serde_json::to_vec(&serde_json::json!({
            "partialSuccess": { key: outcome.rejected, "errorMessage": message }
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
    use crate::receiver::compliance::{http_post, run, Outcome, Subject};
    use axum::body::Body;
    use axum::http::{HeaderMap, Request};
    use sightline_storage::span_table::SPANS_TABLE;
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

    /// `ExportMetricsServiceRequest` with a gauge of `rows` points.
    pub fn metrics_request(rows: usize) -> ExportMetricsServiceRequest {
        use opentelemetry_proto::tonic::metrics::v1::{
            metric::Data, number_data_point::Value, Gauge, Metric, NumberDataPoint,
            ResourceMetrics, ScopeMetrics,
        };
        let now = receiver::now_millis() as u64 * 1_000_000;
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "queue.depth".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: (0..rows)
                                .map(|i| NumberDataPoint {
                                    time_unix_nano: now - i as u64 * 1_000_000,
                                    value: Some(Value::AsDouble(i as f64)),
                                    ..Default::default()
                                })
                                .collect(),
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn otlp(receiving: Arc<Receiving>) -> Arc<Otlp> {
        Otlp::new(receiving, OtlpMetricsConfig::default())
    }

    struct OtlpHttp(Format, Signal);

    impl Subject for OtlpHttp {
        fn name(&self) -> &'static str {
            match (self.0, self.1) {
                (Format::Protobuf, Signal::Traces) => "otlp/http protobuf traces",
                (Format::Json, Signal::Traces) => "otlp/http json traces",
                (Format::Protobuf, Signal::Metrics) => "otlp/http protobuf metrics",
                (Format::Json, Signal::Metrics) => "otlp/http json metrics",
            }
        }

        fn router(&self, receiving: Arc<Receiving>) -> axum::Router {
            http::router(otlp(receiving))
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
            let path = match self.1 {
                Signal::Traces => http::TRACES_PATH,
                Signal::Metrics => http::METRICS_PATH,
            };
            http_post(path, content_type.unwrap_or(default), body.len(), encoding)
                .body(Body::from(body))
                .unwrap()
        }

        fn good_body(&self, rows: usize) -> Vec<u8> {
            match (self.0, self.1) {
                (Format::Protobuf, Signal::Metrics) => metrics_request(rows).encode_to_vec(),
                (Format::Json, Signal::Metrics) => {
                    serde_json::to_vec(&metrics_request(rows)).unwrap()
                }
                (Format::Protobuf, Signal::Traces) => trace_request(rows),
                (Format::Json, Signal::Traces) => {
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
            table_of(self.1)
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
            (Outcome::of_status(status), message)
        }

        fn empty_body(&self) -> Outcome {
            match self.0 {
                Format::Protobuf => Outcome::Stored,
                Format::Json => Outcome::Rejected,
            }
        }
    }

    /// The message of a `google.rpc.Status`.
    fn status_message(body: &[u8]) -> String {
        let mut r = crate::wire::Reader::new(body);
        while let Ok(Some((field, v))) = r.next() {
            if field == 2 {
                return v.str("message").unwrap_or_default().to_string();
            }
        }
        String::new()
    }

    fn table_of(signal: Signal) -> &'static str {
        match signal {
            Signal::Traces => SPANS_TABLE,
            Signal::Metrics => sightline_storage::metrics::tables::SAMPLES_TABLE,
        }
    }

    struct OtlpGrpc(Signal);

    impl Subject for OtlpGrpc {
        fn name(&self) -> &'static str {
            match self.0 {
                Signal::Traces => "otlp/grpc traces",
                Signal::Metrics => "otlp/grpc metrics",
            }
        }

        fn router(&self, receiving: Arc<Receiving>) -> axum::Router {
            grpc::router(otlp(receiving))
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
            let path = match self.0 {
                Signal::Traces => grpc::TRACE_EXPORT_PATH,
                Signal::Metrics => grpc::METRICS_EXPORT_PATH,
            };
            let mut r = Request::post(path)
                .header("content-type", content_type.unwrap_or("application/grpc"));
            if encoding != Encoding::Identity {
                r = r.header("grpc-encoding", encoding.name());
            }
            r.body(Body::from(frame)).unwrap()
        }

        fn good_body(&self, rows: usize) -> Vec<u8> {
            match self.0 {
                Signal::Traces => trace_request(rows),
                Signal::Metrics => metrics_request(rows).encode_to_vec(),
            }
        }

        fn table(&self) -> &'static str {
            table_of(self.0)
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
                    Outcome::of_status(status),
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
        for signal in [Signal::Traces, Signal::Metrics] {
            run(&OtlpHttp(Format::Protobuf, signal)).await;
            run(&OtlpHttp(Format::Json, signal)).await;
            run(&OtlpGrpc(signal)).await;
        }
    }
}
