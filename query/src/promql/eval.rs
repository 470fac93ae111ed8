//! The evaluator: Prometheus's semantics, every step of a query at once. An expression
//! evaluates over a grid of steps to a scalar per step, a vector of series with a value (or
//! none) per step, a string, or — only where the query is an instant one — a range vector.
//!
//! Selectors read the samples fetched for them before evaluation begins ([`plan`]); nothing
//! here does I/O.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{
    AtModifier, BinaryExpr, Expr, LabelModifier, MatrixSelector, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};

use super::value::{is_stale, Annotations, Labels, Point, RawSeries, StepSeries, Val, Value, NAME};
use super::PromQlError;

/// The steps an expression is evaluated at: `start`, `start + step`, … `end`.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Grid {
    pub fn instant(t: i64) -> Self {
        Self {
            start: t,
            end: t,
            step: 1,
        }
    }

    pub fn steps(&self) -> usize {
        if self.end < self.start {
            return 0;
        }
        ((self.end - self.start) / self.step.max(1) + 1) as usize
    }

    pub fn at(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.steps()).map(|i| self.at(i))
    }
}

/// Evaluation settings (Prometheus's engine options).
#[derive(Debug, Clone)]
pub struct Options {
    /// How far back a selector looks for a sample (5 minutes).
    pub lookback_ms: i64,
    /// The step of a subquery that names none.
    pub default_subquery_step_ms: i64,
    /// Samples one query may hold at once.
    pub max_samples: usize,
    /// Series one query may fetch, over all its selectors.
    pub max_series: usize,
    /// Refuse selectors without a matcher on a label other than the name (SOFALookout's query
    /// server's rule): they read every series of a metric.
    pub require_label_matcher: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lookback_ms: 300_000,
            default_subquery_step_ms: 60_000,
            max_samples: 50_000_000,
            max_series: 1_000_000,
            require_label_matcher: false,
        }
    }
}

pub fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

pub fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The key a selector's fetched series are kept under: its place in the query's syntax tree.
pub fn key(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

/// A selector's matchers with its metric name among them.
pub fn selector_matchers(vs: &VectorSelector) -> Matchers {
    let mut m = vs.matchers.clone();
    if let Some(name) = &vs.name {
        let eq = Matcher::new(MatchOp::Equal, NAME, name);
        m.matchers.push(eq.clone());
        for alt in &mut m.or_matchers {
            alt.push(eq.clone());
        }
    }
    m
}

/// A selector to fetch, and the time range its evaluation reads.
pub struct Fetch<'a> {
    pub key: usize,
    pub selector: &'a VectorSelector,
    pub min_ms: i64,
    pub max_ms: i64,
}

/// The query-wide times `@ start()` and `@ end()` refer to.
#[derive(Debug, Clone, Copy)]
pub struct QueryTimes {
    pub start: i64,
    pub end: i64,
    /// The range query's step; 0 for an instant query.
    pub step: i64,
}

fn at_ms(at: &Option<AtModifier>, q: QueryTimes) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(q.start),
        Some(AtModifier::End) => Some(q.end),
        Some(AtModifier::At(t)) => Some(system_time_ms(t)),
    }
}

