//! The gateway's other two bodies: Prometheus text exposition (`/prom/metrics/…`) and OpenTSDB
//! JSON (`/opentsdb/api/put`).

use std::collections::BTreeMap;

use sightline_storage::metrics::{MetricBatchBuilder, MetricType};

use crate::error::IngestError;

fn prom_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Names as the text format spells them unquoted (`[a-zA-Z_:][a-zA-Z0-9_:]*`, no colon in a
/// label name), as the Pushgateway's parser reads them.
fn is_text_format_name(name: &str, metric: bool) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':');
    name.chars().next().is_some_and(|c| !c.is_ascii_digit()) && name.chars().all(allowed)
}

/// A sample line's metric name and labels, and the rest of the line.
type SeriesText<'a> = (String, Vec<(String, String)>, &'a str);

/// `name{a="b",c="d"}` → name and labels; `Err` names the problem.
fn series(text: &str) -> Result<SeriesText<'_>, String> {
    let name_end = text
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(text.len());
    let name = text[..name_end].to_string();
    if name.is_empty() {
        return Err("a sample line has no metric name".into());
    }
    if !is_text_format_name(&name, true) {
        return Err(format!("{name:?} is not a metric name of the text format"));
    }
    let mut rest = &text[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut end = None;
        loop {
            // Skip separators.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some(&(i, '}')) => {
                    end = Some(i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key:?} of {name} has no quoted value"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    other => value.push(other),
                }
            }
            if !closed {
                return Err(format!("value of label {key:?} of {name} is not closed"));
            }
            let key = key.trim();
            if !is_text_format_name(key, false) {
                return Err(format!("{key:?} is not a label name of the text format"));
            }
            labels.push((key.to_string(), value));
        }
        let end = end.ok_or_else(|| format!("labels of {name} are not closed"))?;
        rest = &inner[end + 1..];
    }
    Ok((name, labels, rest))
}

fn type_of(s: &str) -> MetricType {
    match s {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "gaugehistogram" => MetricType::GaugeHistogram,
        "summary" => MetricType::Summary,
        "info" => MetricType::Info,
        "stateset" => MetricType::StateSet,
        _ => MetricType::Unknown,
    }
}

/// Prometheus text exposition into series with the path's tags and the step; samples without a
/// timestamp take `now_ms`. A line that cannot be read is refused by name; the rest are stored.
pub fn exposition_into(
    builder: &mut MetricBatchBuilder,
    text: &str,
    tags: &BTreeMap<String, String>,
    step: &str,
    now_ms: i64,
) {
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    let mut types: BTreeMap<String, MetricType> = BTreeMap::new();
    // The format's last line ends with a line feed: one that does not was cut short.
    let cut_line = (!text.ends_with('\n')).then(|| text.lines().count().saturating_sub(1));
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if cut_line == Some(n) {
            builder.refuse("invalid_exposition_line", 1, || {
                format!(
                    "line {} does not end with a line feed: the body was cut short",
                    n + 1
                )
            });
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), text) => {
                    help.insert(name.to_string(), text.unwrap_or("").to_string());
                }
                (Some("TYPE"), Some(name), Some(t)) => {
                    types.insert(name.to_string(), type_of(t.trim()));
                }
                _ => {}
            }
            continue;
        }
        let parsed = series(line).and_then(|(name, labels, rest)| {
            let mut fields = rest.split_whitespace();
            let value = fields
                .next()
                .and_then(prom_value)
                .ok_or_else(|| format!("sample of {name} has no number"))?;
            let ts = match fields.next() {
                Some(t) => t
                    .parse::<i64>()
                    .map_err(|_| format!("timestamp {t:?} of {name} is not milliseconds"))?,
                None => now_ms,
            };
            Ok((name, labels, value, ts))
        });
        match parsed {
            Ok((name, labels, value, ts)) => {
                let mut all: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                for (k, v) in tags {
                    if !labels.iter().any(|(l, _)| l == k) {
                        all.push((k.as_str(), v.as_str()));
                    }
                }
                all.push(("step", step));
                all.push(("__name__", &name));
                if let Some(s) = builder.series(&mut all, 1) {
                    builder.sample(s, ts, value, None);
                }
            }
            Err(problem) => builder.refuse("invalid_exposition_line", 1, || {
                format!("line {}: {problem}", n + 1)
            }),
        }
    }
    for (name, kind) in &types {
        builder.metadata(name, *kind, "", help.get(name).map_or("", String::as_str));
    }
}

