//! The protobuf wire format, only as much of it as OTLP needs: varints, length-delimited fields,
//! fixed64 and fixed32, and skipping of any field a reader does not know (including groups'
//! obsolete wire types, which are refused). No reflection, no schema: each message decoder is a
//! loop over `(field number, wire type)` keys.

use super::OtlpError;

/// Wire type 0: varint.
pub const VARINT: u8 = 0;
/// Wire type 1: 8 bytes little-endian.
pub const FIXED64: u8 = 1;
/// Wire type 2: length-delimited (strings, bytes, nested messages, packed repeated).
pub const LEN: u8 = 2;
/// Wire type 5: 4 bytes little-endian.
pub const FIXED32: u8 = 5;

/// A cursor over one message's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a whole message.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether every byte has been read.
    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// A varint (at most 10 bytes; the 10th may only carry the top bit of a u64).
    pub fn varint(&mut self) -> Result<u64, OtlpError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(OtlpError::Truncated("varint"))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(OtlpError::Malformed("varint longer than 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(OtlpError::Malformed("varint longer than 10 bytes"))
    }

    /// The next field's key: `(field number, wire type)`.
    pub fn key(&mut self) -> Result<(u32, u8), OtlpError> {
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(OtlpError::Malformed("field number out of range"));
        }
        Ok((field as u32, (k & 7) as u8))
    }

    /// A length-delimited field's payload.
    pub fn bytes(&mut self) -> Result<&'a [u8], OtlpError> {
        let n = self.varint()?;
        let rest = self.buf.len() - self.pos;
        if n > rest as u64 {
            return Err(OtlpError::Truncated("length-delimited field"));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// 8 little-endian bytes.
    pub fn fixed64(&mut self) -> Result<u64, OtlpError> {
        let s = self
            .buf
            .get(self.pos..self.pos + 8)
            .ok_or(OtlpError::Truncated("fixed64"))?;
        self.pos += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    /// 4 little-endian bytes.
    pub fn fixed32(&mut self) -> Result<u32, OtlpError> {
        let s = self
            .buf
            .get(self.pos..self.pos + 4)
            .ok_or(OtlpError::Truncated("fixed32"))?;
        self.pos += 4;
        let mut a = [0u8; 4];
        a.copy_from_slice(s);
        Ok(u32::from_le_bytes(a))
    }

    /// Skips a field of wire type `wt` whose key was just read.
    pub fn skip(&mut self, wt: u8) -> Result<(), OtlpError> {
        match wt {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed64().map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.fixed32().map(drop),
            _ => Err(OtlpError::Malformed("unsupported wire type")),
        }
    }

    /// Reads a field expected to be of wire type `want`, or refuses a different one.
    pub fn check_wire_type(&self, got: u8, want: u8, what: &'static str) -> Result<(), OtlpError> {
        if got == want {
            Ok(())
        } else {
            Err(OtlpError::WrongType(what))
        }
    }
}

/// Appends protobuf fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    /// The encoded bytes.
    pub buf: Vec<u8>,
}

impl Writer {
    /// Appends a raw varint.
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// Appends a field key.
    pub fn key(&mut self, field: u32, wt: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wt));
    }

    /// A varint field (omitted when 0, as proto3 does).
    pub fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v);
        }
    }

    /// A fixed64 field (omitted when 0).
    pub fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, FIXED64);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A bytes or string field (omitted when empty).
    pub fn bytes(&mut self, field: u32, v: &[u8]) {
        if !v.is_empty() {
            self.key(field, LEN);
            self.varint(v.len() as u64);
            self.buf.extend_from_slice(v);
        }
    }

    /// A nested message written by `f` (always present, even when empty).
    ///
    /// Written in place: `f` appends to this buffer after a one-byte length slot, which takes the
    /// length when it is under 128 bytes (most attributes and values) and is widened otherwise by
    /// moving the body once. An inner `Writer` per message (allocated, grown and copied at every
    /// level) cost more than the rest of a span's encoding (callgrind, bench `furrow-traced`).
    pub fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer)) {
        self.key(field, LEN);
        let at = self.buf.len();
        self.buf.push(0);
        f(self);
        let len = self.buf.len() - at - 1;
        if len < 0x80 {
            self.buf[at] = len as u8;
            return;
        }
        let mut v = len as u64;
        let mut head = [0u8; 10];
        let mut n = 0;
        while v >= 0x80 {
            head[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        head[n] = v as u8;
        n += 1;
        self.buf.splice(at..at + 1, head[..n].iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_messages_are_length_prefixed_in_place() {
        // Bodies around the one-byte length boundary, and nesting: the same bytes as an inner
        // writer copied in would give.
        for n in [0usize, 1, 127, 128, 129, 300, 16_383, 16_384, 70_000] {
            let body = vec![0xABu8; n];
            let mut w = Writer::default();
            w.uint(1, 7);
            w.message(2, |w| {
                w.bytes(3, &body);
                w.message(4, |w| w.uint(5, 9));
            });
            w.uint(6, 1);
            let mut want = Writer::default();
            want.uint(1, 7);
            let mut inner = Writer::default();
            inner.bytes(3, &body);
            inner.key(4, LEN);
            inner.varint(2);
            inner.uint(5, 9);
            want.key(2, LEN);
            want.varint(inner.buf.len() as u64);
            want.buf.extend_from_slice(&inner.buf);
            want.uint(6, 1);
            assert_eq!(w.buf, want.buf, "body of {n} bytes");
        }
    }

    #[test]
    fn varints_round_trip_and_refuse_overlong() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut w = Writer::default();
            w.varint(v);
            let mut r = Reader::new(&w.buf);
            assert_eq!(r.varint().unwrap(), v);
            assert!(r.done());
        }
        // 300 = ac 02 (the protobuf documentation's example)
        assert_eq!(Reader::new(&[0xac, 0x02]).varint().unwrap(), 300);
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        assert!(Reader::new(&[0x80]).varint().is_err());
    }

    #[test]
    fn lengths_past_the_end_are_truncation() {
        let mut r = Reader::new(&[0x0a, 0x05, b'a']);
        assert_eq!(r.key().unwrap(), (1, LEN));
        assert_eq!(
            r.bytes(),
            Err(OtlpError::Truncated("length-delimited field"))
        );
        // A huge length never allocates.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(r.bytes().is_err());
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        let mut w = Writer::default();
        w.uint(20, 5);
        w.fixed64(21, 7);
        w.bytes(22, b"xyz");
        w.key(23, FIXED32);
        w.buf.extend_from_slice(&[1, 2, 3, 4]);
        let mut r = Reader::new(&w.buf);
        while !r.done() {
            let (_, wt) = r.key().unwrap();
            r.skip(wt).unwrap();
        }
        // Wire types 3/4 (groups) and 6/7 do not exist in proto3.
        let mut r = Reader::new(&[(1 << 3) | 3]);
        let (_, wt) = r.key().unwrap();
        assert!(r.skip(wt).is_err());
        assert!(Reader::new(&[0x00]).key().is_err(), "field number 0");
    }
}