/// The selectors of `expr` and the time ranges evaluating it over `grid` reads of each.
pub fn plan<'a>(
    expr: &'a Expr,
    grid: (i64, i64),
    q: QueryTimes,
    opts: &Options,
    out: &mut Vec<Fetch<'a>>,
) {
    let refs = |at: &Option<AtModifier>, off: &Option<Offset>| {
        let off = offset_ms(off);
        match at_ms(at, q) {
            Some(t) => (t - off, t - off),
            None => (grid.0 - off, grid.1 - off),
        }
    };
    match expr {
        Expr::VectorSelector(vs) => {
            let (lo, hi) = refs(&vs.at, &vs.offset);
            out.push(Fetch {
                key: key(vs),
                selector: vs,
                min_ms: lo - opts.lookback_ms,
                max_ms: hi,
            });
        }
        Expr::MatrixSelector(ms) => {
            let (lo, hi) = refs(&ms.vs.at, &ms.vs.offset);
            out.push(Fetch {
                key: key(&ms.vs),
                selector: &ms.vs,
                min_ms: lo - ms.range.as_millis() as i64,
                max_ms: hi,
            });
        }
        Expr::Subquery(sq) => {
            let (lo, hi) = refs(&sq.at, &sq.offset);
            plan(
                &sq.expr,
                (lo - sq.range.as_millis() as i64, hi),
                q,
                opts,
                out,
            );
        }
        Expr::Aggregate(a) => {
            plan(&a.expr, grid, q, opts, out);
            if let Some(p) = &a.param {
                plan(p, grid, q, opts, out);
            }
        }
        Expr::Unary(u) => plan(&u.expr, grid, q, opts, out),
        Expr::Binary(b) => {
            plan(&b.lhs, grid, q, opts, out);
            plan(&b.rhs, grid, q, opts, out);
        }
        Expr::Paren(p) => plan(&p.expr, grid, q, opts, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                plan(a, grid, q, opts, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// A range vector as a function takes it: series, and how each step's window is placed. A
/// selector's series are borrowed from what was fetched; a subquery's are its own.
pub struct Windows<'a> {
    pub series: Vec<Cow<'a, RawSeries>>,
    pub range_ms: i64,
    pub offset_ms: i64,
    pub at_ms: Option<i64>,
}

impl Windows<'_> {
    /// The window's end (inclusive) at evaluation time `t`; the window starts (exclusive)
    /// `range_ms` before.
    pub fn end_at(&self, t: i64) -> i64 {
        self.at_ms.unwrap_or(t) - self.offset_ms
    }
}

/// The points of `points` in `(end - range, end]`.
pub fn window(points: &[Point], end: i64, range: i64) -> &[Point] {
    let lo = points.partition_point(|p| p.t <= end - range);
    let hi = points.partition_point(|p| p.t <= end);
    &points[lo..hi.max(lo)]
}

/// A series without its stale markers: the same series, borrowed, when it has none.
fn without_stale(s: &RawSeries) -> Cow<'_, RawSeries> {
    if !s.points.iter().any(|p| point_is_stale(&p.v)) {
        return Cow::Borrowed(s);
    }
    let mut s = s.clone();
    s.points.retain(|p| !point_is_stale(&p.v));
    Cow::Owned(s)
}

fn point_is_stale(v: &Val) -> bool {
    match v {
        Val::F(f) => is_stale(*f),
        Val::H(h) => is_stale(h.sum),
    }
}

pub struct Evaluator<'a> {
    pub data: &'a HashMap<usize, Vec<RawSeries>>,
    pub opts: &'a Options,
    pub times: QueryTimes,
    /// Samples held by the values being built, for the per-query limit.
    pub samples: usize,
    pub notes: Annotations,
}

pub type Result<T> = std::result::Result<T, PromQlError>;

pub fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        e => e,
    }
}

impl<'a> Evaluator<'a> {
    fn count(&mut self, n: usize) -> Result<()> {
        self.samples += n;
        if self.samples > self.opts.max_samples {
            return Err(PromQlError::TooManySamples(self.opts.max_samples));
        }
        Ok(())
    }

