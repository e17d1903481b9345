//! The `Frame` tree: every RESP2 and RESP3 type, and its encoding.

use bytes::{BufMut, Bytes, BytesMut};

use super::write::{format_double, write_line_len, write_line_num};

/// One RESP2/RESP3 value. Payloads are `Bytes` slices of the read buffer. Each wire form has its
/// own variant (three nulls, doubles kept as their text) so that decoding then encoding gives
/// back the exact input bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+<text>\r\n`.
    Simple(Bytes),
    /// `-<text>\r\n`; the text starts with the error code (`ERR`, `WRONGTYPE`, ...).
    Error(Bytes),
    /// `:<n>\r\n`.
    Integer(i64),
    /// `$<len>\r\n<data>\r\n`.
    Bulk(Bytes),
    /// RESP2 null bulk string `$-1\r\n`.
    NullBulk,
    /// RESP2 null array `*-1\r\n`.
    NullArray,
    /// RESP3 null `_\r\n`.
    Null,
    /// `*<n>\r\n` then `n` frames.
    Array(Vec<Frame>),
    /// RESP3 `%<n>\r\n` then `n` key/value pairs.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~<n>\r\n` then `n` frames.
    Set(Vec<Frame>),
    /// RESP3 out-of-band `><n>\r\n` then `n` frames (pub/sub messages, invalidations).
    Push(Vec<Frame>),
    /// RESP3 `|<n>\r\n` then `n` pairs of attributes, then the value they describe.
    Attribute {
        /// The attribute pairs.
        attributes: Vec<(Frame, Frame)>,
        /// The frame that follows the attributes on the wire.
        value: Box<Frame>,
    },
    /// RESP3 `,<text>\r\n`, kept as its text (`1.5`, `inf`, `-inf`, `nan`); see [`Frame::double`].
    Double(Bytes),
    /// RESP3 `(<digits>\r\n`, kept as its text.
    BigNumber(Bytes),
    /// RESP3 `#t\r\n` / `#f\r\n`.
    Boolean(bool),
    /// RESP3 `=<len>\r\n<fmt>:<text>\r\n`, e.g. format `txt` or `mkd`.
    Verbatim {
        /// The three-byte format.
        format: [u8; 3],
        /// The text after `<fmt>:`.
        text: Bytes,
    },
    /// RESP3 `!<len>\r\n<text>\r\n`.
    BlobError(Bytes),
}

impl Frame {
    /// A double frame from a number (`inf`, `-inf`, `nan` for the special values).
    pub fn double(v: f64) -> Frame {
        Frame::Double(Bytes::from(format_double(v)))
    }

    /// A bulk string frame copying `data`.
    pub fn bulk(data: impl AsRef<[u8]>) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(data.as_ref()))
    }

    /// The value of a `Double` frame, `None` for other frames.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Frame::Double(t) => std::str::from_utf8(t).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The payload of a simple string, bulk string or verbatim string.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::Verbatim { text: b, .. } => Some(b),
            _ => None,
        }
    }

    /// True for `Error` and `BlobError`.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_) | Frame::BlobError(_))
    }

    /// True for the three null forms.
    pub fn is_null(&self) -> bool {
        matches!(self, Frame::Null | Frame::NullBulk | Frame::NullArray)
    }

    /// Appends the wire bytes of this frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Frame::Simple(s) => line(buf, b'+', s),
            Frame::Error(s) => line(buf, b'-', s),
            Frame::Integer(n) => write_line_num(buf, b':', *n),
            Frame::Bulk(d) => blob(buf, b'$', d),
            Frame::NullBulk => buf.put_slice(b"$-1\r\n"),
            Frame::NullArray => buf.put_slice(b"*-1\r\n"),
            Frame::Null => buf.put_slice(b"_\r\n"),
            Frame::Array(items) => seq(buf, b'*', items),
            Frame::Set(items) => seq(buf, b'~', items),
            Frame::Push(items) => seq(buf, b'>', items),
            Frame::Map(pairs) => pairs_of(buf, b'%', pairs),
            Frame::Attribute { attributes, value } => {
                pairs_of(buf, b'|', attributes);
                value.encode(buf);
            }
            Frame::Double(t) => line(buf, b',', t),
            Frame::BigNumber(t) => line(buf, b'(', t),
            Frame::Boolean(v) => buf.put_slice(if *v { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::Verbatim { format, text } => {
                write_line_len(buf, b'=', text.len() + 4);
                buf.reserve(text.len() + 6);
                buf.put_slice(format);
                buf.put_u8(b':');
                buf.put_slice(text);
                buf.put_slice(b"\r\n");
            }
            Frame::BlobError(d) => blob(buf, b'!', d),
        }
    }

    /// The wire bytes of this frame as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

