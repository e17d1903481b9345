//! `FrameDecoder`: complete RESP2/RESP3 frames out of a read buffer.

use bytes::{Bytes, BytesMut};

use super::scan::{find_crlf, valid_big_number, valid_double};
use super::{Frame, Limits, ReplyScanner, RespError, parse_i64};

/// Resumable decoder of [`Frame`]s. It first finds the end of a frame with a [`ReplyScanner`]
/// (so a frame split over many reads is checked once), then splits those bytes off the buffer
/// and builds the frame with payloads sliced out of them (no copy).
#[derive(Debug, Clone, Default)]
pub struct FrameDecoder {
    scanner: ReplyScanner,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            scanner: ReplyScanner::new(limits),
        }
    }

    /// Removes and returns the first complete frame of `buf`; `Ok(None)` if there is none yet
    /// (the caller appends more bytes and calls again).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, RespError> {
        let Some(n) = self.scanner.scan(buf)? else {
            return Ok(None);
        };
        let bytes = buf.split_to(n).freeze();
        parse_complete(&bytes).map(Some)
    }

    /// Forgets a frame in progress (use when the buffer is discarded).
    pub fn reset(&mut self) {
        self.scanner.reset();
    }
}

/// Builds the frame that exactly fills `bytes` (a span the scanner found complete).
fn parse_complete(bytes: &Bytes) -> Result<Frame, RespError> {
    let mut pos = 0;
    let frame = parse(bytes, &mut pos)?;
    if pos == bytes.len() {
        Ok(frame)
    } else {
        Err(RespError::ExpectedCrlf)
    }
}

/// The line after the type byte at `*pos`, advancing past its CRLF.
fn take_line(b: &Bytes, pos: &mut usize) -> Result<(usize, usize), RespError> {
    let start = *pos + 1;
    let cr = find_crlf(b, start)?.ok_or(RespError::ExpectedCrlf)?;
    *pos = cr + 2;
    Ok((start, cr))
}

/// A payload of `len` bytes then CRLF at `*pos`.
fn take_payload(b: &Bytes, pos: &mut usize, len: usize) -> Result<Bytes, RespError> {
    let start = *pos;
    let end = start.checked_add(len).ok_or(RespError::InvalidBulkLength)?;
    match b.get(end..end + 2) {
        Some(b"\r\n") => {}
        _ => return Err(RespError::ExpectedCrlf),
    }
    *pos = end + 2;
    Ok(b.slice(start..end))
}

fn take_count(b: &Bytes, pos: &mut usize) -> Result<(i64, usize), RespError> {
    let (s, e) = take_line(b, pos)?;
    let n = parse_i64(&b[s..e]).ok_or(RespError::InvalidMultibulkLength)?;
    // The scanner has checked counts against the limits; this only guards the preallocation.
    Ok((n, usize::try_from(n).unwrap_or(0).min(1024)))
}

