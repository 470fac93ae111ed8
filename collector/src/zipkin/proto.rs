//! Zipkin v2 protobuf (`zipkin.proto3.ListOfSpans`, what Zipkin's `PROTO3` encoder and reporters
//! send as `application/x-protobuf`), read in place with [`crate::wire`].
//!
//! `ListOfSpans { repeated Span spans = 1; }`; `Span { bytes trace_id = 1; bytes parent_id = 2;
//! bytes id = 3; Kind kind = 4; string name = 5; fixed64 timestamp = 6; uint64 duration = 7;
//! Endpoint local_endpoint = 8; Endpoint remote_endpoint = 9; repeated Annotation annotations =
//! 10; map<string, string> tags = 11; bool debug = 12; bool shared = 13; }`; `Endpoint { string
//! service_name = 1; bytes ipv4 = 2; bytes ipv6 = 3; int32 port = 4; }`; `Annotation { fixed64
//! timestamp = 1; string value = 2; }`; `Kind`: 0 unspecified, 1 CLIENT, 2 SERVER, 3 PRODUCER,
//! 4 CONSUMER.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::span::{bytes_id, check_micros, Endpoint, Kind, ZipkinSpan};
use crate::wire::{Reader, WireError};

fn wire(e: WireError) -> String {
    format!("invalid Zipkin protobuf: {e}")
}

fn endpoint(buf: &[u8]) -> Result<Endpoint<'_>, String> {
    let mut e = Endpoint::default();
    let mut r = Reader::new(buf);
    while let Some((field, v)) = r.next().map_err(wire)? {
        match field {
            1 => e.service_name = Cow::Borrowed(v.str("service_name").map_err(wire)?),
            2 => {
                let b: [u8; 4] = v
                    .bytes("ipv4")
                    .map_err(wire)?
                    .try_into()
                    .map_err(|_| "endpoint ipv4 is not 4 bytes".to_string())?;
                e.ipv4 = Cow::Owned(Ipv4Addr::from(b).to_string());
            }
            3 => {
                let b: [u8; 16] = v
                    .bytes("ipv6")
                    .map_err(wire)?
                    .try_into()
                    .map_err(|_| "endpoint ipv6 is not 16 bytes".to_string())?;
                e.ipv6 = Cow::Owned(Ipv6Addr::from(b).to_string());
            }
            4 => {
                let port = v.varint("port").map_err(wire)?;
                e.port = u16::try_from(port)
                    .map_err(|_| format!("endpoint port {port} is not a port number"))?;
            }
            _ => {}
        }
    }
    Ok(e)
}

fn span(buf: &[u8]) -> Result<ZipkinSpan<'_>, String> {
    let mut trace_id: &[u8] = &[];
    let mut id: &[u8] = &[];
    let mut parent_id: &[u8] = &[];
    let mut s = ZipkinSpan {
        trace_id: [0; 16],
        id: [0; 8],
        parent_id: None,
        kind: None,
        name: Cow::Borrowed(""),
        timestamp: 0,
        duration: 0,
        local: Endpoint::default(),
        remote: None,
        annotations: Vec::new(),
        tags: Vec::new(),
        debug: false,
        shared: false,
    };
    let mut r = Reader::new(buf);
    while let Some((field, v)) = r.next().map_err(wire)? {
        match field {
            1 => trace_id = v.bytes("trace_id").map_err(wire)?,
            2 => parent_id = v.bytes("parent_id").map_err(wire)?,
            3 => id = v.bytes("id").map_err(wire)?,
            4 => {
                s.kind = match v.varint("kind").map_err(wire)? {
                    0 => None,
                    1 => Some(Kind::Client),
                    2 => Some(Kind::Server),
                    3 => Some(Kind::Producer),
                    4 => Some(Kind::Consumer),
                    k => return Err(format!("kind {k} is not a Zipkin span kind")),
                }
            }
            5 => s.name = Cow::Borrowed(v.str("name").map_err(wire)?),
            6 => s.timestamp = v.fixed64("timestamp").map_err(wire)?,
            7 => s.duration = v.varint("duration").map_err(wire)?,
            8 => s.local = endpoint(v.bytes("local_endpoint").map_err(wire)?)?,
            9 => s.remote = Some(endpoint(v.bytes("remote_endpoint").map_err(wire)?)?),
            10 => {
                let mut a = Reader::new(v.bytes("annotation").map_err(wire)?);
                let (mut time, mut value) = (0, "");
                while let Some((f, v)) = a.next().map_err(wire)? {
                    match f {
                        1 => time = v.fixed64("annotation timestamp").map_err(wire)?,
                        2 => value = v.str("annotation value").map_err(wire)?,
                        _ => {}
                    }
                }
                let time = check_micros(time, "annotation timestamp")?;
                s.annotations.push((time, Cow::Borrowed(value)));
            }
            11 => {
                let mut t = Reader::new(v.bytes("tag").map_err(wire)?);
                let (mut key, mut value) = ("", "");
                while let Some((f, v)) = t.next().map_err(wire)? {
                    match f {
                        1 => key = v.str("tag key").map_err(wire)?,
                        2 => value = v.str("tag value").map_err(wire)?,
                        _ => {}
                    }
                }
                s.tags.push((Cow::Borrowed(key), Cow::Borrowed(value)));
            }
            12 => s.debug = v.varint("debug").map_err(wire)? != 0,
            13 => s.shared = v.varint("shared").map_err(wire)? != 0,
            _ => {}
        }
    }
    s.trace_id = bytes_id(trace_id, "trace_id", true)?;
    s.id = bytes_id(id, "id", false)?;
    if !parent_id.is_empty() {
        s.parent_id = Some(bytes_id(parent_id, "parent_id", false)?);
    }
    s.timestamp = check_micros(s.timestamp, "timestamp")?;
    Ok(s)
}

/// The spans of a `ListOfSpans`, or what is wrong with it (the first bad span fails the request).
pub fn decode(body: &[u8]) -> Result<Vec<ZipkinSpan<'_>>, String> {
    let mut spans = Vec::new();
    let mut r = Reader::new(body);
    while let Some((field, v)) = r.next().map_err(wire)? {
        if field != 1 {
            return Err(format!(
                "invalid Zipkin protobuf: field {field} is not a ListOfSpans field"
            ));
        }
        let i = spans.len();
        let buf = v.bytes("span").map_err(wire)?;
        spans.push(span(buf).map_err(|e| format!("span {i}: {e}"))?);
    }
    Ok(spans)
}
