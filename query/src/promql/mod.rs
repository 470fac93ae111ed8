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

use promql_parser::label::Matchers;
use promql_parser::parser::Expr;

pub use eval::{Grid, Options, QueryTimes};
pub use functions::format_float;
pub use histogram::histogram_json;
pub use select::{SeriesSource, StoreSource};
pub use value::{Annotations, Answer, Labels, Point, QueryResult, RawSeries, Val};

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
    #[error("the query selects more than {0} series (the server's limit, --query-max-series): narrow its matchers")]
    TooManySeries(usize),
    #[error("{0}")]
    Storage(#[from] QueryError),
}

/// A label name as Prometheus 3 takes it: any non-empty UTF-8 string.
pub fn valid_label_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| raw_byte(c).is_some())
}

/// Where a query's string escapes (`"\xc5"`) spell bytes that are not UTF-8, Go's PromQL keeps
/// the bytes and refuses them as label names; a Rust string cannot hold them, so each such
/// byte stands for itself as a private-use character from this base on.
const RAW_BYTE_BASE: u32 = 0x10_FF00;

fn raw_byte(c: char) -> Option<u8> {
    (c as u32)
        .checked_sub(RAW_BYTE_BASE)
        .and_then(|b| u8::try_from(b).ok())
}

/// `s` quoted as Go's `%q` shows it, raw bytes as `\xNN`: error messages name what was sent.
pub fn go_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match raw_byte(c) {
            Some(b) => out.push_str(&format!("\\x{b:02x}")),
            None => out.extend(c.escape_debug()),
        }
    }
    out.push('"');
    out
}

/// The query with each run of byte escapes (`\xNN`, `\NNN`) inside a quoted string rewritten
/// as the characters its bytes decode to in UTF-8 (`\xc3\xa9` is `é`, as in Go, not two
/// characters), and bytes that decode to none as [`RAW_BYTE_BASE`] characters.
fn decode_byte_escapes(q: &str) -> String {
    let b = q.as_bytes();
    let mut out = String::with_capacity(q.len());
    let mut i = 0;
    let mut quote = None::<u8>;
    let byte_escape = |i: usize| -> Option<(u8, usize)> {
        let hex = |s: &[u8]| {
            std::str::from_utf8(s)
                .ok()
                .and_then(|t| u8::from_str_radix(t, 16).ok())
        };
        let oct = |s: &[u8]| {
            std::str::from_utf8(s)
                .ok()
                .and_then(|t| u8::from_str_radix(t, 8).ok())
        };
        match (b.get(i), b.get(i + 1)) {
            (Some(b'\\'), Some(b'x')) => b.get(i + 2..i + 4).and_then(hex).map(|v| (v, 4)),
            (Some(b'\\'), Some(b'0'..=b'3')) => b.get(i + 1..i + 4).and_then(oct).map(|v| (v, 4)),
            _ => None,
        }
    };
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(qc) if qc != b'`' && c == b'\\' => {
                let mut bytes = Vec::new();
                let mut j = i;
                while let Some((v, len)) = byte_escape(j) {
                    bytes.push(v);
                    j += len;
                }
                if bytes.is_empty() {
                    // Another escape: copied whole, so an escaped quote does not end the string.
                    out.push('\\');
                    if let Some(next) = q.get(i + 1..).and_then(|t| t.chars().next()) {
                        out.push(next);
                        i += next.len_utf8();
                    }
                    i += 1;
                    continue;
                }
                for chunk in bytes.utf8_chunks() {
                    for ch in chunk.valid().chars() {
                        out.push_str(&format!("\\U{:08x}", ch as u32));
                    }
                    for raw in chunk.invalid() {
                        out.push_str(&format!("\\U{:08x}", RAW_BYTE_BASE + u32::from(*raw)));
                    }
                }
                i = j;
                continue;
            }
            Some(qc) if c == qc => quote = None,
            None if c == b'"' || c == b'\'' || c == b'`' => quote = Some(c),
            None if c == b'#' => {
                let end = q[i..].find('\n').map_or(q.len(), |n| i + n);
                out.push_str(&q[i..end]);
                i = end;
                continue;
            }
            _ => {}
        }
        let ch = q[i..].chars().next().unwrap_or('\u{0}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

pub fn parse(query: &str) -> Result<Expr, PromQlError> {
    let decoded;
    let query = if query.contains('\\') {
        decoded = decode_byte_escapes(query);
        decoded.as_str()
    } else {
        query
    };
    let (text, trims) = trim_operators(query);
    let mut expr = promql_parser::parser::parse(&text).map_err(PromQlError::Bad)?;
    if trims.iter().any(Option::is_some) {
        let mut comparisons = trims.into_iter();
        mark_trims(&mut expr, &mut comparisons);
    }
    Ok(expr)
}

/// The label name that marks a comparison as one of Prometheus 3.16's histogram trim operators
/// (`</`, `>/`), which `promql-parser` does not know: they parse as `<` and `>` (the same
/// precedence), carrying this name in their `ignoring` list — a no-op for matching, as no series
/// has the label.
pub(crate) const TRIM_UPPER_MARK: &str = "\u{0}trim_upper";
pub(crate) const TRIM_LOWER_MARK: &str = "\u{0}trim_lower";

/// The query with `</` and `>/` as `< ` and `> `, and for each comparison operator in textual
/// order, which trim it was (if one).
fn trim_operators(q: &str) -> (String, Vec<Option<&'static str>>) {
    let b = q.as_bytes();
    let mut out = q.as_bytes().to_vec();
    let mut seq = Vec::new();
    let (mut i, mut depth, mut quote) = (0, 0i32, None::<u8>);
    while i < b.len() {
        let c = b[i];
        if let Some(qc) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == qc {
                quote = None;
            }
        } else if c == b'"' || c == b'\'' || c == b'`' {
            quote = Some(c);
        } else if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'{' {
            depth += 1;
        } else if c == b'}' {
            depth -= 1;
        } else if depth == 0 {
            let next = b.get(i + 1).copied();
            match (c, next) {
                (b'<' | b'>', Some(b'/')) => {
                    seq.push(Some(if c == b'<' {
                        TRIM_UPPER_MARK
                    } else {
                        TRIM_LOWER_MARK
                    }));
                    out[i + 1] = b' ';
                    i += 1;
                }
                (b'<' | b'>' | b'=' | b'!', Some(b'=')) => {
                    seq.push(None);
                    i += 1;
                }
                (b'<' | b'>', _) => seq.push(None),
                _ => {}
            }
        }
        i += 1;
    }
    (
        String::from_utf8(out).unwrap_or_else(|_| q.to_string()),
        seq,
    )
}

