//! Jaeger's classic query API (`/api/...`, mounted under `/jaeger`): what Grafana's Jaeger
//! datasource and Jaeger's own UI call. Answers are Jaeger's, as its query service gives them:
//! the `{data,total,limit,offset,errors}` envelope, and traces as Jaeger's OpenTelemetry
//! translation and its standard adjusters render them — the span kind, status, scope and trace
//! state as tags, resources as processes, events as logs, parents and links as references.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use sightline_storage::rollup::NodeKind;

use crate::catalog;
use crate::columns;
use crate::engine::{QueryEngine, SqlLimits};
use crate::error::QueryError;
use crate::params::{self, AttrFilter, Params};
use crate::rollups::{self, Window};
use crate::search::{self, TraceQuery};
use crate::trace::{self, AttrValue, SpanRecord};

/// Jaeger's defaults: 100 traces over the last two days; dependencies over the last day.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1500;
const DEFAULT_LOOKBACK_NANOS: i64 = 2 * 86_400_000_000_000;
const DEFAULT_DEPENDENCY_LOOKBACK_MS: i64 = 86_400_000;

/// Resource-level keys that Jaeger's `OTelTagAdjuster` moves from a span's tags to its process.
const PROCESS_KEYS: [&str; 5] = [
    "telemetry.sdk.language",
    "telemetry.sdk.name",
    "telemetry.sdk.version",
    "telemetry.distro.name",
    "telemetry.distro.version",
];

/// Integer tags that Jaeger's `IPTagAdjuster` renders as dotted IPv4 addresses.
const IP_KEYS: [&str; 2] = ["ip", "peer.ipv4"];

struct JaegerState {
    engine: QueryEngine,
    limits: SqlLimits,
}

pub fn router(engine: QueryEngine, limits: SqlLimits) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(traces))
        .route("/api/traces/{trace_id}", get(trace_by_id))
        .route("/api/dependencies", get(dependencies))
        .with_state(Arc::new(JaegerState { engine, limits }))
}

/// Jaeger's envelope. `total` is set for lists of names, as Jaeger sets it; traces leave it 0.
fn envelope(data: Value, total: usize, errors: Value) -> Value {
    json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors})
}

