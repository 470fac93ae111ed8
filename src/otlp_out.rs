//! The OTLP the binary itself sends — the ingest benchmark and the demo shop: spans encoded as an
//! `ExportTraceServiceRequest`, and a gRPC client that sends already-encoded requests.

use bytes::{Buf, BufMut, Bytes};
use sightline_collector::wire::Writer;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    Int(i64),
}

#[derive(Debug, Clone)]
pub struct SpanSpec {
    pub service: &'static str,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
    /// The status message of a failed span.
    pub error: Option<String>,
    pub attributes: Vec<(String, Value)>,
}

/// An encoded request and the byte offsets of its ids and times, so that copies can be given
/// fresh ones without encoding again.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub spans: usize,
    pub trace_id_at: Vec<usize>,
    pub span_id_at: Vec<usize>,
    pub time_at: Vec<usize>,
}

fn put_kv(w: &mut Writer, field: u32, key: &str, value: &Value) {
    let mut any = Writer::default();
    match value {
        Value::Str(s) => any.bytes_field(1, s.as_bytes()),
        Value::Int(i) => any.varint_field(3, *i as u64),
    }
    let mut kv = Writer::default();
    kv.bytes_field(1, key.as_bytes());
    kv.bytes_field(2, &any.buf);
    w.bytes_field(field, &kv.buf);
}

/// Encodes `spans` as one request with a ResourceSpans per service (in order of first
/// appearance); every resource gets `service.name` and `resource`.
pub fn encode(spans: &[SpanSpec], resource: &[(&str, &str)], scope_name: &str) -> Encoded {
    let mut t = Encoded {
        bytes: Vec::new(),
        spans: spans.len(),
        trace_id_at: Vec::new(),
        span_id_at: Vec::new(),
        time_at: Vec::new(),
    };
    let mut services: Vec<&'static str> = Vec::new();
    for s in spans {
        if !services.contains(&s.service) {
            services.push(s.service);
        }
    }
    let mut request = Vec::new();
    for service in services {
        let mut res = Writer::default();
        put_kv(&mut res, 1, "service.name", &Value::Str(service.into()));
        for (k, v) in resource {
            put_kv(&mut res, 1, k, &Value::Str((*v).into()));
        }
        // Spans are encoded separately and their field offsets recorded relative to the span;
        // they are made absolute once the enclosing lengths are known.
        let mut encoded_spans = Vec::new();
        for s in spans.iter().filter(|s| s.service == service) {
            let mut w = Writer::default();
            let mut marks = (Vec::new(), Vec::new(), Vec::new());
            w.bytes_field(1, &s.trace_id);
            marks.0.push(w.buf.len() - 16);
            w.bytes_field(2, &s.span_id);
            marks.1.push(w.buf.len() - 8);
            if let Some(p) = s.parent {
                w.bytes_field(4, &p);
                marks.1.push(w.buf.len() - 8);
            }
            w.bytes_field(5, s.name.as_bytes());
            w.varint_field(6, s.kind as u64);
            w.buf.push((7 << 3) | 1);
            w.buf.extend_from_slice(&s.start.to_le_bytes());
            marks.2.push(w.buf.len() - 8);
            w.buf.push((8 << 3) | 1);
            w.buf.extend_from_slice(&s.end.to_le_bytes());
            marks.2.push(w.buf.len() - 8);
            for (k, v) in &s.attributes {
                put_kv(&mut w, 9, k, v);
            }
            if let Some(message) = &s.error {
                let mut st = Writer::default();
                st.bytes_field(2, message.as_bytes());
                st.varint_field(3, 2);
                w.bytes_field(15, &st.buf);
            }
            encoded_spans.push((w.buf, marks));
        }
        let mut scope = Writer::default();
        scope.bytes_field(1, scope_name.as_bytes());
        let mut scope_spans = Writer::default();
        scope_spans.bytes_field(1, &scope.buf);
        let mut span_marks = Vec::new();
        for (buf, marks) in &encoded_spans {
            scope_spans.bytes_field(2, buf);
            span_marks.push((scope_spans.buf.len() - buf.len(), marks));
        }
        let mut rs = Writer::default();
        rs.bytes_field(1, &res.buf);
        rs.bytes_field(2, &scope_spans.buf);
        let scope_spans_at = rs.buf.len() - scope_spans.buf.len();
        let mut outer = Writer::default();
        outer.bytes_field(1, &rs.buf);
        let rs_at = request.len() + outer.buf.len() - rs.buf.len();
        request.extend_from_slice(&outer.buf);
        for (span_at, (tr, sp, tm)) in span_marks {
            let base = rs_at + scope_spans_at + span_at;
            t.trace_id_at.extend(tr.iter().map(|p| base + p));
            t.span_id_at.extend(sp.iter().map(|p| base + p));
            t.time_at.extend(tm.iter().map(|p| base + p));
        }
    }
    t.bytes = request;
    t
}

/// Passes request bytes through untouched: the requests are encoded already.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Sends encoded `ExportTraceServiceRequest`s over OTLP/gRPC.
#[derive(Clone)]
pub struct TraceExporter {
    grpc: tonic::client::Grpc<Channel>,
}

impl TraceExporter {
    pub fn new(channel: Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    pub async fn export(&mut self, request: Bytes) -> Result<(), tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        self.grpc
            .unary(tonic::Request::new(request), path, RawCodec)
            .await
            .map(|_| ())
    }
}