/// Parses one frame at `*pos`. Recursion depth is bounded because the scanner has already
/// checked the nesting against `Limits::max_depth`.
fn parse(b: &Bytes, pos: &mut usize) -> Result<Frame, RespError> {
    let ty = *b.get(*pos).ok_or(RespError::ExpectedCrlf)?;
    Ok(match ty {
        b'+' | b'-' | b',' | b'(' => {
            let (s, e) = take_line(b, pos)?;
            let text = b.slice(s..e);
            match ty {
                b'+' => Frame::Simple(text),
                b'-' => Frame::Error(text),
                b',' if valid_double(&text) => Frame::Double(text),
                b',' => return Err(RespError::InvalidDouble),
                _ if valid_big_number(&text) => Frame::BigNumber(text),
                _ => return Err(RespError::InvalidBigNumber),
            }
        }
        b':' => {
            let (s, e) = take_line(b, pos)?;
            Frame::Integer(parse_i64(&b[s..e]).ok_or(RespError::InvalidInteger)?)
        }
        b'_' => {
            let (s, e) = take_line(b, pos)?;
            if s != e {
                return Err(RespError::InvalidNull);
            }
            Frame::Null
        }
        b'#' => {
            let (s, e) = take_line(b, pos)?;
            match &b[s..e] {
                b"t" => Frame::Boolean(true),
                b"f" => Frame::Boolean(false),
                _ => return Err(RespError::InvalidBoolean),
            }
        }
        b'$' | b'!' | b'=' => {
            let (s, e) = take_line(b, pos)?;
            let n = parse_i64(&b[s..e]).ok_or(RespError::InvalidBulkLength)?;
            if n == -1 && ty == b'$' {
                return Ok(Frame::NullBulk);
            }
            let len = usize::try_from(n).map_err(|_| RespError::InvalidBulkLength)?;
            let data = take_payload(b, pos, len)?;
            match ty {
                b'$' => Frame::Bulk(data),
                b'!' => Frame::BlobError(data),
                _ => match (data.get(..3), data.get(3)) {
                    (Some(f), Some(b':')) => {
                        let mut format = [0u8; 3];
                        format.copy_from_slice(f);
                        Frame::Verbatim {
                            format,
                            text: data.slice(4..),
                        }
                    }
                    _ => return Err(RespError::InvalidVerbatim),
                },
            }
        }
        b'*' | b'~' | b'>' => {
            let (n, cap) = take_count(b, pos)?;
            if n == -1 && ty == b'*' {
                return Ok(Frame::NullArray);
            }
            if n < 0 {
                return Err(RespError::InvalidMultibulkLength);
            }
            let mut items = Vec::with_capacity(cap);
            for _ in 0..n {
                items.push(parse(b, pos)?);
            }
            match ty {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                _ => Frame::Push(items),
            }
        }
        b'%' | b'|' => {
            let (n, cap) = take_count(b, pos)?;
            if n < 0 {
                return Err(RespError::InvalidMultibulkLength);
            }
            let mut pairs = Vec::with_capacity(cap);
            for _ in 0..n {
                let k = parse(b, pos)?;
                let v = parse(b, pos)?;
                pairs.push((k, v));
            }
            if ty == b'%' {
                Frame::Map(pairs)
            } else {
                Frame::Attribute {
                    attributes: pairs,
                    value: Box::new(parse(b, pos)?),
                }
            }
        }
        other => return Err(RespError::InvalidType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(input: &[u8]) -> Result<Option<Frame>, RespError> {
        FrameDecoder::default().decode(&mut BytesMut::from(input))
    }

    #[test]
    fn decodes_and_reencodes_every_type() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR unknown\r\n",
            b":-12\r\n",
            b"$3\r\nabc\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"%2\r\n+k\r\n~2\r\n#t\r\n#f\r\n:1\r\n,1.5\r\n",
            b">2\r\n+message\r\n(-123\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$2\r\nhi\r\n",
            b"*1\r\n|1\r\n+a\r\n+b\r\n_\r\n",
            b"=8\r\ntxt:abcd\r\n",
            b"!3\r\nERR\r\n",
            b"_\r\n",
            b",-inf\r\n",
        ];
        for c in cases {
            let mut buf = BytesMut::from(*c);
            buf.extend_from_slice(b":7\r\n");
            let mut d = FrameDecoder::default();
            let f = d.decode(&mut buf).unwrap().unwrap();
            assert_eq!(f.to_bytes().as_ref(), *c);
            assert_eq!(d.decode(&mut buf).unwrap(), Some(Frame::Integer(7)));
            assert_eq!(d.decode(&mut buf).unwrap(), None);
        }
    }

    #[test]
    fn values_are_decoded() {
        assert_eq!(
            decode_one(b"=8\r\nmkd:abcd\r\n").unwrap(),
            Some(Frame::Verbatim {
                format: *b"mkd",
                text: Bytes::from_static(b"abcd")
            })
        );
        assert_eq!(
            decode_one(b"%1\r\n$1\r\nk\r\n:5\r\n").unwrap(),
            Some(Frame::Map(vec![(Frame::bulk("k"), Frame::Integer(5))]))
        );
        assert_eq!(decode_one(b"*1\r\n$1\r\nk\r").unwrap(), None);
        assert_eq!(
            decode_one(b"*1\r\n$-1\r\n").unwrap(),
            Some(Frame::Array(vec![Frame::NullBulk]))
        );
    }

    #[test]
    fn payload_is_not_copied() {
        let mut buf = BytesMut::from(&b"$5\r\nhello\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let f = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        let Frame::Bulk(b) = f else {
            panic!("not bulk")
        };
        assert_eq!(b.as_ptr() as usize, base + 4);
    }
}
