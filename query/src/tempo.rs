//! The part of Tempo's HTTP API that Grafana's Tempo datasource calls (`/api/...`, mounted under
//! `/tempo`): `echo`, `status/buildinfo`, trace by id (`v2/traces/{id}` as `TraceByIDResponse`
//! protobuf or JSON, and the older `traces/{id}`), TraceQL search, and tag names and values.
//! Search results carry exactly the fields of Tempo's `TraceSearchMetadata`, as Grafana rejects
//! others. Streaming (gRPC on the same port) is not served: the datasource's streaming setting
//! stays off, as it is by default.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use datafusion::arrow::array::{Array, BooleanArray, Float64Array};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{json, Value};

use crate::columns;
use crate::engine::{QueryEngine, SqlLimits};
use crate::error::QueryError;
use crate::params::{self, Params};
use crate::rollups;
use crate::search::{self, literal, TraceQuery};
use crate::trace::{self, AttrValue, SpanRecord};
use crate::traceql::{self, Evaluator, Field, TraceView};

/// The Tempo release whose API this follows, reported by `status/buildinfo`.
const TEMPO_VERSION: &str = "2.8.0";
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;
const DEFAULT_SPANS_PER_SPANSET: usize = 3;
/// Candidate traces read per wanted result: TraceQL is checked exactly on their spans.
const CANDIDATES_PER_RESULT: usize = 10;
const MIN_CANDIDATES: usize = 200;
const DEFAULT_LOOKBACK_NANOS: i64 = 3_600_000_000_000;
const MAX_TAG_VALUES: usize = 1000;

/// `tempopb.TraceByIDResponse`: the trace (wire-identical to OTLP's `TracesData`) and metrics.
#[derive(Clone, PartialEq, Message)]
pub struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    pub trace: Option<TempoTrace>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<TraceByIdMetrics>,
}

