//! The protobuf wire format, read in place: fields come out as borrowed slices of the request, so
//! decoding allocates nothing per field. Every protobuf receiver (OTLP, remote write) reads
//! through it.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
#[error("{0}")]
pub struct WireError(pub String);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> WireValue<'a> {
    pub fn bytes(self, what: &str) -> Result<&'a [u8], WireError> {
        match self {
            WireValue::Bytes(b) => Ok(b),
            _ => Err(WireError(format!(
                "{what}: expected a length-delimited field"
            ))),
        }
    }

    pub fn str(self, what: &str) -> Result<&'a str, WireError> {
        simdutf8::basic::from_utf8(self.bytes(what)?)
            .map_err(|_| WireError(format!("{what}: string is not valid UTF-8")))
    }

    pub fn varint(self, what: &str) -> Result<u64, WireError> {
        match self {
            WireValue::Varint(v) => Ok(v),
            _ => Err(WireError(format!("{what}: expected a varint field"))),
        }
    }

    pub fn fixed64(self, what: &str) -> Result<u64, WireError> {
        match self {
            WireValue::Fixed64(v) => Ok(v),
            _ => Err(WireError(format!("{what}: expected a fixed64 field"))),
        }
    }

    /// A `double` field, bit for bit (a stale marker's NaN stays that NaN).
    pub fn double(self, what: &str) -> Result<f64, WireError> {
        self.fixed64(what).map(f64::from_bits)
    }

    /// An `int64` field (two's complement in a varint).
    pub fn int64(self, what: &str) -> Result<i64, WireError> {
        self.varint(what).map(|v| v as i64)
    }

    /// A `sint32`/`sint64` field (zigzag).
    pub fn sint(self, what: &str) -> Result<i64, WireError> {
        self.varint(what).map(zigzag)
    }

    /// The values of a repeated varint field: packed (one length-delimited field) or not (this
    /// one value); both encodings are valid and a reader must take either.
    pub fn varints(self, what: &str, out: &mut Vec<u64>) -> Result<(), WireError> {
        match self {
            WireValue::Varint(v) => out.push(v),
            WireValue::Bytes(b) => {
                let mut r = Reader::new(b);
                while r.pos < b.len() {
                    out.push(r.varint()?);
                }
            }
            _ => return Err(WireError(format!("{what}: expected varints"))),
        }
        Ok(())
    }

    /// The values of a repeated `double` field, packed or not.
    pub fn doubles(self, what: &str, out: &mut Vec<f64>) -> Result<(), WireError> {
        match self {
            WireValue::Fixed64(v) => out.push(f64::from_bits(v)),
            WireValue::Bytes(b) => {
                if b.len() % 8 != 0 {
                    return Err(WireError(format!(
                        "{what}: packed doubles of {} bytes, not a multiple of 8",
                        b.len()
                    )));
                }
                out.extend(
                    b.chunks_exact(8).map(|c| {
                        f64::from_bits(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    }),
                );
            }
            _ => return Err(WireError(format!("{what}: expected doubles"))),
        }
        Ok(())
    }
}

/// Zigzag decoding of `sint32`/`sint64`.
pub fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Iterates the fields of one message.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(WireError(format!("truncated varint at byte {}", self.pos)));
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError(format!(
            "varint longer than 10 bytes at byte {}",
            self.pos
        )))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| {
                WireError(format!(
                    "truncated message: field of {n} bytes at byte {} runs past the end ({} bytes)",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next (field number, value), or `None` at the end of the message.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(u32, WireValue<'a>)>, WireError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3)
            .ok()
            .filter(|f| *f != 0)
            .ok_or_else(|| WireError(format!("invalid field number in key {key}")))?;
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                WireValue::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| WireError(format!("length {len} does not fit in memory")))?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                WireValue::Fixed32(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
            }
            t => {
                return Err(WireError(format!(
                    "unsupported wire type {t} for field {field}"
                )))
            }
        };
        Ok(Some((field, value)))
    }
}

/// Appends protobuf fields to a buffer; enough for the small messages Sightline answers with.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn varint_field(&mut self, field: u32, v: u64) {
        self.varint(u64::from(field) << 3);
        self.varint(v);
    }

    pub fn double_field(&mut self, field: u32, v: f64) {
        self.fixed64_field(field, v.to_bits());
    }

    pub fn fixed64_field(&mut self, field: u32, v: u64) {
        self.varint((u64::from(field) << 3) | 1);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bytes_field(&mut self, field: u32, b: &[u8]) {
        self.varint((u64::from(field) << 3) | 2);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let mut w = Writer::default();
        w.varint_field(1, 300);
        w.bytes_field(2, b"hello");
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.next().unwrap(), Some((1, WireValue::Varint(300))));
        assert_eq!(r.next().unwrap(), Some((2, WireValue::Bytes(b"hello"))));
        assert_eq!(r.next().unwrap(), None);
    }

    #[test]
    fn packed_and_unpacked_repeated_fields_read_alike() {
        let mut packed = Writer::default();
        packed.varint(1);
        packed.varint(300);
        let mut out = Vec::new();
        WireValue::Bytes(&packed.buf)
            .varints("x", &mut out)
            .unwrap();
        WireValue::Varint(7).varints("x", &mut out).unwrap();
        assert_eq!(out, vec![1, 300, 7]);
        let mut d = Vec::new();
        let bytes: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        WireValue::Bytes(&bytes).doubles("d", &mut d).unwrap();
        assert_eq!(d, vec![1.5, -2.0]);
        assert!(WireValue::Bytes(&bytes[..5]).doubles("d", &mut d).is_err());
        assert_eq!((zigzag(0), zigzag(1), zigzag(2), zigzag(3)), (0, -1, 1, -2));
    }

    #[test]
    fn truncation_is_an_error_naming_the_position() {
        let mut w = Writer::default();
        w.bytes_field(2, b"hello");
        let cut = &w.buf[..4];
        let err = Reader::new(cut).next().unwrap_err();
        assert!(err.0.contains("truncated"), "{err}");
        assert!(Reader::new(&[0x80, 0x80]).next().is_err());
        assert!(Reader::new(&[0x0b])
            .next()
            .unwrap_err()
            .0
            .contains("wire type 3"));
    }
}
