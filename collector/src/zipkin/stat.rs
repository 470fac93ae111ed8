//! SOFATracer's stat logs: at the end of every period (60 s by default, its `stat_log_interval`)
//! each plugin writes one JSON line per endpoint, outcome and load-test flag —
//! `{"time":"2026-12-02 18:31:00.012","stat.key":{"local.app":"order-app","request.url":"http://order.local/order","method":"GET"},"count":12,"total.cost.milliseconds":3400,"success":"Y","load.test":"F"}`
//! — read here as rows of counted spans (`span_stats`), which the store sums into the RED
//! rollups. They are keyed as the digest of the same calls would be: the service is `local.app`,
//! the name is made from the key's fields as a digest span's is, the kind follows the log
//! (`spring-mvc` serves, `httpclient` calls, `kafkamq-send` produces, ...), a failure is an error
//! status. A line's counts belong to the minute its period's midpoint falls in.

use serde_json::Value;
use sightline_storage::arrow::array::RecordBatch;
use sightline_storage::rollup::{minute_of, Aggregate, Measures, RedKey};
use sightline_storage::schema::STATUS_ERROR;
use sightline_storage::SpanKind;

use super::digest::{local_millis, name, object, required, text, LineError};
use crate::error::IngestError;

/// Where a stat log's lines come from, and how to read their times.
#[derive(Debug, Clone)]
pub struct StatLog {
    /// The log's name, `spring-mvc` for `spring-mvc-stat.log` (a file name is taken too).
    pub log: String,
    /// The offset from UTC of the machine that wrote it: its times are local.
    pub utc_offset_secs: i64,
    /// The period one line counts, in seconds.
    pub interval_secs: i64,
}

/// SOFATracer's default period.
pub const DEFAULT_INTERVAL_SECS: i64 = 60;

impl StatLog {
    pub fn new(log: &str, utc_offset_secs: i64, interval_secs: i64) -> Self {
        let base = log.split(".log").next().unwrap_or(log);
        let base = base.strip_suffix("-stat").unwrap_or(base);
        StatLog {
            log: base.to_string(),
            utc_offset_secs,
            interval_secs,
        }
    }

    /// The kind of the spans a log counts, by SOFATracer's log names (`spring-mvc-stat.log`,
    /// `dubbo-client-stat.log`, `rocketmq-send-stat.log`, `message-sub-stat.log`, ...).
    pub fn kind(&self) -> SpanKind {
        let log = self.log.as_str();
        let ends = |suffixes: &[&str]| suffixes.iter().any(|s| log.ends_with(s));
        if log == "spring-mvc" || ends(&["-server"]) {
            SpanKind::Server
        } else if ends(&["-send", "-pub"]) {
            SpanKind::Producer
        } else if ends(&["-consume", "-sub"]) {
            SpanKind::Consumer
        } else if ends(&["-client"])
            || [
                "httpclient",
                "okhttp",
                "resttemplate",
                "feign",
                "redis",
                "mongodb",
            ]
            .contains(&log)
        {
            SpanKind::Client
        } else {
            // `biz` (the flexible plugin's) and anything unknown: what a Zipkin span without a
            // kind becomes.
            SpanKind::Internal
        }
    }

