//! The Zipkin v2 span, as both encodings decode it, checked and written into span rows.
//!
//! Mapping: `kind` → span kind (none: internal); `timestamp`/`duration` (µs) → start and end;
//! `localEndpoint.serviceName` → `service.name`; tags → attributes, and the `error` tag (or
//! `otel.status_code`, as OpenTelemetry's Zipkin exporters write it) → error status; annotations
//! → events; the endpoints' addresses and ports → `network.local.*` / `network.peer.*`, the remote
//! service → `peer.service`, and for client and producer spans the remote address →
//! `server.address`/`server.port`. `debug` and `shared` are kept as `zipkin.debug` and
//! `zipkin.shared`, so the Zipkin query API can give back what came in; so are the id and the
//! parent id as sent (`zipkin.id`, `zipkin.parent_id`, `""` for none) when Sightline stores
//! others.
//!
//! One id, two spans: Zipkin lets the server half of an RPC reuse the client's span id (`shared`),
//! and SOFATracer always does so. Sightline stores the server half under an id derived from the
//! shared one ([`server_half_id`]), parented on the client half, and moves the server's children
//! under it (see [`Identities`]).

use std::borrow::Cow;
use std::collections::HashMap;

use sightline_storage::{AttrValue, DedicatedAttributes, SpanBatchBuilder, SpanFields, SpanKind};

use super::sofatracer;
use crate::otlp::traces::UNKNOWN_SERVICE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Client,
    Server,
    Producer,
    Consumer,
}

impl Kind {
    fn span_kind(kind: Option<Kind>) -> SpanKind {
        match kind {
            Some(Kind::Client) => SpanKind::Client,
            Some(Kind::Server) => SpanKind::Server,
            Some(Kind::Producer) => SpanKind::Producer,
            Some(Kind::Consumer) => SpanKind::Consumer,
            None => SpanKind::Internal,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Endpoint<'a> {
    pub service_name: Cow<'a, str>,
    pub ipv4: Cow<'a, str>,
    pub ipv6: Cow<'a, str>,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZipkinSpan<'a> {
    pub trace_id: [u8; 16],
    pub id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub kind: Option<Kind>,
    pub name: Cow<'a, str>,
    /// Microseconds since the epoch.
    pub timestamp: u64,
    /// Microseconds.
    pub duration: u64,
    pub local: Endpoint<'a>,
    pub remote: Option<Endpoint<'a>>,
    /// (microseconds since the epoch, value)
    pub annotations: Vec<(u64, Cow<'a, str>)>,
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub debug: bool,
    pub shared: bool,
}

impl ZipkinSpan<'_> {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }
}

/// The earliest timestamp taken, 1973-03-03 in microseconds: anything smaller is seconds or
/// milliseconds sent where Zipkin wants microseconds.
const MIN_MICROS: u64 = 100_000_000_000_000;
/// The latest, year 5138: anything larger is nanoseconds.
const MAX_MICROS: u64 = 100_000_000_000_000_000;

/// Checks a timestamp is microseconds since the epoch; `what` names it in the error.
pub fn check_micros(value: u64, what: &str) -> Result<u64, String> {
    if value == 0 {
        return Err(format!("{what} is missing"));
    }
    if value < MIN_MICROS {
        return Err(format!(
            "{what} {value} is not microseconds since the epoch (it would be before 1973: \
             seconds or milliseconds?)"
        ));
    }
    if value > MAX_MICROS {
        return Err(format!(
            "{what} {value} is not microseconds since the epoch (it would be after the year \
             5000: nanoseconds?)"
        ));
    }
    Ok(value)
}

/// A hex id of at most `2 * N` digits, left-padded with zeros as Zipkin pads short ids.
pub fn hex_id<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    if s.is_empty() {
        return Err(format!("{what} is missing"));
    }
    if s.len() > 2 * N {
        return Err(format!(
            "{what} {s:?} has {} hex digits, more than {}",
            s.len(),
            2 * N
        ));
    }
    let mut out = [0u8; N];
    let pad = 2 * N - s.len();
    for (i, c) in s.bytes().enumerate() {
        let digit = (c as char)
            .to_digit(16)
            .ok_or_else(|| format!("{what} {s:?} is not hex"))? as u8;
        let at = pad + i;
        out[at / 2] |= if at.is_multiple_of(2) {
            digit << 4
        } else {
            digit
        };
    }
    if out.iter().all(|&b| b == 0) {
        return Err(format!("{what} {s:?} is all zeros"));
    }
    Ok(out)
}

/// An id from protobuf bytes: `N` bytes, or (for trace ids) 8 bytes, widened.
pub fn bytes_id<const N: usize>(b: &[u8], what: &str, short_ok: bool) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    match b.len() {
        0 => return Err(format!("{what} is missing")),
        n if n == N => out.copy_from_slice(b),
        8 if short_ok => out[N - 8..].copy_from_slice(b),
        n => return Err(format!("{what} has {n} bytes, not {N}")),
    }
    if out.iter().all(|&b| b == 0) {
        return Err(format!("{what} is all zeros"));
    }
    Ok(out)
}

/// The id the server half of a shared span is stored under: FNV-1a 64 over the shared id's
/// bytes and `server`. Deterministic, so that halves reported in different requests, and the
/// children of the server reported before it, agree on it.
pub fn server_half_id(shared: [u8; 8]) -> [u8; 8] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in shared.iter().chain(b"server") {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    if hash == 0 || hash.to_be_bytes() == shared {
        hash = hash.wrapping_add(1);
    }
    hash.to_be_bytes()
}

/// The ids a span is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    /// The server half of a shared id: `parent` is the client half.
    pub server_half: bool,
}

