//! Reading the rollup tables for the dashboards: the rows of a time window (files pruned by the
//! manifest's time ranges, row groups by their statistics), summed in Rust, because a latency
//! sketch merges by adding buckets — something SQL aggregates cannot do for us.

use datafusion::arrow::array::RecordBatch;
use datafusion::functions::expr_fn::coalesce;
use datafusion::prelude::{col, lit, Expr};
use datafusion::scalar::ScalarValue;
use serde::Serialize;
use sightline_storage::rollup::{self, minute_of, EdgeKey, Measures, RedKey, RollupKey};

use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::params::{self, Params};

const DEFAULT_LOOKBACK_NANOS: i64 = 3_600_000_000_000;

/// A time window of whole minutes, `[start, end)` in unix nanoseconds, of one kind of traffic:
/// regular (the default) or load-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    /// Load-test (shadow) traffic only, instead of none of it.
    pub load_test: bool,
}

/// The parameters [`Window::from_params`] reads.
pub const WINDOW_PARAMS: [&str; 3] = ["start", "end", "load_test"];

/// `load_test=true|false`.
pub fn parse_load_test(v: Option<&str>) -> Result<bool, QueryError> {
    match v {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(QueryError::BadQuery(format!(
            "parameter load_test: {other:?} is not true or false"
        ))),
    }
}

impl Window {
    /// `lookback` milliseconds up to `end` (unix milliseconds), as the Zipkin and Jaeger
    /// dependency APIs give it; the start taken down to its minute.
    pub fn ending_at_millis(end: i64, lookback: i64) -> Self {
        Window {
            start: rollup::minute_of(end.saturating_sub(lookback).saturating_mul(1_000_000)),
            end: end.saturating_mul(1_000_000),
            load_test: false,
        }
    }

    /// From the optional `start`, `end` and `load_test` parameters; the default is the last
    /// hour of regular traffic. The start is taken down to its minute (rollups have a row per
    /// minute).
    pub fn from_params(p: &Params<'_>) -> Result<Self, QueryError> {
        let (start, end) = (p.get("start"), p.get("end"));
        let load_test = parse_load_test(p.get("load_test"))?;
        let end = match end {
            Some(v) => params::parse_time("end", v)?,
            None => params::now_unix_nano(),
        };
        let start = match start {
            Some(v) => params::parse_time("start", v)?,
            None => end - DEFAULT_LOOKBACK_NANOS,
        };
        if start >= end {
            return Err(QueryError::BadQuery(
                "parameter start: must be before end".into(),
            ));
        }
        Ok(Self {
            start: minute_of(start),
            end,
            load_test,
        })
    }

    pub fn seconds(&self) -> f64 {
        (self.end - self.start) as f64 / 1e9
    }

    /// The seconds a rate over this window divides by: the part of it the store has data for,
    /// from where the spans begin (when that is later than the start) to now (when that is
    /// earlier than the end). Right after start-up "the last hour" holds a few minutes of
    /// spans; dividing by the hour would show a fraction of the real rate.
    pub fn rate_seconds(&self, data_since: Option<i64>, now: i64) -> f64 {
        let start = data_since.map_or(self.start, |d| self.start.max(d));
        let end = self.end.min(now);
        if end <= start {
            self.seconds()
        } else {
            (end - start) as f64 / 1e9
        }
    }

    /// [`Self::rate_seconds`] for the store the engine reads, as of now.
    pub fn covered_seconds(&self, engine: &QueryEngine) -> f64 {
        self.rate_seconds(
            engine.data_since(sightline_storage::span_table::SPANS_TABLE),
            params::now_unix_nano(),
        )
    }

    pub(crate) fn filter(&self) -> Expr {
        let ts = |v: i64| {
            lit(ScalarValue::TimestampNanosecond(
                Some(v),
                Some("UTC".into()),
            ))
        };
        // Null in files written before the flag existed: regular traffic.
        let load_test = coalesce(vec![col(rollup::table::col::LOAD_TEST), lit(false)]);
        col(rollup::table::col::TIME)
            .gt_eq(ts(self.start))
            .and(col(rollup::table::col::TIME).lt(ts(self.end)))
            .and(load_test.eq(lit(self.load_test)))
    }
}