    /// One stat line as a row of counted spans.
    pub fn row(&self, line: &str) -> Result<(RedKey, Measures), LineError> {
        let fields = object(line)?;
        let get = |k: &'static str| required(&fields, k);
        let invalid =
            |field: &'static str, value: String, expected: &'static str| LineError::Invalid {
                field,
                value,
                expected,
            };
        let time = get("time")?;
        let end_ms = local_millis(&time, self.utc_offset_secs)
            .ok_or_else(|| invalid("time", time.clone(), "yyyy-MM-dd HH:mm:ss.SSS"))?;
        let key = match fields.get("stat.key") {
            Some(Value::Object(k)) => k,
            Some(other) => {
                return Err(invalid("stat.key", other.to_string(), "a JSON object"));
            }
            None => return Err(LineError::Missing("stat.key")),
        };
        let service =
            required(key, "local.app").map_err(|_| LineError::Missing("stat.key local.app"))?;
        let number = |field: &'static str| -> Result<i64, LineError> {
            let v = get(field)?;
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| invalid(field, v, "a number, 0 or more"))
        };
        let calls = number("count")? as u64;
        let cost_ms = number("total.cost.milliseconds")?;
        let error = match get("success")?.as_str() {
            "Y" | "true" | "T" => false,
            "N" | "false" | "F" => true,
            other => return Err(invalid("success", other.to_string(), "Y or N")),
        };
        let load_test = match fields.get("load.test").and_then(text).as_deref() {
            None | Some("") | Some("F") | Some("false") => false,
            Some("T") | Some("true") => true,
            Some(other) => return Err(invalid("load.test", other.to_string(), "T or F")),
        };
        let duration_sum_nano = cost_ms
            .checked_mul(1_000_000)
            .ok_or_else(|| invalid("total.cost.milliseconds", cost_ms.to_string(), "in range"))?;
        let midpoint_ms = end_ms - self.interval_secs * 500;
        let row = RedKey {
            service: service.into(),
            operation: name(key, &self.log).into(),
            span_kind: self.kind() as i8,
            status_code: if error { STATUS_ERROR } else { 0 },
            load_test,
            minute: minute_of(midpoint_ms.saturating_mul(1_000_000)),
        };
        let errors = if error { calls } else { 0 };
        Ok((row, Measures::from_totals(calls, errors, duration_sum_nano)))
    }

    /// A request's stat lines as one batch of `span_stats` rows (`None` when it holds none); the
    /// first bad line fails the whole request, naming its line number.
    pub fn decode(&self, body: &[u8]) -> Result<Option<RecordBatch>, IngestError> {
        let text = simdutf8::basic::from_utf8(body)
            .map_err(|_| IngestError::Decode("invalid stat lines: not UTF-8".into()))?;
        let mut rows = Aggregate::<RedKey>::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (key, measures) = self
                .row(line)
                .map_err(|e| IngestError::Decode(format!("invalid stat line {}: {e}", i + 1)))?;
            rows.add(key, &measures);
        }
        rows.to_batch()
            .map_err(|e| IngestError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"time":"2026-12-02 18:31:00.012","stat.key":{"local.app":"order-app","request.url":"http://order.local/order?id=7","method":"GET"},"count":12,"total.cost.milliseconds":3400,"success":"Y","load.test":"F"}"#;

    #[test]
    fn a_stat_line_is_the_red_row_of_its_calls() {
        let log = StatLog::new("spring-mvc-stat.log", 8 * 3600, 60);
        assert_eq!(log.log, "spring-mvc");
        let (key, m) = log.row(LINE).unwrap();
        assert_eq!(&*key.service, "order-app");
        assert_eq!(&*key.operation, "GET /order");
        assert_eq!(key.span_kind, SpanKind::Server as i8);
        assert_eq!(key.status_code, 0);
        assert!(!key.load_test);
        // Printed at 10:31:00.012 UTC, it counts the minute before: 10:30.
        assert_eq!(key.minute, 1_796_207_400_000_000_000);
        assert_eq!(
            (m.calls, m.errors, m.duration_sum_nano),
            (12, 0, 3_400_000_000)
        );
        assert!(m.latency.is_empty());

        let failed = LINE.replace(
            r#""success":"Y","load.test":"F""#,
            r#""success":"N","load.test":"T""#,
        );
        let (key, m) = log.row(&failed).unwrap();
        assert_eq!(
            (key.status_code, key.load_test, m.errors),
            (STATUS_ERROR, true, 12)
        );
        for (file, kind) in [
            ("httpclient-stat.log", SpanKind::Client),
            ("dubbo-client-stat.log", SpanKind::Client),
            ("dubbo-server-stat.log.2026-12-01", SpanKind::Server),
            ("kafkamq-send-stat.log", SpanKind::Producer),
            ("message-sub-stat.log", SpanKind::Consumer),
            ("biz-stat.log", SpanKind::Internal),
        ] {
            assert_eq!(StatLog::new(file, 0, 60).kind(), kind, "{file}");
        }
    }

    #[test]
    fn bad_stat_lines_name_the_problem() {
        let log = StatLog::new("spring-mvc", 0, 60);
        for (line, says) in [
            ("[1,2]".to_string(), "not a JSON object"),
            (LINE.replace("\"count\":12", "\"count\":-1"), "count"),
            (LINE.replace("\"count\":12", "\"count\":\"many\""), "count"),
            (
                LINE.replace("\"success\":\"Y\"", "\"success\":\"maybe\""),
                "success",
            ),
            (LINE.replace("local.app", "app"), "local.app"),
            (
                LINE.replace("2026-12-02 18:31:00.012", "1796207460"),
                "time",
            ),
            (
                LINE.replace(
                    "\"total.cost.milliseconds\":3400",
                    "\"total.cost.milliseconds\":92233720368547758",
                ),
                "total.cost.milliseconds",
            ),
        ] {
            let e = log.row(&line).unwrap_err().to_string();
            assert!(e.contains(says), "{line}: {e}");
        }
        let body = format!("{LINE}\n\n{LINE}\nnot json\n");
        let e = log.decode(body.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("line 4: not a JSON object"), "{e}");
        let batch = log
            .decode(format!("{LINE}\n{LINE}\n").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(batch.num_rows(), 1, "equal keys are one row");
    }
}
