//! TraceQL's syntax, the part Sightline answers: spanset filters (`{ ... }`) over scoped and
//! unscoped attributes and the intrinsics, with `= != > >= < <= =~ !~`, `&&`, `||`, `!` and
//! parentheses; `&&`, `||` and the structural operators `> >> < << ~` between spansets; and
//! pipelines of `count() avg() min() max() sum()` compared to a value, `by()`, `select()` and
//! further spanset filters. Anything else is an error naming the construct.

use crate::error::QueryError;
use crate::params;

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Span,
    Resource,
    /// `.name`: the span's attribute, else its resource's.
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Attribute(Scope, String),
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    RootName,
    RootServiceName,
    TraceDuration,
    EventName,
    LinkTraceId,
}

impl Field {
    /// The attribute key Tempo reports a field under in search results.
    pub fn label(&self) -> String {
        match self {
            Field::Attribute(_, name) => name.clone(),
            Field::Name => "name".into(),
            Field::Status => "status".into(),
            Field::StatusMessage => "statusMessage".into(),
            Field::Kind => "kind".into(),
            Field::Duration => "duration".into(),
            Field::RootName => "rootName".into(),
            Field::RootServiceName => "rootServiceName".into(),
            Field::TraceDuration => "traceDuration".into(),
            Field::EventName => "event:name".into(),
            Field::LinkTraceId => "link:traceID".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    Str(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Bool(bool),
    Nil,
    /// 0 unset, 1 ok, 2 error.
    Status(i8),
    /// OTLP's numbering.
    Kind(i8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Match,
    NotMatch,
}

/// A condition on one span.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    True,
    False,
    Cmp(Field, CmpOp, Static),
    /// A boolean attribute alone: `{ span.cache.hit }`.
    Is(Field),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    And,
    Or,
    /// `>`: right-hand spans whose parent is a left-hand span.
    Child,
    /// `>>`: right-hand spans with a left-hand ancestor.
    Descendant,
    /// `<`: right-hand spans that are the parent of a left-hand span.
    Parent,
    /// `<<`: right-hand spans that are an ancestor of a left-hand span.
    Ancestor,
    /// `~`: right-hand spans that share a parent with a left-hand span.
    Sibling,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Spansets {
    Filter(Cond),
    Op(Box<Spansets>, SetOp, Box<Spansets>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `| count() > 2`, `| avg(duration) > 1s`.
    Aggregate(Aggregate, Option<Field>, CmpOp, Static),
    By(Vec<Field>),
    Select(Vec<Field>),
    Filter(Spansets),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub spansets: Spansets,
    pub stages: Vec<Stage>,
}

/// A TraceQL metrics query: the spans a query selects, counted or measured per time step.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsQuery {
    pub query: Query,
    pub function: MetricsFunction,
    pub by: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricsFunction {
    /// Spans per second.
    Rate,
    CountOverTime,
    /// Of a field, at each quantile (0 to 1): a series per quantile.
    QuantileOverTime(Field, Vec<f64>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Pipe,
    AndAnd,
    OrOr,
    Bang,
    Cmp(CmpOp),
    Desc,
    Anc,
    Tilde,
    Field(Field),
    Word(String),
    Str(String),
    Number(String),
}

fn bad(message: impl std::fmt::Display) -> QueryError {
    QueryError::BadQuery(format!("TraceQL: {message}"))
}

/// Characters that end an attribute name.
fn ends_name(c: char) -> bool {
    c.is_whitespace() || "{}()=!<>~,|&\"".contains(c)
}

fn intrinsic(word: &str) -> Option<Field> {
    Some(match word {
        "name" | "span:name" => Field::Name,
        "status" | "span:status" => Field::Status,
        "statusMessage" | "span:statusMessage" => Field::StatusMessage,
        "kind" | "span:kind" => Field::Kind,
        "duration" | "span:duration" => Field::Duration,
        "rootName" | "trace:rootName" => Field::RootName,
        "rootServiceName" | "trace:rootService" => Field::RootServiceName,
        "traceDuration" | "trace:duration" => Field::TraceDuration,
        "event:name" => Field::EventName,
        "link:traceID" => Field::LinkTraceId,
        _ => return None,
    })
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn quoted(&mut self) -> Result<String, QueryError> {
        // At the opening quote.
        let quote = self.rest().chars().next().unwrap_or('"');
        self.pos += quote.len_utf8();
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        Err(bad("a string is not closed"))
    }

    fn name(&mut self) -> Result<String, QueryError> {
        if self.rest().starts_with('"') {
            return self.quoted();
        }
        let len = self.rest().find(ends_name).unwrap_or(self.rest().len());
        let name = self.rest()[..len].to_string();
        self.pos += len;
        if name.is_empty() {
            return Err(bad(format!(
                "an attribute name is missing at {:?}",
                self.rest()
            )));
        }
        Ok(name)
    }

    fn tokens(mut self) -> Result<Vec<Tok>, QueryError> {
        let mut out = Vec::new();
        loop {
            let trimmed = self.rest().trim_start();
            self.pos = self.src.len() - trimmed.len();
            let Some(c) = trimmed.chars().next() else {
                return Ok(out);
            };
            let two = trimmed.get(..2).unwrap_or("");
            let (tok, len) = match (c, two) {
                (_, "&&") => (Tok::AndAnd, 2),
                (_, "||") => (Tok::OrOr, 2),
                (_, "!=") => (Tok::Cmp(CmpOp::Ne), 2),
                (_, "=~") => (Tok::Cmp(CmpOp::Match), 2),
                (_, "!~") => (Tok::Cmp(CmpOp::NotMatch), 2),
                (_, ">=") => (Tok::Cmp(CmpOp::Ge), 2),
                (_, "<=") => (Tok::Cmp(CmpOp::Le), 2),
                (_, ">>") => (Tok::Desc, 2),
                (_, "<<") => (Tok::Anc, 2),
                ('{', _) => (Tok::LBrace, 1),
                ('}', _) => (Tok::RBrace, 1),
                ('(', _) => (Tok::LParen, 1),
                (')', _) => (Tok::RParen, 1),
                (',', _) => (Tok::Comma, 1),
                ('|', _) => (Tok::Pipe, 1),
                ('!', _) => (Tok::Bang, 1),
                ('=', _) => (Tok::Cmp(CmpOp::Eq), 1),
                ('>', _) => (Tok::Cmp(CmpOp::Gt), 1),
                ('<', _) => (Tok::Cmp(CmpOp::Lt), 1),
                ('~', _) => (Tok::Tilde, 1),
                ('"' | '`', _) => {
                    let s = self.quoted()?;
                    out.push(Tok::Str(s));
                    continue;
                }
                ('.', _) if !trimmed[1..].starts_with(|c: char| c.is_ascii_digit()) => {
                    self.pos += 1;
                    let name = self.name()?;
                    out.push(Tok::Field(Field::Attribute(Scope::Any, name)));
                    continue;
                }
                (c, _) if c.is_ascii_digit() || c == '-' || c == '.' => {
                    let len = trimmed
                        .find(|c: char| {
                            !(c.is_ascii_alphanumeric() || c == '.' || c == 'µ' || c == '-')
                        })
                        .unwrap_or(trimmed.len());
                    (Tok::Number(trimmed[..len].to_string()), len)
                }
                (c, _) if c.is_alphabetic() || c == '_' => {
                    let len = trimmed
                        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                        .unwrap_or(trimmed.len());
                    let word = &trimmed[..len];
                    let after = &trimmed[len..];
                    if (word == "span" || word == "resource") && after.starts_with('.') {
                        self.pos += len + 1;
                        let scope = if word == "span" {
                            Scope::Span
                        } else {
                            Scope::Resource
                        };
                        let name = self.name()?;
                        out.push(Tok::Field(Field::Attribute(scope, name)));
                        continue;
                    }
                    if let Some(scope) = ["event", "link", "instrumentation", "trace"]
                        .iter()
                        .find(|s| word == **s && after.starts_with('.'))
                    {
                        return Err(bad(format!("{scope}. attributes are not supported")));
                    }
                    match intrinsic(word) {
                        Some(f) => (Tok::Field(f), len),
                        None => (Tok::Word(word.to_string()), len),
                    }
                }
                (c, _) => return Err(bad(format!("unexpected {c:?} at {trimmed:?}"))),
            };
            out.push(tok);
            self.pos += len;
        }
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Nesting of parentheses, braces and `!`: bounded, so a hostile query cannot exhaust the
    /// stack.
    depth: usize,
}

/// How deep parentheses, spanset filters and negations may nest.
const MAX_DEPTH: usize = 64;
/// The longest query taken.
const MAX_QUERY_BYTES: usize = 64 * 1024;

fn aggregate(word: &str) -> Option<Aggregate> {
    Some(match word {
        "count" => Aggregate::Count,
        "avg" => Aggregate::Avg,
        "min" => Aggregate::Min,
        "max" => Aggregate::Max,
        "sum" => Aggregate::Sum,
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), QueryError> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(bad(format!("expected {what}, found {}", describe(&t)))),
            None => Err(bad(format!("expected {what}, found the end of the query"))),
        }
    }

    fn query(&mut self) -> Result<Query, QueryError> {
        let spansets = self.spansets()?;
        let mut stages = Vec::new();
        while self.peek() == Some(&Tok::Pipe) {
            self.pos += 1;
            stages.push(self.stage()?);
        }
        if let Some(t) = self.peek() {
            return Err(bad(format!("unexpected {}", describe(t))));
        }
        Ok(Query { spansets, stages })
    }

    /// `spansets | stages... | function(...) [by (...)] [with (...)]`; hints in `with` change
    /// nothing here, every figure being exact.
    fn metrics_query(&mut self) -> Result<MetricsQuery, QueryError> {
        let spansets = self.spansets()?;
        let mut stages = Vec::new();
        loop {
            match self.next() {
                Some(Tok::Pipe) => {}
                Some(t) => return Err(bad(format!("unexpected {}", describe(&t)))),
                None => {
                    return Err(bad(
                        "a metrics query ends in | rate(), | count_over_time() or | quantile_over_time(field, q...)",
                    ))
                }
            }
            let Some(Tok::Word(w)) = self.peek().cloned() else {
                stages.push(self.stage()?);
                continue;
            };
            let function = match w.as_str() {
                "rate" | "count_over_time" => {
                    self.pos += 1;
                    self.expect(Tok::LParen, &format!("( after {w}"))?;
                    self.expect(Tok::RParen, &format!(") closing {w}(: it takes no argument"))?;
                    if w == "rate" {
                        MetricsFunction::Rate
                    } else {
                        MetricsFunction::CountOverTime
                    }
                }
                "quantile_over_time" => {
                    self.pos += 1;
                    self.expect(Tok::LParen, "( after quantile_over_time")?;
                    let field = match self.next() {
                        Some(Tok::Field(f)) => f,
                        _ => return Err(bad("quantile_over_time( takes a field first")),
                    };
                    let mut quantiles = Vec::new();
                    loop {
                        match self.next() {
                            Some(Tok::Comma) => {}
                            Some(Tok::RParen) if !quantiles.is_empty() => break,
                            _ => {
                                return Err(bad(
                                    "quantile_over_time(field, q...) takes quantiles from 0 to 1",
                                ))
                            }
                        }
                        let q = match self.next() {
                            Some(Tok::Number(n)) => match number(&n)? {
                                Static::Int(i) => i as f64,
                                Static::Float(f) => f,
                                _ => f64::NAN,
                            },
                            _ => f64::NAN,
                        };
                        if !(0.0..=1.0).contains(&q) {
                            return Err(bad(
                                "quantile_over_time(field, q...) takes quantiles from 0 to 1",
                            ));
                        }
                        quantiles.push(q);
                    }
                    MetricsFunction::QuantileOverTime(field, quantiles)
                }
                "min_over_time" | "max_over_time" | "avg_over_time" | "sum_over_time"
                | "histogram_over_time" | "compare" | "topk" | "bottomk" => {
                    return Err(bad(format!(
                        "{w}() is not supported (metrics queries take rate, count_over_time and quantile_over_time)"
                    )))
                }
                _ => {
                    stages.push(self.stage()?);
                    continue;
                }
            };
            let mut by = Vec::new();
            if self.peek() == Some(&Tok::Word("by".into())) {
                self.pos += 1;
                by = self.fields("by")?;
            }
            if self.peek() == Some(&Tok::Word("with".into())) {
                self.pos += 1;
                self.expect(Tok::LParen, "( after with")?;
                while !matches!(self.next(), Some(Tok::RParen)) {
                    if self.pos > self.toks.len() {
                        return Err(bad("with( is not closed"));
                    }
                }
            }
            match self.peek() {
                None => {}
                Some(Tok::Pipe) => {
                    return Err(bad(
                        "nothing may follow a metrics function (topk, bottomk and comparisons are not supported)",
                    ))
                }
                Some(t) => return Err(bad(format!("unexpected {}", describe(t)))),
            }
            return Ok(MetricsQuery {
                query: Query { spansets, stages },
                function,
                by,
            });
        }
    }

    /// `||` binds loosest, then `&&`, then the structural operators.
    fn spansets(&mut self) -> Result<Spansets, QueryError> {
        let mut left = self.spansets_and()?;
        while self.peek() == Some(&Tok::OrOr) {
            self.pos += 1;
            let right = self.spansets_and()?;
            left = Spansets::Op(Box::new(left), SetOp::Or, Box::new(right));
        }
        Ok(left)
    }

    fn spansets_and(&mut self) -> Result<Spansets, QueryError> {
        let mut left = self.spansets_structural()?;
        while self.peek() == Some(&Tok::AndAnd) {
            self.pos += 1;
            let right = self.spansets_structural()?;
            left = Spansets::Op(Box::new(left), SetOp::And, Box::new(right));
        }
        Ok(left)
    }

    fn spansets_structural(&mut self) -> Result<Spansets, QueryError> {
        let mut left = self.spanset_term()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Cmp(CmpOp::Gt)) => SetOp::Child,
                Some(Tok::Desc) => SetOp::Descendant,
                Some(Tok::Cmp(CmpOp::Lt)) => SetOp::Parent,
                Some(Tok::Anc) => SetOp::Ancestor,
                Some(Tok::Tilde) => SetOp::Sibling,
                Some(Tok::Bang) => {
                    return Err(bad(
                        "the negated structural operators (!>, !<, !~ ...) are not supported",
                    ))
                }
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.spanset_term()?;
            left = Spansets::Op(Box::new(left), op, Box::new(right));
        }
    }

    fn nest(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(bad(format!(
                "the query nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }

    fn spanset_term(&mut self) -> Result<Spansets, QueryError> {
        self.nest()?;
        let term = self.spanset_term_inner();
        self.depth -= 1;
        term
    }

    fn spanset_term_inner(&mut self) -> Result<Spansets, QueryError> {
        match self.next() {
            Some(Tok::LBrace) => {
                if self.peek() == Some(&Tok::RBrace) {
                    self.pos += 1;
                    return Ok(Spansets::Filter(Cond::True));
                }
                let cond = self.cond()?;
                self.expect(Tok::RBrace, "} closing the spanset filter")?;
                Ok(Spansets::Filter(cond))
            }
            Some(Tok::LParen) => {
                let inner = self.spansets()?;
                self.expect(Tok::RParen, ")")?;
                Ok(inner)
            }
            Some(t) => Err(bad(format!(
                "expected a spanset filter {{ ... }}, found {}",
                describe(&t)
            ))),
            None => Err(bad(
                "the query is empty; a spanset filter { ... } is expected",
            )),
        }
    }

    fn cond(&mut self) -> Result<Cond, QueryError> {
        let mut left = self.cond_and()?;
        while self.peek() == Some(&Tok::OrOr) {
            self.pos += 1;
            let right = self.cond_and()?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn cond_and(&mut self) -> Result<Cond, QueryError> {
        let mut left = self.cond_unary()?;
        while self.peek() == Some(&Tok::AndAnd) {
            self.pos += 1;
            let right = self.cond_unary()?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn cond_unary(&mut self) -> Result<Cond, QueryError> {
        self.nest()?;
        let cond = self.cond_unary_inner();
        self.depth -= 1;
        cond
    }

    fn cond_unary_inner(&mut self) -> Result<Cond, QueryError> {
        match self.peek() {
            Some(Tok::Bang) => {
                self.pos += 1;
                Ok(Cond::Not(Box::new(self.cond_unary()?)))
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let inner = self.cond()?;
                self.expect(Tok::RParen, ")")?;
                Ok(inner)
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Cond, QueryError> {
        match self.next() {
            Some(Tok::Field(field)) => match self.peek() {
                Some(Tok::Cmp(op)) => {
                    let op = *op;
                    self.pos += 1;
                    let value = self.static_value()?;
                    check_comparison(&field, op, &value)?;
                    Ok(Cond::Cmp(field, op, value))
                }
                _ => Ok(Cond::Is(field)),
            },
            Some(Tok::Word(w)) if w == "true" => Ok(Cond::True),
            Some(Tok::Word(w)) if w == "false" => Ok(Cond::False),
            Some(Tok::Word(w)) => Err(bad(format!("{w:?} is not a field TraceQL knows here"))),
            Some(t) => Err(bad(format!("expected a condition, found {}", describe(&t)))),
            None => Err(bad("a condition is missing")),
        }
    }

    fn static_value(&mut self) -> Result<Static, QueryError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Static::Str(s)),
            Some(Tok::Number(n)) => number(&n),
            Some(Tok::Word(w)) => Ok(match w.as_str() {
                "true" => Static::Bool(true),
                "false" => Static::Bool(false),
                "nil" => Static::Nil,
                "ok" => Static::Status(1),
                "error" => Static::Status(2),
                "unset" => Static::Status(0),
                "unspecified" => Static::Kind(0),
                "internal" => Static::Kind(1),
                "server" => Static::Kind(2),
                "client" => Static::Kind(3),
                "producer" => Static::Kind(4),
                "consumer" => Static::Kind(5),
                other => return Err(bad(format!("{other:?} is not a value"))),
            }),
            Some(t) => Err(bad(format!("expected a value, found {}", describe(&t)))),
            None => Err(bad("a value is missing at the end of the query")),
        }
    }

    fn fields(&mut self, stage: &str) -> Result<Vec<Field>, QueryError> {
        self.expect(Tok::LParen, &format!("( after {stage}"))?;
        let mut fields = Vec::new();
        loop {
            match self.next() {
                Some(Tok::Field(f)) => fields.push(f),
                Some(t) => {
                    return Err(bad(format!(
                        "{stage}() takes fields, found {}",
                        describe(&t)
                    )))
                }
                None => return Err(bad(format!("{stage}( is not closed"))),
            }
            match self.next() {
                Some(Tok::Comma) => continue,
                Some(Tok::RParen) => return Ok(fields),
                _ => return Err(bad(format!("{stage}( is not closed"))),
            }
        }
    }

    fn stage(&mut self) -> Result<Stage, QueryError> {
        match self.peek().cloned() {
            Some(Tok::LBrace) | Some(Tok::LParen) => Ok(Stage::Filter(self.spansets()?)),
            Some(Tok::Word(w)) => {
                self.pos += 1;
                if let Some(agg) = aggregate(&w) {
                    self.expect(Tok::LParen, &format!("( after {w}"))?;
                    let field = match self.next() {
                        Some(Tok::RParen) if agg == Aggregate::Count => None,
                        Some(Tok::Field(f)) if agg != Aggregate::Count => {
                            self.expect(Tok::RParen, &format!(") closing {w}("))?;
                            Some(f)
                        }
                        _ => {
                            return Err(bad(if agg == Aggregate::Count {
                                "count() takes no argument".to_string()
                            } else {
                                format!("{w}() takes one field")
                            }))
                        }
                    };
                    let op = match self.next() {
                        Some(Tok::Cmp(op)) if !matches!(op, CmpOp::Match | CmpOp::NotMatch) => op,
                        _ => return Err(bad(format!("{w}() must be compared to a value"))),
                    };
                    let value = self.static_value()?;
                    if !matches!(
                        value,
                        Static::Int(_) | Static::Float(_) | Static::Duration(_)
                    ) {
                        return Err(bad(format!("{w}() compares to a number or a duration")));
                    }
                    return Ok(Stage::Aggregate(agg, field, op, value));
                }
                match w.as_str() {
                    "by" => Ok(Stage::By(self.fields("by")?)),
                    "select" => Ok(Stage::Select(self.fields("select")?)),
                    other => Err(bad(format!(
                        "{other}() is not supported (pipelines take count, avg, min, max, sum, by, select and spanset filters)"
                    ))),
                }
            }
            Some(t) => Err(bad(format!("unexpected {} after |", describe(&t)))),
            None => Err(bad("a pipeline stage is missing after |")),
        }
    }
}

fn number(n: &str) -> Result<Static, QueryError> {
    if let Ok(i) = n.parse::<i64>() {
        return Ok(Static::Int(i));
    }
    if let Ok(f) = n.parse::<f64>() {
        return Ok(Static::Float(f));
    }
    params::parse_duration("duration", n)
        .map(Static::Duration)
        .map_err(|_| bad(format!("{n:?} is not a number or a duration")))
}

fn check_comparison(field: &Field, op: CmpOp, value: &Static) -> Result<(), QueryError> {
    let regex = matches!(op, CmpOp::Match | CmpOp::NotMatch);
    if regex {
        let Static::Str(re) = value else {
            return Err(bad("=~ and !~ take a string"));
        };
        regex::Regex::new(re).map_err(|e| bad(format!("bad regular expression {re:?}: {e}")))?;
    }
    let ordered = matches!(op, CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le);
    match (field, value) {
        (_, Static::Nil) if ordered => Err(bad("nil compares with = or != only")),
        (_, Static::Nil) => Ok(()),
        (Field::Status, Static::Status(_)) | (Field::Kind, Static::Kind(_)) if !ordered => Ok(()),
        (Field::Status | Field::Kind, _) => Err(bad(format!(
            "{} compares with = or != to {}",
            field.label(),
            if *field == Field::Status {
                "ok, error or unset"
            } else {
                "a span kind"
            }
        ))),
        (_, Static::Status(_) | Static::Kind(_)) => Err(bad(format!(
            "{} cannot be compared to a status or a kind",
            field.label()
        ))),
        (
            Field::Duration | Field::TraceDuration,
            Static::Duration(_) | Static::Int(_) | Static::Float(_),
        ) => Ok(()),
        (Field::Duration | Field::TraceDuration, _) => {
            Err(bad(format!("{} compares to a duration", field.label())))
        }
        _ => Ok(()),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LBrace => "{".into(),
        Tok::RBrace => "}".into(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::Comma => ",".into(),
        Tok::Pipe => "|".into(),
        Tok::AndAnd => "&&".into(),
        Tok::OrOr => "||".into(),
        Tok::Bang => "!".into(),
        Tok::Cmp(_) => "a comparison".into(),
        Tok::Desc => ">>".into(),
        Tok::Anc => "<<".into(),
        Tok::Tilde => "~".into(),
        Tok::Field(f) => f.label(),
        Tok::Word(w) => format!("{w:?}"),
        Tok::Str(s) => format!("the string {s:?}"),
        Tok::Number(n) => n.clone(),
    }
}

/// Parses a TraceQL query.
pub fn parse(src: &str) -> Result<Query, QueryError> {
    parser(src)?.query()
}

/// Parses a TraceQL metrics query (`{ ... } | rate() by (resource.service.name)`).
pub fn parse_metrics(src: &str) -> Result<MetricsQuery, QueryError> {
    parser(src)?.metrics_query()
}

fn parser(src: &str) -> Result<Parser, QueryError> {
    if src.len() > MAX_QUERY_BYTES {
        return Err(bad(format!(
            "the query is {} bytes; at most {MAX_QUERY_BYTES} are taken",
            src.len()
        )));
    }
    Ok(Parser {
        toks: Lexer { src, pos: 0 }.tokens()?,
        pos: 0,
        depth: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_operators() {
        let q = parse(r#"{ resource.service.name = "frontend" && span.http.status_code >= 500 }"#)
            .unwrap();
        assert_eq!(
            q.spansets,
            Spansets::Filter(Cond::And(
                Box::new(Cond::Cmp(
                    Field::Attribute(Scope::Resource, "service.name".into()),
                    CmpOp::Eq,
                    Static::Str("frontend".into())
                )),
                Box::new(Cond::Cmp(
                    Field::Attribute(Scope::Span, "http.status_code".into()),
                    CmpOp::Ge,
                    Static::Int(500)
                )),
            ))
        );
        let q =
            parse("{ duration > 1.5s && status = error && kind = server } | count() > 2").unwrap();
        assert_eq!(
            q.stages,
            [Stage::Aggregate(
                Aggregate::Count,
                None,
                CmpOp::Gt,
                Static::Int(2)
            )]
        );
        let q = parse(r#"{ .region =~ "eu-.*" } >> { name = "SELECT" } | avg(duration) > 10ms | by(resource.service.name) | select(span.db.statement)"#).unwrap();
        assert!(matches!(q.spansets, Spansets::Op(_, SetOp::Descendant, _)));
        assert_eq!(q.stages.len(), 3);
        assert!(matches!(
            &q.stages[0],
            Stage::Aggregate(
                Aggregate::Avg,
                Some(Field::Duration),
                CmpOp::Gt,
                Static::Duration(10_000_000)
            )
        ));
        let q = parse(
            r#"({ a.b = 1 } && { }) || { span."with space" != nil } ~ { !(traceDuration < 2s) }"#,
        );
        assert!(q.is_err(), "a.b is not a field");
        let q = parse(
            r#"({ .a = 1 } && { }) || { span."with space" != nil } ~ { !(traceDuration < 2s) }"#,
        )
        .unwrap();
        let Spansets::Op(_, SetOp::Or, right) = q.spansets else {
            panic!("|| binds loosest")
        };
        assert!(matches!(*right, Spansets::Op(_, SetOp::Sibling, _)));
        parse("{ event:name = \"exception\" } && { link:traceID != nil } && { rootServiceName = \"a\" && rootName = \"b\" && statusMessage =~ \"time.*\" }").unwrap();
        parse("{ span:name = \"x\" && trace:duration > 1s && span:status = ok }").unwrap();
    }

    #[test]
    fn unsupported_and_malformed_queries_name_the_problem() {
        for (q, says) in [
            ("", "empty"),
            ("{ name = ", "value is missing"),
            ("{ name = \"x\" ", "}"),
            ("{ status > error }", "status"),
            ("{ duration > \"slow\" }", "duration"),
            ("{ name =~ \"(\" }", "regular expression"),
            ("{ .a = 1 } | rate()", "rate() is not supported"),
            (
                "{ .a = 1 } | quantile_over_time(duration, .9)",
                "quantile_over_time",
            ),
            ("{ .a = 1 } !> { .b = 2 }", "negated structural"),
            ("{ event.foo = 1 }", "event. attributes"),
            ("{ .a = 1 } | count()", "compared"),
            ("{ foo = 1 }", "not a field"),
            ("{ name = \"unterminated }", "not closed"),
            (
                &format!("{}{{ }}{}", "(".repeat(10_000), ")".repeat(10_000)),
                "nests deeper",
            ),
            (
                &format!("{{ {} true }}", "!".repeat(10_000)),
                "nests deeper",
            ),
            (
                &format!("{{ name = \"{}\" }}", "x".repeat(70_000)),
                "at most",
            ),
        ] {
            let e = parse(q).unwrap_err().to_string();
            assert!(e.contains("TraceQL") && e.contains(says), "{q}: {e}");
        }
    }
}