/// `tempopb.Trace`.
#[derive(Clone, PartialEq, Message)]
pub struct TempoTrace {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TraceByIdMetrics {}

struct TempoState {
    engine: QueryEngine,
    limits: SqlLimits,
}

pub fn router(engine: QueryEngine, limits: SqlLimits) -> Router {
    Router::new()
        .route("/api/echo", get(|| async { "echo" }))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/v2/traces/{trace_id}", get(trace_v2))
        .route("/api/traces/{trace_id}", get(trace_v1))
        .route("/api/search", get(search_traces))
        .route("/api/search/tags", get(tags_v1))
        .route("/api/v2/search/tags", get(tags_v2))
        .route("/api/search/tag/{tag}/values", get(tag_values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tag_values_v2))
        .route("/api/metrics/query_range", get(metrics_range))
        .route("/api/metrics/query", get(metrics_instant))
        .with_state(Arc::new(TempoState { engine, limits }))
}

/// Tempo answers errors as plain text.
fn failed(e: QueryError) -> Response {
    let status = match e {
        QueryError::BadQuery(_) => StatusCode::BAD_REQUEST,
        QueryError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::Execution(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, e.to_string()).into_response()
}

async fn answer(
    state: &TempoState,
    lookup: impl std::future::Future<Output = Result<Response, QueryError>>,
) -> Response {
    match tokio::time::timeout(state.limits.timeout, lookup).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => failed(e),
        Err(_) => failed(QueryError::Timeout(state.limits.timeout)),
    }
}

/// No `features` field: Grafana reads the version only.
async fn buildinfo() -> Response {
    Json(json!({
        "version": TEMPO_VERSION,
        "revision": concat!("sightline-", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

fn any_value(v: &AttrValue) -> AnyValue {
    AnyValue {
        value: Some(match v {
            AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
            AttrValue::Int(i) => any_value::Value::IntValue(*i),
            AttrValue::Double(d) => any_value::Value::DoubleValue(*d),
            AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
            AttrValue::Bytes(b) => any_value::Value::BytesValue(b.clone()),
            AttrValue::Json(j) => return json_any_value(j),
        }),
    }
}

/// Arrays and key-value lists, stored as JSON, back as OTLP values.
fn json_any_value(v: &Value) -> AnyValue {
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
        }),
        Value::String(s) => Some(any_value::Value::StringValue(s.clone())),
        Value::Array(items) => Some(any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().map(json_any_value).collect(),
        })),
        Value::Object(map) => Some(any_value::Value::KvlistValue(KeyValueList {
            values: map
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(json_any_value(v)),
                    ..Default::default()
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

fn key_values(attributes: &trace::Attributes) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(any_value(v)),
            ..Default::default()
        })
        .collect()
}

fn otlp_span(s: &SpanRecord) -> Span {
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone().unwrap_or_default(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: s.name.clone(),
        kind: i32::from(s.kind),
        start_time_unix_nano: s.start_unix_nano as u64,
        end_time_unix_nano: (s.start_unix_nano + s.duration_nano) as u64,
        attributes: key_values(&s.attributes),
        events: s
            .events
            .iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano as u64,
                name: e.name.clone(),
                attributes: key_values(&e.attributes),
                ..Default::default()
            })
            .collect(),
        links: s
            .links
            .iter()
            .map(|l| Link {
                trace_id: l.trace_id.to_vec(),
                span_id: l.span_id.to_vec(),
                trace_state: l.trace_state.clone().unwrap_or_default(),
                attributes: key_values(&l.attributes),
                ..Default::default()
            })
            .collect(),
        status: (s.status_code != 0 || s.status_message.is_some()).then(|| Status {
            code: i32::from(s.status_code),
            message: s.status_message.clone().unwrap_or_default(),
        }),
        ..Default::default()
    }
}

/// A trace's spans as OTLP: one `ResourceSpans` per distinct resource, one `ScopeSpans` per
/// scope within it, in the order the spans first use them.
pub fn resource_spans(spans: &[SpanRecord]) -> Vec<ResourceSpans> {
    let mut out: Vec<(String, ResourceSpans)> = Vec::new();
    for s in spans {
        let key = format!("{}\u{0}{:?}", s.service, s.resource);
        let at = match out.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                out.push((
                    key,
                    ResourceSpans {
                        resource: Some(Resource {
                            attributes: key_values(&s.resource),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ));
                out.len() - 1
            }
        };
        let resource = &mut out[at].1;
        let (name, version) = (
            s.scope_name.clone().unwrap_or_default(),
            s.scope_version.clone().unwrap_or_default(),
        );
        let scope = match resource.scope_spans.iter().position(|ss| {
            ss.scope
                .as_ref()
                .is_some_and(|sc| sc.name == name && sc.version == version)
        }) {
            Some(i) => i,
            None => {
                resource.scope_spans.push(ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name,
                        version,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                resource.scope_spans.len() - 1
            }
        };
        resource.scope_spans[scope].spans.push(otlp_span(s));
    }
    out.into_iter().map(|(_, r)| r).collect()
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/protobuf") || v.contains("application/x-protobuf"))
}

fn protobuf(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], body).into_response()
}

/// The spans of one trace, or a 404 as Tempo answers it.
async fn one_trace(
    state: &TempoState,
    trace_id: &str,
    raw: Option<&str>,
) -> Result<Result<Vec<SpanRecord>, Response>, QueryError> {
    let pairs = params::query_pairs(raw);
    // `start` and `end` (seconds) narrow where Tempo looks; a trace is found by its id alone.
    let p = Params::checked(&pairs, &["start", "end"])?;
    for k in ["start", "end"] {
        if let Some(v) = p.get(k) {
            params::parse_time(k, v)?;
        }
    }
    let id = trace::parse_trace_id(trace_id)?;
    let engine = state.engine.pinned();
    let spans = trace::records_of_traces(&engine, &[id]).await?;
    if spans.is_empty() {
        return Ok(Err(
            (StatusCode::NOT_FOUND, "trace not found").into_response()
        ));
    }
    Ok(Ok(spans))
}

async fn trace_v2(
    State(state): State<Arc<TempoState>>,
    Path(trace_id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let lookup = async {
        Ok(match one_trace(&state, &trace_id, raw.as_deref()).await? {
            Err(not_found) => not_found,
            Ok(spans) => {
                let batches = resource_spans(&spans);
                if wants_protobuf(&headers) {
                    protobuf(
                        TraceByIdResponse {
                            trace: Some(TempoTrace {
                                resource_spans: batches,
                            }),
                            metrics: Some(TraceByIdMetrics {}),
                        }
                        .encode_to_vec(),
                    )
                } else {
                    Json(json!({"trace": {"resourceSpans": batches}, "metrics": {}}))
                        .into_response()
                }
            }
        })
    };
    answer(&state, lookup).await
}

async fn trace_v1(
    State(state): State<Arc<TempoState>>,
    Path(trace_id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let lookup = async {
        Ok(match one_trace(&state, &trace_id, raw.as_deref()).await? {
            Err(not_found) => not_found,
            Ok(spans) => {
                let batches = resource_spans(&spans);
                if wants_protobuf(&headers) {
                    protobuf(
                        TempoTrace {
                            resource_spans: batches,
                        }
                        .encode_to_vec(),
                    )
                } else {
                    Json(json!({ "batches": batches })).into_response()
                }
            }
        })
    };
    answer(&state, lookup).await
}

/// A search as Tempo takes it: TraceQL in `q`, or the older `tags` (logfmt), `minDuration` and
/// `maxDuration` (of the whole trace).
#[derive(Debug)]
struct SearchRequest {
    query: traceql::Query,
    /// Whole-trace duration bounds of the older form, nanoseconds.
    min_trace: Option<i64>,
    max_trace: Option<i64>,
    limit: usize,
    spans_per_spanset: usize,
    start: i64,
    end: i64,
}

/// `key=value key2="a value"`: Tempo's `tags` parameter.
fn logfmt(s: &str) -> Result<Vec<(String, String)>, QueryError> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| QueryError::BadQuery(format!("tags: {rest:?} is not key=value")))?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| QueryError::BadQuery("tags: a quoted value is not closed".into()))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_at(after.find(' ').unwrap_or(after.len()))
        };
        out.push((key.trim().to_string(), value.to_string()));
        rest = after.trim_start();
    }
    Ok(out)
}

