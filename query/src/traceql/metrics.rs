//! TraceQL metrics (`{ ... } | rate() by (...)`, `count_over_time()`, `quantile_over_time()`)
//! answered from the RED rollups: every span before sampling, counted per minute and key
//! (service, span name, kind, status) with a latency sketch. A query whose filter and `by` fields
//! are among those keys is exact to the minute; anything else is refused, naming the field,
//! rather than answered from a sample.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sightline_storage::rollup::{Measures, RedKey};

use super::eval::{condition_fields, field_text, Evaluator, TraceView, Value};
use super::parse::{Field, MetricsFunction, MetricsQuery, Scope, Spansets};
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::rollups::{self, Window};
use crate::search::TraceQuery;
use crate::trace::SpanRecord;

const NANOS_PER_MINUTE: i64 = 60_000_000_000;
/// As many points as the Prometheus API allows a range query.
const MAX_POINTS: i64 = 11_000;

/// The steps of a range query: `[start, end)` in unix nanoseconds, cut into steps of whole
/// minutes (the rollups' resolution) from a start aligned to the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Steps {
    /// `step` is rounded up to whole minutes; without one, about 100 points cover the range.
    pub fn new(start: i64, end: i64, step: Option<i64>) -> Result<Self, QueryError> {
        if start >= end {
            return Err(bad("parameter start: must be before end"));
        }
        let step = step.unwrap_or((end - start) / 100);
        if step < 0 {
            return Err(bad("parameter step: must be positive"));
        }
        let step = (step.max(1) + NANOS_PER_MINUTE - 1) / NANOS_PER_MINUTE * NANOS_PER_MINUTE;
        let start = start.div_euclid(step) * step;
        let points = (end - start + step - 1) / step;
        if points > MAX_POINTS {
            return Err(bad(format!(
                "the range and step give {points} points; at most {MAX_POINTS} are taken (a step of at least {} s)",
                (end - start) / MAX_POINTS / 1_000_000_000 + 1
            )));
        }
        Ok(Steps { start, end, step })
    }

    /// One step over the whole range, for an instant query.
    pub fn whole(start: i64, end: i64) -> Result<Self, QueryError> {
        if start >= end {
            return Err(bad("parameter start: must be before end"));
        }
        let start = start.div_euclid(NANOS_PER_MINUTE) * NANOS_PER_MINUTE;
        let step = (end - start + NANOS_PER_MINUTE - 1) / NANOS_PER_MINUTE * NANOS_PER_MINUTE;
        Ok(Steps { start, end, step })
    }

    fn count(&self) -> usize {
        ((self.end - self.start + self.step - 1) / self.step) as usize
    }
}

/// A result series: its labels (the `by` fields' values, and `p` for a quantile) and a value at
/// each step's start, in unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    pub labels: Vec<(String, Value)>,
    pub samples: Vec<(i64, f64)>,
}

fn bad(message: impl std::fmt::Display) -> QueryError {
    QueryError::BadQuery(format!("TraceQL metrics: {message}"))
}

/// Whether the rollups keep a field: they are keyed by service, span name, kind and status.
fn in_rollups(f: &Field) -> bool {
    match f {
        Field::Attribute(Scope::Resource | Scope::Any, k) => k == "service.name",
        Field::Name | Field::Kind | Field::Status => true,
        _ => false,
    }
}

fn check(q: &MetricsQuery) -> Result<(), QueryError> {
    if !matches!(q.query.spansets, Spansets::Filter(_)) || !q.query.stages.is_empty() {
        return Err(bad(
            "metrics are answered from the rollups, which take one spanset filter before the function (no spanset operators or pipeline stages)",
        ));
    }
    let by_duration =
        matches!(&q.function, MetricsFunction::QuantileOverTime(f, _) if *f != Field::Duration);
    if by_duration {
        return Err(bad(
            "quantile_over_time is answered from the rollups' latency sketches: its field must be duration",
        ));
    }
    for f in condition_fields(&q.query).iter().chain(&q.by) {
        if !in_rollups(f) {
            return Err(bad(format!(
                "{} is not kept by the rollups that answer metrics (they keep resource.service.name, name, kind and status per minute)",
                field_text(f)
            )));
        }
    }
    Ok(())
}