    fn fetched(&self, vs: &VectorSelector) -> &'a [RawSeries] {
        let data: &'a HashMap<usize, Vec<RawSeries>> = self.data;
        data.get(&key(vs)).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn eval(&mut self, expr: &Expr, grid: Grid) -> Result<Value> {
        let n = grid.steps();
        match expr {
            Expr::NumberLiteral(l) => Ok(Value::Scalar(vec![l.val; n])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, grid),
            Expr::Unary(u) => match self.eval(&u.expr, grid)? {
                Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                Value::Vector(mut vs) => {
                    for s in &mut vs {
                        s.drop_name = true;
                        for v in s.values.iter_mut().flatten() {
                            if let Val::F(f) = v {
                                *f = -*f;
                            } else if let Val::H(h) = v {
                                *v = Val::H(std::sync::Arc::new(super::histogram::scale(h, -1.0)));
                            }
                        }
                    }
                    Ok(Value::Vector(vs))
                }
                _ => Err(PromQlError::Bad(
                    "unary expression only allowed on expressions of type scalar or instant vector"
                        .into(),
                )),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.vector_selector(vs, grid)?)),
            Expr::MatrixSelector(ms) => {
                if n != 1 {
                    return Err(range_vector_in_range_query());
                }
                let w = self.matrix_selector(ms)?;
                Ok(Value::Matrix(self.instant_windows(&w, grid.start)))
            }
            Expr::Subquery(sq) => {
                if n != 1 {
                    return Err(range_vector_in_range_query());
                }
                let w = self.subquery(sq, grid)?;
                Ok(Value::Matrix(self.instant_windows(&w, grid.start)))
            }
            Expr::Aggregate(a) => super::aggregate::eval(self, a, grid),
            Expr::Binary(b) => self.binary(b, grid),
            Expr::Call(c) => super::functions::call(self, c, grid),
            Expr::Extension(_) => Err(PromQlError::Bad("unsupported expression".into())),
        }
    }

    /// The points each series has in the window at `t`, for an instant query of a range vector.
    fn instant_windows(&self, w: &Windows, t: i64) -> Vec<RawSeries> {
        let end = w.end_at(t);
        w.series
            .iter()
            .filter_map(|s| {
                let pts = window(&s.points, end, w.range_ms);
                (!pts.is_empty()).then(|| RawSeries {
                    labels: s.labels.clone(),
                    points: pts.to_vec(),
                    drop_name: s.drop_name,
                })
            })
            .collect()
    }

    pub fn vector_selector(&mut self, vs: &VectorSelector, grid: Grid) -> Result<Vec<StepSeries>> {
        let out = self.select_each_step(vs, grid, false, |p| p.v.clone());
        self.count(out.iter().map(|s| s.values.iter().flatten().count()).sum())?;
        Ok(out)
    }

    /// The timestamps (in seconds) of the samples a selector picks at each step.
    pub fn selector_timestamps(&mut self, vs: &VectorSelector, grid: Grid) -> Vec<StepSeries> {
        self.select_each_step(vs, grid, true, |p| Val::F(p.t as f64 / 1000.0))
    }

    /// For each series of a selector and each step, `value` of the sample the step picks: the
    /// latest at or before the step's time (after `@` and `offset`), within the lookback, not
    /// a stale marker.
    fn select_each_step(
        &self,
        vs: &VectorSelector,
        grid: Grid,
        drop_name: bool,
        value: impl Fn(&Point) -> Val,
    ) -> Vec<StepSeries> {
        let at = at_ms(&vs.at, self.times);
        let off = offset_ms(&vs.offset);
        let lookback = self.opts.lookback_ms;
        let mut out = Vec::new();
        for s in self.fetched(vs) {
            let values: Vec<Option<Val>> = grid
                .times()
                .map(|t| {
                    let r = at.unwrap_or(t) - off;
                    let i = s.points.partition_point(|p| p.t <= r);
                    let p = s.points.get(i.checked_sub(1)?)?;
                    (p.t > r - lookback && !point_is_stale(&p.v)).then(|| value(p))
                })
                .collect();
            if values.iter().any(Option::is_some) {
                out.push(StepSeries {
                    labels: s.labels.clone(),
                    values,
                    drop_name,
                });
            }
        }
        out
    }

    pub fn matrix_selector(&mut self, ms: &MatrixSelector) -> Result<Windows<'a>> {
        let series: Vec<Cow<'a, RawSeries>> =
            self.fetched(&ms.vs).iter().map(without_stale).collect();
        self.count(series.iter().map(|s| s.points.len()).sum())?;
        Ok(Windows {
            series,
            range_ms: ms.range.as_millis() as i64,
            offset_ms: offset_ms(&ms.vs.offset),
            at_ms: at_ms(&ms.vs.at, self.times),
        })
    }

    /// Evaluates a subquery's expression at its own steps — multiples of its step, from the
    /// first after the earliest window's start to the latest window's end — as a range vector.
    pub fn subquery(&mut self, sq: &SubqueryExpr, grid: Grid) -> Result<Windows<'a>> {
        let at = at_ms(&sq.at, self.times);
        let off = offset_ms(&sq.offset);
        let range = sq.range.as_millis() as i64;
        let step = sq
            .step
            .map(|d| d.as_millis() as i64)
            .filter(|s| *s > 0)
            .unwrap_or(self.opts.default_subquery_step_ms);
        let (outer_start, outer_end) = match at {
            Some(t) => (t, t),
            None => (grid.start, grid.end),
        };
        let first = outer_start - off - range;
        // Go's integer division truncates toward zero, and Prometheus aligns with it.
        let mut start = step * (first / step);
        if start <= first {
            start += step;
        }
        let inner = Grid {
            start,
            end: outer_end - off,
            step,
        };
        let value = self.eval(&sq.expr, inner)?;
        let series = match value {
            Value::Vector(vs) => vs
                .into_iter()
                .map(|s| step_to_raw(s, inner))
                .filter(|s| !s.points.is_empty())
                .map(|s| Cow::Owned(forget_reset_hints(s)))
                .collect(),
            Value::Scalar(v) => vec![Cow::Owned(RawSeries {
                labels: Labels::default(),
                points: v
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| Point {
                        t: inner.at(i),
                        v: Val::F(f),
                    })
                    .collect(),
                drop_name: false,
            })],
            _ => {
                return Err(PromQlError::Bad(
                    "subquery is only allowed on instant vector or scalar".into(),
                ))
            }
        };
        Ok(Windows {
            series,
            range_ms: range,
            offset_ms: off,
            at_ms: at,
        })
    }

    /// A function's range-vector argument.
    pub fn windows(&mut self, e: &Expr, grid: Grid) -> Result<Windows<'a>> {
        match unwrap_parens(e) {
            Expr::MatrixSelector(ms) => self.matrix_selector(ms),
            Expr::Subquery(sq) => self.subquery(sq, grid),
            _ => Err(PromQlError::Bad("expected a range vector argument".into())),
        }
    }

    /// A scalar argument, per step.
    pub fn scalar(&mut self, e: &Expr, grid: Grid) -> Result<Vec<f64>> {
        match self.eval(e, grid)? {
            Value::Scalar(v) => Ok(v),
            _ => Err(PromQlError::Bad("expected a scalar argument".into())),
        }
    }

    pub fn vector(&mut self, e: &Expr, grid: Grid) -> Result<Vec<StepSeries>> {
        match self.eval(e, grid)? {
            Value::Vector(v) => Ok(v),
            _ => Err(PromQlError::Bad(
                "expected an instant vector argument".into(),
            )),
        }
    }

    fn binary(&mut self, b: &BinaryExpr, grid: Grid) -> Result<Value> {
        let op = effective_op(b);
        let return_bool = b.return_bool();
        let lhs = self.eval(&b.lhs, grid)?;
        let rhs = self.eval(&b.rhs, grid)?;
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
                l.into_iter()
                    .zip(r)
                    .map(|(a, b)| {
                        let (v, keep) = float_op(op, a, b);
                        if op.is_comparison_operator() {
                            f64::from(u8::from(keep))
                        } else {
                            v
                        }
                    })
                    .collect(),
            )),
            (Value::Vector(v), Value::Scalar(s)) => {
                Ok(Value::Vector(vector_scalar(op, v, &s, false, return_bool)?))
            }
            (Value::Scalar(s), Value::Vector(v)) => {
                Ok(Value::Vector(vector_scalar(op, v, &s, true, return_bool)?))
            }
            (Value::Vector(l), Value::Vector(r)) => {
                let n = grid.steps();
                if op.is_set_operator() {
                    Ok(Value::Vector(set_op(op, l, r, b, n)))
                } else {
                    Ok(Value::Vector(vector_vector(op, l, r, b, n, return_bool)?))
                }
            }
            _ => Err(PromQlError::Bad(
                "binary expression must contain only scalar and instant vector types".into(),
            )),
        }
    }
}