fn seconds(param: &str, v: &str) -> Result<i64, QueryError> {
    v.trim()
        .parse::<i64>()
        .map(|s| s.saturating_mul(1_000_000_000))
        .map_err(|_| QueryError::BadQuery(format!("parameter {param}: {v:?} is not unix seconds")))
}

impl SearchRequest {
    fn from_params(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let p = Params::checked(
            pairs,
            &[
                "q",
                "tags",
                "minDuration",
                "maxDuration",
                "limit",
                "spss",
                "start",
                "end",
            ],
        )?;
        let query = match (p.get("q"), p.get("tags")) {
            (Some(_), Some(_)) => {
                return Err(QueryError::BadQuery("give q or tags, not both".into()))
            }
            (Some(q), None) => traceql::parse(q)?,
            (None, tags) => {
                // Each tag on some span of the trace: one spanset filter per tag.
                let mut q = String::new();
                for (k, v) in logfmt(tags.unwrap_or(""))? {
                    if !q.is_empty() {
                        q.push_str(" && ");
                    }
                    let field = match k.as_str() {
                        "name" | "status" | "kind" => k.clone(),
                        _ => format!(".{k}"),
                    };
                    let value = if matches!(k.as_str(), "status" | "kind") {
                        v.clone()
                    } else {
                        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                    };
                    q.push_str(&format!("{{ {field} = {value} }}"));
                }
                traceql::parse(if q.is_empty() { "{ }" } else { &q })?
            }
        };
        let duration = |k: &str| p.get(k).map(|v| params::parse_duration(k, v)).transpose();
        let end = match p.get("end") {
            Some(v) => seconds("end", v)?,
            None => params::now_unix_nano(),
        };
        let start = match p.get("start") {
            Some(v) => seconds("start", v)?,
            None => end - DEFAULT_LOOKBACK_NANOS,
        };
        if start > end {
            return Err(QueryError::BadQuery("parameter start: after end".into()));
        }
        Ok(SearchRequest {
            query,
            min_trace: duration("minDuration")?,
            max_trace: duration("maxDuration")?,
            limit: params::parse_limit(p.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)?,
            spans_per_spanset: match p.get("spss") {
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        QueryError::BadQuery(format!("parameter spss: {v:?} is not 1 to 1000"))
                    })?,
                None => DEFAULT_SPANS_PER_SPANSET,
            },
            start,
            end,
        })
    }
}

