//! The SOFALookout gateway, on port 7200 as Lookout clients expect it (the client hard-codes the
//! port):
//!
//! - `GET /datas`: the client's probe — 200 `OK`; without an `app` header, 403 with
//!   `Wait-Minutes` and `Err: APP_NAME_NULL`, as Lookout's gateway answers.
//! - `POST /datas`: records of JSON joined by tabs (see [`record`]), `text/plain` in ISO-8859-1,
//!   or raw snappy with `Content-Encoding: snappy`; headers `app`, `Client-Ip`, `pri`.
//! - `POST /lookout/metrics/app/{app}/step/{step}/{k}/{v}…`: the same body, tags from the path.
//! - `PUT|POST /prom/metrics/job/{job}/app/{app}/step/{step}/{k}/{v}…`: Prometheus text
//!   exposition; 202.
//! - `POST /opentsdb/api/put`: OpenTSDB JSON, app, ip and step from headers; 202.
//!
//! Each field of a measurement is its own series, named `name.field` as Lookout's gateway
//! names them (Prometheus 3 takes such names as they are); `_type_` and `priority` tags are
//! dropped. Where a request states its step (the `/lookout/metrics`, `/prom/metrics` paths,
//! OpenTSDB's `step` header) it is kept as the `step` label, in milliseconds; `/datas` does not
//! carry it (a client may set any step per priority), so its series have none. A record's
//! `time` is the end of the step it counts. Saturated, the gateway answers 555 with an `Err`
//! header, which the client logs and drops that one batch for.

pub mod record;
mod text;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sightline_storage::metrics::{MetricBatchBuilder, MetricType};
use sightline_storage::{Ingest, WriteReport, DEFAULT_TENANT};

use crate::compression::Encoding;
use crate::error::IngestError;
use crate::receiver::{self, Receiving};

pub const DATAS_PATH: &str = "/datas";
/// Lookout clients time out after a second: a saturated gateway answers well before that.
const ADMISSION_WAIT: Duration = Duration::from_millis(400);
/// Minutes a client without an `app` is told to stay quiet, as Lookout's gateway tells it.
const WAIT_MINUTES_WITHOUT_APP: u32 = 5;
/// The status Lookout's gateway answers when it is rate limited.
const SATURATED: u16 = 555;

pub fn router(receiving: Arc<Receiving>) -> Router {
    let receiving = Arc::new(Receiving {
        sink: Arc::clone(&receiving.sink),
        max_request_bytes: receiving.max_request_bytes,
        admission_wait: ADMISSION_WAIT,
    });
    Router::new()
        .route(DATAS_PATH, get(probe).post(datas))
        .route("/lookout/metrics/{*rest}", post(lookout_path))
        .route("/prom/metrics/{*rest}", post(prom_text).put(prom_text))
        .route("/opentsdb/api/put", post(opentsdb))
        .with_state(receiving)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// 403 `APP_NAME_NULL`, as Lookout's gateway answers a client that did not name its app.
fn no_app() -> Response {
    let mut resp = (StatusCode::FORBIDDEN, "app header is missing").into_response();
    let h = resp.headers_mut();
    h.insert("wait-minutes", HeaderValue::from(WAIT_MINUTES_WITHOUT_APP));
    h.insert("err", HeaderValue::from_static("APP_NAME_NULL"));
    resp
}

async fn probe(headers: HeaderMap) -> Response {
    if header(&headers, "app").is_none() {
        return no_app();
    }
    (StatusCode::OK, "OK").into_response()
}

/// What an endpoint's body may be declared as. Each also takes
/// `application/x-www-form-urlencoded`, what `curl --data-binary` declares by default: the
/// Pushgateway and OpenTSDB read such a body as their format, so scripts written for them do.
struct BodyKind {
    types: &'static [&'static str],
    described: &'static str,
}

const CURL_DEFAULT: &str = "application/x-www-form-urlencoded";

const LOOKOUT_RECORDS: BodyKind = BodyKind {
    types: &[
        "text/plain",
        "application/octet-stream",
        "application/json",
        CURL_DEFAULT,
    ],
    described: "text/plain or application/octet-stream",
};

const EXPOSITION_TEXT: BodyKind = BodyKind {
    types: &[
        "text/plain",
        "application/openmetrics-text",
        "application/octet-stream",
        CURL_DEFAULT,
    ],
    described: "the Prometheus text format (text/plain)",
};

const OPENTSDB_JSON: BodyKind = BodyKind {
    types: &["application/json", "text/plain", CURL_DEFAULT],
    described: "application/json",
};

