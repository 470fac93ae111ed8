//! Parameters the API takes: times (RFC 3339 or unix seconds), durations (`250ms`, `1.5s`) and
//! attribute filters (`key=value`, `key>=500`, ...). Each error names the parameter.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::QueryError;

fn bad(param: &str, value: &str, expected: &str) -> QueryError {
    QueryError::BadQuery(format!("parameter {param}: {value:?} is not {expected}"))
}

pub fn now_unix_nano() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds (`1700000000`, `1700000000.5`) or RFC 3339 (`2026-11-21T19:20:00Z`,
/// `2026-11-21T19:20:00.123+01:00`), as unix nanoseconds.
pub fn parse_time(param: &str, s: &str) -> Result<i64, QueryError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1e9) as i64);
    }
    let expected = "a time (RFC 3339 or unix seconds)";
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad(param, s, expected));
    }
    let num = |from: usize, to: usize| -> Result<i64, QueryError> {
        s.get(from..to)
            .and_then(|p| p.parse::<i64>().ok())
            .ok_or_else(|| bad(param, s, expected))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad(param, s, expected));
    }
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad(param, s, expected));
        }
        let padded = format!("{:0<9}", &frac[..digits.min(9)]);
        nanos = padded.parse().map_err(|_| bad(param, s, expected))?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let h: i64 = o[1..3].parse().map_err(|_| bad(param, s, expected))?;
            let m: i64 = o[4..6].parse().map_err(|_| bad(param, s, expected))?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return Err(bad(param, s, expected)),
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    Ok(secs * 1_000_000_000 + nanos)
}

/// `250ms`, `1.5s`, `2m`, `1h`, `500us`, `100ns`, or a sequence of them as Go writes durations
/// (`1m30s`, `1h2m3.5s`), as nanoseconds.
pub fn parse_duration(param: &str, s: &str) -> Result<i64, QueryError> {
    let s = s.trim();
    let invalid = || bad(param, s, "a duration like 250ms, 1.5s or 1m30s");
    if s == "0" {
        return Ok(0);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (num, tail) = rest.split_at(split);
        let value: f64 = num.parse().map_err(|_| invalid())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        total += value * scale;
        rest = tail;
    }
    if s.is_empty() || total > i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(total as i64)
}

/// One attribute filter: `key=value`, `key!=value`, `key>value`, `key>=value`, `key<value`,
/// `key<=value`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrFilter {
    pub key: String,
    pub op: &'static str,
    pub value: String,
}

pub fn parse_attr_filter(s: &str) -> Result<AttrFilter, QueryError> {
    // Longest operators first, so `>=` is not read as `>` followed by `=value`.
    for op in ["!=", ">=", "<=", "=", ">", "<"] {
        if let Some(at) = s.find(op) {
            let (key, value) = (&s[..at], &s[at + op.len()..]);
            if key.is_empty() {
                break;
            }
            return Ok(AttrFilter {
                key: key.trim().to_string(),
                op,
                value: value.trim().to_string(),
            });
        }
    }
    Err(bad("attr", s, "a filter like key=value or key>=500"))
}

/// `limit`: a number from 1 to `max`; `default` when absent.
pub fn parse_limit(v: Option<&str>, default: usize, max: usize) -> Result<usize, QueryError> {
    match v {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| bad("limit", v, &format!("a number from 1 to {max}"))),
    }
}

/// The parameters of one request, checked against those the endpoint takes: a misspelt
/// filter must not silently widen a query.
pub struct Params<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Params<'a> {
    pub fn checked(pairs: &'a [(String, String)], allowed: &[&str]) -> Result<Self, QueryError> {
        if let Some((unknown, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(QueryError::BadQuery(format!(
                "unknown parameter {unknown:?}; expected one of {}",
                allowed.join(", ")
            )));
        }
        Ok(Self { pairs })
    }

    /// The value of a parameter; the last one if repeated, `None` if absent or empty.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Splits a raw query string into pairs, keeping repeated keys (`attr=a=1&attr=b=2`).
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode(k), decode(v)));
    }
    out
}

/// Percent-decoding of one query-string component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_both_forms() {
        assert_eq!(
            parse_time("start", "1700000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("start", "2026-11-21T19:20:00Z").unwrap(),
            1_795_288_800_000_000_000
        );
        assert_eq!(
            parse_time("start", "2026-11-21T20:20:00.5+01:00").unwrap(),
            1_795_288_800_500_000_000
        );
        let err = parse_time("start", "yesterday").unwrap_err().to_string();
        assert!(err.contains("parameter start"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("d", "250ms").unwrap(), 250_000_000);
        assert_eq!(parse_duration("d", "1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_duration("d", "100ns").unwrap(), 100);
        assert_eq!(parse_duration("d", "1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("d", "1h0.5m2µs").unwrap(), 3_630_000_002_000);
        assert_eq!(parse_duration("d", "0").unwrap(), 0);
        for bad in ["", "5", "1x", "s", "-1s", "1s2"] {
            assert!(parse_duration("d", bad).is_err(), "{bad}");
        }
        assert!(parse_duration("min_duration", "fast")
            .unwrap_err()
            .to_string()
            .contains("min_duration"));
    }

    #[test]
    fn attribute_filters() {
        let f = parse_attr_filter("http.status_code>=500").unwrap();
        assert_eq!(
            (f.key.as_str(), f.op, f.value.as_str()),
            ("http.status_code", ">=", "500")
        );
        let f = parse_attr_filter("region!=eu").unwrap();
        assert_eq!(
            (f.key.as_str(), f.op, f.value.as_str()),
            ("region", "!=", "eu")
        );
        assert!(parse_attr_filter("=x").is_err());
        assert!(parse_attr_filter("novalue").is_err());
    }
}