fn otlp_json_value(v: &traceql::Value) -> Value {
    match v {
        traceql::Value::Str(s) => json!({"stringValue": s}),
        traceql::Value::Int(i) => json!({"intValue": i.to_string()}),
        traceql::Value::Float(f) => json!({"doubleValue": f}),
        traceql::Value::Bool(b) => json!({"boolValue": b}),
        traceql::Value::Duration(d) => json!({"stringValue": format!("{}ns", d)}),
        traceql::Value::Status(s) => {
            json!({"stringValue": match s { 1 => "ok", 2 => "error", _ => "unset" }})
        }
        traceql::Value::Kind(k) => json!({"stringValue": crate::catalog::span_kind_name(*k)}),
    }
}

/// A trace id as Tempo writes it in search results: hex without leading zeros.
fn tempo_trace_id(id: &[u8; 16]) -> String {
    let hex = columns::hex(id);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.to_string()
    }
}

/// One trace's `TraceSearchMetadata`, exactly Tempo's fields (zero values left out, 64-bit
/// numbers as strings, as its JSON has them).
fn metadata(
    t: &TraceView<'_>,
    m: &traceql::Matched,
    shown: &[Field],
    spans_per_spanset: usize,
    evaluator: &Evaluator,
) -> Value {
    let spans = t.spans;
    let mut out = serde_json::Map::new();
    out.insert("traceID".into(), json!(tempo_trace_id(&spans[0].trace_id)));
    match t.root {
        Some(r) if spans[r].parent_span_id.is_none() => {
            out.insert("rootServiceName".into(), json!(spans[r].service));
            out.insert("rootTraceName".into(), json!(spans[r].name));
        }
        _ => {
            out.insert(
                "rootServiceName".into(),
                json!("<root span not yet received>"),
            );
        }
    }
    out.insert(
        "startTimeUnixNano".into(),
        json!(t.start_unix_nano.to_string()),
    );
    let ms = t.duration_nano / 1_000_000;
    if ms > 0 {
        out.insert("durationMs".into(), json!(ms));
    }
    let sets: Vec<Value> = m
        .spansets
        .iter()
        .map(|set| {
            let mut chosen = set.spans.clone();
            chosen.sort_by_key(|&i| spans[i].start_unix_nano);
            let rendered: Vec<Value> = chosen
                .iter()
                .take(spans_per_spanset)
                .map(|&i| {
                    let s = &spans[i];
                    let mut span = serde_json::Map::new();
                    span.insert("spanID".into(), json!(columns::hex(&s.span_id)));
                    if !s.name.is_empty() {
                        span.insert("name".into(), json!(s.name));
                    }
                    span.insert(
                        "startTimeUnixNano".into(),
                        json!(s.start_unix_nano.to_string()),
                    );
                    span.insert("durationNanos".into(), json!(s.duration_nano.to_string()));
                    let attributes: Vec<Value> = shown
                        .iter()
                        .filter_map(|f| {
                            let v = evaluator.values(t, i, f).into_iter().next()?;
                            Some(json!({"key": f.label(), "value": otlp_json_value(&v)}))
                        })
                        .collect();
                    if !attributes.is_empty() {
                        span.insert("attributes".into(), json!(attributes));
                    }
                    Value::Object(span)
                })
                .collect();
            let mut spanset = serde_json::Map::new();
            spanset.insert("spans".into(), json!(rendered));
            spanset.insert("matched".into(), json!(set.spans.len()));
            if !set.by.is_empty() {
                let by: Vec<Value> = set
                    .by
                    .iter()
                    .map(|(k, v)| json!({"key": k, "value": otlp_json_value(v)}))
                    .collect();
                spanset.insert("attributes".into(), json!(by));
            }
            Value::Object(spanset)
        })
        .collect();
    if let Some(first) = sets.first() {
        out.insert("spanSet".into(), first.clone());
    }
    out.insert("spanSets".into(), json!(sets));
    Value::Object(out)
}

