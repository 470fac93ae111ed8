//! OTLP metric and attribute names as Prometheus 3's own OTLP receiver writes them by default
//! (translation strategy `UnderscoreEscapingWithSuffixes`, label names' leading `_` prefixed
//! with `key`, runs of underscores kept): `http.server.request.duration` in seconds becomes
//! `http_server_request_duration_seconds`, a monotonic sum gets `_total`, a gauge of unit `1`
//! gets `_ratio`; `http.method` becomes `http_method`, `2xx` becomes `key_2xx`.

/// How a metric reads for naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    MonotonicCounter,
    NonMonotonicCounter,
    Histogram,
    ExponentialHistogram,
    Summary,
}

fn unit_word(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

fn metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// The unit's main and per parts (`By/s` → `bytes`, `per_second`); annotations in braces and
/// empty parts give nothing.
fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let main = if main.is_empty() || main.contains(['{', '}']) {
        String::new()
    } else {
        unit_word(main).to_string()
    };
    let per = match parts.next().map(str::trim) {
        Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
            format!("per_{}", per_unit_word(p))
        }
        _ => String::new(),
    };
    (main, per)
}

/// Invalid characters to `_`, runs of `_` to one, no leading `_`.
fn clean_unit(unit: &str) -> String {
    let mapped: String = unit
        .chars()
        .map(|c| if metric_char(c) { c } else { '_' })
        .collect();
    let mut out = String::with_capacity(mapped.len());
    for c in mapped.chars() {
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out.trim_start_matches('_').to_string()
}

/// The Prometheus name of an OTLP metric; `Err` when nothing valid is left of it.
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> Result<String, String> {
    let mut tokens: Vec<&str> = name
        .split(|c: char| !metric_char(c))
        .filter(|t| !t.is_empty())
        .collect();
    let (main, per) = unit_suffixes(unit);
    let (main, per) = (clean_unit(&main), clean_unit(&per));
    let mut main = main.as_str();
    if tokens.contains(&main) {
        main = "";
    }
    let mut per = if per == "per_" {
        ""
    } else {
        per.trim_end_matches('_')
    };
    if tokens.contains(&per) {
        per = "";
    }
    if !per.is_empty() {
        main = main.trim_end_matches('_');
    }
    if !main.is_empty() {
        tokens.push(main);
    }
    if !per.is_empty() {
        tokens.push(per);
    }
    if kind == Kind::MonotonicCounter {
        tokens.retain(|t| *t != "total");
        tokens.push("total");
    }
    if unit == "1" && kind == Kind::Gauge {
        tokens.retain(|t| *t != "ratio");
        tokens.push("ratio");
    }
    let mut out = tokens.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if out.is_empty() {
        return Err(format!("metric name {name:?} leaves nothing valid"));
    }
    if out != name && out.chars().all(|c| c == '_') {
        return Err(format!("metric name {name:?} leaves only underscores"));
    }
    Ok(out)
}

/// The Prometheus name of an OTLP attribute; `Err` for an empty name or one of underscores only.
pub fn label_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("an attribute name is empty".into());
    }
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    if out.chars().all(|c| c == '_') {
        return Err(format!("attribute name {name:?} leaves only underscores"));
    }
    Ok(out)
}

/// The unit as metadata states it (`By/s` → `bytes_per_second`).
pub fn unit_name(unit: &str) -> String {
    let (main, per) = unit_suffixes(unit);
    let (main, per) = (clean_unit(&main), clean_unit(&per));
    let u = match (main.is_empty(), per.is_empty()) {
        (false, false) => format!("{main}_{per}"),
        (false, true) => main,
        _ => per,
    };
    u.trim_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_prometheus() {
        let cases = [
            (
                "http.server.request.duration",
                "s",
                Kind::Histogram,
                "http_server_request_duration_seconds",
            ),
            (
                "requests.count",
                "1",
                Kind::MonotonicCounter,
                "requests_count_total",
            ),
            ("memory.usage", "By", Kind::Gauge, "memory_usage_bytes"),
            ("cpu.utilization", "1", Kind::Gauge, "cpu_utilization_ratio"),
            (
                "throughput",
                "By/s",
                Kind::Gauge,
                "throughput_bytes_per_second",
            ),
            (
                "requests",
                "{request}",
                Kind::MonotonicCounter,
                "requests_total",
            ),
            (
                "total.requests",
                "",
                Kind::MonotonicCounter,
                "requests_total",
            ),
            ("latency_seconds", "s", Kind::Histogram, "latency_seconds"),
            ("2xx.responses", "", Kind::Gauge, "_2xx_responses"),
            ("queue__depth", "", Kind::Gauge, "queue_depth"),
            ("items", "{item}/s", Kind::Gauge, "items_per_second"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                metric_name(name, unit, kind).unwrap(),
                want,
                "{name} {unit}"
            );
        }
        assert!(metric_name("...", "", Kind::Gauge).is_err());
    }

    #[test]
    fn label_names_follow_prometheus() {
        assert_eq!(label_name("http.method").unwrap(), "http_method");
        assert_eq!(label_name("2xx").unwrap(), "key_2xx");
        assert_eq!(label_name("_private").unwrap(), "key_private");
        assert_eq!(label_name("__reserved__").unwrap(), "__reserved__");
        assert_eq!(label_name("a..b").unwrap(), "a__b");
        assert!(label_name("").is_err());
        assert!(label_name("...").is_err());
        assert_eq!(unit_name("By/s"), "bytes_per_second");
        assert_eq!(unit_name("1"), "");
    }
}
