//! Trace search: traces with at least one span matching every span-level condition, summarised,
//! then filtered by whole-trace duration. Runs as SQL over the `spans` table; user values enter
//! only as escaped literals.

use datafusion::arrow::array::{Array, AsArray, ListArray};
use serde::Serialize;

use crate::columns;
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::params::{self, AttrFilter};
use sightline_storage::schema::{self, dedicated_column};

#[derive(Debug, Default)]
pub struct TraceQuery {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub attributes: Vec<AttrFilter>,
    pub min_duration: Option<i64>,
    pub max_duration: Option<i64>,
    pub min_trace_duration: Option<i64>,
    pub max_trace_duration: Option<i64>,
    pub errors_only: bool,
    /// Spans without an error status only.
    pub no_errors: bool,
    /// A span kind (OTLP's numbering) or status code the matching span must have.
    pub kind: Option<i8>,
    pub status: Option<i8>,
    /// Load-test spans only (`true`), none of them (`false`), or both (`None`).
    pub load_test: Option<bool>,
    pub start: i64,
    pub end: i64,
    pub limit: usize,
}

const DEFAULT_LOOKBACK_NANOS: i64 = 3_600_000_000_000;
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

impl TraceQuery {
    /// From the query string of `GET /api/v1/traces`; `attr` may repeat.
    pub fn from_params(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let mut q = TraceQuery {
            limit: DEFAULT_LIMIT,
            ..Default::default()
        };
        let mut start = None;
        let mut end = None;
        for (k, v) in pairs {
            match k.as_str() {
                "service" => q.service = Some(v.clone()),
                "operation" => q.operation = Some(v.clone()),
                "attr" => q.attributes.push(params::parse_attr_filter(v)?),
                "min_duration" => q.min_duration = Some(params::parse_duration(k, v)?),
                "max_duration" => q.max_duration = Some(params::parse_duration(k, v)?),
                "min_trace_duration" => q.min_trace_duration = Some(params::parse_duration(k, v)?),
                "max_trace_duration" => q.max_trace_duration = Some(params::parse_duration(k, v)?),
                "error" => {
                    q.errors_only = match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(QueryError::BadQuery(format!(
                                "parameter error: {v:?} is not true or false"
                            )))
                        }
                    }
                }
                "load_test" => q.load_test = Some(crate::rollups::parse_load_test(Some(v))?),
                "start" => start = Some(params::parse_time(k, v)?),
                "end" => end = Some(params::parse_time(k, v)?),
                "limit" => q.limit = params::parse_limit(Some(v), DEFAULT_LIMIT, MAX_LIMIT)?,
                other => return Err(QueryError::BadQuery(format!("unknown parameter {other:?}"))),
            }
        }
        q.end = end.unwrap_or_else(params::now_unix_nano);
        q.start = start.unwrap_or(q.end - DEFAULT_LOOKBACK_NANOS);
        if q.start > q.end {
            return Err(QueryError::BadQuery("parameter start: after end".into()));
        }
        Ok(q)
    }
}

/// A string as an SQL literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An attribute filter as SQL. A key with a dedicated column (HTTP status, method, route, peer,
/// database, RPC, messaging) reads that column, which is far cheaper than a map lookup;
/// otherwise [`crate::attr_match`] looks the key up in the span's attributes, then the
/// resource's.
fn attribute_condition(f: &AttrFilter) -> String {
    match dedicated_column(&f.key) {
        Some(column) if column == schema::col::HTTP_STATUS_CODE => {
            if let Ok(n) = f.value.parse::<i64>() {
                return format!("{column} {} {n}", f.op);
            }
        }
        Some(column) => return format!("{column} {} {}", f.op, literal(&f.value)),
        None => {}
    }
    format!(
        "{}(attributes, resource_attributes, {}, '{}', {})",
        crate::attr_match::NAME,
        literal(&f.key),
        f.op,
        literal(&f.value)
    )
}