/// A request's body as text: snappy inflated, then UTF-8 or, failing that, ISO-8859-1 (what the
/// client declares for small batches).
async fn body_text(
    receiving: &Receiving,
    headers: &HeaderMap,
    body: Body,
    kind: &BodyKind,
) -> Result<String, IngestError> {
    let (essence, _) = receiver::media_type(headers);
    let admitted = if essence.is_empty() || kind.types.contains(&essence.as_str()) {
        receiver::content_encoding(headers, &[Encoding::Identity, Encoding::Snappy])
    } else {
        Err(IngestError::UnsupportedContentType(
            receiver::content_type_header(headers),
            kind.described,
        ))
    };
    let encoding = match admitted {
        Ok(e) => e,
        Err(e) => return Err(refused(body, e).await),
    };
    let held = receiving.read_body(headers, body, encoding).await?;
    Ok(match std::str::from_utf8(&held.bytes) {
        Ok(s) => s.to_string(),
        Err(_) => held.bytes.iter().map(|&b| char::from(b)).collect(),
    })
}

/// A request refused before its body was read: read it off the connection (so the client hears
/// the answer instead of a reset), then give back the error.
async fn refused(body: Body, e: IngestError) -> IngestError {
    receiver::discard(body).await;
    e
}

/// The records of a body into series, one per field. A record that cannot be read fails the
/// whole request, storing nothing of it: a cut or corrupted body can still hold records that
/// read well but are not what was sent.
fn records_into(
    builder: &mut MetricBatchBuilder,
    text: &str,
    extra: &BTreeMap<String, String>,
    step_ms: Option<u64>,
) -> Result<(), IngestError> {
    let step = step_ms.map(|s| s.to_string());
    let mut records = Vec::new();
    let parts: Vec<&str> = text
        .split('\t')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let parsed = record::parse_record(part).map_err(|problem| {
            IngestError::Decode(format!(
                "invalid Lookout record {} of {}: {problem}: {}",
                i + 1,
                parts.len(),
                snippet(part)
            ))
        })?;
        records.push(parsed);
    }
    for (r, kind) in records {
        let mut tags = r.tags.clone();
        for (k, v) in extra {
            tags.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if let Some(step) = &step {
            tags.insert("step".into(), step.clone());
        }
        for (field, value) in &r.fields {
            let name = format!("{}.{field}", r.name);
            let mut labels: Vec<(&str, &str)> =
                tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            labels.push(("__name__", &name));
            if let Some(s) = builder.series(&mut labels, 1) {
                builder.sample(s, r.time_ms, *value, None);
            }
            builder.metadata(
                &name,
                MetricType::Gauge,
                "",
                &format!("SOFALookout {kind} {}, field {field}", r.name),
            );
        }
    }
    Ok(())
}

fn snippet(s: &str) -> String {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Lookout's answers: 200 `OK` (or the protocol's success status) when all was stored; 400 with
/// `Err` naming what was not (the rest is stored).
fn reply(report: &WriteReport, ok: StatusCode) -> Response {
    match report.message("samples") {
        None => (ok, "OK").into_response(),
        Some(message) => {
            let mut resp = (StatusCode::BAD_REQUEST, message.clone()).into_response();
            if let Ok(v) = HeaderValue::from_str(&err_header(&message)) {
                resp.headers_mut().insert("err", v);
            }
            resp
        }
    }
}

/// A batch of the gateway's into the store, as the default tenant's.
async fn store(
    receiving: &Receiving,
    builder: MetricBatchBuilder,
) -> Result<WriteReport, IngestError> {
    receiving
        .write(DEFAULT_TENANT, Ingest::Metrics(Box::new(builder.finish())))
        .await
}

/// The reply to a request that was stored (`ok` if all of it was) or refused.
fn answer(result: Result<WriteReport, IngestError>, ok: StatusCode) -> Response {
    match result {
        Ok(report) => reply(&report, ok),
        Err(e) => error_response(&e),
    }
}

/// A header value: printable ASCII, not too long.
fn err_header(message: &str) -> String {
    message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(512)
        .collect()
}

fn error_response(e: &IngestError) -> Response {
    let status = e
        .retryable()
        .then(|| StatusCode::from_u16(SATURATED).unwrap_or(StatusCode::SERVICE_UNAVAILABLE));
    let mut resp = receiver::text_error(e, status, "lookout");
    if let Ok(v) = HeaderValue::from_str(&err_header(&e.to_string())) {
        resp.headers_mut().insert("err", v);
    }
    resp
}

async fn ingest_records(
    receiving: &Receiving,
    headers: &HeaderMap,
    body: Body,
    extra: BTreeMap<String, String>,
    step_ms: Option<u64>,
) -> Result<WriteReport, IngestError> {
    let text = body_text(receiving, headers, body, &LOOKOUT_RECORDS).await?;
    let mut builder =
        MetricBatchBuilder::new(receiving.sink.metrics_config(), receiver::now_millis());
    records_into(&mut builder, &text, &extra, step_ms)?;
    store(receiving, builder).await
}

