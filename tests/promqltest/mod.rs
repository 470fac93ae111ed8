//! Reading Prometheus's PromQL test files (`promql/promqltest/testdata/*.test`): `load` blocks
//! with the series notation (`a+bxn`, `_`, `stale`, `{{…}}` native histograms), `clear`,
//! `eval instant|range` with their expected series, `expect` lines and the older `eval_fail` /
//! `eval_ordered` forms — as `promqltest/test.go` reads them.

use sightline_storage::metrics::{BucketSpan, NativeHistogram};

pub const STALE: u64 = 0x7ff0_0000_0000_0002;

#[derive(Debug, Clone)]
pub enum Value {
    Omitted,
    F(f64),
    H(NativeHistogram),
}

#[derive(Debug, Clone)]
pub struct SeriesDef {
    pub labels: Vec<(String, String)>,
    pub values: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Load {
    pub interval_ms: i64,
    pub series: Vec<SeriesDef>,
    pub with_nhcb: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Eval {
    pub line: usize,
    pub expr: String,
    /// Instant: `start == end`.
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub range: bool,
    pub fail: bool,
    pub fail_message: Option<String>,
    pub fail_regex: Option<String>,
    pub ordered: bool,
    pub scalar: Option<f64>,
    pub string: Option<String>,
    /// Expected series in the order given.
    pub expected: Vec<SeriesDef>,
    /// An instant query whose result is a range vector (`expect range vector …`).
    pub range_vector: bool,
    pub exclude_from_range: bool,
}

#[derive(Debug, Clone)]
pub enum Command {
    Load(Load),
    Clear,
    Eval(Box<Eval>),
}

/// Go's `model.ParseDuration` (`1h30m`, `5m`, `10s53ms`, `1d`, `0`), in milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    let units = [
        ("y", 365 * 86_400_000i64),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("ms", 1),
        ("m", 60_000),
        ("s", 1000),
    ];
    let mut rest = s;
    let mut total = 0i64;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("not a duration: {s}"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("not a duration: {s}"))?;
        rest = &rest[digits..];
        let (unit, ms) = units
            .iter()
            .find(|(u, _)| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")))
            .ok_or_else(|| format!("not a duration: {s}"))?;
        total += n * ms;
        rest = &rest[unit.len()..];
    }
    Ok(total)
}

/// `parseNumber` of test.go: an integer in any Go base, else a float (with `Inf`, `NaN`).
pub fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let sign = if neg { -1.0 } else { 1.0 };
    if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        return i64::from_str_radix(h, 16).ok().map(|v| sign * v as f64);
    }
    match body.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => return Some(sign * f64::INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if body.is_empty()
        || !body
            .chars()
            .all(|c| c.is_ascii_digit() || ".eE+-_".contains(c))
    {
        return None;
    }
    body.replace('_', "").parse::<f64>().ok().map(|v| sign * v)
}

/// Splits a series line into its metric part and its values part.
fn split_series(line: &str) -> Result<(&str, &str), String> {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut in_quote = false;
    let mut depth = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_quote {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_quote = false;
            }
        } else if c == b'"' {
            in_quote = true;
        } else if c == b'{' {
            depth += 1;
        } else if c == b'}' {
            depth -= 1;
            if depth == 0 {
                return Ok((&line[..=i], line[i + 1..].trim()));
            }
        } else if depth == 0 && (c == b' ' || c == b'\t') {
            return Ok((&line[..i], line[i..].trim()));
        }
        i += 1;
    }
    Ok((line, ""))
}

