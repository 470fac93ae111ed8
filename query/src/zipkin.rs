//! The Zipkin v2 query API (`/api/v2/...`, mounted under `/zipkin` on the HTTP port and at the
//! root of port 9411): what Zipkin's UI and Grafana's Zipkin datasource call. Answers are
//! Zipkin's, as its server gives them with in-memory storage: service and span names in lower
//! case, traces newest first, a trace's spans as they were sent — a span that Sightline stores
//! under another id (the server half of a shared id, see the collector's `zipkin` module) is
//! given back with the ids it came with. Spans that arrived over OTLP are rendered as Zipkin's
//! OpenTelemetry exporters would have sent them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sightline_storage::rollup::NodeKind;

use crate::catalog;
use crate::columns;
use crate::engine::{QueryEngine, SqlLimits};
use crate::error::QueryError;
use crate::params::{self, Params};
use crate::rollups::{self, Window};
use crate::search::literal;
use crate::trace;

/// Zipkin's defaults: ten traces over the last day (`QUERY_LOOKBACK`).
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 1000;
const DEFAULT_LOOKBACK_MS: i64 = 86_400_000;
/// Candidate traces fetched per wanted result when a condition is checked after fetching.
const CANDIDATES_PER_RESULT: usize = 4;

/// Attributes the collector derived from a Zipkin span's endpoints, flags and ids: rendered back
/// as those, never as tags.
const NOT_TAGS: [&str; 11] = [
    "network.local.address",
    "network.local.port",
    "network.peer.address",
    "network.peer.port",
    "peer.service",
    "zipkin.local_endpoint.ipv6",
    "zipkin.remote_endpoint.ipv6",
    "zipkin.debug",
    "zipkin.shared",
    "zipkin.id",
    "zipkin.parent_id",
];

struct ZipkinState {
    engine: QueryEngine,
    limits: SqlLimits,
}

pub fn router(engine: QueryEngine, limits: SqlLimits) -> Router {
    Router::new()
        .route("/api/v2/services", get(services))
        .route("/api/v2/spans", get(span_names))
        .route("/api/v2/remoteServices", get(remote_services))
        .route("/api/v2/traces", get(traces))
        .route("/api/v2/trace/{trace_id}", get(trace_by_id))
        .route("/api/v2/traceMany", get(trace_many))
        .route("/api/v2/dependencies", get(dependencies))
        .route("/api/v2/autocompleteKeys", get(autocomplete_keys))
        .route("/api/v2/autocompleteValues", get(autocomplete_values))
        .with_state(Arc::new(ZipkinState { engine, limits }))
}

/// Zipkin answers errors as plain text.
fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

