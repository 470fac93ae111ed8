//! PromQL's functions, with Prometheus's exact arithmetic: the `rate` family's extrapolation,
//! Kahan sums, its regression and smoothing, its NaN rules.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Timelike};
use promql_parser::parser::{Call, Expr};
use regex::Regex;

use super::eval::{unwrap_parens, window, Evaluator, Grid, Result, Windows};
use super::histogram;
use super::value::{Annotations, Labels, Point, StepSeries, Val, Value, NAME};
use super::PromQlError;
use sightline_storage::metrics::NativeHistogram;

/// Neumaier's improvement of Kahan summation, as Prometheus's `kahanSumInc`.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// The φ-quantile of `values`, interpolated as Prometheus does (NaNs sort first).
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    if weight == 0.0 {
        return values[lower as usize];
    }
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// A float as Go's `strconv.FormatFloat(f, 'f', -1, 64)` writes it (and Prometheus's
/// `+Inf`/`-Inf`/`NaN`).
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

/// Where a series falls in `[0, 1)` for `limit_ratio`: its label hash over the hash range, as
/// Prometheus 3 computes it — xxHash64 of its label encoding (each name and value preceded by
/// its length: one byte below 255, else 255 and three bytes little-endian).
pub fn ratio_of(labels: &Labels) -> f64 {
    let mut b = Vec::new();
    for (n, v) in labels.iter() {
        for s in [n, v] {
            let len = s.len();
            if len < 255 {
                b.push(len as u8);
            } else {
                b.extend_from_slice(&[255, len as u8, (len >> 8) as u8, (len >> 16) as u8]);
            }
            b.extend_from_slice(s.as_bytes());
        }
    }
    twox_hash::XxHash64::oneshot(0, &b) as f64 / u64::MAX as f64
}

fn floats(points: &[Point]) -> Vec<f64> {
    points.iter().filter_map(|p| p.v.float()).collect()
}

fn has_histograms(points: &[Point]) -> bool {
    points.iter().any(|p| matches!(p.v, Val::H(_)))
}

/// Applies `f` to each series' window at each step.
fn over_windows(
    w: &Windows,
    grid: Grid,
    keep_name: bool,
    mut f: impl FnMut(&[Point], i64, i64) -> Result<Option<Val>>,
) -> Result<Vec<StepSeries>> {
    let mut out = Vec::new();
    for s in &w.series {
        let mut any = false;
        let mut values = Vec::with_capacity(grid.steps());
        for t in grid.times() {
            let end = w.end_at(t);
            let pts = window(&s.points, end, w.range_ms);
            let v = if pts.is_empty() {
                None
            } else {
                f(pts, end, t)?
            };
            any |= v.is_some();
            values.push(v);
        }
        if any {
            out.push(StepSeries {
                labels: s.labels.clone(),
                values,
                drop_name: !keep_name || s.drop_name,
            });
        }
    }
    Ok(out)
}

/// Applies `f` to each float value of a vector (histograms are left out).
fn map_floats(mut v: Vec<StepSeries>, f: impl Fn(f64, usize) -> Option<f64>) -> Vec<StepSeries> {
    for s in &mut v {
        s.drop_name = true;
        for (i, slot) in s.values.iter_mut().enumerate() {
            *slot = match slot.take() {
                Some(Val::F(x)) => f(x, i).map(Val::F),
                _ => None,
            };
        }
    }
    v.retain(|s| s.values.iter().any(Option::is_some));
    v
}

fn math(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => |x: f64| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        },
        "deg" => |x: f64| x * (180.0 / std::f64::consts::PI),
        "rad" => |x: f64| x * (std::f64::consts::PI / 180.0),
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        _ => return None,
    })
}

fn date_part(name: &str) -> Option<fn(DateTime<chrono::Utc>) -> f64> {
    Some(match name {
        "day_of_month" => |t| t.day() as f64,
        "day_of_week" => |t| t.weekday().num_days_from_sunday() as f64,
        "day_of_year" => |t| t.ordinal() as f64,
        "hour" => |t| t.hour() as f64,
        "minute" => |t| t.minute() as f64,
        "month" => |t| t.month() as f64,
        "year" => |t| t.year() as f64,
        "days_in_month" => |t| {
            let (y, m) = (t.year(), t.month());
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let first = chrono::NaiveDate::from_ymd_opt(y, m, 1);
            let next = chrono::NaiveDate::from_ymd_opt(ny, nm, 1);
            match (first, next) {
                (Some(a), Some(b)) => (b - a).num_days() as f64,
                _ => f64::NAN,
            }
        },
        _ => return None,
    })
}

