//! Direct writers for the hot path: one reply element straight into an output buffer.

use bytes::{BufMut, BytesMut};

/// The protocol version a client negotiated (`HELLO 3` switches to RESP3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RespVersion {
    /// RESP2, the default of every new connection.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// Writes `<prefix><n>\r\n`, the header line of most RESP types.
#[inline]
pub(crate) fn write_line_num(buf: &mut BytesMut, prefix: u8, n: i64) {
    let mut tmp = [0u8; 20];
    buf.reserve(24);
    buf.put_u8(prefix);
    if n < 0 {
        buf.put_u8(b'-');
    }
    buf.put_slice(crate::decimal(n.unsigned_abs(), &mut tmp));
    buf.put_slice(b"\r\n");
}

/// Writes `<prefix><n>\r\n` for a non-negative count.
#[inline]
pub(crate) fn write_line_len(buf: &mut BytesMut, prefix: u8, n: usize) {
    let mut tmp = [0u8; 20];
    buf.reserve(24);
    buf.put_u8(prefix);
    buf.put_slice(crate::decimal(n as u64, &mut tmp));
    buf.put_slice(b"\r\n");
}

/// Writes a simple string `+<s>\r\n`; `s` must not contain CR or LF.
#[inline]
pub fn write_simple(buf: &mut BytesMut, s: &[u8]) {
    buf.reserve(s.len() + 3);
    buf.put_u8(b'+');
    buf.put_slice(s);
    buf.put_slice(b"\r\n");
}

/// Writes an error `-<msg>\r\n`; `msg` is the whole text with its code (`ERR unknown command`)
/// and must not contain CR or LF.
#[inline]
pub fn write_error(buf: &mut BytesMut, msg: &[u8]) {
    buf.reserve(msg.len() + 3);
    buf.put_u8(b'-');
    buf.put_slice(msg);
    buf.put_slice(b"\r\n");
}

/// Writes an integer `:<n>\r\n`.
#[inline]
pub fn write_integer(buf: &mut BytesMut, n: i64) {
    write_line_num(buf, b':', n);
}

/// Writes a bulk string `$<len>\r\n<data>\r\n`.
#[inline]
pub fn write_bulk(buf: &mut BytesMut, data: &[u8]) {
    write_line_len(buf, b'$', data.len());
    buf.reserve(data.len() + 2);
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

/// Writes an array header `*<n>\r\n`; the `n` elements follow.
#[inline]
pub fn write_array_header(buf: &mut BytesMut, n: usize) {
    write_line_len(buf, b'*', n);
}

/// Writes a map header of `n` pairs: `%<n>\r\n` in RESP3, a flat array `*<2n>\r\n` in RESP2.
#[inline]
pub fn write_map_header(buf: &mut BytesMut, n: usize, version: RespVersion) {
    match version {
        RespVersion::Resp2 => write_line_len(buf, b'*', n.saturating_mul(2)),
        RespVersion::Resp3 => write_line_len(buf, b'%', n),
    }
}

/// Writes a null string: `$-1\r\n` in RESP2, `_\r\n` in RESP3.
#[inline]
pub fn write_null(buf: &mut BytesMut, version: RespVersion) {
    buf.put_slice(match version {
        RespVersion::Resp2 => b"$-1\r\n",
        RespVersion::Resp3 => b"_\r\n",
    });
}

/// Writes a null array: `*-1\r\n` in RESP2, `_\r\n` in RESP3.
#[inline]
pub fn write_null_array(buf: &mut BytesMut, version: RespVersion) {
    buf.put_slice(match version {
        RespVersion::Resp2 => b"*-1\r\n",
        RespVersion::Resp3 => b"_\r\n",
    });
}

/// Writes a boolean: `#t\r\n`/`#f\r\n` in RESP3, `:1\r\n`/`:0\r\n` in RESP2 (as Redis does).
#[inline]
pub fn write_bool(buf: &mut BytesMut, v: bool, version: RespVersion) {
    buf.put_slice(match (version, v) {
        (RespVersion::Resp2, true) => b":1\r\n",
        (RespVersion::Resp2, false) => b":0\r\n",
        (RespVersion::Resp3, true) => b"#t\r\n",
        (RespVersion::Resp3, false) => b"#f\r\n",
    });
}

/// Writes a double: `,<v>\r\n` in RESP3, a bulk string in RESP2 (as Redis does). Infinities are
/// `inf`/`-inf` and NaN is `nan`.
pub fn write_double(buf: &mut BytesMut, v: f64, version: RespVersion) {
    let text = format_double(v);
    match version {
        RespVersion::Resp2 => write_bulk(buf, text.as_bytes()),
        RespVersion::Resp3 => {
            buf.reserve(text.len() + 3);
            buf.put_u8(b',');
            buf.put_slice(text.as_bytes());
            buf.put_slice(b"\r\n");
        }
    }
}

/// The RESP3 text of a double: shortest round-trip decimal, `inf`, `-inf` or `nan`.
pub(crate) fn format_double(v: f64) -> String {
    if v.is_nan() {
        "nan".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut b = BytesMut::new();
        f(&mut b);
        b.to_vec()
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(out(|b| write_simple(b, b"OK")), b"+OK\r\n");
        assert_eq!(out(|b| write_error(b, b"ERR x")), b"-ERR x\r\n");
        assert_eq!(out(|b| write_integer(b, 0)), b":0\r\n");
        assert_eq!(out(|b| write_integer(b, -42)), b":-42\r\n");
        assert_eq!(
            out(|b| write_integer(b, i64::MIN)),
            b":-9223372036854775808\r\n"
        );
        assert_eq!(
            out(|b| write_integer(b, i64::MAX)),
            b":9223372036854775807\r\n"
        );
        assert_eq!(out(|b| write_bulk(b, b"")), b"$0\r\n\r\n");
        assert_eq!(out(|b| write_bulk(b, b"a\r\nb")), b"$4\r\na\r\nb\r\n");
        assert_eq!(out(|b| write_array_header(b, 12)), b"*12\r\n");
        assert_eq!(
            out(|b| write_map_header(b, 2, RespVersion::Resp2)),
            b"*4\r\n"
        );
        assert_eq!(
            out(|b| write_map_header(b, 2, RespVersion::Resp3)),
            b"%2\r\n"
        );
        assert_eq!(out(|b| write_null(b, RespVersion::Resp2)), b"$-1\r\n");
        assert_eq!(out(|b| write_null(b, RespVersion::Resp3)), b"_\r\n");
        assert_eq!(out(|b| write_null_array(b, RespVersion::Resp2)), b"*-1\r\n");
        assert_eq!(out(|b| write_bool(b, true, RespVersion::Resp3)), b"#t\r\n");
        assert_eq!(out(|b| write_bool(b, false, RespVersion::Resp2)), b":0\r\n");
        assert_eq!(
            out(|b| write_double(b, 1.5, RespVersion::Resp3)),
            b",1.5\r\n"
        );
        assert_eq!(
            out(|b| write_double(b, f64::NEG_INFINITY, RespVersion::Resp2)),
            b"$4\r\n-inf\r\n"
        );
        assert_eq!(
            out(|b| write_double(b, f64::NAN, RespVersion::Resp3)),
            b",nan\r\n"
        );
    }
}
