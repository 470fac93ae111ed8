//! What both OTLP trace encodings share: span validation, rejection accounting and the JSON
//! rendering of array and key-value-list attribute values.

use std::fmt::Write as _;

use sightline_storage::SpanFields;

pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Why a span was dropped (OTLP partial success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    TraceIdZero,
    TraceIdLength,
    SpanIdZero,
    SpanIdLength,
    ParentIdLength,
    StartMissing,
    EndBeforeStart,
}

impl Rejection {
    const ALL: [Rejection; 7] = [
        Rejection::TraceIdZero,
        Rejection::TraceIdLength,
        Rejection::SpanIdZero,
        Rejection::SpanIdLength,
        Rejection::ParentIdLength,
        Rejection::StartMissing,
        Rejection::EndBeforeStart,
    ];

    /// A short stable name, the label of the refusal counter.
    fn reason(self) -> &'static str {
        match self {
            Rejection::TraceIdZero => "trace_id_zero",
            Rejection::TraceIdLength => "trace_id_length",
            Rejection::SpanIdZero => "span_id_zero",
            Rejection::SpanIdLength => "span_id_length",
            Rejection::ParentIdLength => "parent_span_id_length",
            Rejection::StartMissing => "start_missing",
            Rejection::EndBeforeStart => "end_before_start",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Rejection::TraceIdZero => "trace_id is all zeros",
            Rejection::TraceIdLength => "trace_id is not 16 bytes",
            Rejection::SpanIdZero => "span_id is all zeros",
            Rejection::SpanIdLength => "span_id is not 8 bytes",
            Rejection::ParentIdLength => "parent_span_id is not 8 bytes",
            Rejection::StartMissing => "start time is missing",
            Rejection::EndBeforeStart => "end time is before start time",
        }
    }
}

/// Counts of rejected spans by reason.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rejections {
    counts: [u64; 7],
}

impl Rejections {
    pub fn add(&mut self, r: Rejection) {
        self.counts[r as usize] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// (reason, count) of each kind refused.
    pub fn by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Rejection::ALL
            .into_iter()
            .map(|r| (r.reason(), self.counts[r as usize]))
            .filter(|(_, n)| *n > 0)
    }

    /// `rejected 3 spans: trace_id is all zeros (2), end time is before start time (1)`
    pub fn message(&self) -> Option<String> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let mut m = format!(
            "rejected {total} span{}: ",
            if total == 1 { "" } else { "s" }
        );
        let mut first = true;
        for r in Rejection::ALL {
            let n = self.counts[r as usize];
            if n > 0 {
                if !first {
                    m.push_str(", ");
                }
                first = false;
                let _ = write!(m, "{} ({n})", r.describe());
            }
        }
        Some(m)
    }
}

/// Raw identity and timing of a span before validation.
pub struct RawSpanIds<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub start: u64,
    pub end: u64,
}

/// Checks ids and times and fills them into `fields`.
pub fn validate(raw: &RawSpanIds<'_>, fields: &mut SpanFields<'_>) -> Result<(), Rejection> {
    fields.trace_id = raw
        .trace_id
        .try_into()
        .map_err(|_| Rejection::TraceIdLength)?;
    if fields.trace_id == [0; 16] {
        return Err(Rejection::TraceIdZero);
    }
    fields.span_id = raw
        .span_id
        .try_into()
        .map_err(|_| Rejection::SpanIdLength)?;
    if fields.span_id == [0; 8] {
        return Err(Rejection::SpanIdZero);
    }
    fields.parent_span_id = match raw.parent_span_id.len() {
        0 => None,
        8 => {
            let p: [u8; 8] = raw
                .parent_span_id
                .try_into()
                .map_err(|_| Rejection::ParentIdLength)?;
            (p != [0; 8]).then_some(p)
        }
        _ => return Err(Rejection::ParentIdLength),
    };
    if raw.start == 0 {
        return Err(Rejection::StartMissing);
    }
    if raw.end < raw.start {
        return Err(Rejection::EndBeforeStart);
    }
    fields.start_unix_nano = raw.start;
    fields.end_unix_nano = raw.end;
    Ok(())
}

pub fn empty_fields<'a>() -> SpanFields<'a> {
    SpanFields {
        trace_id: [0; 16],
        span_id: [0; 8],
        parent_span_id: None,
        trace_state: "",
        service_name: UNKNOWN_SERVICE,
        name: "",
        kind: sightline_storage::SpanKind::Unspecified,
        start_unix_nano: 0,
        end_unix_nano: 0,
        status_code: 0,
        status_message: "",
        scope_name: "",
        scope_version: "",
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a double as JSON; non-finite values become strings, as the protobuf JSON mapping does.
pub fn push_json_double(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("\"NaN\"");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        let _ = write!(out, "{d:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_message_counts_each_reason() {
        let mut r = Rejections::default();
        r.add(Rejection::TraceIdZero);
        r.add(Rejection::EndBeforeStart);
        r.add(Rejection::TraceIdZero);
        assert_eq!(
            r.message().unwrap(),
            "rejected 3 spans: trace_id is all zeros (2), end time is before start time (1)"
        );
        assert_eq!(Rejections::default().message(), None);
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, r#""a\"b\\c\n\u0001""#);
    }
}