fn scalar_arg(ev: &mut Evaluator, c: &Call, i: usize, grid: Grid) -> Result<Vec<f64>> {
    match c.args.args.get(i) {
        Some(e) => ev.scalar(e, grid),
        None => Err(PromQlError::Bad(format!(
            "{} needs argument {}",
            c.func.name,
            i + 1
        ))),
    }
}

fn string_arg(c: &Call, i: usize) -> Result<String> {
    match c.args.args.get(i).map(|e| unwrap_parens(e)) {
        Some(Expr::StringLiteral(s)) => Ok(s.val.clone()),
        _ => Err(PromQlError::Bad(format!(
            "{} needs a string as argument {}",
            c.func.name,
            i + 1
        ))),
    }
}

fn arg(c: &Call, i: usize) -> Result<&Expr> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| PromQlError::Bad(format!("{} needs argument {}", c.func.name, i + 1)))
}

/// The labels `absent` gives: the selector's equality matchers, unless a name is matched twice.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match unwrap_parens(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let ms = &vs.matchers.matchers;
    // A label matched more than once has no one value to give.
    let once = |name: &str| ms.iter().filter(|m| m.name == name).count() == 1;
    let pairs: Vec<(String, String)> = ms
        .iter()
        .filter(|m| !super::value::is_metadata_label(&m.name) && once(&m.name))
        .filter(|m| matches!(m.op, promql_parser::label::MatchOp::Equal))
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    Labels::new(pairs)
}

