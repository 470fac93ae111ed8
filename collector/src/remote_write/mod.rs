//! Prometheus remote write 1.0 and 2.0: `POST /prometheus/api/v1/write`, snappy (block format)
//! protobuf. The content type says the version: `application/x-protobuf` (or with
//! `proto=prometheus.WriteRequest`) is 1.0, `proto=io.prometheus.write.v2.Request` is 2.0.
//!
//! Answers as senders understand them: 204 with `X-Prometheus-Remote-Write-{Samples,Histograms,
//! Exemplars}-Written`; 400 for bad data (a sender drops it and does not retry; what could be
//! stored was); 413 too large; 415 for another content type or encoding; 503 with
//! `Retry-After` when saturated (a sender retries).

pub mod decode;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use sightline_storage::metrics::tables;
use sightline_storage::{Ingest, WriteReport, DEFAULT_TENANT};

use crate::compression::Encoding;
use crate::error::IngestError;
use crate::receiver::{self, Receiving};
use decode::Version;

pub const WRITE_PATH: &str = "/prometheus/api/v1/write";
const CONTENT_TYPES: &str = "application/x-protobuf (proto=prometheus.WriteRequest or proto=io.prometheus.write.v2.Request)";

pub fn router(receiving: Arc<Receiving>) -> Router {
    Router::new()
        .route(WRITE_PATH, post(write))
        .with_state(receiving)
}

/// The protocol version a request's content type names.
fn version(headers: &HeaderMap) -> Result<Version, IngestError> {
    let (essence, params) = receiver::media_type(headers);
    let proto = params
        .iter()
        .find(|(k, _)| k == "proto")
        .map(|(_, v)| v.as_str());
    match (essence.as_str(), proto) {
        ("application/x-protobuf", None | Some("prometheus.WriteRequest")) => Ok(Version::V1),
        ("application/x-protobuf", Some("io.prometheus.write.v2.Request")) => Ok(Version::V2),
        _ => Err(IngestError::UnsupportedContentType(
            receiver::content_type_header(headers),
            CONTENT_TYPES,
        )),
    }
}

/// Remote write is always snappy; a sender that leaves the header out means snappy too.
fn encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    if headers.get(header::CONTENT_ENCODING).is_none() {
        return Ok(Encoding::Snappy);
    }
    receiver::content_encoding(headers, &[Encoding::Snappy])
}

/// What was written, for the response headers.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    samples: u64,
    histograms: u64,
    exemplars: u64,
}

async fn write(
    State(receiving): State<Arc<Receiving>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let admitted = version(&headers).and_then(|v| Ok((v, encoding(&headers)?)));
        let (version, encoding) = match admitted {
            Ok(a) => a,
            Err(e) => {
                receiver::discard(body).await;
                return Err(e);
            }
        };
        let body = receiving.read_body(&headers, body, encoding).await?;
        let config = receiving.sink.metrics_config().clone();
        let now = receiver::now_millis();
        let metrics = receiving
            .decode(body, move |b| {
                decode::decode(b, version, &config, now)
                    .map_err(|e| IngestError::Decode(format!("invalid remote write protobuf: {e}")))
            })
            .await?;
        let report = receiving
            .write(DEFAULT_TENANT, Ingest::Metrics(Box::new(metrics)))
            .await?;
        Ok((version, report))
    }
    .await;
    match result {
        Ok((version, report)) => reply(&report, version),
        Err(e) => error_response(&e),
    }
}

fn written(report: &WriteReport) -> Written {
    Written {
        samples: report.rows(tables::SAMPLES_TABLE),
        histograms: report.rows(tables::HISTOGRAMS_TABLE),
        exemplars: report.rows(tables::EXEMPLARS_TABLE),
    }
}

fn with_written(mut resp: Response, w: Written) -> Response {
    let h = resp.headers_mut();
    for (name, n) in [
        ("x-prometheus-remote-write-samples-written", w.samples),
        ("x-prometheus-remote-write-histograms-written", w.histograms),
        ("x-prometheus-remote-write-exemplars-written", w.exemplars),
    ] {
        h.insert(name, HeaderValue::from(n));
    }
    resp
}