fn failed(e: QueryError) -> Response {
    let status = match e {
        QueryError::BadQuery(_) => StatusCode::BAD_REQUEST,
        QueryError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::Execution(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn error(status: StatusCode, msg: String) -> Response {
    let body = envelope(
        Value::Null,
        0,
        json!([{"code": status.as_u16(), "msg": msg}]),
    );
    (status, Json(body)).into_response()
}

async fn answer(
    state: &JaegerState,
    lookup: impl std::future::Future<Output = Result<Response, QueryError>>,
) -> Response {
    match tokio::time::timeout(state.limits.timeout, lookup).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => failed(e),
        Err(_) => failed(QueryError::Timeout(state.limits.timeout)),
    }
}

fn names(list: Vec<String>) -> Response {
    let total = list.len();
    Json(envelope(json!(list), total, Value::Null)).into_response()
}

async fn services(State(state): State<Arc<JaegerState>>) -> Response {
    let engine = state.engine.pinned();
    let lookup = async {
        let list = catalog::services(&engine, None)
            .await?
            .into_iter()
            .filter(|s| s.kind == NodeKind::Service.as_str())
            .map(|s| s.name)
            .collect();
        Ok(names(list))
    };
    answer(&state, lookup).await
}

/// Jaeger names an unspecified kind `""`.
fn jaeger_kind(kind: &str) -> &str {
    if kind == "unspecified" {
        ""
    } else {
        kind
    }
}

async fn service_operations(
    State(state): State<Arc<JaegerState>>,
    Path(service): Path<String>,
) -> Response {
    let engine = state.engine.pinned();
    let lookup = async {
        let unique: BTreeSet<String> = catalog::operations(&engine, &service, None)
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect();
        Ok(names(unique.into_iter().collect()))
    };
    answer(&state, lookup).await
}

async fn operations(State(state): State<Arc<JaegerState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    let asked = Params::checked(&pairs, &["service", "spanKind"]).and_then(|p| {
        let service = p.get("service").ok_or_else(service_required)?;
        Ok((service.to_string(), p.get("spanKind").map(str::to_string)))
    });
    let (service, kind) = match asked {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async {
        let list: Vec<Value> = catalog::operations(&engine, &service, None)
            .await?
            .into_iter()
            .filter(|o| {
                kind.as_deref()
                    .is_none_or(|k| jaeger_kind(o.span_kind) == k)
            })
            .map(|o| json!({"name": o.name, "spanKind": jaeger_kind(o.span_kind)}))
            .collect();
        let total = list.len();
        Ok(Json(envelope(json!(list), total, Value::Null)).into_response())
    };
    answer(&state, lookup).await
}

fn service_required() -> QueryError {
    QueryError::BadQuery("parameter 'service' is required".into())
}

/// Microseconds since the epoch, as Jaeger's `start` and `end` are.
fn micros(param: &str, v: &str) -> Result<i64, QueryError> {
    v.trim()
        .parse::<i64>()
        .map(|m| m.saturating_mul(1000))
        .map_err(|_| {
            QueryError::BadQuery(format!(
                "unable to parse param '{param}': {v:?} is not an integer"
            ))
        })
}

/// The tags a search asks for, from `tags` (a JSON map of strings) and `tag` (`key:value`,
/// repeatable), as conditions on the matching span. The tags Jaeger derives from a span's own
/// fields (`error`, `span.kind`, `otel.status_code`) read those fields.
fn tag_conditions(q: &mut TraceQuery, pairs: &[(String, String)]) -> Result<(), QueryError> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "tag" if !v.is_empty() => {
                let (key, value) = v.split_once(':').ok_or_else(|| {
                    QueryError::BadQuery(format!(
                        "malformed 'tag' parameter, expecting key:value, received: {v}"
                    ))
                })?;
                tags.push((key.to_string(), value.to_string()));
            }
            "tags" if !v.is_empty() => {
                let map: HashMap<String, String> = serde_json::from_str(v).map_err(|e| {
                    QueryError::BadQuery(format!(
                        "malformed 'tags' parameter, cannot unmarshal JSON: {e}"
                    ))
                })?;
                tags.extend(map);
            }
            _ => {}
        }
    }
    for (key, value) in tags {
        match key.as_str() {
            "error" => match value.as_str() {
                "true" => q.errors_only = true,
                "false" => q.no_errors = true,
                other => {
                    return Err(QueryError::BadQuery(format!(
                        "tag error: {other:?} is not true or false"
                    )))
                }
            },
            "span.kind" => {
                q.kind = Some(catalog::span_kind_number(&value).ok_or_else(|| {
                    QueryError::BadQuery(format!("tag span.kind: unknown kind {value:?}"))
                })?)
            }
            "otel.status_code" => {
                q.status = Some(match value.as_str() {
                    "OK" => 1,
                    "ERROR" => 2,
                    other => {
                        return Err(QueryError::BadQuery(format!(
                            "tag otel.status_code: {other:?} is not OK or ERROR"
                        )))
                    }
                })
            }
            _ => q.attributes.push(AttrFilter {
                key,
                op: "=",
                value,
            }),
        }
    }
    Ok(())
}

/// `GET /api/traces`: a search, or (with `traceID`) the traces asked for.
enum TracesRequest {
    Search(TraceQuery),
    Ids(Vec<[u8; 16]>),
}

fn traces_request(pairs: &[(String, String)]) -> Result<TracesRequest, QueryError> {
    let p = Params::checked(
        pairs,
        &[
            "service",
            "operation",
            "tag",
            "tags",
            "start",
            "end",
            "lookback",
            "limit",
            "minDuration",
            "maxDuration",
            "traceID",
            "raw",
            "prettyPrint",
        ],
    )?;
    let ids: Vec<[u8; 16]> = pairs
        .iter()
        .filter(|(k, v)| k == "traceID" && !v.is_empty())
        .map(|(_, v)| trace::parse_trace_id(v))
        .collect::<Result<_, _>>()?;
    let service = p.get("service");
    if ids.is_empty() && service.is_none() {
        return Err(service_required());
    }
    let duration = |k: &str| {
        p.get(k)
            .map(|v| params::parse_duration(k, v))
            .transpose()
            .map(|d| d.filter(|d| *d > 0))
    };
    let mut q = TraceQuery {
        service: service.map(str::to_string),
        operation: p.get("operation").map(str::to_string),
        min_duration: duration("minDuration")?,
        max_duration: duration("maxDuration")?,
        limit: params::parse_limit(p.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)?,
        ..Default::default()
    };
    if let (Some(min), Some(max)) = (q.min_duration, q.max_duration) {
        if max < min {
            return Err(QueryError::BadQuery(
                "'maxDuration' should be greater than 'minDuration'".into(),
            ));
        }
    }
    q.end = match p.get("end") {
        Some(v) => micros("end", v)?,
        None => params::now_unix_nano(),
    };
    q.start = match p.get("start") {
        Some(v) => micros("start", v)?,
        None => q.end - DEFAULT_LOOKBACK_NANOS,
    };
    tag_conditions(&mut q, pairs)?;
    if ids.is_empty() {
        Ok(TracesRequest::Search(q))
    } else {
        Ok(TracesRequest::Ids(ids))
    }
}