/// The operator, or the histogram trim a comparison was parsed from (see `promql::parse`).
fn effective_op(b: &BinaryExpr) -> TokenType {
    let marked = |mark: &str| {
        b.modifier
            .as_ref()
            .and_then(|m| m.matching.as_ref())
            .is_some_and(|m| m.labels().labels.iter().any(|l| l == mark))
    };
    if marked(super::TRIM_UPPER_MARK) {
        TokenType::new(super::histogram::TRIM_UPPER)
    } else if marked(super::TRIM_LOWER_MARK) {
        TokenType::new(super::histogram::TRIM_LOWER)
    } else {
        b.op
    }
}

fn range_vector_in_range_query() -> PromQlError {
    PromQlError::Bad(
        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
            .into(),
    )
}

pub fn step_to_raw(s: StepSeries, grid: Grid) -> RawSeries {
    RawSeries {
        labels: s.labels,
        points: s
            .values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                Some(Point {
                    t: grid.at(i),
                    v: v?,
                })
            })
            .collect(),
        drop_name: s.drop_name,
    }
}

/// A float operation: its value, and for comparisons whether it holds.
pub fn float_op(op: TokenType, l: f64, r: f64) -> (f64, bool) {
    match op.id() {
        token::T_ADD => (l + r, true),
        token::T_SUB => (l - r, true),
        token::T_MUL => (l * r, true),
        token::T_DIV => (l / r, true),
        token::T_POW => (l.powf(r), true),
        token::T_MOD => (go_mod(l, r), true),
        token::T_ATAN2 => (l.atan2(r), true),
        token::T_EQLC => (l, l == r),
        token::T_NEQ => (l, l != r),
        token::T_GTR => (l, l > r),
        token::T_LSS => (l, l < r),
        token::T_GTE => (l, l >= r),
        token::T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

/// Go's `math.Mod`: the result has the sign of `l`.
fn go_mod(l: f64, r: f64) -> f64 {
    l % r
}

/// Arithmetic that changes what the metric is: the name goes.
fn changes_metric(op: TokenType) -> bool {
    matches!(
        op.id(),
        token::T_ADD
            | token::T_SUB
            | token::T_MUL
            | token::T_DIV
            | token::T_POW
            | token::T_MOD
            | token::T_ATAN2
    )
}

fn elem_op(op: TokenType, l: &Val, r: &Val) -> Result<Option<(Val, bool)>> {
    match (l, r) {
        (Val::F(a), Val::F(b)) => {
            let (v, keep) = float_op(op, *a, *b);
            Ok(Some((Val::F(v), keep)))
        }
        _ => super::histogram::binop(op, l, r),
    }
}

fn vector_scalar(
    op: TokenType,
    mut v: Vec<StepSeries>,
    s: &[f64],
    swap: bool,
    return_bool: bool,
) -> Result<Vec<StepSeries>> {
    let comparison = op.is_comparison_operator();
    for series in &mut v {
        for (i, slot) in series.values.iter_mut().enumerate() {
            let Some(x) = slot.take() else { continue };
            let sv = Val::F(s[i]);
            let (l, r) = if swap { (&sv, &x) } else { (&x, &sv) };
            let Some((mut value, mut keep)) = elem_op(op, l, r)? else {
                continue;
            };
            if comparison && swap {
                value = x.clone();
            }
            if return_bool {
                value = Val::F(f64::from(u8::from(keep)));
                keep = true;
            }
            if keep {
                *slot = Some(value);
            }
        }
        if changes_metric(op) || return_bool {
            series.drop_name = true;
        }
    }
    v.retain(|s| s.values.iter().any(Option::is_some));
    Ok(v)
}

/// How two sides' series are matched: the labels of a series that must agree.
fn signature(labels: &Labels, b: &BinaryExpr) -> Labels {
    match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
        Some(LabelModifier::Include(on)) => labels.keep(&on.labels),
        Some(LabelModifier::Exclude(ign)) => labels.without_metadata().drop(&ign.labels),
        None => labels.without_metadata(),
    }
}

fn signature_of(s: &StepSeries, b: &BinaryExpr) -> Labels {
    signature(&s.labels, b)
}

fn set_op(
    op: TokenType,
    lhs: Vec<StepSeries>,
    rhs: Vec<StepSeries>,
    b: &BinaryExpr,
    n: usize,
) -> Vec<StepSeries> {
    let lsig: Vec<Labels> = lhs.iter().map(|s| signature_of(s, b)).collect();
    let rsig: Vec<Labels> = rhs.iter().map(|s| signature_of(s, b)).collect();
    let mut out = Vec::new();
    match op.id() {
        token::T_LAND | token::T_LUNLESS => {
            let keep_matched = op.id() == token::T_LAND;
            let mut present: HashMap<&Labels, Vec<bool>> = HashMap::new();
            for (s, sig) in rhs.iter().zip(&rsig) {
                let p = present.entry(sig).or_insert_with(|| vec![false; n]);
                for (i, v) in s.values.iter().enumerate() {
                    p[i] |= v.is_some();
                }
            }
            for (mut s, sig) in lhs.into_iter().zip(&lsig) {
                let p = present.get(sig);
                for (i, v) in s.values.iter_mut().enumerate() {
                    let matched = p.is_some_and(|p| p[i]);
                    if matched != keep_matched {
                        *v = None;
                    }
                }
                if s.values.iter().any(Option::is_some) {
                    out.push(s);
                }
            }
        }
        _ => {
            let mut present: HashMap<&Labels, Vec<bool>> = HashMap::new();
            for (s, sig) in lhs.iter().zip(&lsig) {
                let p = present.entry(sig).or_insert_with(|| vec![false; n]);
                for (i, v) in s.values.iter().enumerate() {
                    p[i] |= v.is_some();
                }
            }
            let mut extra = Vec::new();
            for (mut s, sig) in rhs.into_iter().zip(&rsig) {
                if let Some(p) = present.get(sig) {
                    for (i, v) in s.values.iter_mut().enumerate() {
                        if p[i] {
                            *v = None;
                        }
                    }
                }
                if s.values.iter().any(Option::is_some) {
                    extra.push(s);
                }
            }
            out.extend(lhs);
            out.extend(extra);
            // A series of either side with the same labels is one series (values at different
            // steps), as Prometheus's step-by-step evaluation makes it.
            return merge_same_labels(out);
        }
    }
    out
}

fn merge_same_labels(v: Vec<StepSeries>) -> Vec<StepSeries> {
    let mut out: Vec<StepSeries> = Vec::with_capacity(v.len());
    let mut index: HashMap<(Labels, bool), usize> = HashMap::new();
    for s in v {
        match index.get(&(s.labels.clone(), s.drop_name)) {
            Some(&i)
                if out[i]
                    .values
                    .iter()
                    .zip(&s.values)
                    .all(|(a, b)| a.is_none() || b.is_none()) =>
            {
                for (slot, v) in out[i].values.iter_mut().zip(s.values) {
                    if v.is_some() {
                        *slot = v;
                    }
                }
            }
            _ => {
                index.insert((s.labels.clone(), s.drop_name), out.len());
                out.push(s);
            }
        }
    }
    out
}

fn vector_vector(
    op: TokenType,
    lhs: Vec<StepSeries>,
    rhs: Vec<StepSeries>,
    b: &BinaryExpr,
    n: usize,
    return_bool: bool,
) -> Result<Vec<StepSeries>> {
    let modifier = b.modifier.as_ref();
    let card = modifier
        .map(|m| m.card.clone())
        .unwrap_or(VectorMatchCardinality::OneToOne);
    let fill = modifier.map(|m| m.fill_values.clone()).unwrap_or_default();
    let (mut fill_l, mut fill_r) = (fill.lhs, fill.rhs);
    let (on, matching_labels): (bool, Vec<String>) =
        match modifier.and_then(|m| m.matching.as_ref()) {
            Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
            None => (false, Vec::new()),
        };
    let include: Vec<String> = card.labels().map(|l| l.labels.clone()).unwrap_or_default();
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (lhs, rhs) = if one_to_many {
        std::mem::swap(&mut fill_l, &mut fill_r);
        (rhs, lhs)
    } else {
        (lhs, rhs)
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let lsig: Vec<Labels> = lhs.iter().map(|s| signature_of(s, b)).collect();
    let rsig: Vec<Labels> = rhs.iter().map(|s| signature_of(s, b)).collect();
    let mut sig_ids: HashMap<Labels, usize> = HashMap::new();
    let mut id_of = |l: &Labels| {
        let next = sig_ids.len();
        *sig_ids.entry(l.clone()).or_insert(next)
    };
    let lid: Vec<usize> = lsig.iter().map(&mut id_of).collect();
    let rid: Vec<usize> = rsig.iter().map(&mut id_of).collect();
    let sigs = sig_ids.len();

    let mut out: Vec<StepSeries> = Vec::new();
    let mut out_index: HashMap<(Labels, bool), usize> = HashMap::new();
    let mut metric_cache: HashMap<(usize, usize), Labels> = HashMap::new();
    let changes = changes_metric(op);
    let result_metric = |l: &Labels, r: &Labels| -> Labels {
        let mut m = l.clone();
        if changes {
            m = m.without_metadata();
        }
        if one_to_one {
            m = if on {
                m.keep(&matching_labels)
            } else {
                m.drop(&matching_labels)
            };
        }
        for name in &include {
            match r.get(name) {
                Some(v) => m.set(name, v),
                None => m.remove(name),
            }
        }
        m
    };
    let match_labels = |l: &Labels| -> Labels {
        if on {
            l.keep(&matching_labels)
        } else {
            l.without_metadata().drop(&matching_labels)
        }
    };

    for step in 0..n {
        // The "one" side by signature.
        let mut right: Vec<Option<usize>> = vec![None; sigs];
        for (j, s) in rhs.iter().enumerate() {
            if s.values[step].is_none() {
                continue;
            }
            if let Some(prev) = right[rid[j]] {
                let side = if one_to_many { "left" } else { "right" };
                let (mut a, mut c) = (rhs[prev].labels.to_string(), s.labels.to_string());
                if a > c {
                    std::mem::swap(&mut a, &mut c);
                }
                return Err(PromQlError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{a}, {c}];many-to-many matching not allowed: matching labels must be unique on one side",
                    match_labels(&s.labels)
                )));
            }
            right[rid[j]] = Some(j);
        }
        // Shared by `emit` and the fill pass after it.
        let matched_one = std::cell::RefCell::new(vec![false; sigs]);
        let matched_many: std::cell::RefCell<Vec<Option<Vec<Labels>>>> =
            std::cell::RefCell::new(vec![None; sigs]);
        let mut emit = |li: Option<usize>,
                        ri: Option<usize>,
                        lv: Val,
                        rv: Val,
                        lm: Labels,
                        rm: Labels,
                        sig: usize,
                        out: &mut Vec<StepSeries>|
         -> Result<()> {
            let (a, c) = if one_to_many { (&rv, &lv) } else { (&lv, &rv) };
            let Some((mut value, keep)) = elem_op(op, a, c)? else {
                return Ok(());
            };
            if return_bool {
                value = Val::F(f64::from(u8::from(keep)));
            }
            let metric = match (li, ri) {
                (Some(l), Some(r)) => metric_cache
                    .entry((l, r))
                    .or_insert_with(|| result_metric(&lm, &rm))
                    .clone(),
                _ => result_metric(&lm, &rm),
            };
            if one_to_one {
                let mut matched_one = matched_one.borrow_mut();
                if matched_one[sig] {
                    return Err(PromQlError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                }
                matched_one[sig] = true;
            } else {
                let mut matched_many = matched_many.borrow_mut();
                let seen = matched_many[sig].get_or_insert_with(Vec::new);
                if seen.contains(&metric) {
                    return Err(PromQlError::Execution(
                        "multiple matches for labels: grouping labels must ensure unique matches"
                            .into(),
                    ));
                }
                seen.push(metric.clone());
            }
            if !keep && !return_bool {
                return Ok(());
            }
            let k = (metric.clone(), return_bool);
            let idx = *out_index.entry(k).or_insert_with(|| {
                out.push(StepSeries {
                    labels: metric,
                    values: vec![None; n],
                    drop_name: return_bool,
                });
                out.len() - 1
            });
            if out[idx].values[step].is_some() {
                return Err(PromQlError::Execution(
                    "vector cannot contain metrics with the same labelset".into(),
                ));
            }
            out[idx].values[step] = Some(value);
            Ok(())
        };
        for (i, s) in lhs.iter().enumerate() {
            let Some(lv) = &s.values[step] else { continue };
            let sig = lid[i];
            match right[sig] {
                Some(j) => emit(
                    Some(i),
                    Some(j),
                    lv.clone(),
                    rhs[j].values[step].clone().unwrap_or(Val::F(f64::NAN)),
                    s.labels.clone(),
                    rhs[j].labels.clone(),
                    sig,
                    &mut out,
                )?,
                None => {
                    if let Some(f) = fill_r {
                        let rm = match_labels(&s.labels);
                        emit(
                            None,
                            None,
                            lv.clone(),
                            Val::F(f),
                            s.labels.clone(),
                            rm,
                            sig,
                            &mut out,
                        )?;
                    }
                }
            }
        }
        if let Some(f) = fill_l {
            for (j, s) in rhs.iter().enumerate() {
                let Some(rv) = &s.values[step] else { continue };
                let sig = rid[j];
                let done = if one_to_one {
                    matched_one.borrow()[sig]
                } else {
                    matched_many.borrow()[sig]
                        .as_ref()
                        .is_some_and(|v| !v.is_empty())
                };
                if done {
                    continue;
                }
                let lm = match_labels(&s.labels);
                emit(
                    None,
                    None,
                    Val::F(f),
                    rv.clone(),
                    lm,
                    s.labels.clone(),
                    sig,
                    &mut out,
                )?;
            }
        }
    }
    Ok(out)
}