fn line(buf: &mut BytesMut, prefix: u8, s: &[u8]) {
    buf.reserve(s.len() + 3);
    buf.put_u8(prefix);
    buf.put_slice(s);
    buf.put_slice(b"\r\n");
}

fn blob(buf: &mut BytesMut, prefix: u8, d: &[u8]) {
    write_line_len(buf, prefix, d.len());
    buf.reserve(d.len() + 2);
    buf.put_slice(d);
    buf.put_slice(b"\r\n");
}

fn seq(buf: &mut BytesMut, prefix: u8, items: &[Frame]) {
    write_line_len(buf, prefix, items.len());
    for f in items {
        f.encode(buf);
    }
}

fn pairs_of(buf: &mut BytesMut, prefix: u8, pairs: &[(Frame, Frame)]) {
    write_line_len(buf, prefix, pairs.len());
    for (k, v) in pairs {
        k.encode(buf);
        v.encode(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: &Frame) -> Vec<u8> {
        f.to_bytes().to_vec()
    }

    #[test]
    fn encodes_every_type() {
        let s = |x: &'static str| Bytes::from_static(x.as_bytes());
        assert_eq!(enc(&Frame::Simple(s("OK"))), b"+OK\r\n");
        assert_eq!(enc(&Frame::Error(s("ERR no"))), b"-ERR no\r\n");
        assert_eq!(enc(&Frame::Integer(-3)), b":-3\r\n");
        assert_eq!(enc(&Frame::bulk("hi")), b"$2\r\nhi\r\n");
        assert_eq!(enc(&Frame::NullBulk), b"$-1\r\n");
        assert_eq!(enc(&Frame::NullArray), b"*-1\r\n");
        assert_eq!(enc(&Frame::Null), b"_\r\n");
        assert_eq!(
            enc(&Frame::Array(vec![Frame::Integer(1), Frame::Null])),
            b"*2\r\n:1\r\n_\r\n"
        );
        assert_eq!(enc(&Frame::Set(vec![])), b"~0\r\n");
        assert_eq!(
            enc(&Frame::Push(vec![Frame::bulk("message")])),
            b">1\r\n$7\r\nmessage\r\n"
        );
        assert_eq!(
            enc(&Frame::Map(vec![(
                Frame::Simple(s("a")),
                Frame::Boolean(true)
            )])),
            b"%1\r\n+a\r\n#t\r\n"
        );
        assert_eq!(
            enc(&Frame::Attribute {
                attributes: vec![(Frame::Simple(s("ttl")), Frame::Integer(5))],
                value: Box::new(Frame::Boolean(false)),
            }),
            b"|1\r\n+ttl\r\n:5\r\n#f\r\n"
        );
        assert_eq!(enc(&Frame::double(3.25)), b",3.25\r\n");
        assert_eq!(enc(&Frame::double(f64::INFINITY)), b",inf\r\n");
        assert_eq!(enc(&Frame::BigNumber(s("-123"))), b"(-123\r\n");
        assert_eq!(
            enc(&Frame::Verbatim {
                format: *b"txt",
                text: s("hello")
            }),
            b"=9\r\ntxt:hello\r\n"
        );
        assert_eq!(enc(&Frame::BlobError(s("X y"))), b"!3\r\nX y\r\n");
    }

    #[test]
    fn helpers() {
        assert_eq!(Frame::double(-0.5).as_f64(), Some(-0.5));
        assert!(Frame::double(f64::NAN).as_f64().is_some_and(f64::is_nan));
        assert_eq!(Frame::Integer(1).as_f64(), None);
        assert!(Frame::BlobError(Bytes::new()).is_error());
        assert!(Frame::NullArray.is_null());
        assert!(!Frame::Integer(0).is_null());
    }
}
