//! Head sampling: parent-based, by ratio, with rules per route or operation.
//!
//! ```
//! use sightline_instrument::sampling::{Rule, Sampler};
//!
//! // Keep 10% of traces, 1% of health checks, and every span that ends in error.
//! let sampler = Sampler::ratio(0.1)
//!     .rule(Rule::route("/health", 0.01))
//!     .rule(Rule::operation("GET /orders/{id}", 1.0))
//!     .keep_errors(true);
//! # let _ = sampler;
//! ```
//!
//! The span that takes a decision records it — `sampler.type` (`probabilistic` or
//! `const`), `sampler.param` (the ratio) and, when a rule matched, `sampler.rule` — as
//! Jaeger does; spans that follow their parent's decision record nothing. Ratio decisions hash the trace id, so every service with the
//! same ratio takes the same decision for a trace.
//!
//! "Keep errors" cannot be decided when a span starts, so an unsampled span is still
//! recorded (cheaply, never exported) and is exported only if it ends with an error
//! status; its trace is then partial — the error is kept, its unsampled ancestors are not.

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};

/// What a rule matches.
#[derive(Debug, Clone, PartialEq)]
enum Match {
    /// `http.route` or `url.path`, exactly or as a prefix when the pattern ends in `*`.
    Route(String),
    /// The span name.
    Operation(String),
}

/// A sampling ratio for matching spans that start a trace (or whose parent is ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    matches: Match,
    ratio: f64,
}

impl Rule {
    /// Spans whose `http.route` or `url.path` is `route` (a trailing `*` matches a prefix).
    pub fn route(route: impl Into<String>, ratio: f64) -> Self {
        Rule {
            matches: Match::Route(route.into()),
            ratio: ratio.clamp(0.0, 1.0),
        }
    }

    /// Spans named `operation` (a trailing `*` matches a prefix).
    pub fn operation(operation: impl Into<String>, ratio: f64) -> Self {
        Rule {
            matches: Match::Operation(operation.into()),
            ratio: ratio.clamp(0.0, 1.0),
        }
    }

    fn describe(&self) -> String {
        match &self.matches {
            Match::Route(r) => format!("route={r}"),
            Match::Operation(o) => format!("operation={o}"),
        }
    }

    fn applies(&self, name: &str, attributes: &[KeyValue]) -> bool {
        let pattern_matches = |pattern: &str, value: &str| match pattern.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix),
            None => value == pattern,
        };
        match &self.matches {
            Match::Operation(op) => pattern_matches(op, name),
            Match::Route(route) => attributes.iter().any(|kv| {
                matches!(kv.key.as_str(), "http.route" | "url.path")
                    && matches!(&kv.value, Value::String(v) if pattern_matches(route, v.as_str()))
            }),
        }
    }
}

/// The sampler [`crate::Builder::sampler`] installs.
#[derive(Debug, Clone)]
pub struct Sampler {
    ratio: f64,
    rules: Vec<Rule>,
    parent_based: bool,
    keep_errors: bool,
}

impl Default for Sampler {
    /// Everything, following the parent's decision.
    fn default() -> Self {
        Sampler::ratio(1.0)
    }
}

impl Sampler {
    /// Samples `ratio` of new traces and follows the parent's decision otherwise.
    pub fn ratio(ratio: f64) -> Self {
        Sampler {
            ratio: ratio.clamp(0.0, 1.0),
            rules: Vec::new(),
            parent_based: true,
            keep_errors: false,
        }
    }

    /// Adds a rule; the first matching rule wins. Rules apply to spans without a
    /// parent, and to all spans when [`Sampler::ignore_parent`] is set.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Decides every span on its own rules and ratio, not following the parent.
    pub fn ignore_parent(mut self) -> Self {
        self.parent_based = false;
        self
    }

    /// Exports spans that end in error even when their trace is not sampled.
    pub fn keep_errors(mut self, keep: bool) -> Self {
        self.keep_errors = keep;
        self
    }

    /// From `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (`always_on`,
    /// `always_off`, `traceidratio`, `parentbased_*`); `None` when unset or unknown.
    pub fn from_env() -> Option<Self> {
        let name = std::env::var("OTEL_TRACES_SAMPLER").ok()?;
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok());
        let (parent_based, base) = match name.trim().strip_prefix("parentbased_") {
            Some(base) => (true, base.to_string()),
            None => (false, name.trim().to_string()),
        };
        let ratio = match base.as_str() {
            "always_on" => 1.0,
            "always_off" => 0.0,
            "traceidratio" => arg.unwrap_or(1.0),
            _ => return None,
        };
        let sampler = Sampler::ratio(ratio);
        Some(if parent_based {
            sampler
        } else {
            sampler.ignore_parent()
        })
    }

    fn decide(
        &self,
        trace_id: TraceId,
        name: &str,
        attributes: &[KeyValue],
    ) -> (bool, Vec<KeyValue>) {
        let (ratio, rule) = match self.rules.iter().find(|r| r.applies(name, attributes)) {
            Some(rule) => (rule.ratio, Some(rule.describe())),
            None => (self.ratio, None),
        };
        let sampled = ratio_keeps(trace_id, ratio);
        let kind = if ratio == 0.0 || ratio == 1.0 {
            "const"
        } else {
            "probabilistic"
        };
        let mut decision = vec![
            KeyValue::new("sampler.type", kind),
            KeyValue::new("sampler.param", ratio),
        ];
        if let Some(rule) = rule {
            decision.push(KeyValue::new("sampler.rule", rule));
        }
        (sampled, decision)
    }
}

/// Whether a trace falls within `ratio`: its low 63 bits against the ratio's share,
/// as OpenTelemetry's TraceIdRatioBased does, so all services agree.
fn ratio_keeps(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
    ]) >> 1;
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    low < bound
}

impl ShouldSample for Sampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        _span_kind: &SpanKind,
        attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context
            .map(|cx| cx.span().span_context().clone())
            .filter(|sc| sc.is_valid());
        let trace_state = parent
            .as_ref()
            .map(|sc| sc.trace_state().clone())
            .unwrap_or_default();
        // As Jaeger does, the span that takes the decision records it; its descendants
        // follow it silently.
        let (sampled, attributes) = match (&parent, self.parent_based) {
            (Some(sc), true) => (sc.is_sampled(), Vec::new()),
            _ => self.decide(trace_id, name, attributes),
        };
        let decision = match (sampled, self.keep_errors) {
            (true, _) => SamplingDecision::RecordAndSample,
            (false, true) => SamplingDecision::RecordOnly,
            (false, false) => SamplingDecision::Drop,
        };
        SamplingResult {
            decision,
            attributes,
            trace_state,
        }
    }
}