/// What a query returns, with names dropped where an operation asked for it; series that
/// become the same then merge, and must not both have a value at one step.
pub fn finish(v: Vec<StepSeries>) -> Result<Vec<StepSeries>> {
    let mut out: Vec<StepSeries> = Vec::with_capacity(v.len());
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for mut s in v {
        if s.drop_name {
            s.labels = s.labels.without_metadata();
            s.drop_name = false;
        }
        match index.get(&s.labels) {
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
            Some(&i) => {
                let target = &mut out[i];
                for (slot, v) in target.values.iter_mut().zip(s.values) {
                    if v.is_some() {
                        if slot.is_some() {
                            return Err(PromQlError::Execution(
                                "vector cannot contain metrics with the same labelset".into(),
                            ));
                        }
                        *slot = v;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// An evaluated expression and the steps it was evaluated at.
pub struct Evaluated {
    pub value: Value,
    pub grid: Grid,
    pub notes: Annotations,
}

/// A subquery's histograms lose their reset and not-reset hints, as in Prometheus: a step may
/// repeat the sample that reset (it would count twice) or skip it, so resets are found from
/// the counts alone.
fn forget_reset_hints(mut s: RawSeries) -> RawSeries {
    for p in &mut s.points {
        if let Val::H(h) = &mut p.v {
            if matches!(
                h.reset_hint,
                super::histogram::HINT_RESET | super::histogram::HINT_NOT_RESET
            ) {
                std::sync::Arc::make_mut(h).reset_hint = 0;
            }
        }
    }
    s
}
