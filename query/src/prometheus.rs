//! The Prometheus HTTP API under `/prometheus/api/v1/`, as Grafana's Prometheus datasource,
//! promtool and Prometheus's own clients speak it: `query`, `query_range`, `series`, `labels`,
//! `label/{name}/values`, `metadata`, `query_exemplars`, `format_query`, `status/buildinfo`,
//! `status/runtimeinfo`, and `rules`/`alerts` (empty). Every answer is the envelope
//! `{"status":"success","data":…}`; errors are `bad_data` (400), `execution` (422) and
//! `timeout` (503).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use datafusion::logical_expr::{col, lit};
use promql_parser::label::Matchers;
use promql_parser::parser::Expr;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sightline_storage::metrics::tables::{col as mc, METADATA_TABLE};

use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::params;
use crate::promql::{
    self, Answer, Labels, Options, Point, PromQlError, QueryResult, RawSeries, StoreSource, Val,
};
use crate::span_metrics;
use sightline_storage::telemetry::DurationHistogram;
use std::sync::atomic::{AtomicU64, Ordering};

/// Settings of the API's queries.
#[derive(Debug, Clone)]
pub struct PromApiConfig {
    pub options: Options,
    /// A query's time budget, unless it asks for less.
    pub timeout: Duration,
    /// Queries slower than this are logged.
    pub slow_query: Duration,
    /// What the API measures of its queries, for `/metrics`.
    pub telemetry: Arc<QueryTelemetry>,
}

impl Default for PromApiConfig {
    fn default() -> Self {
        Self {
            options: Options::default(),
            timeout: Duration::from_secs(120),
            slow_query: Duration::from_millis(500),
            telemetry: Arc::default(),
        }
    }
}

/// PromQL queries answered (`query`, `query_range`): their durations, and how many failed or
/// ran out of time.
#[derive(Debug, Default)]
pub struct QueryTelemetry {
    pub seconds: DurationHistogram,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    /// Remote-read requests answered with `SAMPLES` and with `STREAMED_XOR_CHUNKS`.
    pub remote_reads_sampled: AtomicU64,
    pub remote_reads_streamed: AtomicU64,
}

#[derive(Clone)]
struct PromState {
    engine: QueryEngine,
    config: PromApiConfig,
}

pub fn router(engine: QueryEngine, config: PromApiConfig) -> Router {
    let p = |path: &str| format!("/prometheus/api/v1/{path}");
    Router::new()
        .route(&p("query"), get(query).post(query))
        .route(&p("query_range"), get(query_range).post(query_range))
        .route(&p("series"), get(series).post(series))
        .route(&p("labels"), get(labels).post(labels))
        .route(&p("label/{name}/values"), get(label_values))
        .route(&p("metadata"), get(metadata))
        .route(
            &p("query_exemplars"),
            get(query_exemplars).post(query_exemplars),
        )
        .route(&p("format_query"), get(format_query).post(format_query))
        .route(&p("read"), post(remote_read))
        .route(&p("status/buildinfo"), get(buildinfo))
        .route(&p("status/runtimeinfo"), get(runtimeinfo))
        .route(
            &p("rules"),
            get(|| async { success(json!({ "groups": [] })) }),
        )
        .route(
            &p("alerts"),
            get(|| async { success(json!({ "alerts": [] })) }),
        )
        .with_state(Arc::new(PromState { engine, config }))
}

/// An API error: its Prometheus type and HTTP status.
#[derive(Debug)]
pub struct ApiError {
    kind: &'static str,
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            kind: "bad_data",
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<PromQlError> for ApiError {
    fn from(e: PromQlError) -> Self {
        match e {
            PromQlError::Bad(m) => ApiError::bad(m),
            PromQlError::Storage(QueryError::BadQuery(m)) => ApiError::bad(m),
            PromQlError::Storage(QueryError::Timeout(d)) => ApiError {
                kind: "timeout",
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("query timed out in expression evaluation (budget {d:?})"),
            },
            other => ApiError {
                kind: "execution",
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: other.to_string(),
            },
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        PromQlError::Storage(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"status": "error", "errorType": self.kind, "error": self.message})),
        )
            .into_response()
    }
}

