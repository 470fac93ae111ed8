//! Prometheus text (0.0.4) and OpenMetrics 1.0 exposition of a [`Registry`].
//!
//! Names: dots and other characters Prometheus does not allow become `_`; a counter
//! `n` is `n_total`; a timer `n` is the histogram `n_seconds` plus the gauge
//! `n_seconds_max`; a distribution summary `n` is the summary `n` plus the gauge `n_max`;
//! a mixin's measure `m` is the family `n_m`. OpenMetrics adds exemplars (trace and span
//! id of the last observation inside a sampled span) on counters and histogram buckets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use super::meters::{Exemplar, Meter, TIMER_BUCKETS};
use super::{Registry, Series, SeriesMeter};

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0` (with exemplars).
    OpenMetrics,
}

impl Format {
    /// The format a scraper asks for in its `Accept` header.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The answer to a scrape: the format the `Accept` header asks for. Mount it on the
/// service's router, e.g. with axum:
///
/// ```
/// # use sightline_instrument::metrics::{exposition, Registry};
/// let registry = Registry::new();
/// let app: axum::Router = axum::Router::new().route(
///     "/metrics",
///     axum::routing::get(move |headers: http::HeaderMap| {
///         let registry = registry.clone();
///         async move { exposition(&registry, &headers) }
///     }),
/// );
/// # let _ = app;
/// ```
pub fn exposition(
    registry: &Registry,
    request_headers: &http::HeaderMap,
) -> http::Response<String> {
    let accept = request_headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let mut response = http::Response::new(registry.render(format));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    response
}

/// One family's lines, keyed by its exposition name so families come out sorted.
struct Family {
    kind: &'static str,
    lines: String,
}

pub(super) fn render(registry: &Registry, format: Format) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for series in registry.all_series() {
        let base = sanitize(series.id.name());
        match &series.meter {
            SeriesMeter::Single(meter) => write_meter(&mut families, &base, &series, meter, format),
            SeriesMeter::Mixin(mixin) => {
                for (measure, meter) in mixin.measures() {
                    let name = format!("{base}_{}", sanitize(&measure));
                    write_meter(&mut families, &name, &series, &meter, format);
                }
            }
        }
    }
    let mut out = String::new();
    for (name, family) in &families {
        let _ = writeln!(out, "# TYPE {name} {}", family.kind);
        out.push_str(&family.lines);
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn family<'a>(
    families: &'a mut BTreeMap<String, Family>,
    name: &str,
    kind: &'static str,
) -> &'a mut String {
    &mut families
        .entry(name.to_string())
        .or_insert_with(|| Family {
            kind,
            lines: String::new(),
        })
        .lines
}

fn write_meter(
    families: &mut BTreeMap<String, Family>,
    base: &str,
    series: &Series,
    meter: &Meter,
    format: Format,
) {
    let labels = labels(series, None);
    match meter {
        Meter::Counter(counter) => {
            let name = base.strip_suffix("_total").unwrap_or(base);
            // Text 0.0.4 names the family with its sample's suffix; OpenMetrics without.
            let family_name = match format {
                Format::Prometheus => format!("{name}_total"),
                Format::OpenMetrics => name.to_string(),
            };
            let lines = family(families, &family_name, "counter");
            let _ = write!(lines, "{name}_total{labels} {}", counter.count());
            if format == Format::OpenMetrics {
                write_exemplar(lines, counter.exemplar().as_ref());
            }
            lines.push('\n');
        }
        Meter::Timer(timer) => {
            let name = format!("{base}_seconds");
            let snapshot = timer.snapshot();
            let lines = family(families, &name, "histogram");
            let mut cumulative = 0;
            for (i, count) in snapshot.buckets.iter().enumerate() {
                cumulative += count;
                let le = TIMER_BUCKETS
                    .get(i)
                    .map(|b| number(*b))
                    .unwrap_or_else(|| "+Inf".to_string());
                let _ = write!(
                    lines,
                    "{name}_bucket{} {cumulative}",
                    labels_with(series, "le", &le)
                );
                if format == Format::OpenMetrics {
                    write_exemplar(lines, snapshot.exemplars.get(i).and_then(Option::as_ref));
                }
                lines.push('\n');
            }
            let _ = writeln!(
                lines,
                "{name}_sum{labels} {}",
                number(snapshot.total.as_secs_f64())
            );
            let _ = writeln!(lines, "{name}_count{labels} {}", snapshot.count);
            let max = family(families, &format!("{name}_max"), "gauge");
            let _ = writeln!(
                max,
                "{name}_max{labels} {}",
                number(snapshot.max.as_secs_f64())
            );
        }
        Meter::Summary(summary) => {
            let snapshot = summary.snapshot();
            let lines = family(families, base, "summary");
            let _ = writeln!(lines, "{base}_sum{labels} {}", number(snapshot.total));
            let _ = writeln!(lines, "{base}_count{labels} {}", snapshot.count);
            let max = family(families, &format!("{base}_max"), "gauge");
            let _ = writeln!(max, "{base}_max{labels} {}", number(snapshot.max));
        }
        Meter::Gauge(gauge) => {
            let lines = family(families, base, "gauge");
            let _ = writeln!(lines, "{base}{labels} {}", number(gauge.value()));
        }
    }
}

fn write_exemplar(out: &mut String, exemplar: Option<&Exemplar>) {
    if let Some(e) = exemplar {
        let at =
            e.at.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
        let _ = write!(
            out,
            " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {at:.3}",
            e.trace_id,
            e.span_id,
            number(e.value)
        );
    }
}

fn labels(series: &Series, extra: Option<(&str, &str)>) -> String {
    let mut pairs: Vec<String> = series
        .id
        .tags()
        .map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        pairs.push(format!("{k}=\"{}\"", escape(v)));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn labels_with(series: &Series, key: &str, value: &str) -> String {
    labels(series, Some((key, value)))
}

/// A metric or label name Prometheus accepts: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as Prometheus writes it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}
