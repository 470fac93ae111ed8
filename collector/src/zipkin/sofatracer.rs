//! SOFATracer's ids as its Zipkin reporter sends them. The reporter hashes every span id with
//! FNV-1a 64 and keeps the originals in the tags `origin.span.id` and `origin.parent.span.id`.
//! The mapping here is the one `sightline-instrument` applies to SOFATracer headers
//! (`instrumentation/src/propagation/sofa.rs`), so that spans of a trace that crosses a Java
//! service and a Rust service link up: a 16-hex-digit id (what a B3 or Rust caller sent) is
//! taken as it is, any other id is hashed. The two copies share their test vectors; the
//! collector cannot depend on the instrumentation crate.

/// The tag that holds a span's original id.
pub const ORIGIN_SPAN_ID: &str = "origin.span.id";
/// The tag that holds its parent's original id (`""` on a root).
pub const ORIGIN_PARENT_SPAN_ID: &str = "origin.parent.span.id";
/// The id SOFATracer gives the first span of a trace.
pub const ROOT_SPAN_ID: &str = "0";

/// The stored id of a SOFATracer span id.
pub fn span_id(id: &str) -> [u8; 8] {
    if id.len() == 16 {
        if let Ok(v) = u64::from_str_radix(id, 16) {
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }
    // Java's String.charAt: UTF-16 code units.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for unit in id.encode_utf16() {
        hash ^= u64::from(unit);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_ids_hash_as_the_reporter_hashes_them() {
        // From SOFATracer's ZipkinV2SpanAdapter.FNV64HashCode, as in sightline-instrument.
        for (dotted, hex) in [
            ("0", "af63ad4c86019caf"),
            ("0.1", "4e18dd181d0a2066"),
            ("0.1.1", "b1ecc5b0e1cf206b"),
        ] {
            assert_eq!(
                span_id(dotted),
                u64::from_str_radix(hex, 16).unwrap().to_be_bytes()
            );
        }
        assert_eq!(
            span_id("00f067aa0ba902b7"),
            0x00f0_67aa_0ba9_02b7u64.to_be_bytes()
        );
    }
}