fn success(data: Value) -> Response {
    Json(json!({ "status": "success", "data": data })).into_response()
}

type ApiResult = Result<Response, ApiError>;

/// The request's parameters: the query string and, for a form POST, the body.
fn form(raw: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let mut pairs = params::query_pairs(raw);
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form || (!body.is_empty() && headers.get(header::CONTENT_TYPE).is_none()) {
        pairs.extend(params::query_pairs(std::str::from_utf8(body).ok()));
    }
    pairs
}

fn get_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn all_params<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A time: RFC 3339 or unix seconds (as Prometheus takes them), in milliseconds.
fn time_param(pairs: &[(String, String)], name: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = get_param(pairs, name) else {
        return Ok(None);
    };
    // Prometheus's own clients send these for "no bound".
    if v == "-292275055-05-16T16:47:04.192Z" || v == "min" {
        return Ok(Some(i64::MIN / 4));
    }
    if v == "292277025-08-18T07:12:54.999Z" || v == "max" {
        return Ok(Some(i64::MAX / 4));
    }
    let nanos = params::parse_time(name, v).map_err(|_| {
        ApiError::bad(format!(
            "invalid parameter \"{name}\": cannot parse {v:?} to a valid timestamp"
        ))
    })?;
    Ok(Some(nanos.div_euclid(1_000_000)))
}

/// A duration: float seconds (`15`, `0.5`) or Prometheus's units (`1m`, `1h30m`, `1d`).
fn duration_param(name: &str, v: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad(format!(
            "invalid parameter \"{name}\": cannot parse {v:?} to a valid duration"
        ))
    };
    if let Ok(secs) = v.trim().parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 9.2e15 {
            return Err(bad());
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    let units = [
        ("ms", 1i64),
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ];
    let mut rest = v.trim();
    let mut total: i64 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, ms) = units
            .iter()
            .find(|(u, _)| rest.starts_with(u))
            .ok_or_else(bad)?;
        total = total
            .checked_add(n.checked_mul(*ms).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
    }
    Ok(total)
}

fn now_ms() -> i64 {
    params::now_unix_nano() / 1_000_000
}

fn parse_query(pairs: &[(String, String)]) -> Result<Expr, ApiError> {
    let q = get_param(pairs, "query")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| {
            ApiError::bad("invalid parameter \"query\": unknown query: the query is empty")
        })?;
    promql::parse(q).map_err(|e| ApiError::bad(format!("invalid parameter \"query\": {e}")))
}

fn labels_json(l: &Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|(n, v)| (n.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

/// A query's `data`, serialized straight into the response: a range query over thousands of
/// series would otherwise build a `serde_json::Value` tree as large as its text first.
struct ResultJson<'a>(&'a QueryResult);

impl Serialize for ResultJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        match self.0 {
            QueryResult::Scalar { t, v } => {
                m.serialize_entry("resultType", "scalar")?;
                m.serialize_entry("result", &(Seconds(*t), promql::format_float(*v)))?;
            }
            QueryResult::String { t, v } => {
                m.serialize_entry("resultType", "string")?;
                m.serialize_entry("result", &(Seconds(*t), v))?;
            }
            QueryResult::Vector(v) => {
                m.serialize_entry("resultType", "vector")?;
                m.serialize_entry("result", &Each(v, |(l, t, v)| SampleJson(l, *t, v)))?;
            }
            QueryResult::Matrix(series) => {
                m.serialize_entry("resultType", "matrix")?;
                m.serialize_entry("result", &Each(series, SeriesJson))?;
            }
        }
        m.end()
    }
}

/// The items of a slice, each serialized through `wrap`.
struct Each<'a, T, W>(&'a [T], fn(&'a T) -> W);

impl<'a, T, W: Serialize> Serialize for Each<'a, T, W> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(self.1))
    }
}