async fn datas(
    State(receiving): State<Arc<Receiving>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(app) = header(&headers, "app").map(str::to_string) else {
        receiver::discard(body).await;
        return no_app();
    };
    let extra = BTreeMap::from([("app".to_string(), app)]);
    answer(
        ingest_records(&receiving, &headers, body, extra, None).await,
        StatusCode::OK,
    )
}

/// `app/{app}/step/{step}/{k}/{v}…` (and `job/{job}/…`) into tags, the step apart.
fn path_tags(rest: &str) -> Result<(BTreeMap<String, String>, Option<u64>), IngestError> {
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    if !parts.len().is_multiple_of(2) {
        return Err(IngestError::Decode(format!(
            "path /{rest} is not pairs of name/value"
        )));
    }
    let mut tags = BTreeMap::new();
    let mut step = None;
    for pair in parts.chunks_exact(2) {
        if pair[0] == "step" {
            step = Some(pair[1].parse::<u64>().map_err(|_| {
                IngestError::Decode(format!(
                    "step {:?} is not a number of milliseconds",
                    pair[1]
                ))
            })?);
        } else {
            tags.insert(pair[0].to_string(), pair[1].to_string());
        }
    }
    Ok((tags, step))
}

/// The tags and step a path names; the body is read off and the request refused when it names
/// none well.
async fn tags_of_path(
    rest: &str,
    body: Body,
) -> Result<(BTreeMap<String, String>, Option<u64>, Body), IngestError> {
    match path_tags(rest) {
        Ok((tags, step)) => Ok((tags, step, body)),
        Err(e) => Err(refused(body, e).await),
    }
}

async fn lookout_path(
    State(receiving): State<Arc<Receiving>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let (tags, step, body) = tags_of_path(&rest, body).await?;
        if !tags.contains_key("app") {
            let e = IngestError::Decode("the path names no app".into());
            return Err(refused(body, e).await);
        }
        ingest_records(&receiving, &headers, body, tags, step).await
    }
    .await;
    answer(result, StatusCode::OK)
}

async fn prom_text(
    State(receiving): State<Arc<Receiving>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let (tags, step, body) = tags_of_path(&rest, body).await?;
        let text = body_text(&receiving, &headers, body, &EXPOSITION_TEXT).await?;
        let now = receiver::now_millis();
        let mut builder = MetricBatchBuilder::new(receiving.sink.metrics_config(), now);
        let step = step.unwrap_or(30_000).to_string();
        text::exposition_into(&mut builder, &text, &tags, &step, now);
        store(&receiving, builder).await
    }
    .await;
    answer(result, StatusCode::ACCEPTED)
}

async fn opentsdb(
    State(receiving): State<Arc<Receiving>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let text = body_text(&receiving, &headers, body, &OPENTSDB_JSON).await?;
        let now = receiver::now_millis();
        let mut builder = MetricBatchBuilder::new(receiving.sink.metrics_config(), now);
        let mut extra = BTreeMap::new();
        for (h, label) in [("app", "app"), ("client-ip", "ip"), ("ip", "ip")] {
            if let Some(v) = header(&headers, h) {
                extra.entry(label.to_string()).or_insert(v.to_string());
            }
        }
        let step = header(&headers, "step").unwrap_or("30000").to_string();
        text::opentsdb_into(&mut builder, &text, &extra, &step)?;
        store(&receiving, builder).await
    }
    .await;
    answer(result, StatusCode::ACCEPTED)
}

#[cfg(test)]
mod compliance {
    use super::*;
    use crate::receiver::compliance::{http_post, run, Outcome, Subject};
    use axum::http::Request;
    use sightline_storage::metrics::tables;

    /// One of the gateway's endpoints, as a client sends to it.
    struct Endpoint {
        name: &'static str,
        path: &'static str,
        content_type: &'static str,
        good_body: fn(usize) -> String,
        framed: bool,
        empty_body: Outcome,
    }

    fn now_s() -> i64 {
        receiver::now_millis() / 1000
    }

    const DATAS: Endpoint = Endpoint {
        name: "lookout /datas",
        path: DATAS_PATH,
        content_type: "text/plain",
        good_body: |rows| {
            let records: Vec<String> = (0..rows)
                .map(|i| {
                    format!(
                        r#"{{"time":{},"tags":{{"app":"compliance","_type_":"g"}},"queue.size":{{"value":{i}.0}}}}"#,
                        (now_s() - i as i64) * 1000
                    )
                })
                .collect();
            records.join("\t")
        },
        framed: true,
        empty_body: Outcome::Stored,
    };