fn window(q: &TraceQuery) -> String {
    format!(
        "start_time >= to_timestamp_nanos({}) AND start_time <= to_timestamp_nanos({})",
        q.start, q.end
    )
}

/// Traces with a span matching every span-level condition, most recent match first. Without a
/// whole-trace duration filter only `limit` are needed; with one, a wider net is cast (see
/// [`CANDIDATES_PER_RESULT`]).
fn candidates_sql(q: &TraceQuery) -> String {
    let conditions = span_conditions(q);
    let whole_trace_filter = q.min_trace_duration.is_some() || q.max_trace_duration.is_some();
    let candidates = if whole_trace_filter {
        q.limit * CANDIDATES_PER_RESULT
    } else {
        q.limit
    };
    format!(
        "SELECT trace_id, max(start_time) AS latest FROM spans WHERE {} \
         GROUP BY trace_id ORDER BY latest DESC LIMIT {candidates}",
        conditions.join(" AND ")
    )
}

/// The span-level conditions of `q` as SQL over the `spans` table, the time window first.
pub fn span_conditions(q: &TraceQuery) -> Vec<String> {
    let mut conditions = vec![window(q)];
    if let Some(s) = &q.service {
        conditions.push(format!("service_name = {}", literal(s)));
    }
    if let Some(o) = &q.operation {
        conditions.push(format!("span_name = {}", literal(o)));
    }
    if let Some(d) = q.min_duration {
        conditions.push(format!("duration_nano >= {d}"));
    }
    if let Some(d) = q.max_duration {
        conditions.push(format!("duration_nano <= {d}"));
    }
    if q.errors_only {
        conditions.push("status_code = 2".into());
    }
    if q.no_errors {
        conditions.push("status_code <> 2".into());
    }
    if let Some(k) = q.kind {
        conditions.push(format!("span_kind = {k}"));
    }
    if let Some(c) = q.status {
        conditions.push(format!("status_code = {c}"));
    }
    match q.load_test {
        Some(true) => conditions.push("load_test".into()),
        Some(false) => conditions.push("load_test IS NOT TRUE".into()),
        None => {}
    }
    conditions.extend(q.attributes.iter().map(attribute_condition));
    conditions
}

/// How many candidate traces per wanted result are summarised when a whole-trace duration
/// filter has to be applied after summarising.
const CANDIDATES_PER_RESULT: usize = 50;

/// Summaries of the given traces (their spans within the window), filtered by whole-trace
/// duration, newest first.
fn summary_sql(q: &TraceQuery, ids: &[String]) -> String {
    let mut having = Vec::new();
    if let Some(d) = q.min_trace_duration {
        having.push(format!("duration_nano >= {d}"));
    }
    if let Some(d) = q.max_trace_duration {
        having.push(format!("duration_nano <= {d}"));
    }
    let having = if having.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", having.join(" AND "))
    };
    // Typed like the column, so that the filter reaches the bloom filters unchanged.
    let ids: Vec<String> = ids
        .iter()
        .map(|id| format!("arrow_cast(X'{id}', 'FixedSizeBinary(16)')"))
        .collect();
    format!(
        "WITH summary AS ( \
           SELECT trace_id, \
             first_value(CAST(service_name AS VARCHAR) ORDER BY parent_span_id IS NOT NULL, start_time) AS root_service, \
             first_value(CAST(span_name AS VARCHAR) ORDER BY parent_span_id IS NOT NULL, start_time) AS root_operation, \
             min(CAST(start_time AS BIGINT)) AS start_unix_nano, \
             max(CAST(start_time AS BIGINT) + duration_nano) - min(CAST(start_time AS BIGINT)) AS duration_nano, \
             count(*) AS span_count, \
             sum(CASE WHEN status_code = 2 THEN 1 ELSE 0 END) AS error_count, \
             array_agg(DISTINCT CAST(service_name AS VARCHAR)) AS services \
           FROM spans \
           WHERE {window} AND trace_id IN ({ids}) \
           GROUP BY trace_id) \
         SELECT * FROM summary {having} ORDER BY start_unix_nano DESC LIMIT {limit}",
        window = window(q),
        ids = ids.join(", "),
        limit = q.limit,
    )
}

