//! Rate, errors and duration: the top-N operations of a window, and the RED series of a service,
//! an operation or an edge over time. Both sum per-minute `span_red` / `service_edges` rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use sightline_storage::rollup::table::NANOS_PER_MINUTE;
use sightline_storage::rollup::Measures;

use crate::catalog::{span_kind_name, span_kind_number};
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::params::{self, Params};
use crate::rollups::{self, Summary, Window};

/// What the top-N list is ordered by (largest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBy {
    P99,
    P50,
    ErrorRate,
    Rate,
    Impact,
}

impl TopBy {
    fn parse(v: &str) -> Result<Self, QueryError> {
        Ok(match v {
            "p99" => TopBy::P99,
            "p50" => TopBy::P50,
            "error_rate" => TopBy::ErrorRate,
            "rate" => TopBy::Rate,
            "impact" => TopBy::Impact,
            _ => {
                return Err(QueryError::BadQuery(format!(
                    "parameter by: {v:?} is not one of p99, p50, error_rate, rate, impact"
                )))
            }
        })
    }
}

#[derive(Debug)]
pub struct TopQuery {
    pub by: TopBy,
    pub service: Option<String>,
    pub span_kind: Option<i8>,
    pub window: Window,
    pub limit: usize,
}

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

fn parse_span_kind(v: Option<&str>) -> Result<Option<i8>, QueryError> {
    v.map(|v| {
        span_kind_number(v).ok_or_else(|| {
            QueryError::BadQuery(format!(
                "parameter span_kind: {v:?} is not one of server, client, producer, consumer, \
                 internal, unspecified"
            ))
        })
    })
    .transpose()
}

impl TopQuery {
    pub fn from_params(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let p = Params::checked(
            pairs,
            &[
                "by",
                "service",
                "span_kind",
                "start",
                "end",
                "load_test",
                "limit",
            ],
        )?;
        Ok(TopQuery {
            by: p
                .get("by")
                .map(TopBy::parse)
                .transpose()?
                .unwrap_or(TopBy::P99),
            service: p.get("service").map(str::to_string),
            span_kind: parse_span_kind(p.get("span_kind"))?,
            window: Window::from_params(&p)?,
            limit: params::parse_limit(p.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)?,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct TopEntry {
    pub service: String,
    pub operation: String,
    pub span_kind: &'static str,
    #[serde(flatten)]
    pub summary: Summary,
    /// Time spent in the operation over the window, in seconds: calls × mean latency.
    pub impact: f64,
}

impl TopEntry {
    fn score(&self, by: TopBy) -> f64 {
        let s = &self.summary;
        match by {
            TopBy::P99 => s.p99_ms.unwrap_or(0.0),
            TopBy::P50 => s.p50_ms.unwrap_or(0.0),
            TopBy::ErrorRate => s.error_rate.unwrap_or(0.0),
            TopBy::Rate => s.rate,
            TopBy::Impact => self.impact,
        }
    }
}

/// The top operations, and the seconds their rates divide by ([`Window::rate_seconds`]).
pub async fn top(engine: &QueryEngine, q: &TopQuery) -> Result<(Vec<TopEntry>, f64), QueryError> {
    let rows = rollups::red_rows(engine, Some(&q.window), q.service.as_deref()).await?;
    let mut operations: HashMap<(Arc<str>, Arc<str>, i8), Measures> = HashMap::new();
    for (k, m) in &rows {
        if q.span_kind.is_some_and(|kind| kind != k.span_kind) {
            continue;
        }
        operations
            .entry((k.service.clone(), k.operation.clone(), k.span_kind))
            .or_default()
            .merge(m);
    }
    let seconds = q.window.covered_seconds(engine);
    let mut out: Vec<TopEntry> = operations
        .into_iter()
        .map(|((service, operation, kind), m)| TopEntry {
            service: service.to_string(),
            operation: operation.to_string(),
            span_kind: span_kind_name(kind),
            impact: m.duration_sum_nano as f64 / 1e9,
            summary: Summary::of(&m, seconds),
        })
        .collect();
    out.sort_by(|a, b| {
        b.score(q.by)
            .total_cmp(&a.score(q.by))
            .then(b.summary.calls.cmp(&a.summary.calls))
            .then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)))
    });
    out.truncate(q.limit);
    Ok((out, seconds))
}

/// Whose series: an operation, a service, or calls — one edge, every call into a target (how
/// the map measures a database, queue or external node), or every call out of a source.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesOf {
    Service {
        service: String,
        operation: Option<String>,
        span_kind: Option<i8>,
    },
    Calls {
        source: Option<String>,
        target: Option<String>,
    },
}

#[derive(Debug)]
pub struct SeriesQuery {
    pub of: SeriesOf,
    pub window: Window,
    pub step_nanos: i64,
}

/// Points a default step aims for.
const DEFAULT_POINTS: i64 = 60;
const MAX_POINTS: i64 = 11_000;