async fn rows<K: RollupKey>(
    engine: &QueryEngine,
    table: &'static str,
    filter: Expr,
) -> Result<Vec<(K, Measures)>, QueryError> {
    let batches = engine
        .context()
        .table(table)
        .await?
        .filter(filter)?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend(rollup::read_rows::<K>(b).map_err(|e| QueryError::Execution(e.to_string()))?);
    }
    Ok(out)
}

/// The distinct values of some key columns of a rollup table: only those columns are read,
/// never the latency sketches.
pub async fn distinct_keys(
    engine: &QueryEngine,
    table: &'static str,
    filter: Expr,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, QueryError> {
    Ok(engine
        .context()
        .table(table)
        .await?
        .filter(filter)?
        .select_columns(columns)?
        .distinct()?
        .collect()
        .await?)
}

/// `span_red` rows of the window (all of them without one), of one service if given.
pub async fn red_rows(
    engine: &QueryEngine,
    window: Option<&Window>,
    service: Option<&str>,
) -> Result<Vec<(RedKey, Measures)>, QueryError> {
    let mut filter = window.map_or(lit(true), Window::filter);
    if let Some(s) = service {
        filter = filter.and(col(rollup::table::col::SERVICE_NAME).eq(lit(s.to_string())));
    }
    rows(engine, rollup::SPAN_RED_TABLE, filter).await
}

/// `service_edges` rows of the window (all of them without one).
pub async fn edge_rows(
    engine: &QueryEngine,
    window: Option<&Window>,
) -> Result<Vec<(EdgeKey, Measures)>, QueryError> {
    rows(
        engine,
        rollup::SERVICE_EDGES_TABLE,
        window.map_or(lit(true), Window::filter),
    )
    .await
}

/// Calls and failed calls between each caller and callee of the window, from the service-edge
/// rollups: what the Zipkin and Jaeger dependency APIs answer.
pub async fn links(
    engine: &QueryEngine,
    window: &Window,
) -> Result<std::collections::BTreeMap<(String, String), (u64, u64)>, QueryError> {
    let mut links = std::collections::BTreeMap::new();
    for (key, measures) in edge_rows(engine, Some(window)).await? {
        let link: &mut (u64, u64) = links
            .entry((key.source.to_string(), key.target.to_string()))
            .or_default();
        link.0 += measures.calls;
        link.1 += measures.errors;
    }
    Ok(links)
}

/// Span kinds that are a service's own requests: what its node and dashboard show.
pub const ENTRY_KINDS: [i8; 2] = [2, 5];

/// The measures of a service's own requests (SERVER and CONSUMER spans); a service that has none
/// (a batch job, a pure client) is measured by all its spans.
pub fn entry_measures<'a>(
    rows: impl Iterator<Item = (&'a RedKey, &'a Measures)> + Clone,
) -> Measures {
    let mut entry = Measures::default();
    let mut all = Measures::default();
    for (k, m) in rows {
        all.merge(m);
        if ENTRY_KINDS.contains(&k.span_kind) {
            entry.merge(m);
        }
    }
    if entry.calls > 0 {
        entry
    } else {
        all
    }
}

fn ms(nanos: Option<f64>) -> Option<f64> {
    // Microsecond precision is all a 1%-accurate sketch can honestly give.
    nanos.map(|n| (n / 1e3).round() / 1e3)
}

/// Rate, error rate and latency of a set of calls over some seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub calls: u64,
    pub errors: u64,
    /// Calls per second.
    pub rate: f64,
    /// Errors per call, 0 to 1; null without calls.
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

impl Summary {
    pub fn of(m: &Measures, seconds: f64) -> Self {
        Summary {
            calls: m.calls,
            errors: m.errors,
            rate: if seconds > 0.0 {
                m.calls as f64 / seconds
            } else {
                0.0
            },
            error_rate: (m.calls > 0).then(|| m.errors as f64 / m.calls as f64),
            p50_ms: ms(m.latency.quantile(0.5)),
            p95_ms: ms(m.latency.quantile(0.95)),
            p99_ms: ms(m.latency.quantile(0.99)),
            mean_ms: ms(m.mean_nano()),
        }
    }
}
