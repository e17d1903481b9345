//! Furrow wire formats: RESP2/RESP3 frames and MySQL packets.
//!
//! Pure code: bytes in, frames out, and back. No sockets, no runtime. Decoders are incremental
//! ("need more bytes" is a normal result, never an error), slice payloads out of the read buffer
//! (`bytes::Bytes`) instead of copying them, and enforce hard caps on sizes, counts and depth.

pub mod mysql;
pub mod otlp;
pub mod resp;

/// Formats `v` in decimal into the tail of `tmp`, returning the digits (ASCII). No formatting
/// machinery: RESP lengths, span status codes and SQL literal positions are written on hot paths.
#[inline]
pub fn decimal(mut v: u64, tmp: &mut [u8; 20]) -> &[u8] {
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &tmp[i..]
}

/// Every error this crate produces, one variant per protocol.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A RESP frame was malformed or exceeded a cap.
    #[error(transparent)]
    Resp(#[from] resp::RespError),
    /// A MySQL packet was malformed or exceeded a cap.
    #[error(transparent)]
    Mysql(#[from] mysql::MysqlError),
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_is_display() {
        let mut tmp = [0u8; 20];
        for v in [0, 7, 10, 1064, 65_535, 1_000_000_007, u64::MAX] {
            assert_eq!(super::decimal(v, &mut tmp), v.to_string().as_bytes());
        }
    }
}