impl SeriesQuery {
    pub fn from_params(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let p = Params::checked(
            pairs,
            &[
                "service",
                "operation",
                "span_kind",
                "source",
                "target",
                "start",
                "end",
                "load_test",
                "step",
            ],
        )?;
        let of =
            match (p.get("service"), p.get("source"), p.get("target")) {
                (Some(service), None, None) => SeriesOf::Service {
                    service: service.to_string(),
                    operation: p.get("operation").map(str::to_string),
                    span_kind: parse_span_kind(p.get("span_kind"))?,
                },
                (None, source, target) if source.is_some() || target.is_some() => {
                    if p.get("operation").is_some() || p.get("span_kind").is_some() {
                        return Err(QueryError::BadQuery(
                            "parameters operation and span_kind go with service, not with source \
                             or target"
                                .into(),
                        ));
                    }
                    SeriesOf::Calls {
                        source: source.map(str::to_string),
                        target: target.map(str::to_string),
                    }
                }
                _ => return Err(QueryError::BadQuery(
                    "parameters: give service (and optionally operation, span_kind), or source \
                     and/or target for calls"
                        .into(),
                )),
            };
        let window = Window::from_params(&p)?;
        let step_nanos = match p.get("step") {
            Some(v) => {
                let step = params::parse_duration("step", v)?;
                if step < NANOS_PER_MINUTE || step % NANOS_PER_MINUTE != 0 {
                    return Err(QueryError::BadQuery(format!(
                        "parameter step: {v:?} is not a whole number of minutes (rollups are \
                         per minute)"
                    )));
                }
                step
            }
            None => {
                let minutes = (window.end - window.start) / NANOS_PER_MINUTE;
                ((minutes + DEFAULT_POINTS - 1) / DEFAULT_POINTS).max(1) * NANOS_PER_MINUTE
            }
        };
        if (window.end - window.start) / step_nanos > MAX_POINTS {
            return Err(QueryError::BadQuery(format!(
                "parameter step: more than {MAX_POINTS} points; use a larger step"
            )));
        }
        Ok(Self {
            of,
            window,
            step_nanos,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Point {
    /// Start of the step, unix seconds.
    pub t: i64,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Serialize)]
pub struct Series {
    pub step_seconds: i64,
    pub points: Vec<Point>,
}

pub async fn series(engine: &QueryEngine, q: &SeriesQuery) -> Result<Series, QueryError> {
    let step = q.step_nanos;
    let first = q.window.start.div_euclid(step) * step;
    let mut buckets: BTreeMap<i64, Measures> = BTreeMap::new();
    let mut t = first;
    while t < q.window.end {
        buckets.insert(t, Measures::default());
        t += step;
    }
    let bucket_of = |minute: i64| minute.div_euclid(step) * step;
    match &q.of {
        SeriesOf::Service {
            service,
            operation,
            span_kind,
        } => {
            let rows = rollups::red_rows(engine, Some(&q.window), Some(service)).await?;
            let rows: Vec<_> = rows
                .iter()
                .filter(|(k, _)| operation.as_deref().is_none_or(|o| *k.operation == *o))
                .filter(|(k, _)| span_kind.is_none_or(|s| s == k.span_kind))
                .collect();
            // A whole service is measured by its own requests (as on the map), the same kinds
            // in every step.
            let entry_only = operation.is_none()
                && span_kind.is_none()
                && rows
                    .iter()
                    .any(|(k, _)| rollups::ENTRY_KINDS.contains(&k.span_kind));
            for (k, m) in rows {
                if entry_only && !rollups::ENTRY_KINDS.contains(&k.span_kind) {
                    continue;
                }
                if let Some(b) = buckets.get_mut(&bucket_of(k.minute)) {
                    b.merge(m);
                }
            }
        }
        SeriesOf::Calls { source, target } => {
            for (k, m) in rollups::edge_rows(engine, Some(&q.window)).await? {
                if source.as_deref().is_none_or(|s| *k.source == *s)
                    && target.as_deref().is_none_or(|t| *k.target == *t)
                {
                    if let Some(b) = buckets.get_mut(&bucket_of(k.minute)) {
                        b.merge(&m);
                    }
                }
            }
        }
    }
    let seconds = step as f64 / 1e9;
    Ok(Series {
        step_seconds: step / 1_000_000_000,
        points: buckets
            .into_iter()
            .map(|(t, m)| Point {
                t: t / 1_000_000_000,
                summary: Summary::of(&m, seconds),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        crate::params::query_pairs(Some(s))
    }

    #[test]
    fn parameters_are_checked_and_named() {
        let e = TopQuery::from_params(&pairs("by=slowest")).unwrap_err();
        assert!(e.to_string().contains("parameter by"), "{e}");
        let e = TopQuery::from_params(&pairs("servce=cart")).unwrap_err();
        assert!(e.to_string().contains("servce"), "{e}");
        let e = SeriesQuery::from_params(&pairs("service=a&step=90s")).unwrap_err();
        assert!(e.to_string().contains("step"), "{e}");
        let e = SeriesQuery::from_params(&pairs("service=a&source=b")).unwrap_err();
        assert!(e.to_string().contains("source and/or target"), "{e}");
        let e = SeriesQuery::from_params(&pairs("target=a&operation=b")).unwrap_err();
        assert!(e.to_string().contains("operation"), "{e}");
        let q = SeriesQuery::from_params(&pairs("target=db")).unwrap();
        assert_eq!(
            q.of,
            SeriesOf::Calls {
                source: None,
                target: Some("db".into())
            }
        );
        let q = SeriesQuery::from_params(&pairs("service=a&start=0&end=7200")).unwrap();
        assert_eq!(
            q.step_nanos,
            2 * NANOS_PER_MINUTE,
            "an hour's default is 60 points"
        );
        let q = TopQuery::from_params(&pairs("span_kind=server&limit=5")).unwrap();
        assert_eq!((q.span_kind, q.limit, q.by), (Some(2), 5, TopBy::P99));
    }
}