fn unquote(s: &str) -> String {
    let inner = &s[1..s.len().saturating_sub(1)];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some(o) => {
                    out.push('\\');
                    out.push(o)
                }
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The labels of `metric{a="b", …}` (or `{"metric", a="b"}`, or `{}`).
pub fn parse_metric(s: &str) -> Result<Vec<(String, String)>, String> {
    let s = s.trim();
    let (name, body) = match s.find('{') {
        Some(i) if !s[..i].contains('"') => (&s[..i], &s[i + 1..s.len() - 1]),
        _ => (s, ""),
    };
    let mut labels = Vec::new();
    if !name.is_empty() {
        labels.push(("__name__".to_string(), name.to_string()));
    }
    // Items separated by commas outside quotes.
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut escaped = false;
    for c in body.chars() {
        if in_quote {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
        } else if c == '"' {
            in_quote = true;
            cur.push(c);
        } else if c == ',' {
            items.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    items.push(cur);
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        match item.find('=') {
            Some(eq) if !item[..eq].trim().starts_with('"') || item[..eq].trim().ends_with('"') => {
                let n = item[..eq].trim();
                let n = if n.starts_with('"') {
                    unquote(n)
                } else {
                    n.to_string()
                };
                let v = item[eq + 1..].trim();
                if !v.starts_with('"') {
                    return Err(format!("label value not quoted: {item}"));
                }
                labels.push((n, unquote(v)));
            }
            _ if item.starts_with('"') => labels.push(("__name__".into(), unquote(item))),
            _ => return Err(format!("bad label: {item}")),
        }
    }
    labels.sort();
    Ok(labels)
}

fn parse_floats(s: &str) -> Result<Vec<f64>, String> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    s.split_whitespace()
        .map(|t| parse_number(t).ok_or_else(|| format!("bad number {t}")))
        .collect()
}

/// `{{schema:0 sum:5 count:4 buckets:[1 2 1] …}}`.
fn parse_histogram(s: &str) -> Result<NativeHistogram, String> {
    let body = s
        .trim()
        .strip_prefix("{{")
        .and_then(|b| b.strip_suffix("}}"))
        .ok_or_else(|| format!("bad histogram {s}"))?;
    let mut h = NativeHistogram {
        float: true,
        ..Default::default()
    };
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let (mut pos_off, mut neg_off) = (0i32, 0i32);
    let mut rest = body.trim();
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("bad histogram field in {s}"))?;
        let key = rest[..colon].trim();
        rest = rest[colon + 1..].trim_start();
        let value;
        if rest.starts_with('[') {
            let end = rest
                .find(']')
                .ok_or_else(|| format!("unclosed list in {s}"))?;
            value = &rest[..=end];
            rest = rest[end + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = &rest[..end];
            rest = rest[end..].trim_start();
        }
        let num = || parse_number(value).ok_or_else(|| format!("bad number {value} in {s}"));
        match key {
            "schema" => h.schema = num()? as i32,
            "sum" => h.sum = num()?,
            "count" => h.count = num()?,
            "z_bucket" => h.zero_count = num()?,
            "z_bucket_w" => h.zero_threshold = num()?,
            "buckets" => pos = parse_floats(value)?,
            "n_buckets" => neg = parse_floats(value)?,
            "offset" => pos_off = num()? as i32,
            "n_offset" => neg_off = num()? as i32,
            "custom_values" => h.custom_values = parse_floats(value)?,
            "counter_reset_hint" => {
                h.reset_hint = match value {
                    "reset" => 1,
                    "not_reset" => 2,
                    "gauge" => 3,
                    _ => 0,
                }
            }
            other => return Err(format!("unknown histogram field {other}")),
        }
    }
    if !pos.is_empty() {
        h.positive_spans = vec![BucketSpan {
            offset: pos_off,
            length: pos.len() as u32,
        }];
        h.positive_buckets = pos;
    }
    if !neg.is_empty() {
        h.negative_spans = vec![BucketSpan {
            offset: neg_off,
            length: neg.len() as u32,
        }];
        h.negative_buckets = neg;
    }
    Ok(h)
}

fn add_histograms(a: &NativeHistogram, b: &NativeHistogram, sign: f64) -> NativeHistogram {
    let mut h = a.clone();
    h.count += sign * b.count;
    h.sum += sign * b.sum;
    h.zero_count += sign * b.zero_count;
    for (x, y) in h.positive_buckets.iter_mut().zip(&b.positive_buckets) {
        *x += sign * y;
    }
    for (x, y) in h.negative_buckets.iter_mut().zip(&b.negative_buckets) {
        *x += sign * y;
    }
    h
}

/// Tokens of a values part: `{{…}}` (with any `+{{…}}xN` after it) is one token.
fn value_tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            depth += 1;
        } else if c == '}' {
            depth -= 1;
        }
        if depth == 0 && c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Expands the values part of a series line.
