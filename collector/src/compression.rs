//! Request bodies, decompressed with a hard limit on the decompressed size, so a gzip or snappy
//! bomb costs at most the limit in memory.

use std::io::Read;

use bytes::Bytes;
use flate2::read::GzDecoder;

use sightline_storage::Reservation;

use crate::error::IngestError;

/// The OTLP limit on a request, after decompression.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// Snappy's block format (no framing), as Prometheus remote write and SOFALookout send it.
    Snappy,
}

impl Encoding {
    /// The `Content-Encoding` (or `grpc-encoding`) header, among those a protocol takes.
    pub fn parse(header: Option<&str>, accepted: &[Encoding]) -> Result<Self, IngestError> {
        let encoding = match header.map(|h| h.trim().to_ascii_lowercase()) {
            None => Encoding::Identity,
            Some(h) if h.is_empty() || h == "identity" => Encoding::Identity,
            Some(h) if h == "gzip" || h == "x-gzip" => Encoding::Gzip,
            Some(h) if h == "snappy" => Encoding::Snappy,
            Some(h) => return Err(IngestError::UnsupportedEncoding(h, names(accepted))),
        };
        if !accepted.contains(&encoding) {
            return Err(IngestError::UnsupportedEncoding(
                encoding.name().to_string(),
                names(accepted),
            ));
        }
        Ok(encoding)
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Snappy => "snappy",
        }
    }
}

fn names(accepted: &[Encoding]) -> String {
    accepted
        .iter()
        .map(|e| e.name())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn decode_body(body: Bytes, encoding: Encoding, limit: usize) -> Result<Bytes, IngestError> {
    match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(IngestError::TooLarge {
                    limit,
                    decompressed: false,
                });
            }
            Ok(body)
        }
        Encoding::Gzip => {
            let mut out = Vec::with_capacity((body.len() * 4).min(limit));
            GzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| IngestError::Decode(format!("invalid gzip body: {e}")))?;
            if out.len() > limit {
                return Err(IngestError::TooLarge {
                    limit,
                    decompressed: true,
                });
            }
            Ok(Bytes::from(out))
        }
        Encoding::Snappy => {
            // The block format declares its length up front: a bomb is refused before any
            // memory is taken for it.
            let declared = snap::raw::decompress_len(&body)
                .map_err(|e| IngestError::Decode(format!("invalid snappy body: {e}")))?;
            if declared > limit {
                return Err(IngestError::TooLarge {
                    limit,
                    decompressed: true,
                });
            }
            snap::raw::Decoder::new()
                .decompress_vec(&body)
                .map(Bytes::from)
                .map_err(|e| IngestError::Decode(format!("invalid snappy body: {e}")))
        }
    }
}

/// Resizes `held` to `bytes`, or fails when the memory budget has no room for the growth.
fn hold(held: &mut Reservation, bytes: usize) -> Result<(), IngestError> {
    if bytes > held.bytes() && !held.try_grow(bytes - held.bytes()) {
        return Err(IngestError::Saturated("memory budget"));
    }
    held.shrink_to(bytes);
    Ok(())
}

/// [`decode_body`], keeping `held` the size of what is in memory: the raw body, then only the
/// body that will be decoded (both, briefly, while gzip inflates).
pub fn decode_body_held(
    raw: Bytes,
    encoding: Encoding,
    limit: usize,
    mut held: Reservation,
) -> Result<(Bytes, Reservation), IngestError> {
    hold(&mut held, raw.len())?;
    let body = decode_body(raw, encoding, limit)?;
    hold(&mut held, body.len())?;
    Ok((body, held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 100 << 10);
        let err = decode_body(bomb, Encoding::Gzip, 1 << 20).unwrap_err();
        assert!(matches!(
            err,
            IngestError::TooLarge {
                decompressed: true,
                ..
            }
        ));
    }

    #[test]
    fn garbage_gzip_is_a_decode_error() {
        let err =
            decode_body(Bytes::from_static(b"not gzip"), Encoding::Gzip, 1 << 20).unwrap_err();
        assert_eq!(err.http_status(), 400);
        let ok = decode_body(gzip(b"hello"), Encoding::Gzip, 1 << 20).unwrap();
        assert_eq!(&ok[..], b"hello");
    }

    #[test]
    fn the_budget_holds_the_body_once() {
        let budget = sightline_storage::MemoryBudget::new(1 << 20);
        let held = budget.try_reserve(0).unwrap();
        let (body, held) =
            decode_body_held(gzip(&[7u8; 4096]), Encoding::Gzip, 1 << 20, held).unwrap();
        assert_eq!(body.len(), 4096);
        assert_eq!((held.bytes(), budget.used()), (4096, 4096));
        drop(held);
        let held = budget.try_reserve(0).unwrap();
        let err = decode_body_held(
            Bytes::from(vec![0u8; 2 << 20]),
            Encoding::Identity,
            4 << 20,
            held,
        )
        .unwrap_err();
        assert!(matches!(err, IngestError::Saturated(_)));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn encodings() {
        let otlp = [Encoding::Identity, Encoding::Gzip];
        assert_eq!(Encoding::parse(None, &otlp).unwrap(), Encoding::Identity);
        assert_eq!(
            Encoding::parse(Some("GZIP"), &otlp).unwrap(),
            Encoding::Gzip
        );
        let err = Encoding::parse(Some("br"), &otlp).unwrap_err();
        assert_eq!(err.http_status(), 415);
        assert_eq!(
            err.to_string(),
            "unsupported content encoding \"br\": use identity, gzip"
        );
        assert!(Encoding::parse(Some("snappy"), &otlp).is_err());
        assert_eq!(
            Encoding::parse(Some("snappy"), &[Encoding::Snappy]).unwrap(),
            Encoding::Snappy
        );
    }

    #[test]
    fn snappy_bomb_is_refused_by_its_declared_length() {
        let big = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 8 << 20])
            .unwrap();
        assert!(big.len() < 1 << 20);
        let err = decode_body(Bytes::from(big.clone()), Encoding::Snappy, 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                IngestError::TooLarge {
                    decompressed: true,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            decode_body(Bytes::from(big), Encoding::Snappy, 8 << 20)
                .unwrap()
                .len(),
            8 << 20
        );
        // A varint header claiming 4 GiB with no data behind it.
        let lie = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode_body(lie, Encoding::Snappy, 1 << 20).is_err());
        let garbage = decode_body(Bytes::from_static(b"\x05abc"), Encoding::Snappy, 1 << 20);
        assert_eq!(garbage.unwrap_err().http_status(), 400);
    }
}