/// The fields shown on the spans of results: those the conditions read (less the ones every
/// span has as a field of its own), and what `select()` asks for.
fn shown_fields(q: &traceql::Query, selected: &[Field]) -> Vec<Field> {
    let mut out: Vec<Field> = traceql::condition_fields(q)
        .into_iter()
        .filter(|f| {
            !matches!(
                f,
                Field::Name
                    | Field::Duration
                    | Field::TraceDuration
                    | Field::RootName
                    | Field::RootServiceName
            )
        })
        .collect();
    for f in selected {
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    out
}

async fn run_search(engine: &QueryEngine, r: &SearchRequest) -> Result<Value, QueryError> {
    let mut evaluator = Evaluator::new();
    let mut found: Vec<(i64, Value)> = Vec::new();
    let mut inspected: HashSet<[u8; 16]> = HashSet::new();
    // First as many candidates as results are wanted: enough when the scan's conditions are the
    // whole query, as they mostly are, and then no more spans are read than the native search
    // reads. Only if some of them do not match, ten times as many (skipping those seen).
    for limit in [
        r.limit,
        (r.limit * CANDIDATES_PER_RESULT).max(MIN_CANDIDATES),
    ] {
        let mut candidates = TraceQuery {
            start: r.start,
            end: r.end,
            limit,
            ..Default::default()
        };
        traceql::pushdown(&r.query, &mut candidates);
        let ids = search::matching_traces(engine, &candidates).await?;
        let new: Vec<[u8; 16]> = ids
            .iter()
            .filter(|id| inspected.insert(**id))
            .copied()
            .collect();
        let mut by_trace: HashMap<[u8; 16], Vec<SpanRecord>> = HashMap::new();
        for span in trace::records_of_traces(engine, &new).await? {
            by_trace.entry(span.trace_id).or_default().push(span);
        }
        for id in &new {
            if found.len() == r.limit {
                break;
            }
            let Some(spans) = by_trace.get(id) else {
                continue;
            };
            let view = TraceView::new(spans);
            if r.min_trace.is_some_and(|d| view.duration_nano < d)
                || r.max_trace.is_some_and(|d| view.duration_nano > d)
            {
                continue;
            }
            let matched = evaluator.run(&r.query, &view);
            if matched.spansets.is_empty() {
                continue;
            }
            let shown = shown_fields(&r.query, &matched.selected);
            found.push((
                view.start_unix_nano,
                metadata(&view, &matched, &shown, r.spans_per_spanset, &evaluator),
            ));
        }
        if found.len() == r.limit || ids.len() < limit {
            break;
        }
    }
    let inspected = inspected.len();
    found.sort_by_key(|(start, _)| std::cmp::Reverse(*start));
    let traces: Vec<Value> = found.into_iter().map(|(_, v)| v).collect();
    Ok(json!({
        "traces": traces,
        "metrics": {"inspectedTraces": inspected, "completedJobs": 1, "totalJobs": 1},
    }))
}

async fn search_traces(State(state): State<Arc<TempoState>>, RawQuery(raw): RawQuery) -> Response {
    let request = match SearchRequest::from_params(&params::query_pairs(raw.as_deref())) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async { Ok(Json(run_search(&engine, &request).await?).into_response()) };
    answer(&state, lookup).await
}

/// A metrics time as Tempo takes it: unix seconds (up to 10 digits, or with a fraction),
/// nanoseconds (more digits), or RFC 3339.
fn metrics_time(param: &str, v: &str) -> Result<i64, QueryError> {
    match v.trim().parse::<i64>() {
        Ok(n) if v.trim().trim_start_matches('-').len() > 10 => Ok(n),
        _ => params::parse_time(param, v),
    }
}

/// A metrics query's parameters: `q`, `start`/`end` (or `since`, a duration back from now;
/// default the last hour), `step` (seconds or a duration), `load_test`.
struct MetricsRequest {
    query: traceql::MetricsQuery,
    start: i64,
    end: i64,
    step: Option<i64>,
    load_test: bool,
}

impl MetricsRequest {
    fn from_params(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let p = Params::checked(
            pairs,
            &[
                "q",
                "start",
                "end",
                "since",
                "step",
                "exemplars",
                "load_test",
            ],
        )?;
        let q = p.get("q").ok_or_else(|| {
            QueryError::BadQuery("parameter q: a TraceQL metrics query is needed".into())
        })?;
        let end = match p.get("end") {
            Some(v) => metrics_time("end", v)?,
            None => params::now_unix_nano(),
        };
        let start = match (p.get("start"), p.get("since")) {
            (Some(v), _) => metrics_time("start", v)?,
            (None, Some(since)) => end - params::parse_duration("since", since)?,
            (None, None) => end - DEFAULT_LOOKBACK_NANOS,
        };
        let step = p
            .get("step")
            .map(|v| match v.trim().parse::<f64>() {
                Ok(secs) if secs.is_finite() => Ok((secs * 1e9) as i64),
                _ => params::parse_duration("step", v),
            })
            .transpose()?;
        Ok(MetricsRequest {
            query: traceql::parse_metrics(q)?,
            start,
            end,
            step,
            load_test: rollups::parse_load_test(p.get("load_test"))?,
        })
    }
}

fn metric_labels(labels: &[(String, traceql::Value)]) -> Value {
    labels
        .iter()
        .map(|(k, v)| json!({"key": k, "value": otlp_json_value(v)}))
        .collect()
}

/// `QueryRangeResponse` as Tempo's JSON has it: per series its labels and a sample per step
/// (`timestampMs` as a string), from the rollups.
async fn metrics_range(State(state): State<Arc<TempoState>>, RawQuery(raw): RawQuery) -> Response {
    run_metrics(&state, raw.as_deref(), false).await
}

/// `QueryInstantResponse`: one value per series over the whole range.
async fn metrics_instant(
    State(state): State<Arc<TempoState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    run_metrics(&state, raw.as_deref(), true).await
}

async fn run_metrics(state: &TempoState, raw: Option<&str>, instant: bool) -> Response {
    let request = match MetricsRequest::from_params(&params::query_pairs(raw)) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async {
        let steps = if instant {
            traceql::metrics::Steps::whole(request.start, request.end)?
        } else {
            traceql::metrics::Steps::new(request.start, request.end, request.step)?
        };
        let series =
            traceql::metrics::query_range(&engine, &request.query, steps, request.load_test)
                .await?;
        let series: Vec<Value> = series
            .iter()
            .filter_map(|s| {
                let labels = metric_labels(&s.labels);
                if instant {
                    let (_, value) = s.samples.first()?;
                    return Some(json!({"labels": labels, "value": value}));
                }
                let samples: Vec<Value> = s
                    .samples
                    .iter()
                    .map(|(t, v)| json!({"timestampMs": t.to_string(), "value": v}))
                    .collect();
                Some(json!({"labels": labels, "samples": samples}))
            })
            .collect();
        Ok(Json(json!({"series": series, "metrics": {}})).into_response())
    };
    answer(state, lookup).await
}

/// The window tag lookups read: `start` and `end` in seconds, default the last hour.
fn tag_window(p: &Params<'_>) -> Result<(i64, i64), QueryError> {
    let end = match p.get("end") {
        Some(v) => seconds("end", v)?,
        None => params::now_unix_nano(),
    };
    let start = match p.get("start") {
        Some(v) => seconds("start", v)?,
        None => end - DEFAULT_LOOKBACK_NANOS,
    };
    Ok((start, end))
}

const INTRINSICS: [&str; 7] = [
    "duration",
    "event:name",
    "kind",
    "name",
    "rootName",
    "rootServiceName",
    "status",
];

/// Distinct attribute keys of spans (`attributes`) or resources (`resource_attributes`).
async fn keys(
    engine: &QueryEngine,
    column: &str,
    window: (i64, i64),
) -> Result<BTreeSet<String>, QueryError> {
    let sql = format!(
        "SELECT DISTINCT k FROM (SELECT unnest(map_keys({column})) AS k FROM spans \
         WHERE start_time >= to_timestamp_nanos({}) AND start_time <= to_timestamp_nanos({}))",
        window.0, window.1
    );
    let mut out = BTreeSet::new();
    for b in engine.context().sql(&sql).await?.collect().await? {
        let keys = columns::strings(&b, "k")?;
        out.extend(
            (0..b.num_rows())
                .filter(|&r| !keys.is_null(r))
                .map(|r| keys.value(r).to_string()),
        );
    }
    Ok(out)
}

async fn tags_v2(State(state): State<Arc<TempoState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    let asked = Params::checked(
        &pairs,
        &["scope", "start", "end", "limit", "q", "maxStaleValues"],
    )
    .and_then(|p| Ok((tag_window(&p)?, p.get("scope").map(str::to_string))));
    let (window, scope) = match asked {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    if let Some(s) = scope
        .as_deref()
        .filter(|s| !["span", "resource", "intrinsic", "all"].contains(s))
    {
        return failed(QueryError::BadQuery(format!(
            "scope {s:?} is not span, resource, intrinsic or all"
        )));
    }
    let engine = state.engine.pinned();
    let lookup = async move {
        let wanted = |s: &str| scope.as_deref().is_none_or(|w| w == "all" || w == s);
        let mut scopes = Vec::new();
        if wanted("span") {
            scopes
                .push(json!({"name": "span", "tags": keys(&engine, "attributes", window).await?}));
        }
        if wanted("resource") {
            scopes.push(json!({"name": "resource", "tags": keys(&engine, "resource_attributes", window).await?}));
        }
        if wanted("intrinsic") {
            scopes.push(json!({"name": "intrinsic", "tags": INTRINSICS}));
        }
        Ok(Json(json!({ "scopes": scopes })).into_response())
    };
    answer(&state, lookup).await
}

async fn tags_v1(State(state): State<Arc<TempoState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    let window = match Params::checked(&pairs, &["start", "end", "limit", "scope"])
        .and_then(|p| tag_window(&p))
    {
        Ok(w) => w,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async move {
        let mut names = keys(&engine, "attributes", window).await?;
        names.extend(keys(&engine, "resource_attributes", window).await?);
        Ok(Json(json!({ "tagNames": names })).into_response())
    };
    answer(&state, lookup).await
}

/// A tag as Tempo's tag-values endpoints name it: `resource.service.name`, `span.http.method`,
/// `.region`, or an intrinsic (`name`, `status`, `kind`).
fn tag_field(tag: &str) -> Result<Field, QueryError> {
    let probe = traceql::parse(&format!("{{ {tag} != nil }}"))
        .map_err(|_| QueryError::BadQuery(format!("{tag:?} is not a tag TraceQL knows")))?;
    match probe.spansets {
        traceql::parse::Spansets::Filter(traceql::parse::Cond::Cmp(f, _, _)) => Ok(f),
        _ => Err(QueryError::BadQuery(format!("{tag:?} is not a tag"))),
    }
}

/// Distinct values of a field over the spans meeting `q`'s pushable conditions.
async fn tag_values(
    engine: &QueryEngine,
    field: &Field,
    q: Option<&str>,
    window: (i64, i64),
) -> Result<Vec<Value>, QueryError> {
    let mut conditions = TraceQuery {
        start: window.0,
        end: window.1,
        ..Default::default()
    };
    if let Some(q) = q.filter(|q| !q.trim().is_empty()) {
        // Grafana sends the filter typed so far, which may be incomplete: use it when it parses.
        if let Ok(parsed) = traceql::parse(q) {
            traceql::pushdown(&parsed, &mut conditions);
        }
    }
    let filter = search::span_conditions(&conditions).join(" AND ");
    let typed = |t: &str, v: Value| json!({"type": t, "value": v});
    let values = |select: String| {
        format!("SELECT DISTINCT {select} FROM spans WHERE {filter} LIMIT {MAX_TAG_VALUES}")
    };
    let (sql, kind) = match field {
        Field::Name => (values("CAST(span_name AS VARCHAR) AS v".into()), "string"),
        Field::Attribute(traceql::parse::Scope::Resource, k) if k == "service.name" => (
            values("CAST(service_name AS VARCHAR) AS v".into()),
            "string",
        ),
        Field::Status => {
            return Ok(["ok", "error", "unset"]
                .map(|s| typed("keyword", json!(s)))
                .to_vec())
        }
        Field::Kind => {
            return Ok([
                "unspecified",
                "internal",
                "server",
                "client",
                "producer",
                "consumer",
            ]
            .map(|s| typed("keyword", json!(s)))
            .to_vec())
        }
        Field::Attribute(scope, k) => {
            let column = match scope {
                traceql::parse::Scope::Resource => "resource_attributes",
                _ => "attributes",
            };
            let key = literal(k);
            (
                values(format!(
                    "{column}[{key}]['str'] AS s, {column}[{key}]['int'] AS i, \
                     {column}[{key}]['double'] AS d, {column}[{key}]['bool'] AS b"
                )),
                "typed",
            )
        }
        other => {
            return Err(QueryError::BadQuery(format!(
                "values of {} are not listed",
                other.label()
            )))
        }
    };
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for b in engine.context().sql(&sql).await?.collect().await? {
        if kind == "string" {
            let v = columns::strings(&b, "v")?;
            for r in 0..b.num_rows() {
                out.insert(
                    format!("s{}", v.value(r)),
                    typed("string", json!(v.value(r))),
                );
            }
            continue;
        }
        let s = columns::strings(&b, "s")?;
        let i = columns::ints(&b, "i")?;
        let d = columns::typed::<Float64Array>(&b, "d")?;
        let bo = columns::typed::<BooleanArray>(&b, "b")?;
        for r in 0..b.num_rows() {
            let (key, v) = if !s.is_null(r) {
                (
                    format!("s{}", s.value(r)),
                    typed("string", json!(s.value(r))),
                )
            } else if !i.is_null(r) {
                (
                    format!("i{}", i.value(r)),
                    typed("int", json!(i.value(r).to_string())),
                )
            } else if !d.is_null(r) {
                (
                    format!("d{}", d.value(r)),
                    typed("float", json!(d.value(r).to_string())),
                )
            } else if !bo.is_null(r) {
                (
                    format!("b{}", bo.value(r)),
                    typed("bool", json!(bo.value(r).to_string())),
                )
            } else {
                continue;
            };
            out.insert(key, v);
        }
    }
    Ok(out.into_values().collect())
}

async fn tag_values_v2(
    State(state): State<Arc<TempoState>>,
    Path(tag): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    let asked = Params::checked(&pairs, &["q", "start", "end", "limit", "maxStaleValues"])
        .and_then(|p| {
            Ok((
                tag_field(&tag)?,
                p.get("q").map(str::to_string),
                tag_window(&p)?,
            ))
        });
    let (field, q, window) = match asked {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async move {
        let values = tag_values(&engine, &field, q.as_deref(), window).await?;
        Ok(Json(json!({"tagValues": values, "metrics": {}})).into_response())
    };
    answer(&state, lookup).await
}

async fn tag_values_v1(
    State(state): State<Arc<TempoState>>,
    Path(tag): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    let asked = Params::checked(&pairs, &["start", "end", "limit"]).and_then(|p| {
        // The older API names tags without a scope.
        let field = match tag.as_str() {
            "name" | "status" | "kind" => tag_field(&tag)?,
            "service.name" => tag_field("resource.service.name")?,
            other => tag_field(&format!(".{other}"))?,
        };
        Ok((field, tag_window(&p)?))
    });
    let (field, window) = match asked {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async move {
        let values: Vec<Value> = tag_values(&engine, &field, None, window)
            .await?
            .into_iter()
            .map(|v| v["value"].clone())
            .collect();
        Ok(Json(json!({ "tagValues": values })).into_response())
    };
    answer(&state, lookup).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_search_parameters_become_traceql() {
        let r = SearchRequest::from_params(&params::query_pairs(Some(
            "tags=service.name%3Dfrontend+http.url%3D%22%2Fa+b%22+status%3Derror&minDuration=100ms&maxDuration=1s&limit=5&start=100&end=200",
        )))
        .unwrap();
        assert_eq!(
            r.query,
            traceql::parse(
                r#"{ .service.name = "frontend" } && { .http.url = "/a b" } && { status = error }"#
            )
            .unwrap()
        );
        assert_eq!(
            (r.min_trace, r.max_trace),
            (Some(100_000_000), Some(1_000_000_000))
        );
        assert_eq!(
            (r.start, r.end, r.limit),
            (100_000_000_000, 200_000_000_000, 5)
        );
        for (bad, says) in [
            ("q=%7B", "TraceQL"),
            ("q=%7B%7D&tags=a%3Db", "not both"),
            ("tags=novalue", "key=value"),
            ("q=%7B%7D&start=yesterday", "start"),
            ("q=%7B%7D&spss=0", "spss"),
            ("q=%7B%7D&minDuration=slow", "minDuration"),
            ("q=%7B%7D&colour=red", "unknown parameter"),
        ] {
            let e = SearchRequest::from_params(&params::query_pairs(Some(bad)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn trace_ids_lose_leading_zeros_as_in_tempo() {
        let mut id = [0u8; 16];
        id[15] = 0xab;
        id[8] = 0x01;
        assert_eq!(tempo_trace_id(&id), "1000000000000ab");
    }
}