pub fn parse_values(s: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for tok in value_tokens(s) {
        if tok == "_" {
            out.push(Value::Omitted);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad repeat {tok}"))?;
            out.extend(std::iter::repeat_n(Value::Omitted, n));
            continue;
        }
        if tok == "stale" {
            out.push(Value::F(f64::from_bits(STALE)));
            continue;
        }
        if tok.starts_with("{{") {
            let close = tok
                .find("}}")
                .ok_or_else(|| format!("bad histogram {tok}"))?
                + 2;
            let first = parse_histogram(&tok[..close])?;
            let rest = &tok[close..];
            if rest.is_empty() {
                out.push(Value::H(first));
                continue;
            }
            let (sign, rest) = match rest.chars().next() {
                Some('+') => (1.0, &rest[1..]),
                Some('-') => (-1.0, &rest[1..]),
                Some('x') => {
                    let n: usize = rest[1..].parse().map_err(|_| format!("bad repeat {tok}"))?;
                    for _ in 0..=n {
                        out.push(Value::H(first.clone()));
                    }
                    continue;
                }
                _ => return Err(format!("bad histogram series {tok}")),
            };
            let close2 = rest
                .find("}}")
                .ok_or_else(|| format!("bad histogram {tok}"))?
                + 2;
            let inc = parse_histogram(&rest[..close2])?;
            let n: usize = rest[close2..]
                .strip_prefix('x')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("bad repeat in {tok}"))?;
            let mut cur = first;
            out.push(Value::H(cur.clone()));
            for _ in 0..n {
                cur = add_histograms(&cur, &inc, sign);
                out.push(Value::H(cur.clone()));
            }
            continue;
        }
        // a, a+bxn, a-bxn, axn
        // a, a+bxn, a-bxn, axn (in series notation `0x10` is 0 eleven times, not hex)
        if let Some((head, times)) = tok.rsplit_once('x') {
            if let Ok(n) = times.parse::<usize>() {
                // The operator is a sign after the first character that follows no exponent.
                let op_at = head
                    .char_indices()
                    .skip(1)
                    .find(|(i, c)| {
                        (*c == '+' || *c == '-') && !matches!(head.as_bytes()[i - 1], b'e' | b'E')
                    })
                    .map(|(i, _)| i);
                let bad = || format!("bad number {tok}");
                let (start, inc) = match op_at {
                    Some(i) => (
                        parse_number(&head[..i]).ok_or_else(bad)?,
                        parse_number(&head[i..]).ok_or_else(bad)?,
                    ),
                    None => (parse_number(head).ok_or_else(bad)?, 0.0),
                };
                let mut cur = start;
                out.push(Value::F(cur));
                for _ in 0..n {
                    cur += inc;
                    out.push(Value::F(cur));
                }
                continue;
            }
        }
        out.push(Value::F(
            parse_number(&tok).ok_or_else(|| format!("bad value {tok}"))?,
        ));
    }
    Ok(out)
}

pub fn parse_series(line: &str) -> Result<SeriesDef, String> {
    let (metric, values) = split_series(line)?;
    Ok(SeriesDef {
        labels: parse_metric(metric)?,
        values: parse_values(values)?,
    })
}

/// Reads a whole test file.
pub fn parse_file(text: &str) -> Result<Vec<Command>, String> {
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                String::new()
            } else {
                l.to_string()
            }
        })
        .collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let first = l
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if first == "clear" {
            cmds.push(Command::Clear);
            i += 1;
        } else if first.starts_with("load") {
            let with_nhcb = first == "load_with_nhcb";
            let step = l.split_whitespace().nth(1).ok_or("load without a step")?;
            let interval_ms = parse_duration(step)?;
            let mut series = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].is_empty() {
                let def = &lines[i];
                // Start-timestamp lines (`metric@st …`) are not modelled.
                if !def.split_whitespace().next().unwrap_or("").ends_with("@st") {
                    series.push(parse_series(def).map_err(|e| format!("line {}: {e}", i + 1))?);
                }
                i += 1;
            }
            cmds.push(Command::Load(Load {
                interval_ms,
                series,
                with_nhcb,
            }));
        } else if first.starts_with("eval") {
            let (eval, next) = parse_eval(&lines, i)?;
            cmds.push(Command::Eval(Box::new(eval)));
            i = next;
        } else {
            return Err(format!("line {}: unknown command {l}", i + 1));
        }
    }
    Ok(cmds)
}