/// Milliseconds as seconds, as Prometheus writes them: `4` for a whole second, else `4.25`.
struct Seconds(i64);

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1000 == 0 {
            s.serialize_i64(self.0 / 1000)
        } else {
            s.serialize_f64(self.0 as f64 / 1000.0)
        }
    }
}

struct LabelsJson<'a>(&'a Labels);

impl Serialize for LabelsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

/// `[seconds, "value"]`, or `[seconds, {histogram}]`.
struct PointJson<'a>(i64, &'a Val);

impl Serialize for PointJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            Val::F(f) => (Seconds(self.0), promql::format_float(*f)).serialize(s),
            Val::H(h) => (Seconds(self.0), promql::histogram_json(h)).serialize(s),
        }
    }
}

struct SampleJson<'a>(&'a Labels, i64, &'a Val);

impl Serialize for SampleJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("metric", &LabelsJson(self.0))?;
        let key = match self.2 {
            Val::F(_) => "value",
            Val::H(_) => "histogram",
        };
        m.serialize_entry(key, &PointJson(self.1, self.2))?;
        m.end()
    }
}

/// A series of a matrix: its floats under `values`, its histograms under `histograms`.
struct SeriesJson<'a>(&'a RawSeries);

impl Serialize for SeriesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let points = &self.0.points;
        let is_float = |p: &&Point| matches!(p.v, Val::F(_));
        let floats = points.iter().filter(is_float).count();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("metric", &LabelsJson(&self.0.labels))?;
        let of_kind = |float: bool| {
            Iterated(move || {
                points
                    .iter()
                    .filter(move |p| is_float(p) == float)
                    .map(|p| PointJson(p.t, &p.v))
            })
        };
        if floats > 0 {
            m.serialize_entry("values", &of_kind(true))?;
        }
        if floats < points.len() {
            m.serialize_entry("histograms", &of_kind(false))?;
        }
        m.end()
    }
}

/// A sequence made afresh from a closure each time it is serialized.
struct Iterated<F>(F);

impl<F, I> Serialize for Iterated<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// The success envelope around a query's result, with its annotations.
fn query_success(a: &Answer) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a> {
        status: &'static str,
        data: ResultJson<'a>,
        #[serde(skip_serializing_if = "BTreeSet::is_empty")]
        warnings: &'a BTreeSet<String>,
        #[serde(skip_serializing_if = "BTreeSet::is_empty")]
        infos: &'a BTreeSet<String>,
    }
    Json(Envelope {
        status: "success",
        data: ResultJson(&a.result),
        warnings: &a.notes.warnings,
        infos: &a.notes.infos,
    })
    .into_response()
}

/// The time budget of one request: the configured one, or less if the request asks.
fn budget(state: &PromState, pairs: &[(String, String)]) -> Result<Duration, ApiError> {
    match get_param(pairs, "timeout") {
        None => Ok(state.config.timeout),
        Some(t) => {
            let ms = duration_param("timeout", t)?;
            Ok(Duration::from_millis(ms.max(1) as u64).min(state.config.timeout))
        }
    }
}