/// The traces of `ids` in Jaeger's shape, in the order of `ids`; those not found are left out.
async fn jaeger_traces(
    engine: &QueryEngine,
    ids: &[[u8; 16]],
) -> Result<Vec<([u8; 16], Value)>, QueryError> {
    let mut by_trace: HashMap<[u8; 16], Vec<SpanRecord>> = HashMap::new();
    for span in trace::records_of_traces(engine, ids).await? {
        by_trace.entry(span.trace_id).or_default().push(span);
    }
    Ok(ids
        .iter()
        .filter_map(|id| by_trace.remove(id).map(|spans| (*id, jaeger_trace(&spans))))
        .collect())
}

async fn traces(State(state): State<Arc<JaegerState>>, RawQuery(raw): RawQuery) -> Response {
    let request = match traces_request(&params::query_pairs(raw.as_deref())) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async {
        let (ids, report_missing) = match request {
            TracesRequest::Search(q) => (search::matching_traces(&engine, &q).await?, false),
            TracesRequest::Ids(ids) => (ids, true),
        };
        let found = jaeger_traces(&engine, &ids).await?;
        let errors: Vec<Value> = if report_missing {
            ids.iter()
                .filter(|id| !found.iter().any(|(f, _)| f == *id))
                .map(|id| json!({"msg": "trace not found", "traceID": trace_id_string(id)}))
                .collect()
        } else {
            Vec::new()
        };
        let data: Vec<Value> = found.into_iter().map(|(_, t)| t).collect();
        let errors = if errors.is_empty() {
            Value::Null
        } else {
            json!(errors)
        };
        Ok(Json(envelope(json!(data), 0, errors)).into_response())
    };
    answer(&state, lookup).await
}