    const PROM_PUSH: Endpoint = Endpoint {
        name: "lookout /prom/metrics",
        path: "/prom/metrics/job/batch/app/compliance/step/60000",
        content_type: "text/plain; version=0.0.4",
        good_body: |rows| {
            (0..rows)
                .map(|i| format!("# TYPE jobs_total counter\njobs_total{{queue=\"q{i}\"}} {i}\n"))
                .collect()
        },
        framed: false,
        empty_body: Outcome::Stored,
    };

    const OPENTSDB: Endpoint = Endpoint {
        name: "lookout /opentsdb/api/put",
        path: "/opentsdb/api/put",
        content_type: "application/json",
        good_body: |rows| {
            let points: Vec<String> = (0..rows)
                .map(|i| {
                    format!(
                        r#"{{"metric":"sys.cpu","timestamp":{},"value":{i},"tags":{{"core":"{i}"}}}}"#,
                        now_s()
                    )
                })
                .collect();
            format!("[{}]", points.join(","))
        },
        framed: true,
        empty_body: Outcome::Rejected,
    };

    impl Subject for Endpoint {
        fn name(&self) -> &'static str {
            self.name
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
            let content_type = content_type.unwrap_or(self.content_type);
            http_post(self.path, content_type, body.len(), encoding)
                .header("app", "compliance")
                .header("pri", "NORMAL")
                .body(Body::from(body))
                .unwrap()
        }

        fn good_body(&self, rows: usize) -> Vec<u8> {
            (self.good_body)(rows).into_bytes()
        }

        fn table(&self) -> &'static str {
            tables::SAMPLES_TABLE
        }

        fn encodings(&self) -> &'static [Encoding] {
            &[Encoding::Snappy]
        }

        fn read(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> (Outcome, String) {
            let outcome = Outcome::of_status(status);
            let message = headers
                .get("err")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
            (outcome, message)
        }

        fn empty_body(&self) -> Outcome {
            self.empty_body.clone()
        }

        fn framed(&self) -> bool {
            self.framed
        }
    }

    #[tokio::test]
    async fn the_lookout_gateway_passes_the_compliance_suite() {
        run(&DATAS).await;
    }

    #[tokio::test]
    async fn the_prometheus_push_path_passes_the_compliance_suite() {
        run(&PROM_PUSH).await;
    }

    #[tokio::test]
    async fn the_opentsdb_path_passes_the_compliance_suite() {
        run(&OPENTSDB).await;
    }

    /// Each path's tags, step and names land as the module's doc says, from a body sent as
    /// `curl --data-binary` sends it.
    #[tokio::test]
    async fn each_path_stores_its_tags_and_step() {
        use tower::ServiceExt;
        let sink = crate::receiver::compliance::MemorySink::new(1 << 20);
        let app = router(Receiving::new(sink.clone()));
        let t = now_s();
        let sends = [
            (
                "/lookout/metrics/app/shop/step/60000/zone/gz",
                format!(
                    r#"{{"time":{},"tags":{{"_type_":"c","priority":"HIGH","host":"a"}},"http.requests":{{"count":3,"rate":0.05}}}}"#,
                    t * 1000
                ),
            ),
            (
                "/prom/metrics/job/batch/app/shop/step/60000",
                "# TYPE queue_depth gauge\nqueue_depth{queue=\"orders\"} 7\n".to_string(),
            ),
            (
                "/opentsdb/api/put",
                format!(
                    r#"{{"metric":"disk.used","timestamp":{t},"value":0.5,"tags":{{"mount":"/"}}}}"#
                ),
            ),
        ];
        for (path, body) in sends {
            let resp = app
                .clone()
                .oneshot(
                    Request::post(path)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("app", "shop")
                        .header("step", "60000")
                        .body(Body::from(body))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
        }
        let mut series: Vec<String> = sink
            .writes
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, ingest)| match ingest {
                Ingest::Metrics(m) => m.series_texts(),
                Ingest::Spans(_) | Ingest::SpanStats(_) => Vec::new(),
            })
            .collect();
        series.sort();
        assert_eq!(
            series,
            [
                r#"disk.used{app="shop", mount="/", step="60000"}"#,
                r#"http.requests.count{app="shop", host="a", step="60000", zone="gz"}"#,
                r#"http.requests.rate{app="shop", host="a", step="60000", zone="gz"}"#,
                r#"queue_depth{app="shop", job="batch", queue="orders", step="60000"}"#,
            ]
        );
    }

    #[tokio::test]
    async fn the_probe_answers_as_lookouts_gateway() {
        use tower::ServiceExt;
        let sink = crate::receiver::compliance::MemorySink::new(1 << 20);
        let app = router(Receiving::new(sink));
        let resp = app
            .clone()
            .oneshot(
                Request::get(DATAS_PATH)
                    .header("app", "shop")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let resp = app
            .oneshot(Request::get(DATAS_PATH).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()["err"], "APP_NAME_NULL");
        assert_eq!(resp.headers()["wait-minutes"], "5");
    }
}