fn failed(e: QueryError) -> Response {
    let status = match e {
        QueryError::BadQuery(_) => StatusCode::BAD_REQUEST,
        QueryError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::Execution(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn answer<T: serde::Serialize>(
    state: &ZipkinState,
    lookup: impl std::future::Future<Output = Result<T, QueryError>>,
) -> Response {
    match tokio::time::timeout(state.limits.timeout, lookup).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => failed(e),
        Err(_) => failed(QueryError::Timeout(state.limits.timeout)),
    }
}

fn pairs(raw: Option<String>) -> Vec<(String, String)> {
    params::query_pairs(raw.as_deref())
}

/// The stored service names that are `name` in Zipkin's lower case.
async fn stored_services(engine: &QueryEngine, name: &str) -> Result<Vec<String>, QueryError> {
    let wanted = name.to_lowercase();
    Ok(catalog::services(engine, None)
        .await?
        .into_iter()
        .filter(|s| s.kind == NodeKind::Service.as_str() && s.name.to_lowercase() == wanted)
        .map(|s| s.name)
        .collect())
}

async fn services(State(state): State<Arc<ZipkinState>>) -> Response {
    let engine = state.engine.pinned();
    let lookup = async {
        let names: BTreeSet<String> = catalog::services(&engine, None)
            .await?
            .into_iter()
            .filter(|s| s.kind == NodeKind::Service.as_str())
            .map(|s| s.name.to_lowercase())
            .collect();
        Ok(names.into_iter().collect::<Vec<_>>())
    };
    answer(&state, lookup).await
}

fn required_service(pairs: &[(String, String)]) -> Result<String, QueryError> {
    Params::checked(pairs, &["serviceName"])?
        .get("serviceName")
        .map(str::to_string)
        .ok_or_else(|| QueryError::BadQuery("serviceName is required".into()))
}

async fn span_names(State(state): State<Arc<ZipkinState>>, RawQuery(raw): RawQuery) -> Response {
    let service = match required_service(&pairs(raw)) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async {
        let mut names = BTreeSet::new();
        for stored in stored_services(&engine, &service).await? {
            for op in catalog::operations(&engine, &stored, None).await? {
                names.insert(op.name.to_lowercase());
            }
        }
        Ok(names.into_iter().collect::<Vec<_>>())
    };
    answer(&state, lookup).await
}

fn service_condition(stored: &[String]) -> String {
    let list: Vec<String> = stored.iter().map(|s| literal(s)).collect();
    format!("service_name IN ({})", list.join(", "))
}

async fn remote_services(
    State(state): State<Arc<ZipkinState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let service = match required_service(&pairs(raw)) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async {
        let stored = stored_services(&engine, &service).await?;
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT DISTINCT lower(CAST(peer_service AS VARCHAR)) AS name FROM spans \
             WHERE {} AND peer_service IS NOT NULL",
            service_condition(&stored)
        );
        let mut names = BTreeSet::new();
        for b in engine.context().sql(&sql).await?.collect().await? {
            let column = columns::strings(&b, "name")?;
            names.extend((0..b.num_rows()).map(|r| column.value(r).to_string()));
        }
        Ok(names.into_iter().collect::<Vec<_>>())
    };
    answer(&state, lookup).await
}

/// `GET /api/v2/traces`, with Zipkin's parameters and defaults.
#[derive(Debug, Default)]
struct TracesQuery {
    service: Option<String>,
    span_name: Option<String>,
    remote_service: Option<String>,
    /// `annotationQuery`: key → value, `""` for a bare key (an annotation or any tag value).
    annotations: Vec<(String, String)>,
    /// Microseconds.
    min_duration: Option<i64>,
    max_duration: Option<i64>,
    /// Milliseconds.
    end_ts: i64,
    lookback: i64,
    limit: usize,
}

fn number(key: &str, v: &str) -> Result<i64, QueryError> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| QueryError::BadQuery(format!("{key} must be a non-negative number: {v:?}")))
}

impl TracesQuery {
    fn from_params(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let p = Params::checked(
            pairs,
            &[
                "serviceName",
                "spanName",
                "remoteServiceName",
                "annotationQuery",
                "minDuration",
                "maxDuration",
                "endTs",
                "lookback",
                "limit",
            ],
        )?;
        let lower = |k: &str| p.get(k).map(str::to_lowercase).filter(|v| v != "all");
        let mut q = TracesQuery {
            service: lower("serviceName"),
            span_name: lower("spanName"),
            remote_service: lower("remoteServiceName"),
            limit: params::parse_limit(p.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)?,
            end_ts: match p.get("endTs") {
                Some(v) => number("endTs", v)?,
                None => params::now_unix_nano() / 1_000_000,
            },
            ..Default::default()
        };
        q.lookback = match p.get("lookback") {
            Some(v) => number("lookback", v)?,
            None => DEFAULT_LOOKBACK_MS,
        };
        q.min_duration = p
            .get("minDuration")
            .map(|v| number("minDuration", v))
            .transpose()?;
        q.max_duration = p
            .get("maxDuration")
            .map(|v| number("maxDuration", v))
            .transpose()?;
        if q.max_duration.is_some() && q.min_duration.is_none() {
            return Err(QueryError::BadQuery(
                "maxDuration is only valid with minDuration".into(),
            ));
        }
        if let (Some(min), Some(max)) = (q.min_duration, q.max_duration) {
            if max < min {
                return Err(QueryError::BadQuery(
                    "maxDuration should be >= minDuration".into(),
                ));
            }
        }
        if let Some(a) = p.get("annotationQuery") {
            q.annotations = parse_annotation_query(a);
        }
        Ok(q)
    }