/// The stored ids of a request's spans.
///
/// - A SOFATracer span (it has the tag `origin.span.id`) takes its ids from its original dotted
///   ids, mapped as `sightline-instrument` maps them ([`sofatracer::span_id`]): the reporter
///   hashes every id, also the 16-hex-digit ids a B3 or Rust caller sent, which the original
///   gives back. A SOFATracer server span other than a trace's root (`0`) shares its caller's id,
///   so it is a server half.
/// - Any other span is a server half when it says so (`shared` and kind SERVER).
/// - A span whose parent is a server half moves under it. For SOFATracer this is the rule (a
///   span's parent in its own process is that process's entry, and its entry shares the caller's
///   id), unless the parent is the root `0` or is in the same request as a span that is not a
///   server. Other spans move when the server half is in the same request, in the same service.
///   Children of a SOFATracer span that is not a server (a nested local span) reported in another
///   request than their parent are the case this cannot tell.
pub fn identities(spans: &[ZipkinSpan<'_>]) -> Vec<Identity> {
    let mut out: Vec<Identity> = spans.iter().map(own_identity).collect();
    let mut halves: HashMap<([u8; 16], [u8; 8]), SharedId<'_>> = HashMap::new();
    for (span, identity) in spans.iter().zip(&out) {
        let shared = if identity.server_half {
            identity.parent.unwrap_or(identity.id)
        } else {
            identity.id
        };
        let entry = halves.entry((span.trace_id, shared)).or_default();
        if identity.server_half {
            entry.server_service = Some(span.local.service_name.as_ref());
        } else {
            entry.other_span = true;
        }
    }
    for (span, identity) in spans.iter().zip(out.iter_mut()) {
        let Some(parent) = identity.parent.filter(|_| !identity.server_half) else {
            continue;
        };
        let here = halves.get(&(span.trace_id, parent));
        let moves = match span.tag(sofatracer::ORIGIN_PARENT_SPAN_ID) {
            Some(original) if span.tag(sofatracer::ORIGIN_SPAN_ID).is_some() => {
                original != sofatracer::ROOT_SPAN_ID
                    && here.is_none_or(|h| h.server_service.is_some() || !h.other_span)
            }
            _ => here.is_some_and(|h| h.server_service == Some(span.local.service_name.as_ref())),
        };
        if moves {
            identity.parent = Some(server_half_id(parent));
        }
    }
    out
}

/// What a request holds of one (trace, span id).
#[derive(Default)]
struct SharedId<'a> {
    /// The service of the server half with this id, if the request holds it.
    server_service: Option<&'a str>,
    /// Whether the request holds a span with this id that is not a server half.
    other_span: bool,
}

fn own_identity(span: &ZipkinSpan<'_>) -> Identity {
    let server = span.kind == Some(Kind::Server);
    let (shared, parent, server_half) = match span.tag(sofatracer::ORIGIN_SPAN_ID) {
        Some(original) => {
            let parent = span
                .tag(sofatracer::ORIGIN_PARENT_SPAN_ID)
                .filter(|p| !p.is_empty())
                .map(sofatracer::span_id)
                .or(span.parent_id);
            (
                sofatracer::span_id(original),
                parent,
                server && original != sofatracer::ROOT_SPAN_ID,
            )
        }
        None => (span.id, span.parent_id, server && span.shared),
    };
    if server_half {
        Identity {
            id: server_half_id(shared),
            parent: Some(shared),
            server_half: true,
        }
    } else {
        Identity {
            id: shared,
            parent,
            server_half: false,
        }
    }
}

