//! OTLP/gRPC, served by hand over HTTP/2 so that size limits, gzip bombs and backpressure are
//! ours to answer: the unary methods `TraceService/Export` and `MetricsService/Export`.
//!
//! A gRPC unary call is an HTTP/2 POST whose body is one length-prefixed message
//! (`compressed: u8 | length: u32 BE | message`); the status travels in trailers, or, for an
//! error before any message, in the headers of a body-less response (Trailers-Only).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;

use super::{encode_response_protobuf, encode_status, Format, Otlp, Signal};
use crate::compression::{decode_body_held, Encoding};
use crate::error::{GrpcCode, IngestError, RETRY_AFTER_SECONDS};
use crate::receiver::HeldBody;

pub const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
pub const METRICS_EXPORT_PATH: &str =
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const FRAME_HEADER: usize = 5;

pub fn router(state: Arc<Otlp>) -> Router {
    Router::new()
        .route(
            TRACE_EXPORT_PATH,
            post(|s: State<Arc<Otlp>>, h: HeaderMap, b: Body| export(s, h, b, Signal::Traces)),
        )
        .route(
            METRICS_EXPORT_PATH,
            post(|s: State<Arc<Otlp>>, h: HeaderMap, b: Body| export(s, h, b, Signal::Metrics)),
        )
        .fallback(unimplemented)
        .with_state(state)
}

async fn unimplemented() -> Response<Body> {
    trailers_only(GrpcCode::Unimplemented, "method not implemented", false)
}

async fn export(
    State(state): State<Arc<Otlp>>,
    headers: HeaderMap,
    body: Body,
    signal: Signal,
) -> Response<Body> {
    let is_grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc {
        let mut resp = Response::new(Body::from("content type must be application/grpc"));
        *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return resp;
    }
    match handle(&state, &headers, body, signal).await {
        Ok(message) => ok_response(message),
        Err(e) => {
            crate::receiver::note_refusal(&e, "otlp/grpc");
            trailers_only(e.grpc_code(), &e.to_string(), e.retryable())
        }
    }
}

async fn handle(
    otlp: &Otlp,
    headers: &HeaderMap,
    body: Body,
    signal: Signal,
) -> Result<Bytes, IngestError> {
    let state = &otlp.receiving;
    let limit = state.max_request_bytes;
    let frame_limit = limit + FRAME_HEADER;
    // A gRPC body has no declared length: its reservation grows as it is read.
    let held = state.reserve(0)?;
    let (raw, held) = state
        .read_limited(body, frame_limit, held)
        .await
        .map_err(|e| match e {
            IngestError::TooLarge { decompressed, .. } => IngestError::TooLarge {
                limit,
                decompressed,
            },
            other => other,
        })?;
    if raw.len() < FRAME_HEADER {
        return Err(IngestError::Decode(format!(
            "truncated gRPC frame: {} bytes, a frame header is 5",
            raw.len()
        )));
    }
    let compressed = raw[0];
    let declared = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
    let message = raw.slice(FRAME_HEADER..);
    if declared != message.len() {
        return Err(IngestError::Decode(format!(
            "gRPC frame declares {declared} bytes but carries {}",
            message.len()
        )));
    }
    let encoding = match compressed {
        0 => Encoding::Identity,
        1 => {
            let name = headers.get("grpc-encoding").and_then(|v| v.to_str().ok());
            match Encoding::parse(name, &[Encoding::Gzip])? {
                Encoding::Identity => {
                    return Err(IngestError::Decode(
                        "compressed message without grpc-encoding".into(),
                    ))
                }
                e => e,
            }
        }
        f => return Err(IngestError::Decode(format!("invalid gRPC frame flag {f}"))),
    };
    let (bytes, held) = decode_body_held(message, encoding, limit, held)?;
    let outcome = super::export(otlp, HeldBody::new(bytes, held), Format::Protobuf, signal).await?;
    Ok(Bytes::from(encode_response_protobuf(&outcome)))
}

fn grpc_headers() -> Response<()> {
    let mut resp = Response::new(());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
    resp
}

fn ok_response(message: Bytes) -> Response<Body> {
    let mut frame = BytesMut::with_capacity(FRAME_HEADER + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let (parts, ()) = grpc_headers().into_parts();
    Response::from_parts(
        parts,
        Body::new(UnaryBody {
            data: Some(frame.freeze()),
            trailers: Some(trailers),
        }),
    )
}

/// An error answered in the headers alone, as gRPC's Trailers-Only response.
fn trailers_only(code: GrpcCode, message: &str, retry: bool) -> Response<Body> {
    let (mut parts, ()) = grpc_headers().into_parts();
    let h = &mut parts.headers;
    h.insert("grpc-status", HeaderValue::from(u16::from(code as u8)));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    if retry {
        let status = encode_status(code as u8, message, Some(RETRY_AFTER_SECONDS));
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status);
        if let Ok(v) = HeaderValue::from_str(&b64) {
            h.insert("grpc-status-details-bin", v);
        }
    }
    Response::from_parts(parts, Body::empty())
}

/// grpc-message is percent-encoded outside printable ASCII.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One data frame, then the trailers.
struct UnaryBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("50% done\n"), "50%25 done%0A");
    }
}
