//! TraceQL, Tempo's trace query language, over Sightline's spans: `parse` reads a query,
//! `eval` runs it exactly over the spans of one trace, and [`pushdown`] turns what it can of it
//! into the native search's conditions, so that candidate traces come from the same pruned scan
//! (time, service, dedicated columns) as every other search. `metrics` answers metrics queries
//! (`| rate() by (...)`) from the RED rollups.

pub mod eval;
pub mod metrics;
pub mod parse;

pub use eval::{condition_fields, Evaluator, Matched, Spanset, TraceView, Value};
pub use parse::{parse, parse_metrics, Field, MetricsQuery, Query};

use parse::{CmpOp, Cond, Scope, SetOp, Spansets, Static};

use crate::params::AttrFilter;
use crate::search::TraceQuery;

/// The conditions of the query that one span of every matching trace must meet, as the native
/// search's: only ever a superset of the matches, never fewer. They come from one spanset
/// filter that the trace needs (the leftmost of `&&` and structural chains; none across `||`),
/// and from its conjunctions only.
pub fn pushdown(q: &Query, into: &mut TraceQuery) {
    fn required(s: &Spansets) -> Option<&Cond> {
        match s {
            Spansets::Filter(c) => Some(c),
            Spansets::Op(_, SetOp::Or, _) => None,
            // A structural operator returns right-hand spans, but needs both sides.
            Spansets::Op(l, _, _) => required(l),
        }
    }
    fn conjuncts<'a>(c: &'a Cond, out: &mut Vec<&'a Cond>) {
        match c {
            Cond::And(a, b) => {
                conjuncts(a, out);
                conjuncts(b, out);
            }
            other => out.push(other),
        }
    }
    let Some(cond) = required(&q.spansets) else {
        return;
    };
    let mut all = Vec::new();
    conjuncts(cond, &mut all);
    for c in all {
        let Cond::Cmp(field, op, value) = c else {
            continue;
        };
        match (field, op, value) {
            (Field::Attribute(Scope::Resource | Scope::Any, k), CmpOp::Eq, Static::Str(v))
                if k == "service.name" && into.service.is_none() =>
            {
                into.service = Some(v.clone());
            }
            (Field::Name, CmpOp::Eq, Static::Str(v)) if into.operation.is_none() => {
                into.operation = Some(v.clone());
            }
            (Field::Duration, CmpOp::Gt | CmpOp::Ge, d) => {
                if let Some(n) = nanos(d) {
                    into.min_duration = Some(into.min_duration.map_or(n, |m| m.max(n)));
                }
            }
            (Field::Duration, CmpOp::Lt | CmpOp::Le, d) => {
                if let Some(n) = nanos(d) {
                    into.max_duration = Some(into.max_duration.map_or(n, |m| m.min(n)));
                }
            }
            (Field::Status, CmpOp::Eq, Static::Status(code)) => into.status = Some(*code),
            (Field::Kind, CmpOp::Eq, Static::Kind(kind)) => into.kind = Some(*kind),
            // `attr_match` looks at the span's attributes, then its resource's: a superset of
            // any one scope.
            (Field::Attribute(_, k), op, v) if !matches!(op, CmpOp::Match | CmpOp::NotMatch) => {
                let value = match v {
                    Static::Str(s) => s.clone(),
                    Static::Int(i) => i.to_string(),
                    Static::Float(f) => f.to_string(),
                    _ => continue,
                };
                // `!=` on an attribute the span lacks is no match in TraceQL; `attr_match`
                // agrees, so it may be pushed down too.
                into.attributes.push(AttrFilter {
                    key: k.clone(),
                    op: match op {
                        CmpOp::Eq => "=",
                        CmpOp::Ne => "!=",
                        CmpOp::Gt => ">",
                        CmpOp::Ge => ">=",
                        CmpOp::Lt => "<",
                        CmpOp::Le => "<=",
                        CmpOp::Match | CmpOp::NotMatch => continue,
                    },
                    value,
                });
            }
            _ => {}
        }
    }
}

fn nanos(s: &Static) -> Option<i64> {
    match s {
        Static::Duration(n) | Static::Int(n) => Some(*n),
        Static::Float(f) => Some(*f as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushdown_takes_only_what_every_match_needs() {
        let mut q = TraceQuery::default();
        pushdown(
            &parse(r#"{ resource.service.name = "a" && name = "GET /" && duration > 1s && status = error && span.http.status_code >= 500 && .region =~ "eu.*" } > { kind = client }"#).unwrap(),
            &mut q,
        );
        assert_eq!(q.service.as_deref(), Some("a"));
        assert_eq!(q.operation.as_deref(), Some("GET /"));
        assert_eq!(q.min_duration, Some(1_000_000_000));
        assert_eq!(q.status, Some(2));
        assert_eq!(q.attributes.len(), 1);
        assert_eq!(
            q.kind, None,
            "the right-hand side is not required of the same span"
        );
        let mut q = TraceQuery::default();
        pushdown(
            &parse(r#"{ name = "a" } || { name = "b" }"#).unwrap(),
            &mut q,
        );
        assert_eq!(q.operation, None);
        let mut q = TraceQuery::default();
        pushdown(&parse(r#"{ name = "a" || name = "b" }"#).unwrap(), &mut q);
        assert_eq!(q.operation, None);
    }
}
