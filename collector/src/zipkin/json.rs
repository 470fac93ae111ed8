//! Zipkin v2 JSON: a list of spans. Strings without escapes are borrowed from the request; tag
//! values that are numbers or booleans (some reporters send them) are taken as their text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::span::{check_micros, hex_id, Endpoint, Kind, ZipkinSpan};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan<'a> {
    #[serde(borrow, default)]
    trace_id: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    parent_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    duration: Option<u64>,
    #[serde(borrow, default)]
    local_endpoint: Option<JsonEndpoint<'a>>,
    #[serde(borrow, default)]
    remote_endpoint: Option<JsonEndpoint<'a>>,
    #[serde(borrow, default)]
    annotations: Vec<JsonAnnotation<'a>>,
    #[serde(borrow, default)]
    tags: Tags<'a>,
    #[serde(default)]
    debug: Option<bool>,
    #[serde(default)]
    shared: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint<'a> {
    #[serde(borrow, default)]
    service_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ipv4: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ipv6: Option<Cow<'a, str>>,
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Deserialize)]
struct JsonAnnotation<'a> {
    #[serde(default)]
    timestamp: u64,
    #[serde(borrow, default)]
    value: Cow<'a, str>,
}

/// Tags in the order sent.
#[derive(Default)]
struct Tags<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Tags<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TagsVisitor;
        impl<'de> Visitor<'de> for TagsVisitor {
            type Value = Tags<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of tags")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Tags::default())
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut tags = Vec::new();
                while let Some(key) = map.next_key::<TagText<'de>>()? {
                    let value = map.next_value::<TagText<'de>>()?;
                    tags.push((key.0, value.0));
                }
                Ok(Tags(tags))
            }
        }
        d.deserialize_any(TagsVisitor)
    }
}

/// A tag key or value: a string, or a number or boolean as its text.
struct TagText<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for TagText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = TagText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TagText(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TagText(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TagText(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(TagText(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TagText(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(TagText(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(TagText(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

fn kind(k: Option<&str>) -> Result<Option<Kind>, String> {
    Ok(match k {
        None | Some("") => None,
        Some("CLIENT") => Some(Kind::Client),
        Some("SERVER") => Some(Kind::Server),
        Some("PRODUCER") => Some(Kind::Producer),
        Some("CONSUMER") => Some(Kind::Consumer),
        Some(other) => {
            return Err(format!(
                "kind {other:?} is not CLIENT, SERVER, PRODUCER or CONSUMER"
            ))
        }
    })
}

fn endpoint(e: Option<JsonEndpoint<'_>>) -> Option<Endpoint<'_>> {
    let e = e?;
    Some(Endpoint {
        service_name: e.service_name.unwrap_or_default(),
        ipv4: e.ipv4.unwrap_or_default(),
        ipv6: e.ipv6.unwrap_or_default(),
        port: e.port.unwrap_or(0),
    })
}

fn span(s: JsonSpan<'_>) -> Result<ZipkinSpan<'_>, String> {
    let annotations = s
        .annotations
        .into_iter()
        .map(|a| Ok((check_micros(a.timestamp, "annotation timestamp")?, a.value)))
        .collect::<Result<_, String>>()?;
    Ok(ZipkinSpan {
        trace_id: hex_id(&s.trace_id, "traceId")?,
        id: hex_id(&s.id, "id")?,
        parent_id: match s.parent_id.as_deref() {
            None | Some("") => None,
            Some(p) => Some(hex_id(p, "parentId")?),
        },
        kind: kind(s.kind.as_deref())?,
        name: s.name.unwrap_or_default(),
        timestamp: check_micros(s.timestamp.unwrap_or(0), "timestamp")?,
        duration: s.duration.unwrap_or(0),
        local: endpoint(s.local_endpoint).unwrap_or_default(),
        remote: endpoint(s.remote_endpoint),
        annotations,
        tags: s.tags.0,
        debug: s.debug.unwrap_or(false),
        shared: s.shared.unwrap_or(false),
    })
}

/// The spans of a request, or what is wrong with it: the first span that fails fails the
/// request, as it does on Zipkin's own server.
pub fn decode(body: &[u8]) -> Result<Vec<ZipkinSpan<'_>>, String> {
    let spans: Vec<JsonSpan<'_>> =
        serde_json::from_slice(body).map_err(|e| format!("invalid Zipkin JSON: {e}"))?;
    spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| span(s).map_err(|e| format!("span {i}: {e}")))
        .collect()
}