/// Runs a query within the request's time budget, logging it if slow.
async fn within<T>(
    state: &PromState,
    pairs: &[(String, String)],
    run: impl std::future::Future<Output = Result<T, PromQlError>>,
) -> Result<T, ApiError> {
    let budget = budget(state, pairs)?;
    let what = get_param(pairs, "query").unwrap_or_default();
    let started = Instant::now();
    let out = tokio::time::timeout(budget, run).await;
    let took = started.elapsed();
    let telemetry = &state.config.telemetry;
    telemetry.seconds.observe(took);
    match &out {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => {
            telemetry.failed.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            telemetry.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
    if took >= state.config.slow_query {
        tracing::warn!(
            query = what,
            took_ms = took.as_millis() as u64,
            "slow query"
        );
    }
    match out {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(ApiError {
            kind: "timeout",
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("query timed out in expression evaluation (budget {budget:?})"),
        }),
    }
}

async fn query(
    State(state): State<Arc<PromState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let pairs = form(raw.as_deref(), &headers, &body);
    let expr = parse_query(&pairs)?;
    let t = time_param(&pairs, "time")?.unwrap_or_else(now_ms);
    let source = StoreSource::new(state.engine.pinned());
    let r = within(
        &state,
        &pairs,
        promql::instant(&source, &expr, t, &state.config.options),
    )
    .await?;
    Ok(query_success(&r))
}

/// Prometheus's limit on points per series a range query may ask for.
const MAX_POINTS: i64 = 11_000;

async fn query_range(
    State(state): State<Arc<PromState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let pairs = form(raw.as_deref(), &headers, &body);
    let expr = parse_query(&pairs)?;
    let start = time_param(&pairs, "start")?
        .ok_or_else(|| ApiError::bad("invalid parameter \"start\": missing"))?;
    let end = time_param(&pairs, "end")?
        .ok_or_else(|| ApiError::bad("invalid parameter \"end\": missing"))?;
    if end < start {
        return Err(ApiError::bad(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = duration_param(
        "step",
        get_param(&pairs, "step")
            .ok_or_else(|| ApiError::bad("invalid parameter \"step\": missing"))?,
    )?;
    if step <= 0 {
        return Err(ApiError::bad(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step >= MAX_POINTS {
        return Err(ApiError::bad(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let source = StoreSource::new(state.engine.pinned());
    let opts = &state.config.options;
    let r = within(
        &state,
        &pairs,
        promql::range(&source, &expr, start, end, step, opts),
    )
    .await?;
    Ok(query_success(&r))
}

/// The series selectors of `match[]`.
fn match_params(pairs: &[(String, String)]) -> Result<Vec<Matchers>, ApiError> {
    all_params(pairs, "match[]")
        .into_iter()
        .map(|m| match promql::parse(m) {
            Ok(Expr::VectorSelector(vs)) => Ok(promql::eval::selector_matchers(&vs)),
            Ok(_) => Err(ApiError::bad(format!(
                "invalid parameter \"match[]\": {m:?} is not a series selector"
            ))),
            Err(e) => Err(ApiError::bad(format!("invalid parameter \"match[]\": {e}"))),
        })
        .collect()
}

fn limit_param(pairs: &[(String, String)]) -> Result<Option<usize>, ApiError> {
    match get_param(pairs, "limit") {
        None | Some("") | Some("0") => Ok(None),
        Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
            ApiError::bad(format!(
                "invalid parameter \"limit\": {v:?} is not a number"
            ))
        }),
    }
}

/// The series passing any of `matchers` (all series when there are none) in the range.
async fn matching_series(
    state: &PromState,
    pairs: &[(String, String)],
    require_match: bool,
) -> Result<Vec<Labels>, ApiError> {
    let matchers = match_params(pairs)?;
    if require_match && matchers.is_empty() {
        return Err(ApiError::bad("no match[] parameter provided"));
    }
    let start = time_param(pairs, "start")?.unwrap_or(i64::MIN / 4);
    let end = time_param(pairs, "end")?.unwrap_or(i64::MAX / 4);
    let source = StoreSource::new(state.engine.pinned());
    let mut out = BTreeSet::new();
    let everything = [Matchers::empty()];
    let sets: &[Matchers] = if matchers.is_empty() {
        &everything
    } else {
        &matchers
    };
    for m in sets {
        out.extend(source.label_sets(m, start, end).await?);
    }
    Ok(out.into_iter().collect())
}

async fn series(
    State(state): State<Arc<PromState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let pairs = form(raw.as_deref(), &headers, &body);
    let limit = limit_param(&pairs)?;
    let all = matching_series(&state, &pairs, true).await?;
    let data: Vec<Value> = all
        .iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(labels_json)
        .collect();
    let mut body = json!({ "status": "success", "data": data });
    if limit.is_some_and(|l| all.len() > l) {
        body["warnings"] = json!(["results truncated due to limit"]);
    }
    Ok(Json(body).into_response())
}

fn listed(values: BTreeSet<String>, limit: Option<usize>) -> Response {
    let n = values.len();
    let data: Vec<String> = values
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let mut body = json!({ "status": "success", "data": data });
    if limit.is_some_and(|l| n > l) {
        body["warnings"] = json!(["results truncated due to limit"]);
    }
    Json(body).into_response()
}

async fn labels(
    State(state): State<Arc<PromState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let pairs = form(raw.as_deref(), &headers, &body);
    let limit = limit_param(&pairs)?;
    let names: BTreeSet<String> = matching_series(&state, &pairs, false)
        .await?
        .iter()
        .flat_map(|l| l.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>())
        .collect();
    Ok(listed(names, limit))
}

async fn label_values(
    State(state): State<Arc<PromState>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let pairs = params::query_pairs(raw.as_deref());
    let limit = limit_param(&pairs)?;
    // Prometheus 3 takes `U__`-escaped names for labels outside the legacy charset.
    let name = name
        .strip_prefix("U__")
        .map(unescape_utf8_name)
        .unwrap_or(name);
    let values: BTreeSet<String> = matching_series(&state, &pairs, false)
        .await?
        .iter()
        .filter_map(|l| l.get(&name).map(str::to_string))
        .collect();
    Ok(listed(values, limit))
}

/// `U__` escaping: `_` is `__`, `_2e_` is the code point 0x2e.
fn unescape_utf8_name(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('_') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('_') {
            out.push('_');
            rest = r;
        } else if let Some(end) = rest.find('_') {
            match u32::from_str_radix(&rest[..end], 16)
                .ok()
                .and_then(char::from_u32)
            {
                Some(c) => out.push(c),
                None => out.push_str(&rest[..end]),
            }
            rest = &rest[end + 1..];
        }
    }
    out.push_str(rest);
    out
}

async fn metadata(State(state): State<Arc<PromState>>, RawQuery(raw): RawQuery) -> ApiResult {
    let pairs = params::query_pairs(raw.as_deref());
    let limit = limit_param(&pairs)?;
    let per_metric = match get_param(&pairs, "limit_per_metric") {
        None | Some("") | Some("0") => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::bad(format!("invalid parameter \"limit_per_metric\": {v:?}"))
        })?),
    };
    let mut filter = lit(true);
    let only = get_param(&pairs, "metric").filter(|m| !m.is_empty());
    if let Some(m) = only {
        filter = col(mc::METRIC).eq(lit(m.to_string()));
    }
    let ctx = state.engine.context();
    let batches = ctx
        .table(METADATA_TABLE)
        .await
        .map_err(QueryError::from)?
        .filter(filter)
        .map_err(QueryError::from)?
        .select_columns(&[mc::METRIC, mc::TYPE, mc::UNIT, mc::HELP])
        .map_err(QueryError::from)?
        .distinct()
        .map_err(QueryError::from)?
        .collect()
        .await
        .map_err(QueryError::from)?;
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, kind, help) in span_metrics::metadata() {
        if only.is_none_or(|m| m == name) {
            out.entry(name.to_string())
                .or_default()
                .push(json!({"type": kind, "help": help, "unit": ""}));
        }
    }
    for b in &batches {
        let [m, t, u, h] =
            [mc::METRIC, mc::TYPE, mc::UNIT, mc::HELP].map(|c| crate::columns::strings(b, c));
        let (m, t, u, h) = (m?, t?, u?, h?);
        for r in 0..b.num_rows() {
            let entry = json!({"type": t.value(r), "help": h.value(r), "unit": u.value(r)});
            let list = out.entry(m.value(r).to_string()).or_default();
            if !list.contains(&entry) {
                list.push(entry);
            }
        }
    }
    let data: Map<String, Value> = out
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(k, mut v)| {
            v.truncate(per_metric.unwrap_or(usize::MAX));
            (k, Value::Array(v))
        })
        .collect();
    Ok(success(Value::Object(data)))
}

/// Prometheus remote read (see [`crate::remote_read`]); errors are plain text, as Prometheus
/// answers them.
async fn remote_read(State(state): State<Arc<PromState>>, body: Bytes) -> Response {
    let source = StoreSource::new(state.engine.pinned());
    match crate::remote_read::read(&source, &body, state.config.options.max_samples).await {
        Ok((content_type, body)) => {
            let sampled = content_type == crate::remote_read::SAMPLES_CONTENT_TYPE;
            let telemetry = &state.config.telemetry;
            let count = if sampled {
                &telemetry.remote_reads_sampled
            } else {
                &telemetry.remote_reads_streamed
            };
            count.fetch_add(1, Ordering::Relaxed);
            let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
            if sampled {
                resp.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    axum::http::HeaderValue::from_static("snappy"),
                );
            }
            resp
        }
        Err(e) => {
            let status = match e {
                crate::remote_read::ReadError::Bad(_) => StatusCode::BAD_REQUEST,
                crate::remote_read::ReadError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, e.to_string()).into_response()
        }
    }
}

/// Exemplars of the series the query's selectors pick, in the time range.
async fn query_exemplars(
    State(state): State<Arc<PromState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let pairs = form(raw.as_deref(), &headers, &body);
    let expr = parse_query(&pairs)?;
    // Grafana sends milliseconds here; a number past the year 33658 in seconds is one.
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        match get_param(&pairs, name).and_then(|v| v.parse::<f64>().ok()) {
            Some(n) if n.abs() > 1e12 => Ok(Some(n as i64)),
            _ => time_param(&pairs, name),
        }
    };
    let start = time("start")?.unwrap_or(i64::MIN / 4);
    let end = time("end")?.unwrap_or(i64::MAX / 4);
    let mut selectors = Vec::new();
    collect_selectors(&expr, &mut selectors);
    let source = StoreSource::new(state.engine.pinned());
    let mut data = Vec::new();
    for m in selectors {
        for (labels, exemplars) in source.exemplars(&m, start, end).await? {
            let list: Vec<Value> = exemplars
                .into_iter()
                .map(|(l, t, v)| {
                    json!({"labels": labels_json(&l), "value": promql::format_float(v), "timestamp": Seconds(t)})
                })
                .collect();
            data.push(json!({"seriesLabels": labels_json(&labels), "exemplars": list}));
        }
    }
    Ok(success(Value::Array(data)))
}

fn collect_selectors(e: &Expr, out: &mut Vec<Matchers>) {
    let mut fetches = Vec::new();
    let times = promql::QueryTimes {
        start: 0,
        end: 0,
        step: 0,
    };
    promql::eval::plan(e, (0, 0), times, &Options::default(), &mut fetches);
    out.extend(
        fetches
            .iter()
            .map(|f| promql::eval::selector_matchers(f.selector)),
    );
}

async fn format_query(RawQuery(raw): RawQuery, headers: HeaderMap, body: Bytes) -> ApiResult {
    let pairs = form(raw.as_deref(), &headers, &body);
    let expr = parse_query(&pairs)?;
    Ok(success(Value::String(expr.prettify())))
}

/// Without `features`: Grafana takes a server that lists them for Mimir.
async fn buildinfo() -> Response {
    success(json!({
        "version": "3.16.0",
        "revision": env!("CARGO_PKG_VERSION"),
        "branch": "sightline",
        "buildUser": "sightline",
        "buildDate": "",
        "goVersion": "n/a (Sightline is written in Rust)",
    }))
}

async fn runtimeinfo() -> Response {
    success(json!({
        "startTime": "",
        "CWD": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "reloadConfigSuccess": true,
        "lastConfigTime": "",
        "corruptionCount": 0,
        "goroutineCount": 0,
        "GOMAXPROCS": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "GOMEMLIMIT": 0,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": "",
    }))
}