/// The series a metrics query gives over some steps, of regular or load-test traffic.
pub async fn query_range(
    engine: &QueryEngine,
    q: &MetricsQuery,
    steps: Steps,
    load_test: bool,
) -> Result<Vec<MetricSeries>, QueryError> {
    check(q)?;
    let Spansets::Filter(cond) = &q.query.spansets else {
        return Err(bad("one spanset filter is needed"));
    };
    let mut pushed = TraceQuery::default();
    super::pushdown(&q.query, &mut pushed);
    let window = Window {
        start: steps.start,
        end: steps.end,
        load_test,
    };
    let rows = rollups::red_rows(engine, Some(&window), pushed.service.as_deref()).await?;

    // Each key is evaluated once, as a span with just the fields the rollups keep.
    let mut evaluator = Evaluator::new();
    // Per key, the values of its `by` fields, or None if the filter rejects it.
    let mut keys: HashMap<KeyFields, Option<Vec<Value>>> = HashMap::new();
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<Measures>)> = BTreeMap::new();
    let count = steps.count();
    for (key, measures) in &rows {
        let RedKey {
            service,
            operation,
            span_kind,
            status_code,
            ..
        } = key;
        let group = keys
            .entry((service.clone(), operation.clone(), *span_kind, *status_code))
            .or_insert_with(|| {
                let span = [as_span(key)];
                let view = TraceView::new(&span);
                evaluator.matches(&view, 0, cond).then(|| {
                    q.by.iter()
                        .flat_map(|f| evaluator.values(&view, 0, f))
                        .collect()
                })
            });
        let Some(values) = group else { continue };
        let step = ((key.minute - steps.start) / steps.step) as usize;
        if step >= count {
            continue;
        }
        let (_, per_step) = groups
            .entry(format!("{values:?}"))
            .or_insert_with(|| (values.clone(), vec![Measures::default(); count]));
        per_step[step].merge(measures);
    }

    let names: Vec<String> = q.by.iter().map(field_text).collect();
    let at = |i: usize| (steps.start + i as i64 * steps.step) / 1_000_000;
    let step_seconds = steps.step as f64 / 1e9;
    let mut out = Vec::new();
    for (values, per_step) in groups.into_values() {
        let labels: Vec<(String, Value)> = names.iter().cloned().zip(values).collect();
        match &q.function {
            MetricsFunction::Rate | MetricsFunction::CountOverTime => {
                let per_second = q.function == MetricsFunction::Rate;
                out.push(MetricSeries {
                    labels,
                    samples: per_step
                        .iter()
                        .enumerate()
                        .map(|(i, m)| {
                            let calls = m.calls as f64;
                            (
                                at(i),
                                if per_second {
                                    calls / step_seconds
                                } else {
                                    calls
                                },
                            )
                        })
                        .collect(),
                });
            }
            MetricsFunction::QuantileOverTime(_, quantiles) => {
                for &p in quantiles {
                    let mut labels = labels.clone();
                    labels.push(("p".into(), Value::Float(p)));
                    out.push(MetricSeries {
                        labels,
                        // Seconds, as Tempo gives durations; steps without spans have no value.
                        samples: per_step
                            .iter()
                            .enumerate()
                            .filter_map(|(i, m)| Some((at(i), m.latency.quantile(p)? / 1e9)))
                            .collect(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// What a rollup key holds besides its minute: service, span name, kind, status.
type KeyFields = (Arc<str>, Arc<str>, i8, i8);

fn as_span(key: &RedKey) -> SpanRecord {
    SpanRecord {
        trace_id: [0; 16],
        span_id: [0; 8],
        parent_span_id: None,
        trace_state: None,
        service: key.service.to_string(),
        name: key.operation.to_string(),
        kind: key.span_kind,
        start_unix_nano: key.minute,
        duration_nano: 0,
        status_code: key.status_code,
        status_message: None,
        scope_name: None,
        scope_version: None,
        resource: Vec::new(),
        attributes: Vec::new(),
        events: Vec::new(),
        links: Vec::new(),
        load_test: key.load_test,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_metrics;
    use super::*;

    #[test]
    fn steps_are_whole_minutes_aligned_to_the_step() {
        let m = NANOS_PER_MINUTE;
        let s = Steps::new(7 * m + 5, 20 * m, Some(90_000_000_000)).unwrap();
        assert_eq!((s.start, s.step, s.count()), (6 * m, 2 * m, 7));
        let s = Steps::new(0, 60 * m, None).unwrap();
        assert_eq!((s.step, s.count()), (m, 60));
        assert!(Steps::new(0, 100_000 * m, Some(m))
            .unwrap_err()
            .to_string()
            .contains("at most 11000"));
    }

    #[test]
    fn only_what_the_rollups_keep_is_answered() {
        for q in [
            "{ } | rate()",
            r#"{ resource.service.name = "a" && status = error } | rate() by (name, kind)"#,
            r#"{ .service.name =~ "a|b" } | count_over_time() by (resource.service.name)"#,
            "{ kind = server } | quantile_over_time(duration, .99, .5) with(sample=true)",
        ] {
            check(&parse_metrics(q).unwrap()).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
        for (q, says) in [
            (
                "{ span.http.route = \"/\" } | rate()",
                "span.http.route is not kept",
            ),
            ("{ } | rate() by (span.region)", "span.region is not kept"),
            (
                "{ } | quantile_over_time(span.size, .5)",
                "must be duration",
            ),
            ("{ } >> { } | rate()", "one spanset filter"),
            ("{ } | count() > 2 | rate()", "one spanset filter"),
        ] {
            let e = check(&parse_metrics(q).unwrap()).unwrap_err().to_string();
            assert!(e.contains(says), "{q}: {e}");
        }
        for (q, says) in [
            ("{ } | rate(duration)", "takes no argument"),
            (
                "{ } | quantile_over_time(duration)",
                "quantiles from 0 to 1",
            ),
            (
                "{ } | quantile_over_time(duration, 2)",
                "quantiles from 0 to 1",
            ),
            ("{ } | avg_over_time(duration)", "not supported"),
            ("{ } | rate() | topk(5)", "nothing may follow"),
            ("{ }", "ends in | rate()"),
            ("{ } | rate() with(sample=true", "not closed"),
        ] {
            let e = parse_metrics(q).unwrap_err().to_string();
            assert!(e.contains(says), "{q}: {e}");
        }
    }
}
