//! Bounds-checked payload reader and the length-encoded integer/string helpers.

use bytes::{BufMut, Bytes, BytesMut};

use super::{MysqlError, Result};

/// The length-encoded-integer byte that marks SQL NULL in a text row.
pub const NULL_MARKER: u8 = 0xFB;

/// A cursor over a payload; every read is bounds-checked and string reads slice the `Bytes`
/// instead of copying.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// Reads from the start of `buf`.
    pub fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Current offset in the payload.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next byte without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Fails unless everything has been consumed.
    pub fn finish(&self, what: &'static str) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(MysqlError::TrailingBytes(n, what)),
        }
    }

    /// Reads `n` bytes as a slice of the payload.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes> {
        if self.remaining() < n {
            return Err(MysqlError::Truncated(what));
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// Reads `n` bytes as a borrowed slice.
    pub fn slice(&mut self, n: usize, what: &'static str) -> Result<&[u8]> {
        if self.remaining() < n {
            return Err(MysqlError::Truncated(what));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let s = self.slice(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<()> {
        self.slice(n, what).map(|_| ())
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        let b = self.peek().ok_or(MysqlError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    /// Little-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// Little-endian 3-byte integer.
    pub fn u24(&mut self, what: &'static str) -> Result<u32> {
        let [a, b, c] = self.array(what)?;
        Ok(u32::from_le_bytes([a, b, c, 0]))
    }

    /// Little-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// Little-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A length-encoded integer; `0xFB` (NULL) and `0xFF` (ERR) are rejected here.
    pub fn lenenc_int(&mut self, what: &'static str) -> Result<u64> {
        match self.lenenc_int_or_null(what)? {
            Some(v) => Ok(v),
            None => Err(MysqlError::Malformed(format!(
                "NULL where {what} was expected"
            ))),
        }
    }

    /// A length-encoded integer, or `None` for the NULL marker `0xFB`.
    pub fn lenenc_int_or_null(&mut self, what: &'static str) -> Result<Option<u64>> {
        let first = self.u8(what)?;
        Ok(Some(match first {
            0..=0xFA => u64::from(first),
            NULL_MARKER => return Ok(None),
            0xFC => u64::from(self.u16(what)?),
            0xFD => u64::from(self.u24(what)?),
            0xFE => self.u64(what)?,
            0xFF => {
                return Err(MysqlError::Malformed(format!(
                    "0xff is not a length-encoded integer ({what})"
                )));
            }
        }))
    }

    /// A length-encoded string as a slice of the payload.
    pub fn lenenc_bytes(&mut self, what: &'static str) -> Result<Bytes> {
        let n = self.lenenc_int(what)?;
        let n = usize::try_from(n).map_err(|_| MysqlError::Truncated(what))?;
        self.bytes(n, what)
    }

    /// A length-encoded string or NULL (text rows).
    pub fn lenenc_bytes_or_null(&mut self, what: &'static str) -> Result<Option<Bytes>> {
        match self.lenenc_int_or_null(what)? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| MysqlError::Truncated(what))?;
                self.bytes(n, what).map(Some)
            }
        }
    }

    /// A NUL-terminated string (without the NUL).
    pub fn nul_bytes(&mut self, what: &'static str) -> Result<Bytes> {
        let rest = &self.buf[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(MysqlError::Truncated(what))?;
        let out = self.bytes(n, what)?;
        self.pos += 1;
        Ok(out)
    }

    /// A NUL-terminated string, also accepting end-of-payload as the terminator (some servers
    /// omit the final NUL of the plugin name).
    pub fn nul_or_eof_bytes(&mut self, what: &'static str) -> Result<Bytes> {
        if self.buf[self.pos..].contains(&0) {
            self.nul_bytes(what)
        } else {
            Ok(self.rest())
        }
    }
}

/// A length-encoded integer read in place from `p` at `*pos` (advanced past it): the borrowed,
/// allocation-free twin of [`Reader::lenenc_int`] for the hot path (reply tracking), with the
/// same rules (`0xFB` and `0xFF` rejected, truncation an error).
#[inline]
pub fn lenenc_int_at(p: &[u8], pos: &mut usize, what: &'static str) -> Result<u64> {
    let at = *pos;
    let first = *p.get(at).ok_or(MysqlError::Truncated(what))?;
    let width = match first {
        0..=0xFA => {
            *pos = at + 1;
            return Ok(u64::from(first));
        }
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        NULL_MARKER => {
            return Err(MysqlError::Malformed(format!(
                "NULL where {what} was expected"
            )));
        }
        0xFF => {
            return Err(MysqlError::Malformed(format!(
                "0xff is not a length-encoded integer ({what})"
            )));
        }
    };
    let bytes = p
        .get(at + 1..at + 1 + width)
        .ok_or(MysqlError::Truncated(what))?;
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(bytes);
    *pos = at + 1 + width;
    Ok(u64::from_le_bytes(v))
}

/// A little-endian u16 read in place from `p` at `*pos` (advanced past it).
#[inline]
pub fn u16_at(p: &[u8], pos: &mut usize, what: &'static str) -> Result<u16> {
    let b = p.get(*pos..*pos + 2).ok_or(MysqlError::Truncated(what))?;
    *pos += 2;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

/// A length-encoded string read in place from `p` at `*pos` (advanced past it).
pub fn lenenc_slice_at<'a>(p: &'a [u8], pos: &mut usize, what: &'static str) -> Result<&'a [u8]> {
    let n = lenenc_int_at(p, pos, what)?;
    let n = usize::try_from(n).map_err(|_| MysqlError::Truncated(what))?;
    let end = pos.checked_add(n).ok_or(MysqlError::Truncated(what))?;
    let s = p.get(*pos..end).ok_or(MysqlError::Truncated(what))?;
    *pos = end;
    Ok(s)
}

/// Number of bytes `v` takes as a length-encoded integer.
pub fn lenenc_int_len(v: u64) -> usize {
    match v {
        0..=0xFA => 1,
        0xFB..=0xFFFF => 3,
        0x1_0000..=0xFF_FFFF => 4,
        _ => 9,
    }
}

/// Appends `v` as a length-encoded integer.
pub fn put_lenenc_int(out: &mut BytesMut, v: u64) {
    match v {
        0..=0xFA => out.put_u8(v as u8),
        0xFB..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(v as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(v);
        }
    }
}

/// Appends `s` as a length-encoded string.
pub fn put_lenenc_bytes(out: &mut BytesMut, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.put_slice(s);
}

/// Appends `s` followed by a NUL.
pub fn put_nul_bytes(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_int_exact_bytes() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0]),
            (250, &[0xFA]),
            (251, &[0xFC, 0xFB, 0x00]),
            (0xFFFF, &[0xFC, 0xFF, 0xFF]),
            (0x10000, &[0xFD, 0x00, 0x00, 0x01]),
            (0xFF_FFFF, &[0xFD, 0xFF, 0xFF, 0xFF]),
            (0x100_0000, &[0xFE, 0, 0, 0, 1, 0, 0, 0, 0]),
        ];
        for (v, bytes) in cases {
            let mut out = BytesMut::new();
            put_lenenc_int(&mut out, *v);
            assert_eq!(&out[..], *bytes, "{v}");
            assert_eq!(lenenc_int_len(*v), bytes.len());
            let mut r = Reader::new(Bytes::copy_from_slice(bytes));
            assert_eq!(r.lenenc_int("x").unwrap(), *v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn truncated_reads_are_errors() {
        let mut r = Reader::new(Bytes::from_static(&[0xFC, 0x01]));
        assert_eq!(r.lenenc_int("len"), Err(MysqlError::Truncated("len")));
        let mut r = Reader::new(Bytes::from_static(&[0x05, b'a']));
        assert!(r.lenenc_bytes("s").is_err());
        let mut r = Reader::new(Bytes::from_static(b"abc"));
        assert!(r.nul_bytes("s").is_err());
        let mut r = Reader::new(Bytes::from_static(&[0xFB]));
        assert_eq!(r.lenenc_bytes_or_null("v").unwrap(), None);
    }
}
