//! PromQL: parsed with `promql-parser`, evaluated by our own engine with Prometheus 3's
//! semantics (5-minute lookback, staleness, `@` and `offset`, subqueries, delayed name
//! removal). A query runs in two phases: [`eval::plan`] lists its selectors and the time range
//! each reads, their series and samples are fetched from a [`SeriesSource`] (the store, with
//! matchers and times pushed into the scan), then the evaluator computes every step at once
//! over what was fetched.

mod aggregate;
pub mod eval;
mod functions;
mod histogram;
pub mod select;
pub mod value;

use std::collections::HashMap;

use promql_parser::parser::Expr;

pub use eval::{Grid, Options, QueryTimes};
pub use histogram::histogram_json;
pub use select::{SeriesSource, StoreSource};
pub use value::{Labels, QueryResult, RawSeries, Val};

use crate::error::QueryError;

#[derive(Debug, thiserror::Error)]
pub enum PromQlError {
    /// The query is wrong: it does not parse, or its types do not fit (`bad_data`).
    #[error("{0}")]
    Bad(String),
    /// The query is right but cannot be answered with this data (`execution`).
    #[error("{0}")]
    Execution(String),
    #[error(
        "query processing would load too many samples into memory in query execution (limit {0})"
    )]
    TooManySamples(usize),
    #[error("{0}")]
    Storage(#[from] QueryError),
}

/// A label name as Prometheus 3 takes it: any non-empty UTF-8 string.
pub fn valid_label_name(name: &str) -> bool {
    !name.is_empty()
}

pub fn parse(query: &str) -> Result<Expr, PromQlError> {
    promql_parser::parser::parse(query).map_err(PromQlError::Bad)
}

/// Fetches what `expr` reads over `[start, end]` and evaluates it at each step.
pub async fn evaluate(
    source: &dyn SeriesSource,
    expr: &Expr,
    grid: Grid,
    opts: &Options,
) -> Result<eval::Evaluated, PromQlError> {
    let times = QueryTimes {
        start: grid.start,
        end: grid.end,
        step: if grid.end == grid.start { 0 } else { grid.step },
    };
    let mut fetches = Vec::new();
    eval::plan(expr, (grid.start, grid.end), times, opts, &mut fetches);
    let mut data: HashMap<usize, Vec<RawSeries>> = HashMap::new();
    for f in fetches {
        let m = eval::selector_matchers(f.selector);
        data.insert(f.key, source.select(&m, f.min_ms, f.max_ms).await?);
    }
    let mut ev = eval::Evaluator {
        data: &data,
        opts,
        times,
        samples: 0,
    };
    let value = ev.eval(expr, grid)?;
    Ok(eval::Evaluated { value, grid })
}

/// An instant query at `t` (ms).
pub async fn instant(
    source: &dyn SeriesSource,
    expr: &Expr,
    t: i64,
    opts: &Options,
) -> Result<QueryResult, PromQlError> {
    let grid = Grid::instant(t);
    let out = evaluate(source, expr, grid, opts).await?;
    Ok(match out.value {
        value::Value::Scalar(v) => QueryResult::Scalar { t, v: v[0] },
        value::Value::String(s) => QueryResult::String { t, v: s },
        value::Value::Vector(v) => QueryResult::Vector(
            eval::finish(v)?
                .into_iter()
                .filter_map(|s| {
                    let v = s.values.into_iter().next().flatten()?;
                    Some((s.labels, t, v))
                })
                .collect(),
        ),
        value::Value::Matrix(m) => {
            let mut m: Vec<RawSeries> = m
                .into_iter()
                .map(|mut s| {
                    if s.drop_name {
                        s.labels = s.labels.without_metadata();
                        s.drop_name = false;
                    }
                    s
                })
                .collect();
            m.sort_by(|a, b| a.labels.cmp(&b.labels));
            QueryResult::Matrix(m)
        }
    })
}

/// A range query: every step from `start` to `end` (ms), `step` apart.
pub async fn range(
    source: &dyn SeriesSource,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    opts: &Options,
) -> Result<QueryResult, PromQlError> {
    if step <= 0 {
        return Err(PromQlError::Bad(
            "zero or negative query resolution step widths are not accepted".into(),
        ));
    }
    let grid = Grid { start, end, step };
    let out = evaluate(source, expr, grid, opts).await?;
    let series = match out.value {
        value::Value::Scalar(v) => vec![RawSeries {
            labels: Labels::default(),
            points: v
                .into_iter()
                .enumerate()
                .map(|(i, f)| value::Point {
                    t: grid.at(i),
                    v: Val::F(f),
                })
                .collect(),
            drop_name: false,
        }],
        value::Value::Vector(v) => eval::finish(v)?
            .into_iter()
            .map(|s| eval::step_to_raw(s, grid))
            .filter(|s| !s.points.is_empty())
            .collect(),
        value::Value::String(_) => {
            return Err(PromQlError::Bad(
                "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
            ))
        }
        value::Value::Matrix(_) => {
            return Err(PromQlError::Bad(
                "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
            ))
        }
    };
    let mut series = series;
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(QueryResult::Matrix(series))
}