/// One OpenTSDB data point.
#[derive(serde::Deserialize)]
struct TsdbPoint {
    metric: String,
    timestamp: i64,
    value: serde_json::Value,
    #[serde(default)]
    tags: BTreeMap<String, serde_json::Value>,
}

/// OpenTSDB's `put` body (one point or an array) into series with the header tags and step.
/// Timestamps in seconds or milliseconds, as OpenTSDB takes them.
pub fn opentsdb_into(
    builder: &mut MetricBatchBuilder,
    text: &str,
    extra: &BTreeMap<String, String>,
    step: &str,
) -> Result<(), IngestError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| IngestError::Decode(format!("invalid OpenTSDB JSON: {e}")))?;
    let points = match value {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    for (i, p) in points.into_iter().enumerate() {
        let point: TsdbPoint = serde_json::from_value(p)
            .map_err(|e| IngestError::Decode(format!("invalid OpenTSDB point {}: {e}", i + 1)))?;
        let value = match &point.value {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let Some(value) = value else {
            let metric = point.metric.clone();
            builder.refuse("invalid_opentsdb_point", 1, || {
                format!("point {} of {metric}: value is not a number", i + 1)
            });
            continue;
        };
        let ts = if point.timestamp.abs() < 100_000_000_000 {
            point.timestamp * 1000
        } else {
            point.timestamp
        };
        let tags: Vec<(String, String)> = point
            .tags
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect();
        let mut labels: Vec<(&str, &str)> =
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for (k, v) in extra {
            if !tags.iter().any(|(t, _)| t == k) {
                labels.push((k.as_str(), v.as_str()));
            }
        }
        labels.push(("step", step));
        labels.push(("__name__", &point.metric));
        if let Some(s) = builder.series(&mut labels, 1) {
            builder.sample(s, ts, value, None);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_storage::metrics::MetricsConfig;

    #[test]
    fn exposition_lines_become_samples() {
        let now = 1_800_000_000_000;
        let mut b = MetricBatchBuilder::new(&MetricsConfig::default(), now);
        let text = "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total{queue=\"a\\\"b\"} 3 1799999999000\nup 1\nbroken{x=\"1\" 2\nnode.cpu 1\nok{9x=\"1\"} 1\n";
        let tags = BTreeMap::from([("app".to_string(), "shop".to_string())]);
        exposition_into(&mut b, text, &tags, "30000", now);
        let w = b.finish();
        assert_eq!(w.samples(), 2);
        let message = w.report().message("samples").unwrap();
        assert!(message.contains("line 5"), "{message}");
        // `node.cpu` and `9x` are not names of the text format.
        assert_eq!(w.report().total(), 3, "{message}");
    }

    #[test]
    fn opentsdb_points_take_seconds_or_milliseconds() {
        let now = 1_800_000_000_000;
        let mut b = MetricBatchBuilder::new(&MetricsConfig::default(), now);
        let body = r#"[{"metric":"sys.cpu","timestamp":1800000000,"value":18,"tags":{"host":"web01"}},
                       {"metric":"sys.cpu","timestamp":1799999999500,"value":"19.5","tags":{"host":"web02"}}]"#;
        opentsdb_into(&mut b, body, &BTreeMap::new(), "30000").unwrap();
        assert_eq!(b.finish().samples(), 2);
        let mut b = MetricBatchBuilder::new(&MetricsConfig::default(), now);
        assert!(opentsdb_into(&mut b, "{\"metric\":", &BTreeMap::new(), "1").is_err());
    }
}