    /// `[start, end]` of the query in microseconds.
    fn window_micros(&self) -> (i64, i64) {
        let end = self.end_ts.saturating_mul(1000);
        (end - self.lookback.saturating_mul(1000), end)
    }
}

/// `http.method=GET and error`: terms joined by ` and `, each `key=value` or a bare key.
fn parse_annotation_query(s: &str) -> Vec<(String, String)> {
    s.split(" and ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (t.to_string(), String::new()),
        })
        .collect()
}

/// Traces with a span (of the service, when one is asked for) in the window, newest first,
/// that have the span name, remote service and duration asked for among the service's spans —
/// the conditions SQL can check; the annotation query and the trace's own timestamp are checked
/// on the fetched spans ([`matches`]).
fn candidates_sql(
    q: &TracesQuery,
    stored_services: Option<&[String]>,
    candidates: usize,
) -> String {
    let (start, end) = q.window_micros();
    let mut conditions = vec![format!(
        "start_time >= to_timestamp_micros({start}) AND start_time <= to_timestamp_micros({end})"
    )];
    if let Some(stored) = stored_services {
        conditions.push(service_condition(stored));
    }
    let mut having = vec!["true".to_string()];
    if let Some(name) = &q.span_name {
        having.push(format!(
            "bool_or(lower(CAST(span_name AS VARCHAR)) = {})",
            literal(name)
        ));
    }
    if let Some(remote) = &q.remote_service {
        having.push(format!(
            "bool_or(lower(CAST(peer_service AS VARCHAR)) = {})",
            literal(remote)
        ));
    }
    if let Some(min) = q.min_duration {
        let mut d = format!("duration_nano >= {}", min.saturating_mul(1000));
        if let Some(max) = q.max_duration {
            d.push_str(&format!(
                " AND duration_nano <= {}",
                max.saturating_mul(1000)
            ));
        }
        having.push(format!("bool_or({d})"));
    }
    format!(
        "SELECT trace_id, max(start_time) AS latest FROM spans WHERE {} GROUP BY trace_id \
         HAVING {} ORDER BY latest DESC LIMIT {candidates}",
        conditions.join(" AND "),
        having.join(" AND ")
    )
}

/// Zipkin's `QueryRequest.test`: the trace's timestamp (its root's, else its earliest span's)
/// is in the window, and the service's spans have, between them, the span name, remote service
/// and a span of the duration asked for, and every term of the annotation query.
fn matches(q: &TracesQuery, spans: &[Value]) -> bool {
    let timestamp = spans
        .iter()
        .find(|s| s.get("parentId").is_none())
        .or_else(|| spans.iter().min_by_key(|s| s["timestamp"].as_i64()))
        .and_then(|s| s["timestamp"].as_i64())
        .unwrap_or(0);
    let (start, end) = q.window_micros();
    if timestamp == 0 || timestamp < start || timestamp > end {
        return false;
    }
    let mut service_seen = q.service.is_none();
    let mut name_seen = q.span_name.is_none();
    let mut remote_seen = q.remote_service.is_none();
    let mut duration_seen = q.min_duration.is_none();
    let mut remaining: Vec<&(String, String)> = q.annotations.iter().collect();
    for span in spans {
        let local = span["localEndpoint"]["serviceName"].as_str();
        if q.service.as_deref().is_some_and(|s| Some(s) != local) {
            continue;
        }
        service_seen = true;
        let tags = span["tags"].as_object();
        remaining.retain(|(k, v)| {
            let annotated = v.is_empty()
                && span["annotations"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["value"].as_str() == Some(k)));
            let tagged = tags
                .and_then(|t| t.get(k.as_str()))
                .and_then(Value::as_str)
                .is_some_and(|t| v.is_empty() || t == v);
            !(annotated || tagged)
        });
        if q.span_name
            .as_deref()
            .is_some_and(|n| span["name"].as_str() == Some(n))
        {
            name_seen = true;
        }
        if q.remote_service
            .as_deref()
            .is_some_and(|r| span["remoteEndpoint"]["serviceName"].as_str() == Some(r))
        {
            remote_seen = true;
        }
        if let Some(min) = q.min_duration {
            let d = span["duration"].as_i64().unwrap_or(0);
            if d >= min && q.max_duration.is_none_or(|max| d <= max) {
                duration_seen = true;
            }
        }
    }
    service_seen && name_seen && remote_seen && duration_seen && remaining.is_empty()
}

