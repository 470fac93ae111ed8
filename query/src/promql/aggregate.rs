//! Aggregation operators: `sum avg min max count group stddev stdvar quantile count_values
//! topk bottomk limitk limit_ratio`, with `by` and `without`, as Prometheus computes them
//! (Kahan summation, its NaN rules, its heap order for ties).

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::parser::token;
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};

use super::eval::{Evaluator, Grid, Result};
use super::functions::{format_float, kahan_inc, quantile};
use super::histogram;
use super::value::{Labels, StepSeries, Val, Value};
use super::PromQlError;

/// A series' group: with delayed name removal the name still counts here (`by (__name__)`
/// partitions by it), and the group drops it at the end if any member was to.
fn group_labels(s: &StepSeries, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::default(),
        Some(LabelModifier::Include(by)) => s.labels.keep(&by.labels),
        Some(LabelModifier::Exclude(without)) => s.labels.without_metadata().drop(&without.labels),
    }
}

pub fn eval(ev: &mut Evaluator, a: &AggregateExpr, grid: Grid) -> Result<Value> {
    let n = grid.steps();
    let op = a.op.id();
    let param = match &a.param {
        None => None,
        Some(p) => Some(ev.eval(p, grid)?),
    };
    let input = ev.vector(&a.expr, grid)?;
    match op {
        token::T_TOPK | token::T_BOTTOMK | token::T_LIMITK | token::T_LIMIT_RATIO => {
            let Some(Value::Scalar(k)) = param else {
                return Err(PromQlError::Bad(format!(
                    "expected a scalar parameter for {}",
                    a.op
                )));
            };
            if k.iter().any(|k| k.is_nan()) {
                let what = if op == token::T_LIMIT_RATIO {
                    "Ratio"
                } else {
                    "Parameter"
                };
                return Err(PromQlError::Execution(format!("{what} value is NaN")));
            }
            return select_series(op, input, &k, &a.modifier, n);
        }
        token::T_COUNT_VALUES => {
            let label = match (&param, a.param.as_deref()) {
                (Some(Value::String(s)), _) => s.clone(),
                (_, Some(Expr::StringLiteral(s))) => s.val.clone(),
                _ => {
                    return Err(PromQlError::Bad(
                        "expected a string parameter for count_values".into(),
                    ))
                }
            };
            if !super::valid_label_name(&label) {
                return Err(PromQlError::Execution(format!(
                    "invalid label name {}",
                    super::go_quoted(&label)
                )));
            }
            return Ok(Value::Vector(count_values(input, &label, &a.modifier, n)));
        }
        _ => {}
    }
    let q = match (op, param) {
        (token::T_QUANTILE, Some(Value::Scalar(q))) => {
            ev.notes.check_quantiles(&q);
            Some(q)
        }
        (token::T_QUANTILE, _) => {
            return Err(PromQlError::Bad(
                "expected a scalar parameter for quantile".into(),
            ))
        }
        _ => None,
    };
    // Groups in order of first appearance, as Prometheus's output.
    let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for (i, s) in input.iter().enumerate() {
        let g = group_labels(s, &a.modifier);
        match index.get(&g) {
            Some(&gi) => groups[gi].1.push(i),
            None => {
                index.insert(g.clone(), groups.len());
                groups.push((g, vec![i]));
            }
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for (labels, members) in groups {
        let drop_name = members.iter().any(|&i| input[i].drop_name);
        let mut values = vec![None; n];
        for (step, slot) in values.iter_mut().enumerate() {
            let vals: Vec<&Val> = members
                .iter()
                .filter_map(|&i| input[i].values[step].as_ref())
                .collect();
            if vals.is_empty() {
                continue;
            }
            *slot = aggregate(op, &vals, q.as_ref().map(|q| q[step]))?;
        }
        if values.iter().any(Option::is_some) {
            out.push(StepSeries {
                labels,
                values,
                drop_name,
            });
        }
    }
    Ok(Value::Vector(out))
}

fn aggregate(op: u16, vals: &[&Val], q: Option<f64>) -> Result<Option<Val>> {
    let floats: Vec<f64> = vals.iter().filter_map(|v| v.float()).collect();
    let hists: Vec<&Arc<_>> = vals
        .iter()
        .filter_map(|v| match v {
            Val::H(h) => Some(h),
            Val::F(_) => None,
        })
        .collect();
    let count = vals.len() as f64;
    Ok(match op {
        token::T_COUNT => Some(Val::F(count)),
        token::T_GROUP => Some(Val::F(1.0)),
        token::T_SUM | token::T_AVG if !hists.is_empty() => {
            if !floats.is_empty() {
                // Prometheus drops a group mixing floats and histograms, with a warning.
                return Ok(None);
            }
            let mut acc = (*hists[0]).as_ref().clone();
            for h in &hists[1..] {
                match histogram::add(&acc, h) {
                    Some(s) => acc = s,
                    None => return Ok(None),
                }
            }
            if op == token::T_AVG {
                acc = histogram::scale(&acc, 1.0 / count);
            }
            Some(Val::H(Arc::new(acc)))
        }
        _ if floats.is_empty() => None,
        token::T_SUM => {
            let (mut s, mut c) = (0.0, 0.0);
            for f in &floats {
                (s, c) = kahan_inc(*f, s, c);
            }
            Some(Val::F(s + c))
        }
        token::T_AVG => Some(Val::F(avg(&floats))),
        token::T_MIN => {
            let mut m = floats[0];
            for &f in &floats[1..] {
                if m > f || m.is_nan() {
                    m = f;
                }
            }
            Some(Val::F(m))
        }
        token::T_MAX => {
            let mut m = floats[0];
            for &f in &floats[1..] {
                if m < f || m.is_nan() {
                    m = f;
                }
            }
            Some(Val::F(m))
        }
        token::T_STDDEV | token::T_STDVAR => {
            let var = variance(&floats);
            Some(Val::F(if op == token::T_STDDEV {
                var.sqrt()
            } else {
                var
            }))
        }
        token::T_QUANTILE => {
            let mut fs = floats;
            Some(Val::F(quantile(q.unwrap_or(f64::NAN), &mut fs)))
        }
        _ => {
            return Err(PromQlError::Bad(format!(
                "unsupported aggregation {}",
                token::TokenType::new(op)
            )))
        }
    })
}

/// Prometheus's mean: a Kahan sum, falling back to an incremental mean if the sum overflows.
pub fn avg(values: &[f64]) -> f64 {
    let (mut sum, mut c) = (values[0], 0.0);
    let mut mean = 0.0;
    let mut incremental = false;
    let mut count = 1.0;
    for (i, &f) in values[1..].iter().enumerate() {
        count = (i + 2) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(f, sum, c);
            if !ns.is_infinite() {
                (sum, c) = (ns, nc);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(f / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

/// The population variance, as Prometheus accumulates it (Welford with Kahan terms).
pub fn variance(values: &[f64]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &f in values {
        count += 1.0;
        let delta = f - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (f - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

fn count_values(
    input: Vec<StepSeries>,
    label: &str,
    modifier: &Option<LabelModifier>,
    n: usize,
) -> Vec<StepSeries> {
    let mut out: Vec<StepSeries> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for s in &input {
        let base = group_labels(s, modifier);
        for (step, v) in s.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let text = match v {
                Val::F(f) => format_float(*f),
                Val::H(h) => histogram::expression(h),
            };
            let mut l = base.clone();
            l.set(label, &text);
            let i = *index.entry(l.clone()).or_insert_with(|| {
                out.push(StepSeries {
                    labels: l,
                    values: vec![None; n],
                    drop_name: false,
                });
                out.len() - 1
            });
            let slot = &mut out[i].values[step];
            let c = slot.as_ref().and_then(Val::float).unwrap_or(0.0);
            *slot = Some(Val::F(c + 1.0));
        }
    }
    out
}

/// Go's `container/heap` over indices, with a "less" of our choosing: topk and bottomk keep
/// Prometheus's choice among equal values only if they sift as its heap does.
struct Heap<F: Fn(f64, f64) -> bool> {
    items: Vec<(usize, f64)>,
    less: F,
}

impl<F: Fn(f64, f64) -> bool> Heap<F> {
    fn less(&self, i: usize, j: usize) -> bool {
        (self.less)(self.items[i].1, self.items[j].1)
    }

    fn up(&mut self, mut j: usize) {
        while j > 0 {
            let i = (j - 1) / 2;
            if i == j || !self.less(j, i) {
                break;
            }
            self.items.swap(i, j);
            j = i;
        }
    }

    fn down(&mut self, i0: usize, n: usize) -> bool {
        let mut i = i0;
        loop {
            let j1 = 2 * i + 1;
            if j1 >= n {
                break;
            }
            let mut j = j1;
            let j2 = j1 + 1;
            if j2 < n && self.less(j2, j1) {
                j = j2;
            }
            if !self.less(j, i) {
                break;
            }
            self.items.swap(i, j);
            i = j;
        }
        i > i0
    }

    fn push(&mut self, x: (usize, f64)) {
        self.items.push(x);
        let n = self.items.len() - 1;
        self.up(n);
    }

    fn fix0(&mut self) {
        let n = self.items.len();
        if !self.down(0, n) {
            self.up(0);
        }
    }
}

fn select_series(
    op: u16,
    input: Vec<StepSeries>,
    k: &[f64],
    modifier: &Option<LabelModifier>,
    n: usize,
) -> Result<Value> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for (i, s) in input.iter().enumerate() {
        let g = group_labels(s, modifier);
        match index.get(&g) {
            Some(&gi) => groups[gi].push(i),
            None => {
                index.insert(g, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    let mut keep: Vec<Vec<bool>> = vec![vec![false; n]; input.len()];
    // For an instant query, the order Prometheus returns: by group, best first.
    let mut order: Vec<usize> = Vec::new();
    for step in 0..n {
        let param = k[step];
        for members in &groups {
            let present: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| input[i].values[step].is_some())
                .collect();
            match op {
                token::T_LIMIT_RATIO => {
                    if param.is_nan() {
                        return Err(PromQlError::Execution("Ratio value is NaN".into()));
                    }
                    let ratio = param.clamp(-1.0, 1.0);
                    for i in present {
                        let r = super::functions::ratio_of(&input[i].labels);
                        if (ratio >= 0.0 && r < ratio) || (ratio < 0.0 && r >= 1.0 + ratio) {
                            keep[i][step] = true;
                            if n == 1 {
                                order.push(i);
                            }
                        }
                    }
                }
                token::T_LIMITK => {
                    let kk = limit_k(param)?;
                    for &i in present.iter().take(kk) {
                        keep[i][step] = true;
                        if n == 1 {
                            order.push(i);
                        }
                    }
                }
                _ => {
                    let kk = limit_k(param)?;
                    if kk == 0 {
                        continue;
                    }
                    let top = op == token::T_TOPK;
                    let floats: Vec<(usize, f64)> = present
                        .iter()
                        .filter_map(|&i| input[i].values[step].as_ref()?.float().map(|f| (i, f)))
                        .collect();
                    let mut heap = Heap {
                        items: Vec::new(),
                        less: move |a: f64, b: f64| {
                            if top {
                                if a.is_nan() {
                                    return true;
                                }
                                a < b
                            } else {
                                if a.is_nan() {
                                    return true;
                                }
                                a > b
                            }
                        },
                    };
                    for (i, f) in floats {
                        if heap.items.len() < kk {
                            heap.push((i, f));
                        } else {
                            let head = heap.items[0].1;
                            let better = if top {
                                head < f || (head.is_nan() && !f.is_nan())
                            } else {
                                head > f || (head.is_nan() && !f.is_nan())
                            };
                            if better {
                                heap.items[0] = (i, f);
                                heap.fix0();
                            }
                        }
                    }
                    // Prometheus sorts the heap in reverse of its order for the output.
                    let mut chosen = heap.items;
                    let less = |a: f64, b: f64| {
                        if a.is_nan() {
                            return true;
                        }
                        if top {
                            a < b
                        } else {
                            a > b
                        }
                    };
                    chosen.sort_by(|x, y| {
                        if less(y.1, x.1) {
                            std::cmp::Ordering::Less
                        } else if less(x.1, y.1) {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Equal
                        }
                    });
                    for (i, _) in chosen {
                        keep[i][step] = true;
                        if n == 1 {
                            order.push(i);
                        }
                    }
                }
            }
        }
    }
    let mut out: Vec<Option<StepSeries>> = input.into_iter().map(Some).collect();
    let mut result = Vec::new();
    let mut take = |i: usize, out: &mut Vec<Option<StepSeries>>| {
        if let Some(mut s) = out[i].take() {
            for (step, v) in s.values.iter_mut().enumerate() {
                if !keep[i][step] {
                    *v = None;
                }
            }
            if s.values.iter().any(Option::is_some) {
                result.push(s);
            }
        }
    };
    if n == 1 {
        for i in order {
            take(i, &mut out);
        }
    } else {
        for i in 0..out.len() {
            take(i, &mut out);
        }
    }
    Ok(Value::Vector(result))
}

fn limit_k(param: f64) -> Result<usize> {
    if param.is_nan() {
        return Err(PromQlError::Execution("Parameter value is NaN".into()));
    }
    if param >= 9.223_372_036_854_776e18 {
        return Err(PromQlError::Execution(format!(
            "Scalar value {} overflows int64",
            format_float(param)
        )));
    }
    if param < 1.0 {
        return Ok(0);
    }
    Ok(param as i64 as usize)
}
