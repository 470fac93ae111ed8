//! SOFATracer's digest logs — one JSON object per finished span, written when its Zipkin
//! reporter is off (the default) — read as the Zipkin v2 spans its reporter would have sent, so
//! they take the Zipkin path's mapping unchanged: ids from `origin.span.id`, the server half of a
//! shared id split off, baggage as tags (load-test traffic included).
//!
//! A digest line has the span's end time (`time`, `yyyy-MM-dd HH:mm:ss.SSS` in the writer's local
//! time), `local.app`, `traceId`, `spanId` (dotted: `0.1.2`), `span.kind`, `result.code`,
//! `current.thread.name`, `time.cost.milliseconds` (`5ms`), the plugin's own fields
//! (`request.url`, `method`, `service`, ...), `error`, and `sys.baggage` / `biz.baggage`
//! (`k=v&k2=v2`).

use serde_json::{json, Map, Value};
use thiserror::Error;

use super::sofatracer::{span_id, ORIGIN_PARENT_SPAN_ID, ORIGIN_SPAN_ID, ROOT_SPAN_ID};

/// What is wrong with one line of a SOFATracer log (digest or stat).
#[derive(Debug, Error, PartialEq)]
pub enum LineError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{field}: {value:?} is not {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Fields of the digest that become span fields, not tags.
const CONSUMED: [&str; 6] = [
    "time",
    "traceId",
    "spanId",
    "time.cost.milliseconds",
    "sys.baggage",
    "biz.baggage",
];

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A log line's JSON object.
pub(super) fn object(line: &str) -> Result<Map<String, Value>, LineError> {
    match serde_json::from_str(line) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(LineError::NotJson(line.chars().take(80).collect())),
    }
}

/// A field that must be there and not empty, as text.
pub(super) fn required(fields: &Map<String, Value>, k: &'static str) -> Result<String, LineError> {
    fields
        .get(k)
        .and_then(text)
        .filter(|s| !s.is_empty())
        .ok_or(LineError::Missing(k))
}

/// `2019-09-03 10:33:10.336` at `utc_offset_secs` from UTC, as unix milliseconds.
pub(super) fn local_millis(s: &str, utc_offset_secs: i64) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' {
        return None;
    }
    let n = |from: usize, to: usize| s.get(from..to)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (h, mi, sec) = (n(11, 13)?, n(14, 16)?, n(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let ms = match s.get(19..) {
        None | Some("") => 0,
        Some(frac) => {
            let digits = frac.strip_prefix('.')?;
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|c| c.is_ascii_digit())
            {
                return None;
            }
            format!("{digits:0<3}").parse().ok()?
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec - utc_offset_secs) * 1000) + ms)
}

/// `k=v&k2=v2`, percent-decoded, as SOFATracer serialises baggage.
fn baggage(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The span's name: SOFATracer's digest has none, so it is made from what the plugin logged —
/// `GET /path` for HTTP, `service#method` for RPC, else the log's name. A stat line's key holds
/// the same fields, so its calls are named as the spans are.
pub(super) fn name(fields: &Map<String, Value>, log: &str) -> String {
    let get = |k: &str| fields.get(k).and_then(text).filter(|s| !s.is_empty());
    if let Some(url) = get("request.url") {
        let path = url
            .split_once("://")
            .map(|(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]))
            .unwrap_or(&url);
        let path = path.split('?').next().unwrap_or(path);
        return match get("method") {
            Some(m) => format!("{m} {path}"),
            None => path.to_string(),
        };
    }
    match (get("service"), get("method")) {
        (Some(s), Some(m)) => format!("{s}#{m}"),
        (Some(s), None) => s,
        _ => get("database.type")
            .or_else(|| get("sql"))
            .unwrap_or_else(|| log.to_string()),
    }
}

