//! Packet framing: 3-byte length + 1-byte sequence id; payloads of 16 MiB - 1 bytes or more are
//! split across several packets and joined back, with a cap on the joined size.

use bytes::{BufMut, Bytes, BytesMut};

use super::{MysqlError, Result};

/// Largest payload of one physical packet; a packet of exactly this size is continued.
pub const MAX_FRAGMENT: usize = 0xFF_FFFF;

/// Default cap on a joined payload (MariaDB's default `max_allowed_packet`, 16 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// One logical packet: the sequence id of its first fragment and its joined payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Sequence id of the first physical packet.
    pub seq: u8,
    /// Sequence id of the last physical packet (equals `seq` unless the payload was split).
    pub last_seq: u8,
    /// The payload; a slice of the read buffer unless it had to be joined.
    pub payload: Bytes,
}

impl Packet {
    /// The sequence id the peer's next packet must carry.
    pub fn next_seq(&self) -> u8 {
        self.last_seq.wrapping_add(1)
    }
}

/// Incremental packet decoder with a `max_allowed_packet`-style cap.
#[derive(Debug, Clone, Copy)]
pub struct PacketDecoder {
    max_payload: usize,
}

impl Default for PacketDecoder {
    fn default() -> Self {
        PacketDecoder {
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

impl PacketDecoder {
    /// A decoder that rejects joined payloads larger than `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        PacketDecoder { max_payload }
    }

    /// The configured cap.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Whether `buf` starts with a complete logical packet: `Ok(Some(total_wire_len))`,
    /// `Ok(None)` if more bytes are needed. Rejects over-cap packets as soon as their headers say
    /// so, without waiting for the body.
    pub fn check(&self, buf: &[u8]) -> Result<Option<usize>> {
        let mut pos = 0usize;
        let mut payload_len = 0usize;
        let mut expected_seq: Option<u8> = None;
        loop {
            let Some(header) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            let len = self::payload_len(header);
            let seq = header[3];
            if let Some(expected) = expected_seq
                && seq != expected
            {
                return Err(MysqlError::SequenceMismatch { expected, got: seq });
            }
            payload_len += len;
            if payload_len > self.max_payload {
                return Err(MysqlError::PacketTooLarge {
                    size: payload_len,
                    max: self.max_payload,
                });
            }
            pos += 4 + len;
            if buf.len() < pos {
                return Ok(None);
            }
            if len < MAX_FRAGMENT {
                return Ok(Some(pos));
            }
            expected_seq = Some(seq.wrapping_add(1));
        }
    }

    /// Takes one logical packet off the front of `buf`, or returns `Ok(None)` (leaving `buf`
    /// untouched) when more bytes are needed. A single-fragment payload is a zero-copy slice.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>> {
        let Some(total) = self.check(buf)? else {
            return Ok(None);
        };
        let frame = buf.split_to(total).freeze();
        let seq = frame[3];
        if total - 4 < MAX_FRAGMENT {
            return Ok(Some(Packet {
                seq,
                last_seq: seq,
                payload: frame.slice(4..),
            }));
        }
        // Split payload: join the fragments (one copy; only for payloads >= 16 MiB).
        let mut joined = BytesMut::with_capacity(total);
        let mut pos = 0;
        let mut last_seq = seq;
        while pos < total {
            let len = payload_len(&frame[pos..]);
            last_seq = frame[pos + 3];
            joined.put_slice(&frame[pos + 4..pos + 4 + len]);
            pos += 4 + len;
        }
        Ok(Some(Packet {
            seq,
            last_seq,
            payload: joined.freeze(),
        }))
    }
}

/// The payload length a packet header at the front of `header` gives (its first 3 bytes, little
/// endian). The one decoder of it for every walk over framed packets.
#[inline]
pub fn payload_len(header: &[u8]) -> usize {
    usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16
}

/// Appends `payload` framed as packets starting at sequence id `seq`, splitting it at
/// [`MAX_FRAGMENT`] (with a trailing empty packet when the size is a multiple of it). Returns the
/// next sequence id.
pub fn encode_packet(seq: u8, payload: &[u8], out: &mut BytesMut) -> u8 {
    let mut seq = seq;
    let mut rest = payload;
    out.reserve(payload.len() + 4 * (payload.len() / MAX_FRAGMENT + 1));
    loop {
        let n = rest.len().min(MAX_FRAGMENT);
        out.put_slice(&(n as u32).to_le_bytes()[..3]);
        out.put_u8(seq);
        out.put_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_FRAGMENT {
            return seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_packet_exact_bytes() {
        let mut out = BytesMut::new();
        let next = encode_packet(3, &[0x0E], &mut out);
        assert_eq!(&out[..], &[0x01, 0x00, 0x00, 0x03, 0x0E]);
        assert_eq!(next, 4);
        let p = PacketDecoder::default().decode(&mut out).unwrap().unwrap();
        assert_eq!(p.seq, 3);
        assert_eq!(&p.payload[..], &[0x0E]);
        assert!(out.is_empty());
    }

    #[test]
    fn incomplete_is_none_and_leaves_buffer() {
        let mut buf = BytesMut::from(&[0x05, 0x00, 0x00, 0x00, b'a', b'b'][..]);
        assert_eq!(PacketDecoder::default().decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 6);
        let mut buf = BytesMut::from(&[0x05, 0x00][..]);
        assert_eq!(PacketDecoder::default().decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn split_payload_round_trip() {
        for len in [
            MAX_FRAGMENT - 1,
            MAX_FRAGMENT,
            MAX_FRAGMENT + 10,
            2 * MAX_FRAGMENT,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = BytesMut::new();
            let next = encode_packet(250, &payload, &mut out);
            let fragments = len / MAX_FRAGMENT + 1;
            assert_eq!(out.len(), len + 4 * fragments);
            assert_eq!(next, 250u8.wrapping_add(fragments as u8));
            let dec = PacketDecoder::new(64 * 1024 * 1024);
            // Any prefix is incomplete.
            assert_eq!(dec.check(&out[..out.len() - 1]).unwrap(), None);
            let p = dec.decode(&mut out).unwrap().unwrap();
            assert_eq!(p.seq, 250);
            assert_eq!(p.next_seq(), next);
            assert_eq!(p.payload.len(), len);
            assert!(p.payload[..] == payload[..]);
        }
    }

    #[test]
    fn cap_is_enforced_before_body_arrives() {
        let dec = PacketDecoder::new(100);
        let buf = [101u8, 0, 0, 0];
        let reply = dec.check(&buf).unwrap_err().to_err_packet();
        assert_eq!((reply.code, reply.sql_state_str()), (1153, "08S01"));
        assert_eq!(
            dec.check(&buf),
            Err(MysqlError::PacketTooLarge {
                size: 101,
                max: 100
            })
        );
        let dec = PacketDecoder::new(MAX_FRAGMENT + 5);
        let mut wire = BytesMut::new();
        encode_packet(0, &vec![7u8; MAX_FRAGMENT + 6], &mut wire);
        assert!(matches!(
            dec.check(&wire),
            Err(MysqlError::PacketTooLarge { .. })
        ));
    }

    #[test]
    fn continuation_sequence_checked() {
        let mut wire = BytesMut::new();
        encode_packet(0, &vec![1u8; MAX_FRAGMENT + 1], &mut wire);
        wire[4 + MAX_FRAGMENT + 3] = 9;
        let dec = PacketDecoder::new(usize::MAX);
        assert_eq!(
            dec.check(&wire),
            Err(MysqlError::SequenceMismatch {
                expected: 1,
                got: 9
            })
        );
    }
}