pub fn call(ev: &mut Evaluator, c: &Call, grid: Grid) -> Result<Value> {
    let name = c.func.name;
    let n = grid.steps();
    let secs = |t: i64| t as f64 / 1000.0;
    if let Some(f) = math(name) {
        let v = ev.vector(arg(c, 0)?, grid)?;
        return Ok(Value::Vector(map_floats(v, |x, _| Some(f(x)))));
    }
    if let Some(part) = date_part(name) {
        let v = match c.args.args.first() {
            Some(e) => ev.vector(e, grid)?,
            None => vec![StepSeries {
                labels: Labels::default(),
                values: grid.times().map(|t| Some(Val::F(secs(t)))).collect(),
                drop_name: false,
            }],
        };
        return Ok(Value::Vector(map_floats(v, |x, _| {
            if x.is_nan() || x.is_infinite() {
                return Some(f64::NAN);
            }
            DateTime::from_timestamp(x as i64, 0).map(part)
        })));
    }
    match name {
        "time" => Ok(Value::Scalar(grid.times().map(secs).collect())),
        "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; n])),
        "start" => Ok(Value::Scalar(vec![secs(ev.times.start); n])),
        "step" => Ok(Value::Scalar(vec![secs(ev.times.step); n])),
        "range" => Ok(Value::Scalar(vec![secs(ev.times.end - ev.times.start); n])),
        "min_of" | "max_of" => {
            let a = scalar_arg(ev, c, 0, grid)?;
            let b = scalar_arg(ev, c, 1, grid)?;
            let pick = if name == "min_of" { go_min } else { go_max };
            Ok(Value::Scalar(
                a.into_iter().zip(b).map(|(x, y)| pick(x, y)).collect(),
            ))
        }
        "end" => Ok(Value::Scalar(vec![secs(ev.times.end); n])),
        "vector" => {
            let s = scalar_arg(ev, c, 0, grid)?;
            Ok(Value::Vector(vec![StepSeries {
                labels: Labels::default(),
                values: s.into_iter().map(|x| Some(Val::F(x))).collect(),
                drop_name: false,
            }]))
        }
        "scalar" => {
            let v = ev.vector(arg(c, 0)?, grid)?;
            Ok(Value::Scalar(
                (0..n)
                    .map(|i| {
                        // Histograms do not count: one float among them is still the scalar.
                        let mut floats = v.iter().filter_map(|s| match s.values[i] {
                            Some(Val::F(f)) => Some(f),
                            _ => None,
                        });
                        match (floats.next(), floats.next()) {
                            (Some(f), None) => f,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let a = arg(c, 0)?;
            if let Expr::VectorSelector(vs) = unwrap_parens(a) {
                return Ok(Value::Vector(ev.selector_timestamps(vs, grid)));
            }
            let mut v = ev.vector(a, grid)?;
            for s in &mut v {
                s.drop_name = true;
                for (i, slot) in s.values.iter_mut().enumerate() {
                    if slot.is_some() {
                        *slot = Some(Val::F(secs(grid.at(i))));
                    }
                }
            }
            Ok(Value::Vector(v))
        }
        "absent" => {
            let v = ev.vector(arg(c, 0)?, grid)?;
            let values: Vec<Option<Val>> = (0..n)
                .map(|i| (!v.iter().any(|s| s.values[i].is_some())).then_some(Val::F(1.0)))
                .collect();
            Ok(Value::Vector(absent_series(
                absent_labels(arg(c, 0)?),
                values,
            )))
        }
        "absent_over_time" => {
            let a = arg(c, 0)?;
            let w = ev.windows(a, grid)?;
            let values: Vec<Option<Val>> = grid
                .times()
                .map(|t| {
                    let end = w.end_at(t);
                    let any = w
                        .series
                        .iter()
                        .any(|s| !window(&s.points, end, w.range_ms).is_empty());
                    (!any).then_some(Val::F(1.0))
                })
                .collect();
            Ok(Value::Vector(absent_series(absent_labels(a), values)))
        }
        "round" => {
            let v = ev.vector(arg(c, 0)?, grid)?;
            let to = match c.args.args.get(1) {
                Some(e) => ev.scalar(e, grid)?,
                None => vec![1.0; n],
            };
            Ok(Value::Vector(map_floats(v, |x, i| {
                let inv = 1.0 / to[i];
                Some((x * inv + 0.5).floor() / inv)
            })))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let v = ev.vector(arg(c, 0)?, grid)?;
            let (lo, hi) = match name {
                "clamp" => (
                    Some(scalar_arg(ev, c, 1, grid)?),
                    Some(scalar_arg(ev, c, 2, grid)?),
                ),
                "clamp_min" => (Some(scalar_arg(ev, c, 1, grid)?), None),
                _ => (None, Some(scalar_arg(ev, c, 1, grid)?)),
            };
            Ok(Value::Vector(map_floats(v, |x, i| {
                let lo = lo.as_ref().map_or(f64::NEG_INFINITY, |l| l[i]);
                let hi = hi.as_ref().map_or(f64::INFINITY, |h| h[i]);
                if hi < lo {
                    return None;
                }
                Some(go_max(lo, go_min(hi, x)))
            })))
        }
        "label_replace" => {
            let v = ev.vector(arg(c, 0)?, grid)?;
            let dst = string_arg(c, 1)?;
            let repl = string_arg(c, 2)?;
            let src = string_arg(c, 3)?;
            let re = string_arg(c, 4)?;
            let regex = Regex::new(&format!("^(?s:{re})$")).map_err(|e| {
                PromQlError::Bad(format!(
                    "invalid regular expression in label_replace(): {re}: {e}"
                ))
            })?;
            if !super::valid_label_name(&dst) {
                return Err(PromQlError::Bad(format!(
                    "invalid destination label name in label_replace(): {}",
                    super::go_quoted(&dst)
                )));
            }
            let mut out = v;
            for s in &mut out {
                let value = s.labels.get(&src).unwrap_or("").to_string();
                if let Some(caps) = regex.captures(&value) {
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    s.labels.set(&dst, &res);
                    if dst == NAME {
                        s.drop_name = false;
                    }
                }
            }
            Ok(Value::Vector(out))
        }
        "label_join" => {
            let v = ev.vector(arg(c, 0)?, grid)?;
            let dst = string_arg(c, 1)?;
            let sep = string_arg(c, 2)?;
            let srcs: Vec<String> = (3..c.args.args.len())
                .map(|i| string_arg(c, i))
                .collect::<Result<_>>()?;
            if !super::valid_label_name(&dst) {
                return Err(PromQlError::Bad(format!(
                    "invalid destination label name in label_join(): {}",
                    super::go_quoted(&dst)
                )));
            }
            let mut out = v;
            for s in &mut out {
                let joined: Vec<&str> =
                    srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
                let joined = joined.join(&sep);
                s.labels.set(&dst, &joined);
                if dst == NAME {
                    s.drop_name = false;
                }
            }
            Ok(Value::Vector(out))
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
            let mut v = ev.vector(arg(c, 0)?, grid)?;
            // Sorting is of floats: histograms are left out.
            for s in &mut v {
                for slot in s.values.iter_mut() {
                    if matches!(slot, Some(Val::H(_))) {
                        *slot = None;
                    }
                }
            }
            v.retain(|s| s.values.iter().any(Option::is_some));
            if n == 1 {
                match name {
                    "sort" | "sort_desc" => {
                        let desc = name == "sort_desc";
                        v.sort_by(|a, b| {
                            let (x, y) = (first_float(a), first_float(b));
                            match (x.is_nan(), y.is_nan()) {
                                (true, true) => std::cmp::Ordering::Equal,
                                (true, false) => std::cmp::Ordering::Greater,
                                (false, true) => std::cmp::Ordering::Less,
                                _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                                _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                            }
                        });
                    }
                    _ => {
                        let names: Vec<String> = (1..c.args.args.len())
                            .map(|i| string_arg(c, i))
                            .collect::<Result<_>>()?;
                        let desc = name == "sort_by_label_desc";
                        v.sort_by(|a, b| {
                            for l in &names {
                                let o = natural_cmp(
                                    a.labels.get(l).unwrap_or(""),
                                    b.labels.get(l).unwrap_or(""),
                                );
                                if o != std::cmp::Ordering::Equal {
                                    return if desc { o.reverse() } else { o };
                                }
                            }
                            let o = a.labels.cmp(&b.labels);
                            if desc {
                                o.reverse()
                            } else {
                                o
                            }
                        });
                    }
                }
            }
            Ok(Value::Vector(v))
        }
        "histogram_quantile" => {
            let q = scalar_arg(ev, c, 0, grid)?;
            let v = ev.vector(arg(c, 1)?, grid)?;
            ev.notes.check_quantiles(&q);
            note_bad_buckets(&mut ev.notes, &v);
            Ok(Value::Vector(histogram::quantile_fn(&q, v, n)))
        }
        "histogram_quantiles" => {
            let v = ev.vector(arg(c, 0)?, grid)?;
            let label = string_arg(c, 1)?;
            let mut out = Vec::new();
            for i in 2..c.args.args.len() {
                let q = scalar_arg(ev, c, i, grid)?;
                let text = histogram::openmetrics_float(q[0]);
                for mut s in histogram::quantile_fn(&q, v.clone(), n) {
                    s.labels.set(&label, &text);
                    out.push(s);
                }
            }
            Ok(Value::Vector(out))
        }
        "histogram_fraction" => {
            let lower = scalar_arg(ev, c, 0, grid)?;
            let upper = scalar_arg(ev, c, 1, grid)?;
            let v = ev.vector(arg(c, 2)?, grid)?;
            Ok(Value::Vector(histogram::per_histogram(
                &v,
                n,
                |h, i| histogram::native_fraction(lower[i], upper[i], h),
                |b, i| histogram::bucket_fraction(lower[i], upper[i], b),
            )))
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            let v = ev.vector(arg(c, 0)?, grid)?;
            Ok(Value::Vector(histogram::map_native(v, |h| match name {
                "histogram_count" => h.count,
                "histogram_sum" => h.sum,
                "histogram_avg" => h.sum / h.count,
                "histogram_stddev" => histogram::native_variance(h).sqrt(),
                _ => histogram::native_variance(h),
            })))
        }
        _ => range_call(ev, c, grid),
    }
}

/// Go's `math.Max`: NaN if either is.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN if either is.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn first_float(s: &StepSeries) -> f64 {
    s.values
        .first()
        .and_then(|v| v.as_ref()?.float())
        .unwrap_or(f64::NAN)
}

/// Compares strings with runs of digits by their numeric value ("a2" before "a10").
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let dx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let dy = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let nx = std::str::from_utf8(&x[..dx])
                    .unwrap_or("0")
                    .trim_start_matches('0');
                let ny = std::str::from_utf8(&y[..dy])
                    .unwrap_or("0")
                    .trim_start_matches('0');
                let o = nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
                x = &x[dx..];
                y = &y[dy..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn absent_series(labels: Labels, values: Vec<Option<Val>>) -> Vec<StepSeries> {
    if values.iter().all(Option::is_none) {
        return Vec::new();
    }
    vec![StepSeries {
        labels,
        values,
        drop_name: false,
    }]
}

/// Linear regression of the points against time in seconds from `intercept_t`, as
/// Prometheus's `linearRegression` (Kahan sums; a constant series is exact).
fn linear_regression(points: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = points[0].1;
    let mut const_y = true;
    for (i, &(t, f)) in points.iter().enumerate() {
        if const_y && i > 0 && f != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(f, sy, cy);
        (sxy, cxy) = kahan_inc(x * f, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn float_points(pts: &[Point]) -> Vec<(i64, f64)> {
    pts.iter()
        .filter_map(|p| p.v.float().map(|f| (p.t, f)))
        .collect()
}

/// Prometheus's info on `rate` and `increase` of a selected float series whose name does not
/// say it counts.
fn note_possible_non_counters(notes: &mut Annotations, w: &Windows, grid: Grid) {
    let (from, to) = (w.end_at(grid.start) - w.range_ms, w.end_at(grid.end));
    for s in &w.series {
        let Some(name) = s.labels.get(NAME) else {
            continue;
        };
        let counts = ["_total", "_sum", "_count", "_bucket"]
            .iter()
            .any(|suffix| name.ends_with(suffix));
        // Only a name that does not count pays for looking at its points.
        if !counts
            && s.points
                .iter()
                .any(|p| p.t > from && p.t <= to && matches!(p.v, Val::F(_)))
        {
            notes.info(format!(
                "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}"
            ));
        }
    }
}

/// Prometheus's warning on float input to `histogram_quantile` without a readable `le`.
fn note_bad_buckets(notes: &mut Annotations, v: &[StepSeries]) {
    for s in v {
        let le = s.labels.get("le").unwrap_or("");
        let floats = s.values.iter().flatten().any(|v| matches!(v, Val::F(_)));
        if floats && histogram::parse_le(le).is_err() {
            let name = match s.drop_name {
                true => None,
                false => s.labels.get(NAME),
            };
            let what = format!("bucket label \"le\" is missing or has a malformed value of {le:?}");
            notes.warn(match name {
                Some(n) => format!("{what} for metric name {n:?}"),
                None => what,
            });
        }
    }
}

/// `rate`, `increase` and `delta`: Prometheus's extrapolation to the window's edges.
fn extrapolated_rate(
    pts: &[Point],
    end: i64,
    range: i64,
    counter: bool,
    rate: bool,
) -> Option<Val> {
    if pts.len() < 2 {
        return None;
    }
    if has_histograms(pts) {
        let hists: Vec<&NativeHistogram> = pts
            .iter()
            .filter_map(|p| match &p.v {
                Val::H(h) => Some(h.as_ref()),
                Val::F(_) => None,
            })
            .collect();
        if hists.len() != pts.len() {
            return None;
        }
        let delta = histogram::window_delta(&hists, counter)?;
        let (first_t, last_t) = (pts[0].t, pts[pts.len() - 1].t);
        let first_count = hists[0].count;
        let result_count = delta.count;
        let factor = extrapolation_factor(
            first_t,
            last_t,
            pts.len(),
            end,
            range,
            counter,
            rate,
            (result_count > 0.0 && first_count >= 0.0).then_some((first_count, result_count)),
        );
        let mut h = histogram::scale(&delta, factor);
        h.reset_hint = histogram::HINT_GAUGE;
        return Some(Val::H(Arc::new(h)));
    }
    // Every point is a float here: read them in place, no copy per window.
    let float = |p: &Point| p.v.float().unwrap_or(f64::NAN);
    let (first_t, first_f) = (pts[0].t, float(&pts[0]));
    let (last_t, last_f) = (pts[pts.len() - 1].t, float(&pts[pts.len() - 1]));
    let mut result = last_f - first_f;
    if counter {
        let mut prev = first_f;
        for f in pts[1..].iter().map(float) {
            if f < prev {
                result += prev;
            }
            prev = f;
        }
    }
    let factor = extrapolation_factor(
        first_t,
        last_t,
        pts.len(),
        end,
        range,
        counter,
        rate,
        (result > 0.0 && first_f >= 0.0).then_some((first_f, result)),
    );
    Some(Val::F(result * factor))
}

/// How far `rate`, `increase` and `delta` scale what the samples show to the window's edges;
/// `zero` is (first value, increase) of a counter, to stop extrapolation below zero.
#[allow(clippy::too_many_arguments)]
fn extrapolation_factor(
    first_t: i64,
    last_t: i64,
    samples: usize,
    end: i64,
    range: i64,
    counter: bool,
    rate: bool,
    zero: Option<(f64, f64)>,
) -> f64 {
    let start = end - range;
    let mut to_start = (first_t - start) as f64 / 1000.0;
    let mut to_end = (end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg_between = sampled / (samples - 1) as f64;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if counter {
        let mut to_zero = to_start;
        if let Some((first, increase)) = zero {
            to_zero = sampled * (first / increase);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = if sampled != 0.0 {
        (sampled + to_start + to_end) / sampled
    } else {
        1.0
    };
    if rate {
        factor /= range as f64 / 1000.0;
    }
    factor
}

fn instant_value(pts: &[Point], rate: bool) -> Option<Val> {
    if pts.len() < 2 {
        return None;
    }
    let (prev, last) = (&pts[pts.len() - 2], &pts[pts.len() - 1]);
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    if let (Val::H(ph), Val::H(lh)) = (&prev.v, &last.v) {
        let mut h = if rate && histogram::detect_reset(lh, ph) {
            (**lh).clone()
        } else {
            histogram::window_delta(&[ph, lh], false)?
        };
        if rate {
            h = histogram::scale(&h, 1000.0 / interval as f64);
        }
        h.reset_hint = histogram::HINT_GAUGE;
        return Some(Val::H(Arc::new(h)));
    }
    let (Val::F(pf), Val::F(lf)) = (&prev.v, &last.v) else {
        return None;
    };
    let mut v = if rate && lf < pf { *lf } else { lf - pf };
    if rate {
        v /= interval as f64 / 1000.0;
    }
    Some(Val::F(v))
}

fn range_call(ev: &mut Evaluator, c: &Call, grid: Grid) -> Result<Value> {
    let name = c.func.name;
    // The range-vector argument's place.
    let matrix_at = match name {
        "quantile_over_time" => 1,
        _ => 0,
    };
    let w = ev.windows(arg(c, matrix_at)?, grid)?;
    if matches!(name, "rate" | "increase")
        && matches!(unwrap_parens(arg(c, 0)?), Expr::MatrixSelector(_))
    {
        note_possible_non_counters(&mut ev.notes, &w, grid);
    }
    let f = |v: Option<f64>| Ok(v.map(Val::F));
    let out = match name {
        "rate" | "increase" | "delta" => {
            let counter = name != "delta";
            let rate = name == "rate";
            let range = w.range_ms;
            over_windows(&w, grid, false, |p, end, _| {
                Ok(extrapolated_rate(p, end, range, counter, rate))
            })?
        }
        "irate" => over_windows(&w, grid, false, |p, _, _| Ok(instant_value(p, true)))?,
        "idelta" => over_windows(&w, grid, false, |p, _, _| Ok(instant_value(p, false)))?,
        "deriv" => over_windows(&w, grid, false, |p, _, _| {
            let fs = float_points(p);
            if fs.len() < 2 {
                return Ok(None);
            }
            f(Some(linear_regression(&fs, fs[0].0).0))
        })?,
        "predict_linear" => {
            let dur = scalar_arg(ev, c, 1, grid)?;
            let start = grid.start;
            let step = grid.step.max(1);
            over_windows(&w, grid, false, |p, _, t| {
                let fs = float_points(p);
                if fs.len() < 2 {
                    return Ok(None);
                }
                let (slope, intercept) = linear_regression(&fs, t);
                let i = ((t - start) / step) as usize;
                f(Some(slope * dur[i.min(dur.len() - 1)] + intercept))
            })?
        }
        "resets" | "changes" => {
            let changes = name == "changes";
            over_windows(&w, grid, false, |p, _, _| {
                let mut count = 0.0;
                for pair in p.windows(2) {
                    let hit = match (&pair[0].v, &pair[1].v) {
                        (Val::F(a), Val::F(b)) if changes => {
                            !(a == b || (a.is_nan() && b.is_nan()))
                        }
                        (Val::F(a), Val::F(b)) => b < a,
                        (Val::H(a), Val::H(b)) if changes => a != b,
                        (Val::H(a), Val::H(b)) => histogram::detect_reset(b, a),
                        // A float and a histogram: a change, and for a counter a reset.
                        _ => true,
                    };
                    if hit {
                        count += 1.0;
                    }
                }
                f(Some(count))
            })?
        }
        "count_over_time" => over_windows(&w, grid, false, |p, _, _| f(Some(p.len() as f64)))?,
        "present_over_time" => over_windows(&w, grid, false, |_, _, _| f(Some(1.0)))?,
        "last_over_time" => {
            over_windows(&w, grid, true, |p, _, _| Ok(p.last().map(|p| p.v.clone())))?
        }
        "first_over_time" => {
            over_windows(&w, grid, true, |p, _, _| Ok(p.first().map(|p| p.v.clone())))?
        }
        "ts_of_last_over_time" => over_windows(&w, grid, false, |p, _, _| {
            f(p.last().map(|p| p.t as f64 / 1000.0))
        })?,
        "ts_of_first_over_time" => over_windows(&w, grid, false, |p, _, _| {
            f(p.first().map(|p| p.t as f64 / 1000.0))
        })?,
        "ts_of_max_over_time" | "ts_of_min_over_time" => {
            let max = name == "ts_of_max_over_time";
            over_windows(&w, grid, false, |p, _, _| {
                let fs = float_points(p);
                let Some(&(mut best_t, mut best)) = fs.first() else {
                    return Ok(None);
                };
                for &(t, v) in &fs[1..] {
                    let better = if max { v >= best } else { v <= best };
                    if better || best.is_nan() {
                        best = v;
                        best_t = t;
                    }
                }
                f(Some(best_t as f64 / 1000.0))
            })?
        }
        "sum_over_time" | "avg_over_time" => {
            let avg = name == "avg_over_time";
            over_windows(&w, grid, false, |p, _, _| {
                if has_histograms(p) {
                    let hs: Vec<_> = p
                        .iter()
                        .filter_map(|p| match &p.v {
                            Val::H(h) => Some(h.clone()),
                            Val::F(_) => None,
                        })
                        .collect();
                    if hs.len() != p.len() {
                        return Ok(None);
                    }
                    let mut acc = (*hs[0]).clone();
                    for h in &hs[1..] {
                        match histogram::add(&acc, h) {
                            Some(s) => acc = s,
                            None => return Ok(None),
                        }
                    }
                    if avg {
                        acc = histogram::scale(&acc, 1.0 / hs.len() as f64);
                    }
                    return Ok(Some(Val::H(Arc::new(acc))));
                }
                let fs = floats(p);
                if avg {
                    return f(Some(super::aggregate::avg(&fs)));
                }
                let (mut s, mut c) = (0.0, 0.0);
                for v in fs {
                    (s, c) = kahan_inc(v, s, c);
                }
                f(Some(s + c))
            })?
        }
        "min_over_time" | "max_over_time" => {
            let max = name == "max_over_time";
            over_windows(&w, grid, false, |p, _, _| {
                let fs = floats(p);
                let Some(&first) = fs.first() else {
                    return Ok(None);
                };
                let mut m = first;
                for &v in &fs[1..] {
                    if (max && v > m) || (!max && v < m) || m.is_nan() {
                        m = v;
                    }
                }
                f(Some(m))
            })?
        }
        "stddev_over_time" | "stdvar_over_time" => {
            let dev = name == "stddev_over_time";
            over_windows(&w, grid, false, |p, _, _| {
                let fs = floats(p);
                if fs.is_empty() {
                    return Ok(None);
                }
                let var = super::aggregate::variance(&fs);
                f(Some(if dev { var.sqrt() } else { var }))
            })?
        }
        "quantile_over_time" => {
            let q = scalar_arg(ev, c, 0, grid)?;
            ev.notes.check_quantiles(&q);
            let start = grid.start;
            let step = grid.step.max(1);
            over_windows(&w, grid, false, |p, _, t| {
                let mut fs = floats(p);
                if fs.is_empty() {
                    return Ok(None);
                }
                let i = ((t - start) / step) as usize;
                f(Some(quantile(q[i.min(q.len() - 1)], &mut fs)))
            })?
        }
        "integral" => {
            // 0 left point, 1 right point, 2 trapezoidal (the default; also for a bad value).
            let strategy = match c.args.args.get(1) {
                Some(e) => ev
                    .scalar(e, grid)?
                    .into_iter()
                    .map(|s| {
                        if s.is_finite() && s.trunc() == s && (0.0..=2.0).contains(&s) {
                            s as u8
                        } else {
                            2
                        }
                    })
                    .collect(),
                None => vec![2; grid.steps()],
            };
            let (start, step) = (grid.start, grid.step.max(1));
            over_windows(&w, grid, false, |p, _, t| {
                let fs = float_points(p);
                if fs.is_empty() {
                    return Ok(None);
                }
                let strategy = strategy[(((t - start) / step) as usize).min(strategy.len() - 1)];
                let zero_nan = |v: f64| if v.is_nan() { 0.0 } else { v };
                let (mut sum, mut c) = (0.0, 0.0);
                let mut prev = (0i64, 0.0f64);
                for (i, &(ts, v)) in fs.iter().enumerate() {
                    let (cur, pv) = (zero_nan(v), zero_nan(prev.1));
                    let (mut value, mut c_value) = (0.0, 0.0);
                    match strategy {
                        0 => value = pv,
                        1 => value = cur,
                        _ => {
                            if pv != 0.0 || cur != 0.0 {
                                (value, c_value) = kahan_inc(cur, pv, 0.0);
                                if value.is_infinite() && !cur.is_infinite() && !pv.is_infinite() {
                                    (value, c_value) = kahan_inc(cur / 2.0, pv / 2.0, 0.0);
                                } else {
                                    value /= 2.0;
                                    c_value /= 2.0;
                                }
                            }
                        }
                    }
                    if i > 0 && (value != 0.0 || c_value != 0.0) {
                        let dt = (ts - prev.0) as f64 / 1000.0;
                        (sum, c) = kahan_inc(value * dt, sum, c + c_value * dt);
                    }
                    prev = (ts, v);
                }
                f(Some(if sum.is_infinite() { sum } else { sum + c }))
            })?
        }
        "mad_over_time" => over_windows(&w, grid, false, |p, _, _| {
            let mut fs = floats(p);
            if fs.is_empty() {
                return Ok(None);
            }
            // A NaN makes the median, and so the deviation, undefined.
            if fs.iter().any(|v| v.is_nan()) {
                return f(Some(f64::NAN));
            }
            let median = quantile(0.5, &mut fs);
            let mut dev: Vec<f64> = fs.iter().map(|v| (v - median).abs()).collect();
            f(Some(quantile(0.5, &mut dev)))
        })?,
        "double_exponential_smoothing" | "holt_winters" => {
            let sf = scalar_arg(ev, c, 1, grid)?;
            let tf = scalar_arg(ev, c, 2, grid)?;
            let (sf, tf) = (sf[0], tf[0]);
            if !(sf > 0.0 && sf < 1.0) {
                return Err(PromQlError::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                )));
            }
            if !(tf > 0.0 && tf < 1.0) {
                return Err(PromQlError::Execution(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                )));
            }
            over_windows(&w, grid, false, |p, _, _| {
                let fs = floats(p);
                if fs.len() < 2 {
                    return Ok(None);
                }
                let (mut s0, mut s1) = (0.0, fs[0]);
                let mut b = fs[1] - fs[0];
                for (i, &x) in fs.iter().enumerate().skip(1) {
                    let x = sf * x;
                    if i - 1 > 0 {
                        b = tf * (s1 - s0) + (1.0 - tf) * b;
                    }
                    let y = (1.0 - sf) * (s1 + b);
                    s0 = s1;
                    s1 = x + y;
                }
                f(Some(s1))
            })?
        }
        other => {
            return Err(PromQlError::Bad(format!(
                "function {other}() is not supported"
            )))
        }
    };
    Ok(Value::Vector(out))
}