/// 204 when everything was stored; 400 naming what was refused (the rest is stored, and a
/// sender must not send it again). Only 2.0 says how much was written: a 1.0 sender does not
/// read it, and 2.0 senders take its absence on a 1.0 request as "not confirmed".
fn reply(report: &WriteReport, version: Version) -> Response {
    let resp = match report.message("samples") {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(message) => {
            tracing::debug!(message, "remote write partly refused");
            (StatusCode::BAD_REQUEST, message).into_response()
        }
    };
    match version {
        Version::V1 => resp,
        Version::V2 => with_written(resp, written(report)),
    }
}

fn error_response(e: &IngestError) -> Response {
    receiver::text_error(e, None, "remote write")
}

#[cfg(test)]
mod compliance {
    use super::*;
    use crate::receiver::compliance::{http_post, run, Outcome, Subject};
    use axum::http::Request;

    struct RemoteWrite(Version);

    impl Subject for RemoteWrite {
        fn name(&self) -> &'static str {
            match self.0 {
                Version::V1 => "remote write 1.0",
                Version::V2 => "remote write 2.0",
            }
        }

        fn router(&self, receiving: Arc<Receiving>) -> Router {
            router(receiving)
        }

        fn request(
            &self,
            body: Vec<u8>,
            encoding: Encoding,
            content_type: Option<&str>,
        ) -> Request<Body> {
            let default = match self.0 {
                Version::V1 => "application/x-protobuf",
                Version::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            };
            // Remote write always compresses: the suite's "identity" body is sent as snappy.
            let (body, encoding) = match encoding {
                Encoding::Identity => (
                    snap::raw::Encoder::new().compress_vec(&body).unwrap(),
                    Encoding::Snappy,
                ),
                e => (body, e),
            };
            http_post(
                WRITE_PATH,
                content_type.unwrap_or(default),
                body.len(),
                encoding,
            )
            .body(Body::from(body))
            .unwrap()
        }

        fn good_body(&self, rows: usize) -> Vec<u8> {
            let now = receiver::now_millis();
            match self.0 {
                Version::V1 => decode::encode::write_request_v1(&[(
                    vec![("__name__", "up"), ("job", "compliance")],
                    (0..rows).map(|i| (i as f64, now - i as i64)).collect(),
                )]),
                Version::V2 => v2_request(rows, now),
            }
        }

        fn table(&self) -> &'static str {
            tables::SAMPLES_TABLE
        }

        fn encodings(&self) -> &'static [Encoding] {
            // Snappy is how every request here travels; the bombs and bad snappy come from it.
            &[Encoding::Snappy]
        }

        fn read(&self, status: u16, _headers: &HeaderMap, body: &[u8]) -> (Outcome, String) {
            let outcome = Outcome::of_status(status);
            (outcome, String::from_utf8_lossy(body).into_owned())
        }
    }

    /// A 2.0 request of one series with `rows` samples.
    fn v2_request(rows: usize, now: i64) -> Vec<u8> {
        use crate::wire::Writer;
        let mut req = Writer::default();
        for s in ["", "__name__", "up", "job", "compliance"] {
            req.bytes_field(4, s.as_bytes());
        }
        let mut ts = Writer::default();
        let mut refs = Writer::default();
        for r in [1u64, 2, 3, 4] {
            refs.varint(r);
        }
        ts.bytes_field(1, &refs.buf);
        for i in 0..rows {
            let mut s = Writer::default();
            s.double_field(1, i as f64);
            s.varint_field(2, (now - i as i64) as u64);
            ts.bytes_field(2, &s.buf);
        }
        req.bytes_field(5, &ts.buf);
        req.buf
    }

    #[tokio::test]
    async fn remote_write_passes_the_compliance_suite() {
        run(&RemoteWrite(Version::V1)).await;
        run(&RemoteWrite(Version::V2)).await;
    }
}
