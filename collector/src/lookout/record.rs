//! SOFALookout's push records: JSON objects joined by tabs, as the Lookout client writes them —
//! which is not quite JSON: numbers are Java's `Double.toString` (`1.0E-4`, `NaN`, `Infinity`)
//! and names are not escaped. This reads that dialect, strictly otherwise.
//!
//! A record is `{"time":"2018-11-29T15:57:00+08:00","tags":{"app":"x","_type_":"c"},
//! "<name>":{"count":3,"rate":0.1}}`.

use std::collections::BTreeMap;

/// One measurement of one metric at one step boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Unix milliseconds of the step boundary.
    pub time_ms: i64,
    pub tags: BTreeMap<String, String>,
    pub name: String,
    /// Field name (`count`, `rate`, `elapPerExec`, a mixin's `child.field`) and value.
    pub fields: Vec<(String, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Num(f64),
    Obj(Vec<(String, Value)>),
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, what: &str) -> String {
        format!("{what} at character {}", self.pos)
    }

    fn ws(&mut self) {
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", c as char)))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.pos) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let c = *self
                        .s
                        .get(self.pos + 1)
                        .ok_or_else(|| self.err("unterminated escape"))?;
                    self.pos += 2;
                    match c {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'u' => {
                            let hex = self
                                .s
                                .get(self.pos..self.pos + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or_else(|| self.err("bad \\u escape"))?;
                            self.pos += 4;
                            let ch = char::from_u32(hex).unwrap_or('\u{fffd}');
                            out.extend_from_slice(ch.to_string().as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                Some(&c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not valid text"))
    }

    fn number(&mut self) -> Result<f64, String> {
        self.ws();
        let start = self.pos;
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.'))
        {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
        match text {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => text
                .parse::<f64>()
                .ok()
                .filter(|_| {
                    !text.is_empty()
                        && !text
                            .contains(|c: char| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E'))
                })
                .ok_or_else(|| format!("{text:?} is not a number at character {start}")),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        self.ws();
        match self.s.get(self.pos) {
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b'{') => {
                if depth > 4 {
                    return Err(self.err("objects nested too deep"));
                }
                Ok(Value::Obj(self.object(depth + 1)?))
            }
            Some(_) => Ok(Value::Num(self.number()?)),
            None => Err(self.err("unexpected end")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Vec<(String, Value)>, String> {
        self.eat(b'{')?;
        let mut out = Vec::new();
        self.ws();
        if self.s.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            out.push((key, self.value(depth)?));
            self.ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }
}

/// `2018-11-29T15:57:00+08:00` (or `Z`, or with fractions of a second) as unix milliseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        rest = &frac[digits.len()..];
        let padded = format!("{digits:0<3}");
        millis = padded.get(..3)?.parse().ok()?;
    }
    let offset_minutes = match rest {
        "Z" | "" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hh: i64 = rest.get(1..3)?.parse().ok()?;
            let mm: i64 = rest.get(rest.len() - 2..)?.parse().ok()?;
            sign * (hh * 60 + mm)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + h * 3600 + mi * 60 + sec - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// Tags Lookout's gateway drops: the meter type and the priority.
const DROPPED_TAGS: [&str; 2] = ["_type_", "priority"];

/// The type tag's meter kind, for metadata.
pub fn meter_kind(tags: &BTreeMap<String, String>) -> &'static str {
    match tags.get("_type_").map(String::as_str) {
        Some("c") => "counter",
        Some("t") => "timer",
        Some("g") => "gauge",
        Some("d") => "distribution summary",
        Some("m") => "mixin",
        Some("i") => "info",
        _ => "meter",
    }
}

/// One record; `Err` names what is wrong with it.
pub fn parse_record(text: &str) -> Result<(Record, &'static str), String> {
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
    };
    let fields = p.object(0)?;
    p.ws();
    if p.pos != text.len() {
        return Err(p.err("text after the record"));
    }
    let mut time = None;
    let mut tags = BTreeMap::new();
    let mut metric: Option<(String, Vec<(String, Value)>)> = None;
    for (k, v) in fields {
        match (k.as_str(), v) {
            ("time", Value::Str(t)) => {
                time = Some(parse_time(&t).ok_or_else(|| {
                    format!("time {t:?} is not a time like 2018-11-29T15:57:00+08:00")
                })?);
            }
            ("time", Value::Num(ms)) => time = Some(ms as i64),
            ("tags", Value::Obj(t)) => {
                for (tk, tv) in t {
                    let tv = match tv {
                        Value::Str(s) => s,
                        Value::Num(n) => format!("{n}"),
                        Value::Obj(_) => return Err(format!("tag {tk} is an object")),
                    };
                    tags.insert(tk, tv);
                }
            }
            (name, Value::Obj(values)) => {
                if metric.is_some() {
                    return Err(format!("a second metric {name:?} in one record"));
                }
                metric = Some((name.to_string(), values));
            }
            (other, _) => {
                return Err(format!(
                    "field {other:?} is neither time, tags nor a metric"
                ))
            }
        }
    }
    let time_ms = time.ok_or("the record has no time")?;
    let (name, values) = metric.ok_or("the record has no metric")?;
    if name.is_empty() {
        return Err("the metric name is empty".into());
    }
    let kind = meter_kind(&tags);
    for t in DROPPED_TAGS {
        tags.remove(t);
    }
    let mut out = Vec::new();
    flatten("", values, &mut out)?;
    Ok((
        Record {
            time_ms,
            tags,
            name,
            fields: out,
        },
        kind,
    ))
}

/// A mixin's children become `child.field`.
fn flatten(
    prefix: &str,
    values: Vec<(String, Value)>,
    out: &mut Vec<(String, f64)>,
) -> Result<(), String> {
    for (k, v) in values {
        let key = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Num(n) => out.push((key, n)),
            Value::Obj(inner) => flatten(&key, inner, out)?,
            Value::Str(s) => {
                let n = s
                    .parse::<f64>()
                    .map_err(|_| format!("field {key} is {s:?}, not a number"))?;
                out.push((key, n));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_dialect_is_read() {
        let (r, kind) = parse_record(
            r#"{"time":"2018-11-29T15:57:00+08:00","tags":{"app":"shop","_type_":"t","priority":"normal","host":"h1"},"rpc.call":{"elapPerExec":1.0E-4,"totalTime":NaN,"max":0.25}}"#,
        )
        .unwrap();
        assert_eq!(kind, "timer");
        assert_eq!(r.time_ms, 1_543_478_220_000);
        assert_eq!(r.name, "rpc.call");
        assert_eq!(r.tags.keys().collect::<Vec<_>>(), vec!["app", "host"]);
        assert_eq!(r.fields[0], ("elapPerExec".to_string(), 1e-4));
        assert!(r.fields[1].1.is_nan());
        let (mixin, _) = parse_record(
            r#"{"time":"2018-11-29T07:57:00Z","tags":{"_type_":"m"},"pool":{"active":{"value":3},"max.value":8}}"#,
        )
        .unwrap();
        let names: Vec<_> = mixin.fields.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, vec!["active.value", "max.value"]);
        assert_eq!(mixin.time_ms, 1_543_478_220_000);
    }

    #[test]
    fn bad_records_name_the_problem() {
        for (text, problem) in [
            ("{", "expected"),
            (r#"{"time":"yesterday","x":{"count":1}}"#, "is not a time"),
            (r#"{"tags":{},"x":{"count":1}}"#, "no time"),
            (r#"{"time":"2018-11-29T15:57:00+08:00"}"#, "no metric"),
            (
                r#"{"time":"2018-11-29T15:57:00+08:00","x":{"count":one}}"#,
                "not a number",
            ),
            (
                r#"{"time":"2018-11-29T15:57:00+08:00","x":{"count":1}} extra"#,
                "after the record",
            ),
        ] {
            let err = parse_record(text).unwrap_err();
            assert!(err.contains(problem), "{text}: {err}");
        }
    }
}
