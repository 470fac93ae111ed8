//! OTLP/HTTP: `POST /v1/traces`, protobuf or JSON, optionally gzip-compressed. Answers in the
//! request's content type.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;

use super::{encode_response_json, encode_response_protobuf, encode_status, Format, OtlpState};
use crate::compression::{decode_body_held, Encoding};
use crate::error::{IngestError, RETRY_AFTER_SECONDS};
use sightline_storage::Reservation;

pub const TRACES_PATH: &str = "/v1/traces";

pub fn router(state: Arc<OtlpState>) -> Router {
    Router::new()
        .route(TRACES_PATH, post(export_traces))
        .with_state(state)
}

fn content_format(headers: &HeaderMap) -> Result<Format, IngestError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(IngestError::UnsupportedContentType(raw.to_string())),
    }
}

async fn export_traces(
    State(state): State<Arc<OtlpState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let format = content_format(&headers);
    let reply_format = *format.as_ref().unwrap_or(&Format::Json);
    match handle(&state, &headers, format, body).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e, reply_format),
    }
}

async fn handle(
    state: &OtlpState,
    headers: &HeaderMap,
    format: Result<Format, IngestError>,
    body: Body,
) -> Result<Response, IngestError> {
    let limit = state.max_request_bytes;
    let admitted = admit(state, headers, format);
    let (format, encoding, reservation) = match admitted {
        Ok(a) => a,
        Err(e) => {
            // Refused before reading: read the body anyway (up to a bound), or a client still
            // sending never sees the answer and gets a broken pipe instead.
            discard(body, DISCARD_LIMIT).await;
            return Err(e);
        }
    };
    let raw = read_limited(body, limit).await?;
    // The reservation taken for the declared length now holds the body being decoded.
    let (body, held) = decode_body_held(raw, encoding, limit, reservation)?;
    let outcome = super::export_traces(state, body, format).await?;
    drop(held);
    let (bytes, content_type) = match format {
        Format::Protobuf => (encode_response_protobuf(&outcome), "application/x-protobuf"),
        Format::Json => (encode_response_json(&outcome), "application/json"),
    };
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

/// Checks what can be checked before the body is read: content type and encoding, declared
/// size, and room in the memory budget for the body.
fn admit(
    state: &OtlpState,
    headers: &HeaderMap,
    format: Result<Format, IngestError>,
) -> Result<(Format, Encoding, Reservation), IngestError> {
    let format = format?;
    let encoding = Encoding::parse(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
    let limit = state.max_request_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngestError::TooLarge {
            limit,
            decompressed: false,
        });
    }
    let reservation = state
        .sink
        .memory()
        .try_reserve(declared.unwrap_or(0))
        .ok_or(IngestError::Saturated("memory budget"))?;
    Ok((format, encoding, reservation))
}

/// How much of an oversized body is read and thrown away before answering 413: a client that is
/// still sending when the connection closes never sees the answer (it gets a broken pipe).
const DISCARD_LIMIT: usize = 1 << 30;

/// Reads the whole body, or fails with 413 once it passes `limit` (the rest is discarded).
pub(crate) async fn read_limited(
    mut body: Body,
    limit: usize,
) -> Result<bytes::Bytes, IngestError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| IngestError::Decode(format!("failed to read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                discard(body, DISCARD_LIMIT).await;
                return Err(IngestError::TooLarge {
                    limit,
                    decompressed: false,
                });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

async fn discard(mut body: Body, max: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > max {
            break;
        }
    }
}

fn error_response(e: &IngestError, format: Format) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = e.to_string();
    if status.is_server_error() {
        tracing::warn!(error = %message, "otlp/http request refused");
    } else {
        tracing::debug!(error = %message, "otlp/http request rejected");
    }
    let code = e.grpc_code() as u8;
    let (body, content_type) = match format {
        Format::Protobuf => (
            encode_status(code, &message, None),
            "application/x-protobuf",
        ),
        Format::Json => (
            serde_json::to_vec(&serde_json::json!({"code": code, "message": message}))
                .unwrap_or_default(),
            "application/json",
        ),
    };
    let mut resp = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    if e.retryable() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    resp
}