async fn trace_by_id(
    State(state): State<Arc<JaegerState>>,
    Path(trace_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    // `start` and `end` are accepted (Jaeger's UI sends microseconds, Grafana milliseconds) and
    // checked, but not needed: a trace is found by its id alone.
    let checked = Params::checked(&pairs, &["start", "end", "raw", "prettyPrint"]).and_then(|p| {
        for k in ["start", "end"] {
            if let Some(v) = p.get(k) {
                micros(k, v)?;
            }
        }
        trace::parse_trace_id(&trace_id)
    });
    let id = match checked {
        Ok(id) => id,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async {
        Ok(match jaeger_traces(&engine, &[id]).await?.pop() {
            Some((_, t)) => Json(envelope(json!([t]), 0, Value::Null)).into_response(),
            None => error(StatusCode::NOT_FOUND, "trace not found".into()),
        })
    };
    answer(&state, lookup).await
}

/// `GET /api/dependencies?endTs=&lookback=` (milliseconds): calls between services from the
/// service-graph rollups, optionally only those of `service`.
async fn dependencies(State(state): State<Arc<JaegerState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    let asked = Params::checked(&pairs, &["endTs", "lookback", "service"]).and_then(|p| {
        let millis = |k: &str| {
            p.get(k)
                .map(|v| {
                    v.trim().parse::<i64>().map_err(|_| {
                        QueryError::BadQuery(format!(
                            "unable to parse param '{k}': {v:?} is not an integer"
                        ))
                    })
                })
                .transpose()
        };
        let end = millis("endTs")?.unwrap_or_else(|| params::now_unix_nano() / 1_000_000);
        let lookback = millis("lookback")?.unwrap_or(DEFAULT_DEPENDENCY_LOOKBACK_MS);
        Ok((
            Window::ending_at_millis(end, lookback),
            p.get("service").map(str::to_string),
        ))
    });
    let (window, service) = match asked {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async {
        let links: Vec<Value> = rollups::links(&engine, &window)
            .await?
            .into_iter()
            .filter(|((parent, child), _)| {
                service
                    .as_deref()
                    .is_none_or(|s| parent.as_str() == s || child.as_str() == s)
            })
            .map(|((parent, child), (calls, _))| {
                json!({"parent": parent, "child": child, "callCount": calls})
            })
            .collect();
        Ok(Json(envelope(json!(links), 0, Value::Null)).into_response())
    };
    answer(&state, lookup).await
}

/// A trace id as Jaeger writes it: 16 hex digits when the upper half is zero, else 32.
fn trace_id_string(id: &[u8; 16]) -> String {
    if id[..8] == [0; 8] {
        columns::hex(&id[8..])
    } else {
        columns::hex(id)
    }
}

/// JavaScript's largest exact integer: Jaeger writes larger ones as strings.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// One tag in Jaeger's JSON: `{key, type, value}`.
fn tag(key: &str, value: &AttrValue) -> Value {
    let (kind, value) = match value {
        AttrValue::Str(s) => ("string", json!(s)),
        AttrValue::Int(i) if IP_KEYS.contains(&key) => {
            let ip = std::net::Ipv4Addr::from(*i as u32);
            ("string", json!(ip.to_string()))
        }
        AttrValue::Int(i) if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => {
            ("int64", json!(i.to_string()))
        }
        AttrValue::Int(i) => ("int64", json!(i)),
        AttrValue::Double(d) => ("float64", AttrValue::Double(*d).to_json()),
        AttrValue::Bool(b) => ("bool", json!(b)),
        AttrValue::Bytes(b) => (
            "binary",
            json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
        AttrValue::Json(v) => ("string", json!(v.to_string())),
    };
    json!({"key": key, "type": kind, "value": value})
}

fn string_tag(key: &str, value: &str) -> Value {
    json!({"key": key, "type": "string", "value": value})
}

/// Tags sorted by key, as Jaeger's `SortTagsAndLogFields` leaves them.
fn sorted(mut tags: Vec<Value>) -> Vec<Value> {
    tags.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    tags
}

/// A span's process: its service and its resource (less `service.name`), with the SDK tags
/// Jaeger moves there.
fn process(span: &SpanRecord) -> Value {
    let tags = span
        .resource
        .iter()
        .filter(|(k, _)| k != "service.name")
        .chain(
            span.attributes
                .iter()
                .filter(|(k, _)| PROCESS_KEYS.contains(&k.as_str())),
        )
        .map(|(k, v)| tag(k, v))
        .collect();
    json!({"serviceName": span.service, "tags": sorted(tags)})
}

fn span_tags(span: &SpanRecord) -> Vec<Value> {
    let mut tags: Vec<Value> = span
        .attributes
        .iter()
        .filter(|(k, _)| !PROCESS_KEYS.contains(&k.as_str()))
        .map(|(k, v)| tag(k, v))
        .collect();
    if let Some(name) = &span.scope_name {
        tags.push(string_tag("otel.scope.name", name));
    }
    if let Some(version) = &span.scope_version {
        tags.push(string_tag("otel.scope.version", version));
    }
    if span.kind != 0 {
        tags.push(string_tag("span.kind", catalog::span_kind_name(span.kind)));
    }
    match span.status_code {
        1 => tags.push(string_tag("otel.status_code", "OK")),
        2 => {
            tags.push(string_tag("otel.status_code", "ERROR"));
            tags.push(json!({"key": "error", "type": "bool", "value": true}));
        }
        _ => {}
    }
    if let Some(message) = span.status_message.as_deref().filter(|m| !m.is_empty()) {
        tags.push(string_tag("otel.status_description", message));
    }
    if let Some(state) = &span.trace_state {
        tags.push(string_tag("w3c.tracestate", state));
    }
    sorted(tags)
}

/// Events as logs: the event's name as an `event` field, first, then its attributes by key.
fn logs(span: &SpanRecord) -> Vec<Value> {
    span.events
        .iter()
        .map(|e| {
            let named = trace::attribute(&e.attributes, "event").and_then(AttrValue::as_str);
            let mut fields: Vec<Value> = e
                .attributes
                .iter()
                .filter(|(k, _)| k != "event" || named.is_none())
                .map(|(k, v)| tag(k, v))
                .collect();
            fields = sorted(fields);
            match named {
                Some(name) => fields.insert(0, string_tag("event", name)),
                None if !e.name.is_empty() => fields.insert(0, string_tag("event", &e.name)),
                None => {}
            }
            json!({"timestamp": e.time_unix_nano / 1000, "fields": fields})
        })
        .collect()
}

/// The parent as `CHILD_OF`, links as `FOLLOWS_FROM` (or `CHILD_OF` when the link says
/// `opentracing.ref_type=child_of`); a link to the parent sets the parent's type. The parent
/// comes first; references without a trace id are dropped, as Jaeger's adjusters do.
fn references(span: &SpanRecord) -> Vec<Value> {
    let reference = |kind: &str, trace: &[u8; 16], span: &[u8; 8]| json!({"refType": kind, "traceID": trace_id_string(trace), "spanID": columns::hex(span)});
    let mut parent_kind = "CHILD_OF";
    let mut others = Vec::new();
    for link in &span.links {
        let kind = match trace::attribute(&link.attributes, "opentracing.ref_type")
            .and_then(AttrValue::as_str)
        {
            Some("child_of") => "CHILD_OF",
            _ => "FOLLOWS_FROM",
        };
        if link.trace_id == span.trace_id && Some(link.span_id) == span.parent_span_id {
            parent_kind = kind;
        } else if link.trace_id != [0; 16] {
            others.push((link.trace_id == span.trace_id, kind, link));
        }
    }
    let mut refs: Vec<Value> = span
        .parent_span_id
        .map(|p| reference(parent_kind, &span.trace_id, &p))
        .into_iter()
        .collect();
    if refs.is_empty() {
        // Without a parent, the first reference into the same trace (a CHILD_OF one first) leads.
        let lead = others
            .iter()
            .position(|(same, kind, _)| *same && *kind == "CHILD_OF")
            .or_else(|| others.iter().position(|(same, _, _)| *same));
        if let Some(i) = lead {
            others.swap(0, i);
        }
    }
    refs.extend(
        others
            .iter()
            .map(|(_, kind, l)| reference(kind, &l.trace_id, &l.span_id)),
    );
    refs
}

/// One trace in Jaeger's JSON: spans referring to processes `p1`, `p2`, ... numbered in the
/// order the spans first use them.
fn jaeger_trace(spans: &[SpanRecord]) -> Value {
    let mut processes: Vec<Value> = Vec::new();
    let mut rendered = Vec::with_capacity(spans.len());
    for span in spans {
        let p = process(span);
        let index = match processes.iter().position(|q| *q == p) {
            Some(i) => i,
            None => {
                processes.push(p);
                processes.len() - 1
            }
        };
        rendered.push(json!({
            "traceID": trace_id_string(&span.trace_id),
            "spanID": columns::hex(&span.span_id),
            "operationName": span.name,
            "references": references(span),
            "startTime": span.start_unix_nano / 1000,
            "duration": span.duration_nano / 1000,
            "tags": span_tags(span),
            "logs": logs(span),
            "processID": format!("p{}", index + 1),
            "warnings": null,
        }));
    }
    let processes: serde_json::Map<String, Value> = processes
        .into_iter()
        .enumerate()
        .map(|(i, p)| (format!("p{}", i + 1), p))
        .collect();
    json!({
        "traceID": spans.first().map(|s| trace_id_string(&s.trace_id)).unwrap_or_default(),
        "spans": rendered,
        "processes": processes,
        "warnings": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{EventRecord, LinkRecord};

    fn request(q: &str) -> Result<TracesRequest, QueryError> {
        traces_request(&params::query_pairs(Some(q)))
    }

    #[test]
    fn grafana_search_parameters() {
        let q = "end=1738368000000000&limit=10&maxDuration=5s&minDuration=1s&operation=test-operation&service=test-service&start=1735689600000000&tags=%7B%22error%22%3A%22true%22%7D";
        let Ok(TracesRequest::Search(q)) = request(q) else {
            panic!("a search")
        };
        assert_eq!(q.service.as_deref(), Some("test-service"));
        assert_eq!(q.operation.as_deref(), Some("test-operation"));
        assert_eq!(
            (q.min_duration, q.max_duration),
            (Some(1_000_000_000), Some(5_000_000_000))
        );
        assert_eq!(
            (q.start, q.end),
            (1_735_689_600_000_000_000, 1_738_368_000_000_000_000)
        );
        assert_eq!(q.limit, 10);
        assert!(q.errors_only);
        // Jaeger's UI sends empty values for what it leaves unset.
        let Ok(TracesRequest::Search(q)) =
            request("service=a&operation=&minDuration=&maxDuration=&lookback=1h&limit=20&tag=http.method:GET&tags=%7B%22span.kind%22%3A%22server%22%7D")
        else {
            panic!("a search")
        };
        assert_eq!((q.operation, q.min_duration, q.kind), (None, None, Some(2)));
        assert_eq!(q.attributes[0].key, "http.method");
        assert_eq!(q.attributes[0].value, "GET");
        for (bad, says) in [
            ("", "parameter 'service' is required"),
            ("service=a&minDuration=fast", "minDuration"),
            (
                "service=a&minDuration=2s&maxDuration=1s",
                "'maxDuration' should be greater",
            ),
            ("service=a&start=yesterday", "'start'"),
            ("service=a&tags=%7Bx", "malformed 'tags' parameter"),
            ("service=a&tag=novalue", "malformed 'tag' parameter"),
            (
                "service=a&tags=%7B%22error%22%3A%22maybe%22%7D",
                "tag error",
            ),
            ("service=a&traceID=xyz", "hex digits"),
            ("service=a&colour=red", "unknown parameter"),
        ] {
            let e = request(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(
            matches!(request("traceID=ab&traceID=cd"), Ok(TracesRequest::Ids(ids)) if ids.len() == 2)
        );
    }

    #[test]
    fn spans_render_as_jaeger_translates_and_adjusts_them() {
        let mut trace_id = [0u8; 16];
        trace_id[15] = 0xab;
        let span = SpanRecord {
            trace_id,
            span_id: [1; 8],
            parent_span_id: None,
            trace_state: Some("a=b".into()),
            service: "front".into(),
            name: "GET /".into(),
            kind: 2,
            start_unix_nano: 1_700_000_000_123_456_789,
            duration_nano: 5_000_999,
            status_code: 2,
            status_message: Some("boom".into()),
            scope_name: Some("lib".into()),
            scope_version: None,
            resource: vec![
                ("service.name".into(), AttrValue::Str("front".into())),
                ("host.name".into(), AttrValue::Str("h1".into())),
            ],
            attributes: vec![
                ("z".into(), AttrValue::Int(1 << 60)),
                ("b".into(), AttrValue::Bytes(vec![1, 2])),
                ("arr".into(), AttrValue::Json(json!(["x", 1]))),
                ("ip".into(), AttrValue::Int(16_909_060)),
                ("telemetry.sdk.name".into(), AttrValue::Str("otel".into())),
            ],
            events: vec![EventRecord {
                time_unix_nano: 1_700_000_000_124_000_000,
                name: "ev".into(),
                attributes: vec![
                    ("z".into(), AttrValue::Str("1".into())),
                    ("a".into(), AttrValue::Bool(true)),
                ],
            }],
            links: vec![LinkRecord {
                trace_id: [9; 16],
                span_id: [8; 8],
                trace_state: None,
                attributes: Vec::new(),
            }],
            load_test: false,
        };
        let t = jaeger_trace(&[span]);
        let s = &t["spans"][0];
        assert_eq!(t["traceID"], "00000000000000ab");
        assert_eq!(s["startTime"], 1_700_000_000_123_456i64);
        assert_eq!(s["duration"], 5000);
        let keys: Vec<&str> = s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "arr",
                "b",
                "error",
                "ip",
                "otel.scope.name",
                "otel.status_code",
                "otel.status_description",
                "span.kind",
                "w3c.tracestate",
                "z"
            ]
        );
        assert_eq!(
            s["tags"][0],
            json!({"key": "arr", "type": "string", "value": "[\"x\",1]"})
        );
        assert_eq!(
            s["tags"][1],
            json!({"key": "b", "type": "binary", "value": "AQI="})
        );
        assert_eq!(s["tags"][3]["value"], "1.2.3.4");
        assert_eq!(s["tags"][9]["value"], "1152921504606846976");
        assert_eq!(
            s["logs"][0]["fields"],
            json!([{"key": "event", "type": "string", "value": "ev"},
                   {"key": "a", "type": "bool", "value": true},
                   {"key": "z", "type": "string", "value": "1"}])
        );
        assert_eq!(
            s["references"],
            json!([{"refType": "FOLLOWS_FROM", "traceID": "09090909090909090909090909090909", "spanID": "0808080808080808"}])
        );
        assert_eq!(
            t["processes"]["p1"],
            json!({"serviceName": "front", "tags": [
                {"key": "host.name", "type": "string", "value": "h1"},
                {"key": "telemetry.sdk.name", "type": "string", "value": "otel"}]})
        );
    }
}