/// Walks comparisons in textual (in-order) order and marks the trims.
fn mark_trims(e: &mut Expr, seq: &mut impl Iterator<Item = Option<&'static str>>) {
    use promql_parser::parser::{BinModifier, LabelModifier};
    match e {
        Expr::Binary(b) => {
            mark_trims(&mut b.lhs, seq);
            if b.op.is_comparison_operator() {
                if let Some(Some(mark)) = seq.next() {
                    let m = b.modifier.get_or_insert_with(BinModifier::default);
                    match &mut m.matching {
                        Some(LabelModifier::Include(l)) | Some(LabelModifier::Exclude(l)) => {
                            l.labels.push(mark.to_string())
                        }
                        None => {
                            m.matching = Some(LabelModifier::exclude(vec![mark]));
                        }
                    }
                }
            }
            mark_trims(&mut b.rhs, seq);
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &mut a.param {
                mark_trims(p, seq);
            }
            mark_trims(&mut a.expr, seq);
        }
        Expr::Unary(u) => mark_trims(&mut u.expr, seq),
        Expr::Paren(p) => mark_trims(&mut p.expr, seq),
        Expr::Subquery(s) => mark_trims(&mut s.expr, seq),
        Expr::Call(c) => {
            for a in &mut c.args.args {
                mark_trims(a, seq);
            }
        }
        _ => {}
    }
}

/// Whether every alternative of a selector has a matcher, on a label other than the name, that
/// the empty value fails (so it cannot pick series lacking the label).
fn has_label_matcher(m: &Matchers) -> bool {
    select::alternatives(m).all(|ms| ms.iter().any(|x| x.name != value::NAME && !x.is_match("")))
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
    let mut series = 0;
    for f in fetches {
        let m = eval::selector_matchers(f.selector);
        if opts.require_label_matcher && !has_label_matcher(&m) {
            return Err(PromQlError::Bad(format!(
                "selector {} has no matcher on a label besides the metric name, which this server requires (--require-label-matcher)",
                f.selector
            )));
        }
        let fetched = source.select(&m, f.min_ms, f.max_ms).await?;
        series += fetched.len();
        if series > opts.max_series {
            return Err(PromQlError::TooManySeries(opts.max_series));
        }
        data.insert(f.key, fetched);
    }
    let mut ev = eval::Evaluator {
        data: &data,
        opts,
        times,
        samples: 0,
        notes: Annotations::default(),
    };
    let value = ev.eval(expr, grid)?;
    Ok(eval::Evaluated {
        value,
        grid,
        notes: ev.notes,
    })
}

/// An instant query at `t` (ms).
pub async fn instant(
    source: &dyn SeriesSource,
    expr: &Expr,
    t: i64,
    opts: &Options,
) -> Result<Answer, PromQlError> {
    let grid = Grid::instant(t);
    let out = evaluate(source, expr, grid, opts).await?;
    let result = match out.value {
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
    };
    Ok(Answer {
        result,
        notes: out.notes,
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
) -> Result<Answer, PromQlError> {
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
    Ok(Answer {
        result: QueryResult::Matrix(series),
        notes: out.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_escapes_decode_as_go_decodes_them() {
        // Two bytes that are one UTF-8 character are that character, as in Go.
        assert_eq!(
            decode_byte_escapes(r#"x{a="\xc3\xa9"}"#),
            r#"x{a="\U000000e9"}"#
        );
        // A byte that is no character stays a byte, refused as a label name and shown as sent.
        let Expr::StringLiteral(s) = parse(r#""a\xc5z""#).expect("parses") else {
            panic!("a string literal")
        };
        assert!(!valid_label_name(&s.val));
        assert_eq!(go_quoted(&s.val), r#""a\xc5z""#);
        // Escapes in raw strings and comments are left alone.
        let raw = "x{a=`\\xc5`} # \\xc5";
        assert_eq!(decode_byte_escapes(raw), raw);
    }
}