/// The spans of some traces in Zipkin's JSON, grouped by trace, in the order of `ids`.
async fn zipkin_traces(
    engine: &QueryEngine,
    ids: &[[u8; 16]],
) -> Result<Vec<Vec<Value>>, QueryError> {
    let mut by_trace: HashMap<[u8; 16], Vec<Value>> = HashMap::new();
    for span in trace::records_of_traces(engine, ids).await? {
        by_trace
            .entry(span.trace_id)
            .or_default()
            .push(zipkin_span(&trace::native_json(&span)));
    }
    Ok(ids.iter().filter_map(|id| by_trace.remove(id)).collect())
}

async fn search(engine: &QueryEngine, q: &TracesQuery) -> Result<Vec<Vec<Value>>, QueryError> {
    let stored = match &q.service {
        Some(s) => {
            let stored = stored_services(engine, s).await?;
            if stored.is_empty() {
                return Ok(Vec::new());
            }
            Some(stored)
        }
        None => None,
    };
    let candidates = (q.limit * CANDIDATES_PER_RESULT).min(MAX_LIMIT * CANDIDATES_PER_RESULT);
    let sql = candidates_sql(q, stored.as_deref(), candidates);
    let ids = columns::trace_ids(&engine.context().sql(&sql).await?.collect().await?)?;
    let mut out = zipkin_traces(engine, &ids).await?;
    out.retain(|spans| matches(q, spans));
    out.truncate(q.limit);
    Ok(out)
}

