//! TraceQL evaluated over the spans of one trace: a query yields the spansets it matched (empty:
//! the trace does not match). Exact, on [`SpanRecord`]s; the SQL that picks candidate traces
//! only prunes ([`super::pushdown`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use regex::Regex;

use super::parse::{Aggregate, CmpOp, Cond, Field, Query, Scope, SetOp, Spansets, Stage, Static};
use crate::columns;
use crate::trace::{attribute, AttrValue, SpanRecord};

/// One trace's spans, with what structural operators and trace-level intrinsics need.
pub struct TraceView<'a> {
    pub spans: &'a [SpanRecord],
    parent: Vec<Option<usize>>,
    /// The root span: the one without a parent, else the earliest.
    pub root: Option<usize>,
    pub start_unix_nano: i64,
    pub duration_nano: i64,
}

impl<'a> TraceView<'a> {
    pub fn new(spans: &'a [SpanRecord]) -> Self {
        let by_id: HashMap<[u8; 8], usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id, i))
            .collect();
        let parent = spans
            .iter()
            .map(|s| s.parent_span_id.and_then(|p| by_id.get(&p).copied()))
            .collect();
        let root = spans
            .iter()
            .position(|s| s.parent_span_id.is_none())
            .or_else(|| (0..spans.len()).min_by_key(|&i| spans[i].start_unix_nano));
        let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
        let end = spans
            .iter()
            .map(|s| s.start_unix_nano + s.duration_nano)
            .max()
            .unwrap_or(0);
        TraceView {
            spans,
            parent,
            root,
            start_unix_nano: start,
            duration_nano: end - start,
        }
    }

    fn ancestors(&self, mut i: usize) -> impl Iterator<Item = usize> + '_ {
        let mut seen = 0;
        std::iter::from_fn(move || {
            // Bounded, in case ids loop.
            seen += 1;
            let p = self.parent[i].filter(|_| seen <= self.spans.len())?;
            i = p;
            Some(p)
        })
    }
}

/// A field's value on a span.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Duration(i64),
    Status(i8),
    Kind(i8),
}

impl Value {
    fn of_attr(v: &AttrValue) -> Option<Value> {
        Some(match v {
            AttrValue::Str(s) => Value::Str(s.clone()),
            AttrValue::Int(i) => Value::Int(*i),
            AttrValue::Double(d) => Value::Float(*d),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Bytes(b) => Value::Str(columns::hex(b)),
            AttrValue::Json(j) => Value::Str(j.to_string()),
        })
    }

