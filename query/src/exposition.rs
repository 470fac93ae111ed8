//! What `GET /metrics` writes: Prometheus's text format (0.0.4) or, when the scraper asks for
//! it, OpenMetrics 1.0 — which alone carries exemplars.

use std::fmt::Write;

use sightline_storage::telemetry::HistogramSnapshot;

use crate::promql::format_float;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: i64,
}

/// One line: the family's name with `suffix` (`_total`, `_bucket`, `_sum`, `_count` or none).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub suffix: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub exemplar: Option<Exemplar>,
}

/// A metric family; a counter's name is without `_total`. The samples of one label set are
/// contiguous, a histogram's buckets first (in order, `+Inf` last), then `_count`, `_sum`.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &str, kind: Kind, help: &str) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a counter's or a gauge's value.
    pub fn value(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let suffix = if self.kind == Kind::Counter {
            "_total"
        } else {
            ""
        };
        self.line(suffix, owned(labels), value)
    }

    fn line(
        &mut self,
        suffix: &'static str,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> &mut Self {
        self.samples.push(Sample {
            suffix,
            labels,
            value,
            exemplar: None,
        });
        self
    }

    /// Adds a histogram of durations in seconds.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &HistogramSnapshot) -> &mut Self {
        for (le, count) in &h.buckets {
            let mut l = owned(labels);
            l.push(("le".into(), format_float(*le)));
            self.line("_bucket", l, *count as f64);
        }
        for (suffix, value) in [("_count", h.count as f64), ("_sum", h.sum_seconds)] {
            self.line(suffix, owned(labels), value);
        }
        self
    }
}

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header offers it (Prometheus asks for it first by default).
    pub fn from_accept(accept: &str) -> Self {
        if accept.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_labels(labels: &[(String, String)], out: &mut String) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(n);
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
    }
    out.push('}');
}

fn help_text(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

pub fn write(families: &[Family], format: Format) -> String {
    let mut out = String::new();
    for f in families {
        // The text format names a counter as its samples are named; OpenMetrics without `_total`.
        let declared = match (format, f.kind) {
            (Format::Text, Kind::Counter) => format!("{}_total", f.name),
            _ => f.name.clone(),
        };
        let _ = writeln!(out, "# HELP {declared} {}", help_text(&f.help));
        let _ = writeln!(out, "# TYPE {declared} {}", f.kind.as_str());
        for s in &f.samples {
            out.push_str(&f.name);
            out.push_str(s.suffix);
            write_labels(&s.labels, &mut out);
            out.push(' ');
            out.push_str(&format_float(s.value));
            if let (Format::OpenMetrics, Some(e)) = (format, &s.exemplar) {
                out.push_str(" # ");
                write_labels(&e.labels, &mut out);
                if e.labels.is_empty() {
                    out.push_str("{}");
                }
                let _ = write!(
                    out,
                    " {} {}",
                    format_float(e.value),
                    format_float(e.timestamp_ms as f64 / 1000.0)
                );
            }
            out.push('\n');
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_each_format_wants_and_only_openmetrics_has_exemplars() {
        let mut f = Family::new("jobs", Kind::Counter, "Jobs done.");
        f.value(&[("queue", "a\"b")], 3.0);
        f.samples[0].exemplar = Some(Exemplar {
            labels: vec![("trace_id".into(), "ab".into())],
            value: 0.5,
            timestamp_ms: 1_500,
        });
        let text = write(std::slice::from_ref(&f), Format::Text);
        assert_eq!(
            text,
            "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total{queue=\"a\\\"b\"} 3\n"
        );
        let om = write(&[f], Format::OpenMetrics);
        assert_eq!(
            om,
            "# HELP jobs Jobs done.\n# TYPE jobs counter\njobs_total{queue=\"a\\\"b\"} 3 # {trace_id=\"ab\"} 0.5 1.5\n# EOF\n"
        );
    }
}