fn parse_eval(lines: &[String], i: usize) -> Result<(Eval, usize), String> {
    let l = &lines[i];
    let (head, rest) = l.split_once(char::is_whitespace).ok_or("bad eval")?;
    let mut e = Eval {
        line: i + 1,
        ..Default::default()
    };
    match head {
        "eval" => {}
        "eval_fail" => e.fail = true,
        "eval_ordered" => e.ordered = true,
        "eval_warn" | "eval_info" => {}
        other => return Err(format!("line {}: unknown {other}", i + 1)),
    }
    let rest = rest.trim();
    if let Some(r) = rest.strip_prefix("instant") {
        let r = r.trim();
        let r = r.strip_prefix("at").ok_or("instant without at")?.trim();
        let (at, expr) = r
            .split_once(char::is_whitespace)
            .ok_or("instant without a query")?;
        e.start = parse_duration(at)?;
        e.end = e.start;
        e.expr = expr.trim().to_string();
    } else if let Some(r) = rest.strip_prefix("range") {
        let r = r
            .trim()
            .strip_prefix("from")
            .ok_or("range without from")?
            .trim();
        let (from, r) = r.split_once(" to ").ok_or("range without to")?;
        let (to, r) = r.trim().split_once(" step ").ok_or("range without step")?;
        let (step, expr) = r
            .trim()
            .split_once(char::is_whitespace)
            .ok_or("range without query")?;
        e.start = parse_duration(from)?;
        e.end = parse_duration(to)?;
        e.step = parse_duration(step)?;
        e.range = true;
        e.expr = expr.trim().to_string();
    } else {
        return Err(format!("line {}: bad eval", i + 1));
    }
    let mut j = i + 1;
    while j < lines.len() && !lines[j].is_empty() {
        let d = &lines[j];
        j += 1;
        if e.fail && d.starts_with("expected_fail_message") {
            e.fail_message = Some(d["expected_fail_message".len()..].trim().to_string());
            break;
        }
        if e.fail && d.starts_with("expected_fail_regexp") {
            e.fail_regex = Some(d["expected_fail_regexp".len()..].trim().to_string());
            break;
        }
        if let Some(r) = d.strip_prefix("expect range vector") {
            let r = r
                .trim()
                .strip_prefix("from")
                .ok_or("bad expect range vector")?
                .trim();
            let (from, r) = r.split_once(" to ").ok_or("bad expect range vector")?;
            let (to, step) = r.split_once(" step ").ok_or("bad expect range vector")?;
            e.start = parse_duration(from)?;
            e.end = parse_duration(to)?;
            e.step = parse_duration(step)?;
            e.range_vector = true;
            e.exclude_from_range = true;
            continue;
        }
        if let Some(r) = d.strip_prefix("expect string") {
            let r = r.trim();
            e.string = Some(unquote(r));
            e.exclude_from_range = true;
            continue;
        }
        if d.split(' ').next() == Some("expect") {
            let what = d.split_whitespace().nth(1).unwrap_or("");
            match what {
                "fail" => {
                    e.fail = true;
                    if let Some((kind, text)) = d
                        .split_once(" msg:")
                        .map(|(_, t)| ("msg", t))
                        .or_else(|| d.split_once(" regex:").map(|(_, t)| ("regex", t)))
                    {
                        if kind == "msg" {
                            e.fail_message = Some(text.trim().to_string());
                        } else {
                            e.fail_regex = Some(text.trim().to_string());
                        }
                    }
                }
                "ordered" => e.ordered = true,
                _ => {}
            }
            continue;
        }
        if let Some(f) = parse_number(d) {
            e.scalar = Some(f);
            break;
        }
        e.expected
            .push(parse_series(d).map_err(|err| format!("line {j}: {err}"))?);
    }
    // Skip to the blank line ending the command.
    while j < lines.len() && !lines[j].is_empty() {
        j += 1;
    }
    Ok((e, j))
}
