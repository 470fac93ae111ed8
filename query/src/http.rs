//! The query API on port 8080 (docs/api.md): SQL, trace search and lookup, the catalog of
//! services and operations, and the dashboards' topology, top-N and RED series.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use datafusion::arrow::json::ArrayWriter;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{QueryEngine, SqlLimits, SqlResult};
use crate::error::QueryError;
use crate::params::{self, Params};
use crate::rollups::{Window, WINDOW_PARAMS};

#[derive(Clone)]
struct ApiState {
    engine: QueryEngine,
    limits: SqlLimits,
}

pub fn router(engine: QueryEngine, limits: SqlLimits) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/traces", get(search))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{service}/operations", get(operations))
        .route("/api/v1/topology", get(topology))
        .route("/api/v1/top", get(top))
        .route("/api/v1/red", get(red))
        .with_state(Arc::new(ApiState { engine, limits }))
}

#[derive(Deserialize)]
struct SqlRequest {
    query: String,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = match self {
            QueryError::BadQuery(_) => StatusCode::BAD_REQUEST,
            QueryError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Execution(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self.to_string())
    }
}

/// The body is read as JSON whatever its content type says, so `curl -d` works as is.
async fn sql(State(state): State<Arc<ApiState>>, body: axum::body::Bytes) -> Response {
    let request: SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be JSON like {{\"query\": \"SELECT ...\"}}: {e}"),
            )
        }
    };
    match state.engine.sql(&request.query, state.limits).await {
        Ok(result) => match to_json(&result) {
            Ok(v) => Json(v).into_response(),
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    }
}

/// Runs a lookup within the query time budget and answers with its JSON.
async fn within_budget<T: serde::Serialize>(
    state: &ApiState,
    lookup: impl std::future::Future<Output = Result<T, QueryError>>,
    wrap: impl FnOnce(T) -> Response,
) -> Response {
    match tokio::time::timeout(state.limits.timeout, lookup).await {
        Ok(Ok(v)) => wrap(v),
        Ok(Err(e)) => e.into_response(),
        Err(_) => QueryError::Timeout(state.limits.timeout).into_response(),
    }
}

/// An optional window: over everything kept unless `start` or `end` is given.
fn optional_window(raw: Option<&str>) -> Result<Option<Window>, QueryError> {
    let pairs = params::query_pairs(raw);
    let p = Params::checked(&pairs, &WINDOW_PARAMS)?;
    if WINDOW_PARAMS.iter().all(|k| p.get(k).is_none()) {
        return Ok(None);
    }
    Window::from_params(&p).map(Some)
}

async fn services(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Response {
    let window = match optional_window(raw.as_deref()) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let engine = state.engine.pinned();
    let lookup = crate::catalog::services(&engine, window.as_ref());
    within_budget(&state, lookup, |data| {
        Json(json!({ "data": data })).into_response()
    })
    .await
}

async fn operations(
    State(state): State<Arc<ApiState>>,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let window = match optional_window(raw.as_deref()) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let engine = state.engine.pinned();
    let lookup = crate::catalog::operations(&engine, &service, window.as_ref());
    within_budget(&state, lookup, |data| {
        Json(json!({ "data": data })).into_response()
    })
    .await
}

async fn topology(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    let window = match Params::checked(&pairs, &WINDOW_PARAMS).and_then(|p| Window::from_params(&p))
    {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let engine = state.engine.pinned();
    let lookup = crate::topology::topology(&engine, &window);
    within_budget(&state, lookup, |t| Json(t).into_response()).await
}

async fn top(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    let query = match crate::red::TopQuery::from_params(&pairs) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let engine = state.engine.pinned();
    let lookup = crate::red::top(&engine, &query);
    within_budget(&state, lookup, |(data, rate_seconds)| {
        Json(json!({ "data": data, "rate_seconds": rate_seconds })).into_response()
    })
    .await
}

async fn red(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    let query = match crate::red::SeriesQuery::from_params(&pairs) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let engine = state.engine.pinned();
    let lookup = crate::red::series(&engine, &query);
    within_budget(&state, lookup, |s| Json(s).into_response()).await
}

async fn search(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = params::query_pairs(raw.as_deref());
    let query = match crate::search::TraceQuery::from_params(&pairs) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let engine = state.engine.pinned();
    let lookup = crate::search::search(&engine, &query);
    within_budget(&state, lookup, |data| {
        Json(json!({ "data": data })).into_response()
    })
    .await
}

async fn trace(State(state): State<Arc<ApiState>>, Path(trace_id): Path<String>) -> Response {
    let id = match crate::trace::parse_trace_id(&trace_id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let engine = state.engine.pinned();
    let lookup = crate::trace::trace_by_id(&engine, id);
    within_budget(&state, lookup, |found| match found {
        Some(trace) => Json(trace).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("trace {trace_id} not found")),
    })
    .await
}

/// `{"columns":[{"name","type"}],"rows":[[...]],"truncated":bool}`; binary values (ids) as hex.
fn to_json(result: &SqlResult) -> Result<Value, QueryError> {
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut rows = Vec::new();
    for batch in &result.batches {
        let mut writer = ArrayWriter::new(Vec::new());
        writer
            .write(batch)
            .map_err(|e| QueryError::Execution(e.to_string()))?;
        writer
            .finish()
            .map_err(|e| QueryError::Execution(e.to_string()))?;
        let bytes = writer.into_inner();
        if bytes.is_empty() {
            continue;
        }
        let objects: Vec<serde_json::Map<String, Value>> =
            serde_json::from_slice(&bytes).map_err(|e| QueryError::Execution(e.to_string()))?;
        for o in objects {
            rows.push(Value::Array(
                result
                    .schema
                    .fields()
                    .iter()
                    .map(|f| o.get(f.name()).cloned().unwrap_or(Value::Null))
                    .collect(),
            ));
        }
    }
    Ok(json!({"columns": columns, "rows": rows, "truncated": result.truncated}))
}
