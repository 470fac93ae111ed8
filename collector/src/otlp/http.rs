//! OTLP/HTTP: `POST /v1/traces` and `POST /v1/metrics`, protobuf or JSON, optionally
//! gzip-compressed. Answers in the request's content type.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::{encode_response_json, encode_response_protobuf, encode_status, Format, Otlp, Signal};
use crate::compression::Encoding;
use crate::error::IngestError;
use crate::receiver;

pub const TRACES_PATH: &str = "/v1/traces";
pub const METRICS_PATH: &str = "/v1/metrics";
const CONTENT_TYPES: &str = "application/x-protobuf or application/json";
const ENCODINGS: [Encoding; 2] = [Encoding::Identity, Encoding::Gzip];

pub fn router(otlp: Arc<Otlp>) -> Router {
    Router::new()
        .route(
            TRACES_PATH,
            post(|s: State<Arc<Otlp>>, h: HeaderMap, b: Body| export(s, h, b, Signal::Traces)),
        )
        .route(
            METRICS_PATH,
            post(|s: State<Arc<Otlp>>, h: HeaderMap, b: Body| export(s, h, b, Signal::Metrics)),
        )
        .with_state(otlp)
}

/// The request's encoding of OTLP, from its content type.
pub fn content_format(headers: &HeaderMap) -> Result<Format, IngestError> {
    match receiver::media_type(headers).0.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(IngestError::UnsupportedContentType(
            receiver::content_type_header(headers),
            CONTENT_TYPES,
        )),
    }
}

async fn export(
    State(otlp): State<Arc<Otlp>>,
    headers: HeaderMap,
    body: Body,
    signal: Signal,
) -> Response {
    let receiving = &otlp.receiving;
    let format = content_format(&headers);
    let reply_format = *format.as_ref().unwrap_or(&Format::Json);
    let result = async {
        let admitted =
            format.and_then(|f| Ok((f, receiver::content_encoding(&headers, &ENCODINGS)?)));
        let (format, encoding) = match admitted {
            Ok(a) => a,
            Err(e) => {
                receiver::discard(body).await;
                return Err(e);
            }
        };
        let body = receiving.read_body(&headers, body, encoding).await?;
        let outcome = super::export(&otlp, body, format, signal).await?;
        Ok((format, outcome))
    }
    .await;
    match result {
        Ok((Format::Protobuf, outcome)) => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            encode_response_protobuf(&outcome),
        )
            .into_response(),
        Ok((Format::Json, outcome)) => (
            [(header::CONTENT_TYPE, "application/json")],
            encode_response_json(&outcome),
        )
            .into_response(),
        Err(e) => error_response(&e, reply_format),
    }
}

/// An OTLP/HTTP error: `google.rpc.Status` in the request's format, with the HTTP status of the
/// error and `Retry-After` when the client should retry.
pub fn error_response(e: &IngestError, format: Format) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = e.to_string();
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
    receiver::finish_error(
        e,
        (status, [(header::CONTENT_TYPE, content_type)], body).into_response(),
        "otlp/http",
    )
}