/// Writes checked spans into `out`.
pub fn write(spans: &[ZipkinSpan<'_>], out: &mut SpanBatchBuilder) {
    let identities = identities(spans);
    let mut hex = String::new();
    for (span, identity) in spans.iter().zip(&identities) {
        let (status_code, status_message) = status(span);
        let service = match span.local.service_name.as_ref() {
            "" => UNKNOWN_SERVICE,
            s => s,
        };
        let scope = |keys: [&str; 2]| keys.iter().find_map(|k| span.tag(k)).unwrap_or("");
        let start = span.timestamp.saturating_mul(1000);
        let fields = SpanFields {
            trace_id: span.trace_id,
            span_id: identity.id,
            parent_span_id: identity.parent,
            trace_state: "",
            service_name: service,
            name: &span.name,
            kind: Kind::span_kind(span.kind),
            start_unix_nano: start,
            end_unix_nano: start.saturating_add(span.duration.saturating_mul(1000)),
            status_code,
            status_message,
            scope_name: scope(["otel.scope.name", "otel.library.name"]),
            scope_version: scope(["otel.scope.version", "otel.library.version"]),
        };
        out.begin_span(&fields);
        out.push_resource_attribute("service.name", AttrValue::Str(service));
        let mut dedicated = DedicatedAttributes::default();
        for (key, value) in &span.tags {
            let value = AttrValue::Str(value);
            out.push_attribute(key, value);
            dedicated.observe(key, value);
        }
        let mut push = |key: &'static str, value: AttrValue<'_>| {
            out.push_attribute(key, value);
        };
        endpoint_attributes(&span.local, true, &mut push);
        if let Some(remote) = &span.remote {
            endpoint_attributes(remote, false, &mut push);
            if !remote.service_name.is_empty() {
                push("peer.service", AttrValue::Str(&remote.service_name));
                dedicated.peer_service = Some(&remote.service_name);
            }
            if matches!(span.kind, Some(Kind::Client | Kind::Producer)) {
                let address = if remote.ipv4.is_empty() {
                    &remote.ipv6
                } else {
                    &remote.ipv4
                };
                if !address.is_empty() {
                    push("server.address", AttrValue::Str(address));
                    dedicated.server_address = dedicated.server_address.or(Some(address));
                }
                if remote.port != 0 {
                    push("server.port", AttrValue::Int(i64::from(remote.port)));
                }
            }
        }
        if span.debug {
            push("zipkin.debug", AttrValue::Bool(true));
        }
        if span.shared {
            push("zipkin.shared", AttrValue::Bool(true));
        }
        if identity.id != span.id {
            hex.clear();
            push_hex(&mut hex, &span.id);
            push("zipkin.id", AttrValue::Str(&hex));
        }
        if identity.parent != span.parent_id {
            // "" when it came without one: the Zipkin query API gives back what came in.
            hex.clear();
            if let Some(sent) = span.parent_id {
                push_hex(&mut hex, &sent);
            }
            push("zipkin.parent_id", AttrValue::Str(&hex));
        }
        for (time, value) in &span.annotations {
            out.begin_event(time.saturating_mul(1000), value);
        }
        out.finish_span(&dedicated);
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// An endpoint's address and port; an IPv6 address goes with the IPv4 one under its own key.
fn endpoint_attributes<'a>(
    e: &'a Endpoint<'_>,
    local: bool,
    push: &mut impl FnMut(&'static str, AttrValue<'a>),
) {
    let (address, port, ipv6) = if local {
        (
            "network.local.address",
            "network.local.port",
            "zipkin.local_endpoint.ipv6",
        )
    } else {
        (
            "network.peer.address",
            "network.peer.port",
            "zipkin.remote_endpoint.ipv6",
        )
    };
    match (e.ipv4.is_empty(), e.ipv6.is_empty()) {
        (false, false) => {
            push(address, AttrValue::Str(&e.ipv4));
            push(ipv6, AttrValue::Str(&e.ipv6));
        }
        (false, true) => push(address, AttrValue::Str(&e.ipv4)),
        (true, false) => push(address, AttrValue::Str(&e.ipv6)),
        (true, true) => {}
    }
    if e.port != 0 {
        push(port, AttrValue::Int(i64::from(e.port)));
    }
}

/// The span's status: `otel.status_code` when an OpenTelemetry exporter wrote it, else error
/// when an `error` tag is present (its value is the message, unless it is only `true`).
fn status<'s>(span: &'s ZipkinSpan<'_>) -> (i8, &'s str) {
    let error = span.tag("error");
    match span.tag("otel.status_code") {
        Some("ERROR") => (
            sightline_storage::schema::STATUS_ERROR,
            span.tag("otel.status_description").or(error).unwrap_or(""),
        ),
        Some("OK") => (1, ""),
        _ => match error {
            Some("false") | None => (0, ""),
            Some("true") => (sightline_storage::schema::STATUS_ERROR, ""),
            Some(message) => (sightline_storage::schema::STATUS_ERROR, message),
        },
    }
}