#[derive(Debug, Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    pub root_service: String,
    pub root_operation: String,
    pub start_unix_nano: i64,
    pub duration_nano: i64,
    pub span_count: i64,
    pub error_count: i64,
    pub services: Vec<String>,
}

/// The traces with a span that meets every span-level condition of `q`, most recent match
/// first: at most `limit` of them, or a wider net when a whole-trace duration filter is to be
/// applied afterwards.
pub async fn matching_traces(
    engine: &QueryEngine,
    q: &TraceQuery,
) -> Result<Vec<[u8; 16]>, QueryError> {
    let found = engine
        .context()
        .sql(&candidates_sql(q))
        .await?
        .collect()
        .await?;
    let ids = columns::trace_ids(&found)?;
    Ok(ids)
}

/// Runs in two steps so that only the spans of the traces shown are summarised: first the
/// matching traces (a scan that the filters prune), then their spans by id (which the bloom
/// filters on `trace_id` find without scanning).
pub async fn search(engine: &QueryEngine, q: &TraceQuery) -> Result<Vec<TraceSummary>, QueryError> {
    let ids: Vec<String> = matching_traces(engine, q)
        .await?
        .iter()
        .map(|id| columns::hex(id))
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let batches = engine
        .context()
        .sql(&summary_sql(q, &ids))
        .await?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let ids = b
            .column_by_name("trace_id")
            .and_then(|c| c.as_fixed_size_binary_opt())
            .ok_or_else(|| QueryError::Execution("trace_id is not binary".into()))?;
        let services = b
            .column_by_name("services")
            .and_then(|c| c.as_any().downcast_ref::<ListArray>())
            .ok_or_else(|| QueryError::Execution("services is not a list".into()))?;
        let (root_service, root_operation) = (
            columns::strings(b, "root_service")?,
            columns::strings(b, "root_operation")?,
        );
        let (start, duration) = (
            columns::ints(b, "start_unix_nano")?,
            columns::ints(b, "duration_nano")?,
        );
        let (spans, errors) = (
            columns::ints(b, "span_count")?,
            columns::ints(b, "error_count")?,
        );
        for r in 0..b.num_rows() {
            let list = columns::as_strings(&services.value(r))?;
            let mut names: Vec<String> =
                (0..list.len()).map(|i| list.value(i).to_string()).collect();
            names.sort();
            out.push(TraceSummary {
                trace_id: columns::hex(ids.value(r)),
                root_service: root_service.value(r).to_string(),
                root_operation: root_operation.value(r).to_string(),
                start_unix_nano: start.value(r),
                duration_nano: duration.value(r),
                span_count: spans.value(r),
                error_count: errors.value(r),
                services: names,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_keep_repeats_and_decode() {
        let pairs = crate::params::query_pairs(Some(
            "attr=http.status_code%3E%3D500&attr=region%3Deu&service=a+b&x=%zz",
        ));
        assert_eq!(pairs[0], ("attr".into(), "http.status_code>=500".into()));
        assert_eq!(pairs[1], ("attr".into(), "region=eu".into()));
        assert_eq!(pairs[2], ("service".into(), "a b".into()));
        assert_eq!(pairs[3], ("x".into(), "%zz".into()));
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = TraceQuery::from_params(&[("limit".into(), "0".into())]).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        let err = TraceQuery::from_params(&[("colour".into(), "red".into())]).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn values_are_escaped_into_literals() {
        let f = AttrFilter {
            key: "k'ey".into(),
            op: "=",
            value: "it's".into(),
        };
        let sql = attribute_condition(&f);
        assert!(sql.contains("'k''ey'") && sql.contains("'it''s'"), "{sql}");
    }
}