async fn traces(State(state): State<Arc<ZipkinState>>, RawQuery(raw): RawQuery) -> Response {
    let q = match TracesQuery::from_params(&pairs(raw)) {
        Ok(q) => q,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    answer(&state, search(&engine, &q)).await
}

async fn trace_by_id(
    State(state): State<Arc<ZipkinState>>,
    Path(trace_id): Path<String>,
) -> Response {
    let id = match trace::parse_trace_id(&trace_id) {
        Ok(id) => id,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = tokio::time::timeout(state.limits.timeout, zipkin_traces(&engine, &[id])).await;
    match lookup {
        Ok(Ok(mut found)) if !found.is_empty() => Json(found.swap_remove(0)).into_response(),
        Ok(Ok(_)) => error(StatusCode::NOT_FOUND, format!("Trace {trace_id} not found")),
        Ok(Err(e)) => failed(e),
        Err(_) => failed(QueryError::Timeout(state.limits.timeout)),
    }
}

async fn trace_many(State(state): State<Arc<ZipkinState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = pairs(raw);
    let ids = Params::checked(&pairs, &["traceIds"]).and_then(|p| {
        let list = p
            .get("traceIds")
            .ok_or_else(|| QueryError::BadQuery("traceIds is required".into()))?;
        let mut ids: Vec<[u8; 16]> = Vec::new();
        for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let id = trace::parse_trace_id(id)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err(QueryError::BadQuery("traceIds is required".into()));
        }
        Ok(ids)
    });
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    answer(&state, zipkin_traces(&engine, &ids)).await
}

/// Links between services over `[endTs - lookback, endTs]` (milliseconds), from the
/// service-edge rollups: `{parent, child, callCount, errorCount}`, `errorCount` left out when
/// zero, as Zipkin writes it.
async fn dependencies(State(state): State<Arc<ZipkinState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = pairs(raw);
    let window = Params::checked(&pairs, &["endTs", "lookback"]).and_then(|p| {
        let end = number(
            "endTs",
            p.get("endTs")
                .ok_or_else(|| QueryError::BadQuery("endTs is required".into()))?,
        )?;
        let lookback = p
            .get("lookback")
            .map(|v| number("lookback", v))
            .transpose()?
            .unwrap_or(DEFAULT_LOOKBACK_MS);
        if end == 0 || lookback == 0 {
            return Err(QueryError::BadQuery(
                "endTs and lookback must be positive".into(),
            ));
        }
        Ok(Window::ending_at_millis(end, lookback))
    });
    let window = match window {
        Ok(w) => w,
        Err(e) => return failed(e),
    };
    let engine = state.engine.pinned();
    let lookup = async move {
        let mut links: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for ((source, target), (calls, errors)) in rollups::links(&engine, &window).await? {
            let link = links
                .entry((source.to_lowercase(), target.to_lowercase()))
                .or_default();
            link.0 += calls;
            link.1 += errors;
        }
        Ok(links
            .into_iter()
            .map(|((parent, child), (calls, errors))| {
                let mut link = json!({"parent": parent, "child": child, "callCount": calls});
                if errors > 0 {
                    link["errorCount"] = json!(errors);
                }
                link
            })
            .collect::<Vec<_>>())
    };
    answer(&state, lookup).await
}

/// No tag keys are offered for autocompletion, as on a Zipkin server without
/// `AUTOCOMPLETE_KEYS`.
async fn autocomplete_keys() -> Response {
    Json(Vec::<String>::new()).into_response()
}

async fn autocomplete_values(RawQuery(raw): RawQuery) -> Response {
    let pairs = pairs(raw);
    match Params::checked(&pairs, &["key"]).and_then(|p| {
        p.get("key")
            .map(|_| ())
            .ok_or_else(|| QueryError::BadQuery("key is required".into()))
    }) {
        Ok(()) => Json(Vec::<String>::new()).into_response(),
        Err(e) => failed(e),
    }
}

/// A Zipkin id: 16 hex digits when the upper half is zero, else 32, as Zipkin keeps them.
fn zipkin_trace_id(hex: &str) -> &str {
    match hex.strip_prefix("0000000000000000") {
        Some(low) if hex.len() == 32 => low,
        _ => hex,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

fn endpoint(
    service: Option<String>,
    address: Option<&Value>,
    ipv6: Option<&Value>,
    port: Option<&Value>,
) -> Option<Value> {
    let mut e = Map::new();
    if let Some(s) = service {
        e.insert("serviceName".into(), Value::String(s.to_lowercase()));
    }
    if let Some(a) = address.and_then(Value::as_str) {
        let key = if a.contains(':') { "ipv6" } else { "ipv4" };
        e.insert(key.into(), Value::String(a.to_string()));
    }
    if let Some(a) = ipv6.and_then(Value::as_str) {
        e.insert("ipv6".into(), Value::String(a.to_string()));
    }
    if let Some(p) = port.and_then(Value::as_i64) {
        e.insert("port".into(), json!(p));
    }
    (!e.is_empty()).then_some(Value::Object(e))
}

/// One span of the API's native JSON ([`trace::native_json`]) as Zipkin v2 JSON.
pub fn zipkin_span(s: &Value) -> Value {
    let empty = Map::new();
    let attrs = s["attributes"].as_object().unwrap_or(&empty);
    let mut z = Map::new();
    z.insert(
        "traceId".into(),
        json!(zipkin_trace_id(s["trace_id"].as_str().unwrap_or_default())),
    );
    let parent = match attrs.get("zipkin.parent_id") {
        Some(Value::String(p)) => (!p.is_empty()).then(|| p.clone()),
        _ => s["parent_span_id"].as_str().map(str::to_string),
    };
    if let Some(p) = parent {
        z.insert("parentId".into(), Value::String(p));
    }
    let id = attrs
        .get("zipkin.id")
        .and_then(Value::as_str)
        .or(s["span_id"].as_str())
        .unwrap_or_default();
    z.insert("id".into(), json!(id));
    let kind = match s["kind"].as_str() {
        Some("server") => Some("SERVER"),
        Some("client") => Some("CLIENT"),
        Some("producer") => Some("PRODUCER"),
        Some("consumer") => Some("CONSUMER"),
        _ => None,
    };
    if let Some(k) = kind {
        z.insert("kind".into(), json!(k));
    }
    let name = s["name"].as_str().unwrap_or_default().to_lowercase();
    if !name.is_empty() {
        z.insert("name".into(), Value::String(name));
    }
    let start = s["start_unix_nano"].as_i64().unwrap_or(0) / 1000;
    z.insert("timestamp".into(), json!(start));
    let duration = s["duration_nano"].as_i64().unwrap_or(0) / 1000;
    if duration > 0 {
        z.insert("duration".into(), json!(duration));
    }
    let service = s["service"].as_str().map(str::to_string);
    if let Some(local) = endpoint(
        service,
        attrs.get("network.local.address"),
        attrs.get("zipkin.local_endpoint.ipv6"),
        attrs.get("network.local.port"),
    ) {
        z.insert("localEndpoint".into(), local);
    }
    let peer_address = attrs.get("network.peer.address");
    let peer_port = attrs.get("network.peer.port");
    if let Some(remote) = endpoint(
        attrs.get("peer.service").and_then(text),
        peer_address,
        attrs.get("zipkin.remote_endpoint.ipv6"),
        peer_port,
    ) {
        z.insert("remoteEndpoint".into(), remote);
    }
    let mut annotations: Vec<(i64, String)> = s["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (
                        e["time_unix_nano"].as_i64().unwrap_or(0) / 1000,
                        e["name"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    annotations.sort();
    if !annotations.is_empty() {
        z.insert(
            "annotations".into(),
            Value::Array(
                annotations
                    .into_iter()
                    .map(|(t, v)| json!({"timestamp": t, "value": v}))
                    .collect(),
            ),
        );
    }
    let mut tags = Map::new();
    for (k, v) in attrs {
        if NOT_TAGS.contains(&k.as_str()) {
            continue;
        }
        // The collector copies a client's remote address and port to these.
        let derived = match k.as_str() {
            "server.address" => Some(v) == peer_address,
            "server.port" => Some(v) == peer_port,
            _ => false,
        };
        if derived {
            continue;
        }
        if let Some(t) = text(v) {
            tags.insert(k.clone(), Value::String(t));
        }
    }
    if s["status_code"] == "error" && !tags.contains_key("error") {
        let message = s["status_message"].as_str().unwrap_or_default();
        tags.insert("error".into(), json!(message));
    }
    if !tags.is_empty() {
        z.insert("tags".into(), Value::Object(tags));
    }
    if attrs.get("zipkin.debug") == Some(&Value::Bool(true)) {
        z.insert("debug".into(), json!(true));
    }
    if attrs.get("zipkin.shared") == Some(&Value::Bool(true)) {
        z.insert("shared".into(), json!(true));
    }
    Value::Object(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> Result<TracesQuery, QueryError> {
        TracesQuery::from_params(&params::query_pairs(Some(q)))
    }

    #[test]
    fn parameters_as_zipkin_reads_them() {
        let q = query("serviceName=Frontend&spanName=all&annotationQuery=http.method%3DGET+and+error&endTs=1000&lookback=10").unwrap();
        assert_eq!(q.service.as_deref(), Some("frontend"));
        assert_eq!(q.span_name, None);
        assert_eq!(
            q.annotations,
            [
                ("http.method".into(), "GET".into()),
                ("error".into(), String::new())
            ]
        );
        assert_eq!(q.window_micros(), (990_000, 1_000_000));
        assert_eq!(q.limit, DEFAULT_LIMIT);
        for (bad, says) in [
            ("maxDuration=5", "only valid with minDuration"),
            ("minDuration=5&maxDuration=4", ">= minDuration"),
            ("minDuration=-1", "non-negative"),
            ("colour=red", "unknown parameter"),
            ("limit=0", "limit"),
        ] {
            let e = query(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn span(service: &str, name: &str, ts: i64, parent: Option<&str>, tags: Value) -> Value {
        let mut s = json!({"traceId": "1", "id": "2", "name": name, "timestamp": ts, "duration": 50,
            "localEndpoint": {"serviceName": service}, "tags": tags,
            "annotations": [{"timestamp": ts, "value": "retry"}]});
        if let Some(p) = parent {
            s["parentId"] = json!(p);
        }
        s
    }

    #[test]
    fn conditions_may_be_met_by_different_spans_of_the_service() {
        let spans = [
            span("a", "get", 1_000_000, None, json!({"http.method": "GET"})),
            span("a", "query", 1_000_100, Some("2"), json!({"error": "x"})),
            span("b", "other", 1_000_200, Some("2"), json!({"region": "eu"})),
        ];
        let q = |s: &str| query(&format!("endTs=2000&lookback=1000&{s}")).unwrap();
        assert!(matches(
            &q("serviceName=a&spanName=query&annotationQuery=http.method%3DGET+and+error"),
            &spans
        ));
        assert!(matches(&q("serviceName=a&annotationQuery=retry"), &spans));
        // The tag is b's, not a's.
        assert!(!matches(&q("serviceName=a&annotationQuery=region"), &spans));
        assert!(matches(&q("annotationQuery=region%3Deu"), &spans));
        assert!(!matches(&q("annotationQuery=region%3Dus"), &spans));
        assert!(matches(&q("minDuration=50&maxDuration=50"), &spans));
        assert!(!matches(&q("minDuration=51"), &spans));
        // The root's timestamp is outside the window.
        assert!(!matches(&query("endTs=999").unwrap(), &spans));
    }

    #[test]
    fn spans_render_as_they_were_sent() {
        let native = json!({
            "trace_id": "0000000000000000000000000000abcd", "span_id": "5dfbd7b8e4bd9c2b",
            "parent_span_id": "4e18dd181d0a2066", "service": "Stock-App", "name": "GET /stock",
            "kind": "server", "start_unix_nano": 1_700_000_000_123_000_000i64, "duration_nano": 20_000_000,
            "status_code": "error", "status_message": "boom",
            "attributes": {"zipkin.id": "4e18dd181d0a2066", "zipkin.parent_id": "af63ad4c86019caf",
                "network.local.address": "192.0.2.2", "network.local.port": 8080, "peer.service": "db",
                "network.peer.address": "::1", "error": "boom", "n": 3, "zipkin.shared": true},
            "events": [{"time_unix_nano": 1_700_000_000_124_000_000i64, "name": "cache miss"}],
        });
        assert_eq!(
            zipkin_span(&native),
            json!({
                "traceId": "000000000000abcd", "id": "4e18dd181d0a2066", "parentId": "af63ad4c86019caf",
                "kind": "SERVER", "name": "get /stock", "timestamp": 1_700_000_000_123_000i64, "duration": 20_000,
                "localEndpoint": {"serviceName": "stock-app", "ipv4": "192.0.2.2", "port": 8080},
                "remoteEndpoint": {"serviceName": "db", "ipv6": "::1"},
                "annotations": [{"timestamp": 1_700_000_000_124_000i64, "value": "cache miss"}],
                "tags": {"error": "boom", "n": "3"}, "shared": true
            })
        );
    }
}