/// One digest line as a Zipkin v2 span (JSON). `log` names the log it came from (its file name
/// less `-digest.log`), used when the line has nothing better to name the span by.
pub fn zipkin_span(line: &str, log: &str, utc_offset_secs: i64) -> Result<Value, LineError> {
    let fields = object(line)?;
    let get = |k: &'static str| required(&fields, k);
    let trace_id = get("traceId")?;
    if trace_id.len() > 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LineError::Invalid {
            field: "traceId",
            value: trace_id,
            expected: "1 to 32 hex digits",
        });
    }
    let dotted = get("spanId")?;
    let end_ms =
        local_millis(&get("time")?, utc_offset_secs).ok_or_else(|| LineError::Invalid {
            field: "time",
            value: get("time").unwrap_or_default(),
            expected: "yyyy-MM-dd HH:mm:ss.SSS",
        })?;
    let cost = get("time.cost.milliseconds")?;
    let cost_ms: i64 = cost
        .trim_end_matches("ms")
        .trim()
        .parse()
        .ok()
        .filter(|c| *c >= 0)
        .ok_or_else(|| LineError::Invalid {
            field: "time.cost.milliseconds",
            value: cost.clone(),
            expected: "a number of milliseconds",
        })?;
    let parent = dotted
        .rsplit_once('.')
        .map(|(p, _)| p.to_string())
        .filter(|_| dotted != ROOT_SPAN_ID);
    let hex = |id: &str| {
        span_id(id)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut tags = Map::new();
    for (k, v) in &fields {
        if CONSUMED.contains(&k.as_str()) {
            continue;
        }
        if let Some(t) = text(v).filter(|t| !t.is_empty()) {
            tags.insert(k.clone(), Value::String(t));
        }
    }
    for key in ["sys.baggage", "biz.baggage"] {
        if let Some(b) = fields.get(key).and_then(text) {
            for (k, v) in baggage(&b) {
                tags.insert(k, Value::String(v));
            }
        }
    }
    // A server error: an HTTP status of 500 or more. RPC plugins log their own codes, kept as
    // the `result.code` tag.
    if !tags.contains_key("error") {
        if let Some(code) = fields.get("result.code").and_then(text) {
            if code.len() == 3 && code.parse::<u16>().is_ok_and(|c| c >= 500) {
                tags.insert("error".into(), json!(format!("result.code {code}")));
            }
        }
    }
    tags.insert(ORIGIN_SPAN_ID.into(), json!(dotted));
    tags.insert(
        ORIGIN_PARENT_SPAN_ID.into(),
        json!(parent.clone().unwrap_or_default()),
    );
    let mut span = json!({
        "traceId": trace_id,
        "id": hex(&dotted),
        "name": name(&fields, log),
        "timestamp": (end_ms - cost_ms) * 1000,
        "duration": (cost_ms * 1000).max(1),
        "tags": tags,
    });
    if let Some(p) = &parent {
        span["parentId"] = json!(hex(p));
    }
    if let Some(app) = fields.get("local.app").and_then(text) {
        span["localEndpoint"] = json!({ "serviceName": app });
    }
    let kind = match fields.get("span.kind").and_then(text).as_deref() {
        Some("server") => Some("SERVER"),
        Some("client") => Some("CLIENT"),
        Some("producer") => Some("PRODUCER"),
        Some("consumer") => Some("CONSUMER"),
        _ => None,
    };
    if let Some(k) = kind {
        span["kind"] = json!(k);
    }
    Ok(span)
}

/// `+08:00`, `-05:30`, `Z`: an offset from UTC in seconds.
pub fn parse_utc_offset(s: &str) -> Option<i64> {
    if s == "Z" || s == "UTC" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields SOFATracer's Spring MVC plugin writes, in its order.
    fn mvc_line(span: &str, kind: &str, code: &str, baggage: &str) -> String {
        format!(
            r#"{{"time":"2026-12-02 18:30:00.250","local.app":"order-app","traceId":"0a0fe9271796236616942100116981","spanId":"{span}","span.kind":"{kind}","result.code":"{code}","current.thread.name":"http-nio-8080-exec-1","time.cost.milliseconds":"250ms","request.url":"http://order.local/order?id=7","method":"GET","req.size.bytes":0,"resp.size.bytes":12,"error":"","sys.baggage":"","biz.baggage":"{baggage}"}}"#
        )
    }

    #[test]
    fn a_digest_line_is_the_span_the_reporter_would_send() {
        let span = zipkin_span(
            &mvc_line("0.1", "server", "200", "mark=T&tenant=acme"),
            "spring-mvc",
            8 * 3600,
        )
        .unwrap();
        assert_eq!(span["traceId"], "0a0fe9271796236616942100116981");
        assert_eq!(span["id"], "4e18dd181d0a2066");
        assert_eq!(span["parentId"], "af63ad4c86019caf");
        assert_eq!(span["kind"], "SERVER");
        assert_eq!(span["name"], "GET /order");
        // 18:30:00.250 at +08:00 is 10:30:00.250 UTC; the span began 250 ms before.
        assert_eq!(span["timestamp"], 1_796_207_400_000_000i64);
        assert_eq!(span["duration"], 250_000);
        assert_eq!(span["localEndpoint"]["serviceName"], "order-app");
        let tags = &span["tags"];
        assert_eq!(tags["origin.span.id"], "0.1");
        assert_eq!(tags["origin.parent.span.id"], "0");
        assert_eq!(tags["mark"], "T");
        assert_eq!(tags["tenant"], "acme");
        assert_eq!(tags["request.url"], "http://order.local/order?id=7");
        assert_eq!(tags["resp.size.bytes"], "12");
        assert!(tags.get("error").is_none() && tags.get("time").is_none());
        let root = zipkin_span(&mvc_line("0", "server", "503", ""), "spring-mvc", 0).unwrap();
        assert!(root.get("parentId").is_none());
        assert_eq!(root["tags"]["origin.parent.span.id"], "");
        assert_eq!(root["tags"]["error"], "result.code 503");
    }

    #[test]
    fn bad_lines_name_the_problem() {
        let good = mvc_line("0", "server", "200", "");
        for (line, says) in [
            ("not json".to_string(), "not a JSON object"),
            (
                good.replace("\"traceId\"", "\"trace\""),
                "traceId is missing",
            ),
            (good.replace("0a0fe927", "zz0fe927"), "traceId"),
            (good.replace("2026-12-02 18:30:00.250", "yesterday"), "time"),
            (good.replace("250ms", "soon"), "time.cost.milliseconds"),
        ] {
            let e = zipkin_span(&line, "x", 0).unwrap_err().to_string();
            assert!(e.contains(says), "{line}: {e}");
        }
        assert_eq!(parse_utc_offset("+08:00"), Some(28_800));
        assert_eq!(parse_utc_offset("-05:30"), Some(-19_800));
        assert_eq!(parse_utc_offset("Z"), Some(0));
        assert_eq!(parse_utc_offset("8"), None);
    }
}