    fn number(&self) -> Option<f64> {
        match self {
            Value::Int(i) | Value::Duration(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            // Zipkin and SOFATracer send every tag as a string: a number in one compares as one.
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

fn static_number(s: &Static) -> Option<f64> {
    match s {
        Static::Int(i) | Static::Duration(i) => Some(*i as f64),
        Static::Float(f) => Some(*f),
        _ => None,
    }
}

pub struct Evaluator {
    regexes: HashMap<String, Regex>,
}

/// A spanset: spans (indexes into the trace's), and the `by()` values that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanset {
    pub spans: Vec<usize>,
    pub by: Vec<(String, Value)>,
}

/// What a query found in a trace: its spansets, and the fields `select()` asked to show.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matched {
    pub spansets: Vec<Spanset>,
    pub selected: Vec<Field>,
}

impl Default for Evaluator {
    fn default() -> Self {
        Self::new()
    }
}

impl Evaluator {
    pub fn new() -> Self {
        Evaluator {
            regexes: HashMap::new(),
        }
    }

    /// The values of a field on span `i` (several for event names and link ids).
    pub fn values(&self, t: &TraceView<'_>, i: usize, field: &Field) -> Vec<Value> {
        let s = &t.spans[i];
        let one = |v: Option<Value>| v.into_iter().collect();
        match field {
            Field::Attribute(scope, key) => {
                let span = || attribute(&s.attributes, key).and_then(Value::of_attr);
                let resource = || {
                    attribute(&s.resource, key)
                        .and_then(Value::of_attr)
                        .or_else(|| (key == "service.name").then(|| Value::Str(s.service.clone())))
                };
                one(match scope {
                    Scope::Span => span(),
                    Scope::Resource => resource(),
                    Scope::Any => span().or_else(resource),
                })
            }
            Field::Name => vec![Value::Str(s.name.clone())],
            Field::Status => vec![Value::Status(s.status_code)],
            Field::StatusMessage => vec![Value::Str(s.status_message.clone().unwrap_or_default())],
            Field::Kind => vec![Value::Kind(s.kind)],
            Field::Duration => vec![Value::Duration(s.duration_nano)],
            Field::RootName => one(t.root.map(|r| Value::Str(t.spans[r].name.clone()))),
            Field::RootServiceName => one(t.root.map(|r| Value::Str(t.spans[r].service.clone()))),
            Field::TraceDuration => vec![Value::Duration(t.duration_nano)],
            Field::EventName => s
                .events
                .iter()
                .map(|e| Value::Str(e.name.clone()))
                .collect(),
            Field::LinkTraceId => s
                .links
                .iter()
                .map(|l| Value::Str(columns::hex(&l.trace_id)))
                .collect(),
        }
    }

    fn regex(&mut self, re: &str) -> Option<&Regex> {
        if !self.regexes.contains_key(re) {
            // Anchored, as TraceQL's regular expressions are.
            let compiled = Regex::new(&format!("^(?:{re})$")).ok()?;
            self.regexes.insert(re.to_string(), compiled);
        }
        self.regexes.get(re)
    }

    fn compare(&mut self, value: &Value, op: CmpOp, with: &Static) -> bool {
        use std::cmp::Ordering;
        let ordering = match (value, with) {
            (Value::Str(a), Static::Str(b)) => match op {
                CmpOp::Match => return self.regex(b).is_some_and(|r| r.is_match(a)),
                CmpOp::NotMatch => return self.regex(b).is_some_and(|r| !r.is_match(a)),
                _ => Some(a.as_str().cmp(b.as_str())),
            },
            (Value::Bool(a), Static::Bool(b)) => Some(a.cmp(b)),
            (Value::Status(a), Static::Status(b)) | (Value::Kind(a), Static::Kind(b)) => {
                Some(a.cmp(b))
            }
            (v, s) => match (v.number(), static_number(s)) {
                (Some(a), Some(b)) => a.partial_cmp(&b),
                _ => None,
            },
        };
        let Some(o) = ordering else {
            return false;
        };
        match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Match | CmpOp::NotMatch => false,
        }
    }

    pub(crate) fn matches(&mut self, t: &TraceView<'_>, i: usize, cond: &Cond) -> bool {
        match cond {
            Cond::True => true,
            Cond::False => false,
            Cond::Cmp(field, op, Static::Nil) => {
                let present = !self.values(t, i, field).is_empty();
                if *op == CmpOp::Eq {
                    !present
                } else {
                    present
                }
            }
            Cond::Cmp(field, op, with) => {
                let values = self.values(t, i, field);
                values.iter().any(|v| self.compare(v, *op, with))
            }
            Cond::Is(field) => self.values(t, i, field).contains(&Value::Bool(true)),
            Cond::And(a, b) => self.matches(t, i, a) && self.matches(t, i, b),
            Cond::Or(a, b) => self.matches(t, i, a) || self.matches(t, i, b),
            Cond::Not(c) => !self.matches(t, i, c),
        }
    }

    /// The spans a spanset expression selects in the trace.
    fn spans(&mut self, t: &TraceView<'_>, e: &Spansets) -> Vec<usize> {
        match e {
            Spansets::Filter(cond) => (0..t.spans.len())
                .filter(|&i| self.matches(t, i, cond))
                .collect(),
            Spansets::Op(l, op, r) => {
                let left = self.spans(t, l);
                let right = self.spans(t, r);
                if left.is_empty() || right.is_empty() {
                    return if *op == SetOp::Or {
                        if left.is_empty() {
                            right
                        } else {
                            left
                        }
                    } else {
                        Vec::new()
                    };
                }
                let in_left: HashSet<usize> = left.iter().copied().collect();
                match op {
                    SetOp::And | SetOp::Or => {
                        let mut all: Vec<usize> = left.into_iter().chain(right).collect();
                        all.sort_unstable();
                        all.dedup();
                        all
                    }
                    SetOp::Child => right
                        .into_iter()
                        .filter(|&i| t.parent[i].is_some_and(|p| in_left.contains(&p)))
                        .collect(),
                    SetOp::Descendant => right
                        .into_iter()
                        .filter(|&i| t.ancestors(i).any(|a| in_left.contains(&a)))
                        .collect(),
                    SetOp::Parent => {
                        let parents: HashSet<usize> =
                            in_left.iter().filter_map(|&i| t.parent[i]).collect();
                        right.into_iter().filter(|i| parents.contains(i)).collect()
                    }
                    SetOp::Ancestor => {
                        let ancestors: HashSet<usize> =
                            in_left.iter().flat_map(|&i| t.ancestors(i)).collect();
                        right
                            .into_iter()
                            .filter(|i| ancestors.contains(i))
                            .collect()
                    }
                    SetOp::Sibling => {
                        // Left-hand spans under each parent; a span is not its own sibling.
                        let mut under: HashMap<usize, usize> = HashMap::new();
                        for &i in &in_left {
                            if let Some(p) = t.parent[i] {
                                *under.entry(p).or_default() += 1;
                            }
                        }
                        right
                            .into_iter()
                            .filter(|&i| {
                                t.parent[i].is_some_and(|p| {
                                    under.get(&p).copied().unwrap_or(0)
                                        > usize::from(in_left.contains(&i))
                                })
                            })
                            .collect()
                    }
                }
            }
        }
    }

    fn aggregate(
        &self,
        t: &TraceView<'_>,
        set: &Spanset,
        agg: Aggregate,
        field: Option<&Field>,
    ) -> Option<f64> {
        if agg == Aggregate::Count {
            return Some(set.spans.len() as f64);
        }
        let field = field?;
        let values: Vec<f64> = set
            .spans
            .iter()
            .flat_map(|&i| self.values(t, i, field))
            .filter_map(|v| v.number())
            .collect();
        if values.is_empty() {
            return None;
        }
        Some(match agg {
            Aggregate::Count => values.len() as f64,
            Aggregate::Sum => values.iter().sum(),
            Aggregate::Avg => values.iter().sum::<f64>() / values.len() as f64,
            Aggregate::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregate::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    /// Runs the query over one trace.
    pub fn run(&mut self, q: &Query, t: &TraceView<'_>) -> Matched {
        let first = self.spans(t, &q.spansets);
        let mut out = Matched::default();
        if first.is_empty() {
            return out;
        }
        out.spansets.push(Spanset {
            spans: first,
            by: Vec::new(),
        });
        for stage in &q.stages {
            match stage {
                Stage::Aggregate(agg, field, op, value) => {
                    let mut kept = Vec::new();
                    for set in std::mem::take(&mut out.spansets) {
                        let got = self.aggregate(t, &set, *agg, field.as_ref());
                        let keep = got.is_some_and(|g| {
                            let v = if matches!(value, Static::Duration(_))
                                || field.as_ref().is_some_and(|f| {
                                    matches!(f, Field::Duration | Field::TraceDuration)
                                }) {
                                Value::Duration(g as i64)
                            } else {
                                Value::Float(g)
                            };
                            self.compare(&v, *op, value)
                        });
                        if keep {
                            kept.push(set);
                        }
                    }
                    out.spansets = kept;
                }
                Stage::By(fields) => {
                    let mut regrouped = Vec::new();
                    for set in std::mem::take(&mut out.spansets) {
                        let mut groups: BTreeMap<String, Spanset> = BTreeMap::new();
                        for &i in &set.spans {
                            let by: Vec<(String, Value)> = fields
                                .iter()
                                .filter_map(|f| {
                                    self.values(t, i, f)
                                        .into_iter()
                                        .next()
                                        .map(|v| (format!("by({})", field_text(f)), v))
                                })
                                .collect();
                            let key = format!("{by:?}");
                            groups
                                .entry(key)
                                .or_insert_with(|| Spanset {
                                    spans: Vec::new(),
                                    by,
                                })
                                .spans
                                .push(i);
                        }
                        regrouped.extend(groups.into_values());
                    }
                    out.spansets = regrouped;
                }
                Stage::Select(fields) => out.selected.extend(fields.iter().cloned()),
                Stage::Filter(e) => {
                    let allowed: HashSet<usize> = self.spans(t, e).into_iter().collect();
                    for set in &mut out.spansets {
                        set.spans.retain(|i| allowed.contains(i));
                    }
                    out.spansets.retain(|s| !s.spans.is_empty());
                }
            }
            if out.spansets.is_empty() {
                break;
            }
        }
        out
    }
}

/// A field as written in a query (`resource.service.name`, `.region`, `duration`).
pub fn field_text(f: &Field) -> String {
    match f {
        Field::Attribute(Scope::Span, k) => format!("span.{k}"),
        Field::Attribute(Scope::Resource, k) => format!("resource.{k}"),
        Field::Attribute(Scope::Any, k) => format!(".{k}"),
        other => other.label(),
    }
}

/// The fields a query's conditions read: what search results show on each span.
pub fn condition_fields(q: &Query) -> Vec<Field> {
    fn cond(c: &Cond, out: &mut Vec<Field>) {
        match c {
            Cond::Cmp(f, _, _) | Cond::Is(f) => {
                if !out.contains(f) {
                    out.push(f.clone());
                }
            }
            Cond::And(a, b) | Cond::Or(a, b) => {
                cond(a, out);
                cond(b, out);
            }
            Cond::Not(c) => cond(c, out),
            Cond::True | Cond::False => {}
        }
    }
    fn sets(s: &Spansets, out: &mut Vec<Field>) {
        match s {
            Spansets::Filter(c) => cond(c, out),
            Spansets::Op(a, _, b) => {
                sets(a, out);
                sets(b, out);
            }
        }
    }
    let mut out = Vec::new();
    sets(&q.spansets, &mut out);
    for stage in &q.stages {
        if let Stage::Filter(s) = stage {
            sets(s, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;
    use crate::trace::{EventRecord, SpanRecord};

    fn span(
        id: u8,
        parent: Option<u8>,
        service: &str,
        name: &str,
        kind: i8,
        ms: i64,
    ) -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: None,
            service: service.into(),
            name: name.into(),
            kind,
            start_unix_nano: 1_000_000_000 + i64::from(id) * 1_000_000,
            duration_nano: ms * 1_000_000,
            status_code: 0,
            status_message: None,
            scope_name: None,
            scope_version: None,
            resource: vec![("service.name".into(), AttrValue::Str(service.into()))],
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            load_test: false,
        }
    }

    /// frontend GET / (1) → frontend HTTP POST (2) → payments POST /charge (3, error, 500)
    ///   → payments SELECT (4); frontend render (5) under 1.
    fn shop() -> Vec<SpanRecord> {
        let mut charge = span(3, Some(2), "payments", "POST /charge", 2, 80);
        charge.status_code = 2;
        charge.attributes = vec![
            ("http.response.status_code".into(), AttrValue::Int(500)),
            ("region".into(), AttrValue::Str("eu-west-1".into())),
        ];
        let mut select = span(4, Some(3), "payments", "SELECT", 3, 30);
        select.attributes = vec![("db.system".into(), AttrValue::Str("postgresql".into()))];
        select.events = vec![EventRecord {
            time_unix_nano: 0,
            name: "exception".into(),
            attributes: Vec::new(),
        }];
        let mut render = span(5, Some(1), "frontend", "render", 1, 5);
        render.attributes = vec![(
            "http.response.status_code".into(),
            AttrValue::Str("200".into()),
        )];
        vec![
            span(1, None, "frontend", "GET /", 2, 120),
            span(2, Some(1), "frontend", "HTTP POST", 3, 100),
            charge,
            select,
            render,
        ]
    }

    fn found(q: &str) -> Vec<Vec<u8>> {
        let spans = shop();
        let t = TraceView::new(&spans);
        let m = Evaluator::new().run(&parse(q).unwrap(), &t);
        m.spansets
            .iter()
            .map(|s| s.spans.iter().map(|&i| spans[i].span_id[0]).collect())
            .collect()
    }

    #[test]
    fn filters_compare_as_traceql_does() {
        assert_eq!(
            found(r#"{ resource.service.name = "payments" }"#),
            [vec![3, 4]]
        );
        assert_eq!(
            found(r#"{ span.http.response.status_code >= 500 && status = error }"#),
            [vec![3]]
        );
        assert_eq!(found(r#"{ .region =~ "eu-.*" }"#), [vec![3]]);
        assert_eq!(
            found(r#"{ .region =~ "eu" }"#),
            Vec::<Vec<u8>>::new(),
            "anchored"
        );
        assert_eq!(
            found(r#"{ .region !~ "us-.*" }"#),
            [vec![3]],
            "missing is no match"
        );
        assert_eq!(found(r#"{ .region != nil }"#), [vec![3]]);
        assert_eq!(found(r#"{ duration > 90ms }"#), [vec![1, 2]]);
        assert_eq!(
            found(r#"{ kind = client && !(name = "SELECT") }"#),
            [vec![2]]
        );
        assert_eq!(found(r#"{ event:name = "exception" }"#), [vec![4]]);
        assert_eq!(
            found(
                r#"{ rootServiceName = "frontend" && traceDuration > 100ms && name = "render" }"#
            ),
            [vec![5]]
        );
        // A string tag holding a number compares as a number.
        assert_eq!(
            found(r#"{ span.http.response.status_code = 200 }"#),
            [vec![5]]
        );
        assert_eq!(found("{ }"), [vec![1, 2, 3, 4, 5]]);
    }

    #[test]
    fn spanset_operators_and_pipelines() {
        assert_eq!(
            found(r#"{ name = "GET /" } && { status = error }"#),
            [vec![1, 3]]
        );
        assert_eq!(
            found(r#"{ name = "nothing" } && { status = error }"#),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(
            found(r#"{ name = "nothing" } || { status = error }"#),
            [vec![3]]
        );
        assert_eq!(
            found(
                r#"{ resource.service.name = "frontend" } > { resource.service.name = "payments" }"#
            ),
            [vec![3]]
        );
        assert_eq!(
            found(r#"{ name = "GET /" } >> { resource.service.name = "payments" }"#),
            [vec![3, 4]]
        );
        assert_eq!(found(r#"{ name = "SELECT" } < { }"#), [vec![3]]);
        assert_eq!(found(r#"{ name = "SELECT" } << { }"#), [vec![1, 2, 3]]);
        assert_eq!(found(r#"{ name = "HTTP POST" } ~ { }"#), [vec![5]]);
        assert_eq!(found(r#"{ } | count() > 4"#), [vec![1, 2, 3, 4, 5]]);
        assert_eq!(found(r#"{ } | count() > 5"#), Vec::<Vec<u8>>::new());
        assert_eq!(
            found(r#"{ kind = client } | avg(duration) > 60ms"#),
            [vec![2, 4]]
        );
        assert_eq!(
            found(r#"{ kind = client } | max(duration) < 60ms"#),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(
            found(r#"{ } | by(resource.service.name) | count() > 2"#),
            [vec![1, 2, 5]]
        );
        assert_eq!(found(r#"{ } | { status = error }"#), [vec![3]]);
        let spans = shop();
        let m = Evaluator::new().run(
            &parse("{ } | by(resource.service.name) | select(span.region)").unwrap(),
            &TraceView::new(&spans),
        );
        assert_eq!(m.spansets.len(), 2);
        assert_eq!(
            m.spansets[0].by,
            [(
                "by(resource.service.name)".into(),
                Value::Str("frontend".into())
            )]
        );
        assert_eq!(m.selected, [Field::Attribute(Scope::Span, "region".into())]);
    }
}
